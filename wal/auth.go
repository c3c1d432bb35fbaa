package wal

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Binding is a postgres_changes binding as a client sent it; "" is a field
// it did not send.
type Binding struct {
	Event  string   // INSERT, UPDATE, DELETE or * (anything else is *)
	Schema string   // "" is public when Table is given
	Table  string   // "" or "*": every table of the schema in the publication
	Filter string   // the filter grammar; needs Table
	Select []string // columns to send (the primary key is added); nil is all
}

// Authorizer checks bindings when clients join and, on the owner, which
// subscribers may see each change: privileges, and row level security
// policies evaluated on the change's values. It queries the database over
// a small pool of its own. What it caches of tables, their policies and
// each role's privileges follows the database (catalog.go): emptied in WAL
// order by CatalogChanged on the owner, and on every node when the event
// trigger notifies or the catalog poll sees a change. Join checks read
// privileges and the publication afresh.
type Authorizer struct {
	pool        *pgxpool.Pool
	cfg         *pgxpool.Config
	publication string
	poll        time.Duration
	onChange    func(context.Context)
	log         *slog.Logger
	m           *authMetrics

	cancel context.CancelFunc
	done   chan struct{}

	triggered, triggerKnown atomic.Bool // the event trigger reports catalog changes

	mu sync.Mutex
	// gen counts invalidations: a cache fill keeps its result only if no
	// invalidation happened since it began (it may have read the catalog
	// as it was before).
	gen uint64
	// pending are catalog changes read from the stream but maybe not yet
	// visible to new snapshots: nothing is cached meanwhile.
	pending []uint32
	types   *typeCache
	tables  map[tableName]*tableInfo
	access  map[accessKey]*tableAccess

	queries atomic.Int64 // RLS queries sent, for tests
}

type tableInfo struct {
	name     tableName
	oid      uint32
	rls      bool
	columns  []Column
	sqlTypes []string   // format_type with typmod, for casting key values
	regtypes []string   // atttypid::regtype, as Supabase's errors name types
	policy   *rlsPolicy // how RLS decides, when rls
}

type accessKey struct {
	role  string
	table tableName
}

type tableAccess struct {
	info     *tableInfo // what readable is by column of
	readable []bool     // by column
}

func (a *tableAccess) all() bool { return !slices.Contains(a.readable, false) }

// AuthorizerConfig configures an Authorizer.
type AuthorizerConfig struct {
	// URL is the database URL. Required. Its user must be able to SET ROLE
	// to the roles of the JWTs, and, to create the event trigger that
	// orders catalog changes with the WAL, be a superuser.
	URL string
	// Publication names the publication bindings refer to (if empty,
	// supabase_realtime).
	Publication string
	// CatalogPoll is how often the catalog's fingerprint is polled for
	// what no event trigger reports (role membership, and everything when
	// the event trigger cannot be created). If zero, one second.
	CatalogPoll time.Duration
	// OnCatalogChange, if set, is called after the caches were emptied
	// for a catalog change this node noticed (a notification, the poll, a
	// reconnection), from the Authorizer's goroutine, once per burst of
	// changes; edge.Server.RecheckChanges is one.
	OnCatalogChange func(ctx context.Context)
	// Logger receives the logs (if nil, slog.Default()).
	Logger *slog.Logger
	// Metrics receives meshcast_wal_rls_unverified_total,
	// meshcast_wal_revoked_hidden_total and
	// meshcast_wal_catalog_changes_total (if nil, a set of its own).
	Metrics *metrics.Set
}

// NewAuthorizer is StartAuthorizer with the defaults.
func NewAuthorizer(ctx context.Context, url, publication string) (*Authorizer, error) {
	return StartAuthorizer(ctx, AuthorizerConfig{URL: url, Publication: publication})
}

