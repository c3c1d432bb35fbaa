package wal

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

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

// Authorizer checks bindings when clients join and, on tables with row
// level security, which subscribers may see a change. It queries the
// database over a small pool of its own and caches what it learns of
// tables and of each role's privileges until Invalidate.
type Authorizer struct {
	pool        *pgxpool.Pool
	publication string
	types       *typeCache

	mu     sync.Mutex
	pubs   map[tableName][]tableName // (schema, table pattern) -> publication tables
	tables map[tableName]*tableInfo
	access map[accessKey]*tableAccess

	queries atomic.Int64 // RLS queries sent, for tests
}

type tableInfo struct {
	name     tableName
	rls      bool
	columns  []Column
	sqlTypes []string // format_type with typmod, for casting key values
	regtypes []string // atttypid::regtype, as Supabase's errors name types
}

type accessKey struct {
	role  string
	table tableName
}

type tableAccess struct {
	roleExists bool
	readable   []bool // by column
}

func (a *tableAccess) all() bool { return !slices.Contains(a.readable, false) }

// NewAuthorizer connects to the database at url (a pool of at most four
// connections) for bindings to publication (default supabase_realtime).
// The URL's user must be able to SET ROLE to the roles of the JWTs.
func NewAuthorizer(ctx context.Context, url, publication string) (*Authorizer, error) {
	cfg, err := pgxpool.ParseConfig(url)
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
	return &Authorizer{pool: pool, publication: orDefault(publication, DefaultPublication), types: newTypeCache(),
		pubs: map[tableName][]tableName{}, tables: map[tableName]*tableInfo{}, access: map[accessKey]*tableAccess{}}, nil
}

// Close closes the pool.
func (a *Authorizer) Close() { a.pool.Close() }

// Invalidate forgets what was learnt of tables, the publication and
// privileges (after a schema change, a GRANT, a token refresh).
func (a *Authorizer) Invalidate() {
	a.mu.Lock()
	defer a.mu.Unlock()
	clear(a.pubs)
	clear(a.tables)
	clear(a.access)
}

// ForgetRole forgets what was learnt of role's privileges, so that the
// next Check for it asks the database again (a token refresh).
func (a *Authorizer) ForgetRole(role string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for k := range a.access {
		if k.role == role {
			delete(a.access, k)
		}
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
		info, err := a.table(ctx, name)
		if err != nil {
			return nil, exception(params, err)
		}
		acc, err := a.roleAccess(ctx, role, info)
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

func (a *Authorizer) publicationTables(ctx context.Context, schema, table string) ([]tableName, error) {
	key := tableName{schema, table}
	a.mu.Lock()
	tables, ok := a.pubs[key]
	a.mu.Unlock()
	if ok {
		return tables, nil
	}
	rows, err := a.pool.Query(ctx, `SELECT schemaname, tablename FROM pg_catalog.pg_publication_tables
		WHERE pubname = $1 AND ($2 = '*' OR schemaname = $2) AND ($3 = '*' OR tablename = $3)
		ORDER BY schemaname, tablename`, a.publication, schema, table)
	if err != nil {
		return nil, err
	}
	tables, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (tableName, error) {
		var t tableName
		err := r.Scan(&t.schema, &t.table)
		return t, err
	})
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	a.pubs[key] = tables
	a.mu.Unlock()
	return tables, nil
}

// table loads what the Authorizer needs of a table.
func (a *Authorizer) table(ctx context.Context, name tableName) (*tableInfo, error) {
	a.mu.Lock()
	info := a.tables[name]
	a.mu.Unlock()
	if info != nil {
		return info, nil
	}
	rows, err := a.pool.Query(ctx, `
		SELECT c.relrowsecurity, a.attname, a.atttypid, format_type(a.atttypid, a.atttypmod), a.atttypid::regtype::text,
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
	info = &tableInfo{name: name}
	var oids []uint32
	for rows.Next() {
		var col Column
		var oid uint32
		var sqlType, regtype string
		if err := rows.Scan(&info.rls, &col.Name, &oid, &sqlType, &regtype, &col.Key); err != nil {
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
	types, err := a.types.resolve(ctx, a.pool, oids)
	if err != nil {
		return nil, err
	}
	for i, t := range types {
		info.columns[i].Type, info.columns[i].class = t.name, t.class
	}
	a.mu.Lock()
	a.tables[name] = info
	a.mu.Unlock()
	return info, nil
}

// roleAccess loads which columns of info role may read.
func (a *Authorizer) roleAccess(ctx context.Context, role string, info *tableInfo) (*tableAccess, error) {
	key := accessKey{role, info.name}
	a.mu.Lock()
	acc := a.access[key]
	a.mu.Unlock()
	if acc != nil {
		return acc, nil
	}
	acc = &tableAccess{}
	if role == "" {
		// No role (a node running without JWT auth): everything is
		// readable, as to the database's own user.
		acc.roleExists = true
		acc.readable = make([]bool, len(info.columns))
		for i := range acc.readable {
			acc.readable[i] = true
		}
		return acc, nil
	}
	err := a.pool.QueryRow(ctx, `
		SELECT r IS NOT NULL, CASE WHEN r IS NULL THEN '{}' ELSE (
			SELECT array_agg(has_column_privilege($1, a.attrelid, a.attnum, 'SELECT') ORDER BY a.attnum)
			FROM pg_catalog.pg_attribute a
			WHERE a.attrelid = format('%I.%I', $2::text, $3::text)::regclass AND a.attnum > 0 AND NOT a.attisdropped) END
		FROM to_regrole($1) r`, role, info.name.schema, info.name.table).Scan(&acc.roleExists, &acc.readable)
	if err != nil {
		return nil, err
	}
	if !acc.roleExists {
		return nil, &pgError{"42704", fmt.Sprintf("role \"%s\" does not exist", quote(role))}
	}
	if len(acc.readable) != len(info.columns) {
		return nil, fmt.Errorf("table %s.%s changed while being checked", info.name.schema, info.name.table)
	}
	a.mu.Lock()
	a.access[key] = acc
	a.mu.Unlock()
	return acc, nil
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