// StartAuthorizer connects to the database (a pool of at most four
// connections), creates the event trigger if it can (logging the bound
// that applies if not) and starts watching the catalog until Close. ctx
// bounds the start only.
func StartAuthorizer(ctx context.Context, c AuthorizerConfig) (*Authorizer, error) {
	cfg, err := pgxpool.ParseConfig(c.URL)
	if err != nil {
		return nil, fmt.Errorf("wal: database URL: %w", err)
	}
	cfg.MaxConns = 4
	for k, v := range sessionParams {
		cfg.ConnConfig.RuntimeParams[k] = v
	}
	cfg.ConnConfig.RuntimeParams["application_name"] = "meshcast-auth"
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("wal: %w", err)
	}
	a := &Authorizer{pool: pool, cfg: cfg, publication: orDefault(c.Publication, DefaultPublication), poll: c.CatalogPoll,
		onChange: c.OnCatalogChange, log: c.Logger, types: newTypeCache(),
		tables: map[tableName]*tableInfo{}, access: map[accessKey]*tableAccess{}, done: make(chan struct{})}
	if a.poll <= 0 {
		a.poll = time.Second
	}
	if a.log == nil {
		a.log = slog.Default()
	}
	set := c.Metrics
	if set == nil {
		set = metrics.NewSet()
	}
	a.m = newAuthMetrics(set)
	conn, err := pool.Acquire(ctx)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("wal: %w", err)
	}
	if _, err := installCatalogTrigger(ctx, conn.Conn()); err != nil {
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "42501" {
			a.log.Warn("wal: could not create the catalog event trigger", "err", err)
		}
	}
	conn.Release()
	wctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	go func() {
		defer close(a.done)
		a.watchCatalog(wctx)
	}()
	return a, nil
}

// connConfig is a connection's configuration, as the pool's.
func (a *Authorizer) connConfig(name string) *pgx.ConnConfig {
	c := a.cfg.ConnConfig.Copy()
	c.RuntimeParams["application_name"] = name
	return c
}

// Close stops watching the catalog and closes the pool.
func (a *Authorizer) Close() {
	a.cancel()
	<-a.done
	a.pool.Close()
}

// Invalidate forgets what was learnt of tables, policies and privileges.
func (a *Authorizer) Invalidate() { a.invalidate() }

func (a *Authorizer) invalidate() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.gen++
	a.clearLocked()
}

func (a *Authorizer) clearLocked() {
	a.types = newTypeCache()
	clear(a.tables)
	clear(a.access)
}

// generation is the cache generation a fill begins under, and the type
// cache of it.
func (a *Authorizer) generation() (uint64, *typeCache) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.gen, a.types
}

// keep runs store (which fills a cache) unless the caches were emptied
// since gen or a catalog change awaits visibility. Called without a.mu.
func (a *Authorizer) keep(gen uint64, store func()) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.gen == gen && len(a.pending) == 0 {
		store()
	}
}

// ForgetRole forgets what was learnt of role's privileges (a token
// refresh). Join checks read privileges afresh anyway.
func (a *Authorizer) ForgetRole(role string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for k := range a.access {
		if k.role == role {
			delete(a.access, k)
		}
	}
}

type authMetrics struct {
	catalogChanges                   *metrics.Counter
	missingColumn, roundTrip, failed *metrics.Counter
	revoked                          *metrics.Counter
}

func newAuthMetrics(set *metrics.Set) *authMetrics {
	return &authMetrics{
		catalogChanges: set.GetOrCreateCounter("meshcast_wal_catalog_changes_total"),
		missingColumn:  set.GetOrCreateCounter(`meshcast_wal_rls_unverified_total{reason="missing_column"}`),
		roundTrip:      set.GetOrCreateCounter(`meshcast_wal_rls_unverified_total{reason="round_trip"}`),
		failed:         set.GetOrCreateCounter(`meshcast_wal_rls_unverified_total{reason="error"}`),
		revoked:        set.GetOrCreateCounter("meshcast_wal_revoked_hidden_total"),
	}
}

// Check validates b for a subscriber whose JWT has role and claims (JSON),
// as Supabase does when it inserts the subscription: the tables exist in
// the publication, the filter parses, its columns exist and are readable by
// role, its values cast to their types, and select names readable columns.
// It returns the Subscription to register (ID and Node unset), with filter
// values in the canonical form Postgres casts them to, or an error whose
// text is what Supabase sends the client. It also refuses a role that may
// not read the table or its primary key (Supabase would send Error 401 with
// every change instead).
func (a *Authorizer) Check(ctx context.Context, b Binding, role, claims string) (*Subscription, error) {
	// Supabase takes schema and table, schema alone or table alone, and a
	// filter only with a table.
	if b.Table == "" && (b.Schema == "" || b.Filter != "") {
		return nil, refusal("No subscription params provided. Please provide at least a `schema` or `table` to subscribe to: " + inspectBinding(b))
	}
	if len(b.Select) == 0 {
		b.Select = nil
	}
	sub := &Subscription{Event: ParseEvent(b.Event), Schema: orDefault(b.Schema, "public"), Table: orDefault(b.Table, "*"),
		Role: role, Claims: claims}
	filters, err := ParseFilter(b.Filter)
	if err != nil {
		return nil, err
	}
	if b.Select != nil && (sub.Schema == "*" || sub.Table == "*") {
		return nil, refusal("Column selection is not supported for wildcard subscriptions. Provide an explicit schema and table name.")
	}
	params := bindingParams(sub, filters, b.Select)
	tables, err := a.publicationTables(ctx, sub.Schema, sub.Table)
	if err != nil {
		return nil, exception(params, err)
	}
	if len(tables) == 0 {
		return nil, refusal("Unable to subscribe to changes with given parameters. Please check Realtime is enabled for the given connect parameters: [" + params + "]")
	}
	sub.Filters = slices.Clone(filters)
	// Filter values are normalized to the column's type when the binding is
	// of one table; a wildcard's are kept as given, since its tables' types
	// may differ.
	normalize := len(tables) == 1 && sub.Table != "*"
	for _, name := range tables {
		info, acc, err := a.freshAccess(ctx, role, name)
		if err != nil {
			return nil, exception(params, err)
		}
		if err := a.checkTable(ctx, info, acc, sub, filters, b.Select, normalize); err != nil {
			return nil, exception(params, err)
		}
		if sub.Table != "*" && (!acc.all() || b.Select != nil) {
			// Send only what role may read, and what select names: in
			// the table's order, each once, so that the same columns
			// asked for in another order share a shape.
			for i, c := range info.columns {
				if acc.readable[i] && (b.Select == nil || slices.Contains(b.Select, c.Name) || c.Key) {
					sub.Columns = append(sub.Columns, c.Name)
				}
			}
		}
	}
	if sub.Columns == nil && b.Select != nil {
		sub.Columns = slices.Clone(b.Select)
	}
	return sub, nil
}

// Recheck is a subscription to check again (Authorizer.Recheck).
type Recheck struct {
	Binding Binding       // as the client sent it, for the error's text
	Sub     *Subscription // what Check returned for it
	Err     error         // set by Recheck: what the client is told, nil while allowed
}

// Recheck checks subscriptions that Check let in against the database as
// it is now: each table is still in the publication, and the role may
// still read what the subscription sends and filters on. It sets Err, with
// the text Check gives, on those that lost it. A wildcard binding's tables
// are checked per change (Authorize), not here. A failure to ask the
// database leaves Err nil: the owner hides what it cannot check anyway.
// Each (table, role) costs one query whatever the number of subscriptions.
func (a *Authorizer) Recheck(ctx context.Context, rs []Recheck) {
	type result struct {
		acc *tableAccess
		err error
	}
	inPub := map[tableName]*bool{}
	access := map[accessKey]result{}
	for i := range rs {
		sub := rs[i].Sub
		if wildcard(sub) {
			continue
		}
		name := tableName{sub.Schema, sub.Table}
		filters, err := ParseFilter(rs[i].Binding.Filter)
		if err != nil {
			filters = sub.Filters
		}
		params := bindingParams(sub, filters, rs[i].Binding.Select)
		if inPub[name] == nil {
			tables, err := a.publicationTables(ctx, name.schema, name.table)
			if err != nil {
				continue
			}
			in := len(tables) == 1
			inPub[name] = &in
		}
		if !*inPub[name] {
			rs[i].Err = refusal("Unable to subscribe to changes with given parameters. Please check Realtime is enabled for the given connect parameters: [" + params + "]")
			continue
		}
		key := accessKey{sub.Role, name}
		r, ok := access[key]
		if !ok {
			_, r.acc, r.err = a.freshAccess(ctx, sub.Role, name)
			access[key] = r
		}
		var pgErr *pgError
		switch {
		case errors.As(r.err, &pgErr):
			rs[i].Err = exception(params, r.err) // the table or the role is gone
		case r.err != nil:
		case !r.acc.allows(sub):
			rs[i].Err = exception(params, &pgError{"42501", "permission denied for table " + name.table})
		}
	}
}

// inspectBinding formats b as Elixir inspects the binding's map, its
// fields in key order: %{"event" => "*", "filter" => "id=eq.1"}.
func inspectBinding(b Binding) string {
	var kv []string
	add := func(k, v string) {
		if v != "" {
			kv = append(kv, inspectString(k)+" => "+inspectString(v))
		}
	}
	add("event", b.Event)
	add("filter", b.Filter)
	add("schema", b.Schema)
	if b.Select != nil {
		kv = append(kv, `"select" => `+inspectList(b.Select...))
	}
	add("table", b.Table)
	return "%{" + strings.Join(kv, ", ") + "}"
}

// pgError is an error as Postgres raises it, for Supabase's "Exception:"
// texts.
type pgError struct{ code, msg string }

func (e *pgError) Error() string { return e.msg }

func raise(format string, args ...any) error {
	return &pgError{"P0001", fmt.Sprintf(format, args...)}
}

// exception wraps err as Supabase reports a failed subscription insert,
// with Postgrex's formatting of the error: ERROR <sqlstate> (<name>) <text>.
func exception(params string, err error) error {
	code, msg := "XX000", err.Error()
	var pe *pgError
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &pe):
		code, msg = pe.code, pe.msg
	case errors.As(err, &pgErr):
		code, msg = pgErr.Code, pgErr.Message
	}
	// Postgres's messages may quote the value a client sent.
	return refusal(fmt.Sprintf("Unable to subscribe to changes with given parameters. An exception happened so please check your connect parameters: [%s]. Exception: ERROR %s (%s) %s",
		params, code, sqlstateName(code), clipText(msg, 2*quoteBytes)))
}

// refusal is an error whose text is Supabase's, to send the client as is.
type refusal string

func (r refusal) Error() string { return string(r) }

// sqlstateName names the SQLSTATEs a subscription check raises.
func sqlstateName(code string) string {
	switch code {
	case "P0001":
		return "raise_exception"
	case "22P02":
		return "invalid_text_representation"
	case "22003":
		return "numeric_value_out_of_range"
	case "22007":
		return "invalid_datetime_format"
	case "22008":
		return "datetime_field_overflow"
	case "22009":
		return "invalid_time_zone_displacement_value"
	case "22015":
		return "interval_field_overflow"
	case "2201B":
		return "invalid_regular_expression"
	case "22023":
		return "invalid_parameter_value"
	case "22021":
		return "character_not_in_repertoire"
	case "22001":
		return "string_data_right_truncation"
	case "42501":
		return "insufficient_privilege"
	case "42704":
		return "undefined_object"
	case "42703":
		return "undefined_column"
	case "42883":
		return "undefined_function"
	case "42P01":
		return "undefined_table"
	}
	return "internal_error"
}

// bindingParams formats a binding as Supabase logs it in its errors:
// event: *, schema: public, table: todos, filters: [{"id", "eq", "1", false}], select: nil.
func bindingParams(sub *Subscription, filters []Filter, sel []string) string {
	var f []string
	for i, x := range filters {
		if i == quoteItems {
			f = append(f, "...")
			break
		}
		f = append(f, fmt.Sprintf("{%s, %s, %s, %t}", inspectString(x.Column), inspectString(x.Op.String()), inspectString(x.Value), x.Negate))
	}
	s := "nil"
	if sel != nil {
		s = inspectList(sel...)
	}
	return fmt.Sprintf("event: %s, schema: %s, table: %s, filters: [%s], select: %s",
		sub.Event, sub.Schema, sub.Table, strings.Join(f, ", "), s)
}

// publicationTables lists the publication's tables a binding's schema and
// table (or *) name, as they are now.
func (a *Authorizer) publicationTables(ctx context.Context, schema, table string) ([]tableName, error) {
	rows, err := a.pool.Query(ctx, `SELECT schemaname, tablename FROM pg_catalog.pg_publication_tables
		WHERE pubname = $1 AND ($2 = '*' OR schemaname = $2) AND ($3 = '*' OR tablename = $3)
		ORDER BY schemaname, tablename`, a.publication, schema, table)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (tableName, error) {
		var t tableName
		err := r.Scan(&t.schema, &t.table)
		return t, err
	})
}

// table loads what the Authorizer needs of a table (cached).
func (a *Authorizer) table(ctx context.Context, name tableName) (*tableInfo, error) {
	a.mu.Lock()
	info := a.tables[name]
	a.mu.Unlock()
	if info != nil {
		return info, nil
	}
	gen, types := a.generation()
	info, err := a.loadTable(ctx, name, types)
	if err != nil {
		return nil, err
	}
	a.keep(gen, func() { a.tables[name] = info })
	return info, nil
}

// loadTable reads a table's columns, types, RLS flag and, with RLS, its
// SELECT policies.
func (a *Authorizer) loadTable(ctx context.Context, name tableName, tc *typeCache) (*tableInfo, error) {
	rows, err := a.pool.Query(ctx, `
		SELECT c.oid, c.relrowsecurity, a.attname, a.atttypid, format_type(a.atttypid, a.atttypmod), a.atttypid::regtype::text,
			coalesce(a.attnum = ANY(i.indkey), false)
		FROM pg_catalog.pg_class c
		JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
		LEFT JOIN pg_catalog.pg_index i ON i.indrelid = c.oid AND i.indisprimary
		WHERE n.nspname = $1 AND c.relname = $2
		ORDER BY a.attnum`, name.schema, name.table)
	if err != nil {
		return nil, err
	}
	info := &tableInfo{name: name}
	var oids []uint32
	for rows.Next() {
		var col Column
		var oid uint32
		var sqlType, regtype string
		if err := rows.Scan(&info.oid, &info.rls, &col.Name, &oid, &sqlType, &regtype, &col.Key); err != nil {
			rows.Close()
			return nil, err
		}
		info.columns = append(info.columns, col)
		info.sqlTypes = append(info.sqlTypes, sqlType)
		info.regtypes = append(info.regtypes, regtype)
		oids = append(oids, oid)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(info.columns) == 0 {
		return nil, &pgError{"42P01", fmt.Sprintf("relation \"%s.%s\" does not exist", quote(name.schema), quote(name.table))}
	}
	types, err := tc.resolve(ctx, a.pool, oids)
	if err != nil {
		return nil, err
	}
	for i, t := range types {
		info.columns[i].Type, info.columns[i].class = t.name, t.class
	}
	if info.rls {
		if info.policy, err = a.loadPolicy(ctx, info); err != nil {
			return nil, err
		}
	}
	return info, nil
}

// cachedAccess returns a table and which of its columns role may read,
// from the caches (filled as needed): the owner's view, which
// CatalogChanged keeps in WAL order.
func (a *Authorizer) cachedAccess(ctx context.Context, role string, name tableName) (*tableInfo, *tableAccess, error) {
	a.mu.Lock()
	info, acc := a.tables[name], a.access[accessKey{role, name}]
	a.mu.Unlock()
	if info != nil && acc != nil && acc.info == info {
		return info, acc, nil
	}
	gen, _ := a.generation()
	info, acc, err := a.freshAccess(ctx, role, name)
	if err != nil {
		return nil, nil, err
	}
	a.keep(gen, func() {
		if a.tables[name] == info {
			a.access[accessKey{role, name}] = acc
		}
	})
	return info, acc, nil
}

// freshAccess returns a table (cached) and which of its columns role may
// read now. A table whose columns changed since it was cached is loaded
// again.
func (a *Authorizer) freshAccess(ctx context.Context, role string, name tableName) (*tableInfo, *tableAccess, error) {
	for attempt := 0; ; attempt++ {
		info, err := a.table(ctx, name)
		if err != nil {
			return nil, nil, err
		}
		acc, err := a.loadAccess(ctx, role, info)
		if err == nil || !errors.Is(err, errTableChanged) || attempt == 1 {
			return info, acc, err
		}
		a.mu.Lock()
		if a.tables[name] == info {
			delete(a.tables, name)
		}
		a.mu.Unlock()
	}
}

var errTableChanged = errors.New("changed while being checked")

// loadAccess reads which columns of info role may read.
func (a *Authorizer) loadAccess(ctx context.Context, role string, info *tableInfo) (*tableAccess, error) {
	acc := &tableAccess{info: info, readable: make([]bool, len(info.columns))}
	if role == "" {
		// No role (a node running without JWT auth): everything is
		// readable, as to the database's own user.
		for i := range acc.readable {
			acc.readable[i] = true
		}
		return acc, nil
	}
	var exists bool
	var names []string
	var readable []bool
	err := a.pool.QueryRow(ctx, `
		SELECT r IS NOT NULL, (SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_catalog.pg_attribute a
			WHERE a.attrelid = $2::oid AND a.attnum > 0 AND NOT a.attisdropped),
		CASE WHEN r IS NULL THEN '{}' ELSE (
			SELECT array_agg(has_column_privilege($1, a.attrelid, a.attnum, 'SELECT') ORDER BY a.attnum)
			FROM pg_catalog.pg_attribute a
			WHERE a.attrelid = $2::oid AND a.attnum > 0 AND NOT a.attisdropped) END
		FROM to_regrole($1) r`, role, info.oid).Scan(&exists, &names, &readable)
	if err != nil {
		return nil, err
	}
	if !exists {
		return nil, &pgError{"42704", fmt.Sprintf("role \"%s\" does not exist", quote(role))}
	}
	if len(names) != len(info.columns) {
		return nil, fmt.Errorf("table %s.%s %w", quote(info.name.schema), quote(info.name.table), errTableChanged)
	}
	for i, n := range names {
		if n != info.columns[i].Name {
			return nil, fmt.Errorf("table %s.%s %w", quote(info.name.schema), quote(info.name.table), errTableChanged)
		}
	}
	copy(acc.readable, readable)
	return acc, nil
}

// allows reports whether acc lets its role read everything sub sends and
// filters on: the primary key, the filter's columns, and sub's columns
// (every column when it names none, or binds every table). A column sub
// names that the table no longer has is not sent, so it does not count.
func (acc *tableAccess) allows(sub *Subscription) bool {
	cols := acc.info.columns
	ok := func(name string) bool {
		for i, c := range cols {
			if c.Name == name {
				return acc.readable[i]
			}
		}
		return true
	}
	for i, c := range cols {
		if c.Key && !acc.readable[i] {
			return false
		}
	}
	for _, f := range sub.Filters {
		if !ok(f.Column) {
			return false
		}
	}
	if sub.Columns == nil || wildcard(sub) {
		return acc.all()
	}
	for _, name := range sub.Columns {
		if !ok(name) {
			return false
		}
	}
	return true
}

// checkTable checks the filters and select of a binding against one table
// as Supabase's subscription_check_filters trigger does, with its texts,
// and normalizes sub.Filters' values.
func (a *Authorizer) checkTable(ctx context.Context, info *tableInfo, acc *tableAccess, sub *Subscription, filters []Filter, sel []string, normalize bool) error {
	col := func(name string) int {
		for i, c := range info.columns {
			if c.Name == name && acc.readable[i] {
				return i
			}
		}
		return -1
	}
	for i, f := range filters {
		ci := col(f.Column)
		if ci < 0 {
			return raise("invalid column for filter %s", quote(f.Column))
		}
		if err := a.checkFilter(ctx, info, ci, f, sub, i, normalize); err != nil {
			return err
		}
	}
	for _, s := range sel {
		if col(s) < 0 {
			return raise("invalid column for select %s", quote(s))
		}
	}
	readable := false
	for i, c := range info.columns {
		readable = readable || acc.readable[i]
		if c.Key && !acc.readable[i] {
			readable = false
			break
		}
	}
	if !readable {
		return &pgError{"42501", "permission denied for table " + info.name.table}
	}
	return nil
}

// checkFilter checks f, filter i of the binding (on column ci), as
// Postgres would cast it, normalizing sub.Filters[i]'s value if asked, and
// that meshcast can evaluate what Postgres accepts.
func (a *Authorizer) checkFilter(ctx context.Context, info *tableInfo, ci int, f Filter, sub *Subscription, i int, normalize bool) error {
	c, regtype := info.columns[ci], info.regtypes[ci]
	switch f.Op {
	case OpIn:
		elems, err := a.castArray(ctx, f.Value, info.sqlTypes[ci], c.class)
		if err != nil {
			return err
		}
		if len(elems) > 100 {
			return raise("%v", errInLimit)
		}
		if normalize {
			sub.Filters[i].Value = "{" + strings.Join(elems, ",") + "}"
		}
	case OpIs:
		switch f.Value {
		case "null", "true", "false", "unknown":
		default:
			return raise("invalid value for is filter: must be null, true, false, or unknown")
		}
		if f.Value != "null" && c.class != classBool {
			return raise("is %s filter requires a boolean column, got %s", f.Value, regtype)
		}
	case OpLike, OpILike, OpMatch, OpIMatch:
		if c.class != classText && c.class != classBpchar {
			return raise("operator %s requires a text-compatible column type, got %s", f.Op, regtype)
		}
		if f.Op == OpMatch || f.Op == OpIMatch {
			if _, err := a.pool.Exec(ctx, "SELECT '' ~ $1", f.Value); err != nil {
				var pgErr *pgconn.PgError
				if errors.As(err, &pgErr) {
					return raise("invalid regular expression for %s filter: %s", f.Op, pgErr.Message)
				}
				return err
			}
		}
	default:
		v, err := a.cast(ctx, f.Value, info.sqlTypes[ci], c.class)
		if err != nil {
			return err
		}
		if normalize {
			sub.Filters[i].Value = v
		}
	}
	// What Postgres accepts, meshcast must be able to evaluate.
	nf := sub.Filters[i]
	if !normalize {
		nf = f
	}
	if _, err := compileFilter(nf, info.columns); err != nil {
		return &pgError{"22023", err.Error() + " (meshcast cannot evaluate this filter)"}
	}
	return nil
}

// cast casts v to sqlType in Postgres, as Supabase's realtime.cast does, and
// returns its canonical text: what to_jsonb gives, unquoted (jsonb: its
// JSON text).
func (a *Authorizer) cast(ctx context.Context, v, sqlType string, c class) (string, error) {
	var js, text *string
	err := a.pool.QueryRow(ctx, "SELECT to_jsonb($1::text::"+sqlType+")::text, to_jsonb($1::text::"+sqlType+") #>> '{}'", v).Scan(&js, &text)
	if err != nil {
		return "", err
	}
	if c == classJSONB && js != nil {
		return *js, nil
	}
	if text == nil {
		return v, nil
	}
	return *text, nil
}

// castArray casts an in filter's array literal to sqlType[] and returns its
// elements in canonical form, quoted for an array literal.
func (a *Authorizer) castArray(ctx context.Context, v, sqlType string, c class) ([]string, error) {
	rows, err := a.pool.Query(ctx, "SELECT e::text, e #>> '{}' FROM jsonb_array_elements(to_jsonb($1::text::"+sqlType+"[])) e", v)
	if err != nil {
		return nil, err
	}
	var out []string
	for rows.Next() {
		var js string
		var text *string
		if err := rows.Scan(&js, &text); err != nil {
			rows.Close()
			return nil, err
		}
		switch {
		case js == "null":
			out = append(out, "NULL")
		case c == classJSONB:
			out = append(out, arrayElement(js))
		default:
			out = append(out, arrayElement(*text))
		}
	}
	return out, rows.Err()
}

func arrayElement(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}
