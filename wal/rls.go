package wal

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Authorize removes from hits[i], the subscriptions changes[i] reaches,
// those whose role may not see the change:
//
//   - the role may no longer read what the subscription sends or filters
//     on (a REVOKE since it joined, a column added that it may not read,
//     a wildcard binding's table it cannot wholly read): counted in
//     meshcast_wal_revoked_hidden_total;
//   - on tables with row level security, inserts and updates whose values
//     (the row as committed) the role and claims may not see, by the
//     table's SELECT policies (rlsPolicy). This takes one query (a
//     pipelined BEGIN, set_config, SELECT, ROLLBACK) per distinct (role,
//     claims) among the batch's hits on RLS tables, whatever the number
//     of changes and subscribers. What cannot be decided (a column the
//     change does not carry, a value that does not round-trip, an error)
//     is hidden and counted in meshcast_wal_rls_unverified_total.
//
// An update whose old row (REPLICA IDENTITY FULL) some receiver may not
// see, such as a row given from one owner to another, has its OldRecord
// reduced to the primary key. A delete on an RLS table is not checked, and
// its OldRecord is reduced to the primary key, as Supabase does.
//
// The privileges and policies are the caches', which CatalogChanged keeps
// in WAL order; while a catalog change is not yet visible, or a query
// fails, the role and claims concerned see nothing of the batch (fail
// closed) and the error is returned. The queries run concurrently on the
// pool; Authorize returns when all are done.
func (a *Authorizer) Authorize(ctx context.Context, changes []*Change, hits [][]*Subscription) error {
	if err := a.awaitPending(ctx); err != nil {
		for i := range hits {
			hits[i] = hits[i][:0]
		}
		return err
	}
	need, errs := a.authorizePrivileges(ctx, changes, hits)
	// The queries run side by side, as many as the pool has connections.
	results := map[viewer]map[rlsCheck]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, a.pool.Config().MaxConns)
	for v, items := range need {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			budget := rlsSplitBudget
			res, err := a.decide(ctx, v, changes, items, &budget)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
			}
			results[v] = res
		})
	}
	wg.Wait()
	a.applyRLS(changes, hits, need, results)
	return errors.Join(errs...)
}

// viewer is whom an RLS check runs as.
type viewer struct{ role, claims string }

// rlsItem is a change to check for a viewer, with the table (and policy)
// its privileges were settled on.
type rlsItem struct {
	i    int
	info *tableInfo
}

// rlsCheck names one row checked: a change's new row, or its old one.
type rlsCheck struct {
	i   int
	old bool
}

// rlsSplitBudget bounds the queries a viewer's check of a batch may take
// when Postgres rejects it (a value that does not cast, a policy that
// raises): the batch is halved until the failing changes are found, and
// what the budget does not cover is hidden.
const rlsSplitBudget = 16

// authorizePrivileges drops the hits whose role may no longer read what
// they send, reduces RLS deletes to their key, and returns the RLS checks
// each viewer needs.
func (a *Authorizer) authorizePrivileges(ctx context.Context, changes []*Change, hits [][]*Subscription) (map[viewer][]rlsItem, []error) {
	type access struct {
		info *tableInfo
		acc  *tableAccess
	}
	known := map[accessKey]access{}
	need := map[viewer][]rlsItem{}
	var errs []error
	for i, c := range changes {
		if len(hits[i]) == 0 {
			continue
		}
		name := tableName{c.Schema, c.Table}
		rls := false
		kept := hits[i][:0]
		for _, s := range hits[i] {
			key := accessKey{s.Role, name}
			got, ok := known[key]
			if !ok {
				err := a.retrying(ctx, func() (err error) {
					got.info, got.acc, err = a.cachedAccess(ctx, s.Role, name)
					return err
				})
				if err != nil {
					errs = append(errs, fmt.Errorf("wal: privileges of role %s on %s.%s: %w", strconv.Quote(s.Role), c.Schema, c.Table, err))
				}
				known[key] = got
			}
			if got.acc == nil {
				continue
			}
			if !got.acc.allows(s) {
				if !wildcard(s) {
					a.m.revoked.Inc() // a wildcard binding never had the table
				}
				continue
			}
			kept = append(kept, s)
			rls = rls || got.info.rls
			if got.info.rls && (c.Kind == Insert || c.Kind == Update) {
				v := viewer{s.Role, s.Claims}
				if l := need[v]; len(l) == 0 || l[len(l)-1].i != i {
					need[v] = append(need[v], rlsItem{i, got.info})
				}
			}
		}
		hits[i] = kept
		if rls && c.Kind == Delete {
			c.OldRecord = keyOnly(c)
		}
	}
	return need, errs
}

// keyOnly is c's OldRecord reduced to the primary key.
func keyOnly(c *Change) []json.RawMessage {
	old := make([]json.RawMessage, len(c.OldRecord))
	for j, v := range c.OldRecord {
		if c.Columns[j].Key {
			old[j] = v
		}
	}
	return old
}

// fullOld reports whether c is an update whose old row carries more than
// its key (REPLICA IDENTITY FULL): then who sees it matters too.
func fullOld(c *Change) bool {
	if c.Kind != Update {
		return false
	}
	for j, v := range c.OldRecord {
		if v != nil && !c.Columns[j].Key {
			return true
		}
	}
	return false
}

// applyRLS keeps the RLS hits whose viewer may see the new row, counts
// the undecided ones, and reduces to the key the old row of an update
// that one of its receivers may not see.
func (a *Authorizer) applyRLS(changes []*Change, hits [][]*Subscription, need map[viewer][]rlsItem, results map[viewer]map[rlsCheck]int) {
	checked := map[viewer]map[int]bool{}
	for v, items := range need {
		checked[v] = map[int]bool{}
		for _, it := range items {
			checked[v][it.i] = true
			switch results[v][rlsCheck{it.i, false}] {
			case rlsMissing:
				a.m.missingColumn.Inc()
			case rlsRoundTrip:
				a.m.roundTrip.Inc()
			case rlsFailed:
				a.m.failed.Inc()
			}
		}
	}
	for i, c := range changes {
		kept := hits[i][:0]
		reduce := false
		for _, s := range hits[i] {
			v := viewer{s.Role, s.Claims}
			if !checked[v][i] {
				kept = append(kept, s) // no RLS on its table, or a delete
				continue
			}
			if results[v][rlsCheck{i, false}] != rlsVisible {
				continue
			}
			kept = append(kept, s)
			if fullOld(c) && results[v][rlsCheck{i, true}] != rlsVisible {
				reduce = true
			}
		}
		hits[i] = kept
		if reduce {
			c.OldRecord = keyOnly(c)
		}
	}
}

// rlsFailed marks a check whose query failed (not a status of the query).
const rlsFailed = -1

// decide runs the RLS check of items for v: their statuses by row. When
// Postgres rejects the query, the items are halved (within budget) so that
// only the changes it cannot take are hidden.
func (a *Authorizer) decide(ctx context.Context, v viewer, changes []*Change, items []rlsItem, budget *int) (map[rlsCheck]int, error) {
	res, err := a.visible(ctx, v, changes, items)
	if err == nil || len(items) == 1 || *budget < 2 || !rowError(err) || ctx.Err() != nil {
		if err != nil {
			res = map[rlsCheck]int{}
			for _, it := range items {
				res[rlsCheck{it.i, false}] = rlsFailed
			}
		}
		return res, err
	}
	*budget -= 2
	half := len(items) / 2
	res, err1 := a.decide(ctx, v, changes, items[:half], budget)
	more, err2 := a.decide(ctx, v, changes, items[half:], budget)
	for k, st := range more {
		res[k] = st
	}
	return res, errors.Join(err1, err2)
}

// rowError reports whether err is one a row's values may cause: a value
// that does not fit its type or domain, or a policy's function raising.
func rowError(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || len(pgErr.Code) != 5 {
		return false
	}
	switch pgErr.Code[:2] {
	case "22", "23", "P0":
		return true
	}
	return false
}

// visible checks items for v in one round trip (retried while the
// snapshot lags or the connection breaks): the status of each row.
func (a *Authorizer) visible(ctx context.Context, v viewer, changes []*Change, items []rlsItem) (map[rlsCheck]int, error) {
	query, args, rows := rlsQuery(changes, items)
	var xids []uint32
	for _, it := range items {
		if x := changes[it.i].xid; x != 0 && !slices.Contains(xids, x) {
			xids = append(xids, x)
		}
	}
	// The check is read-only and rolled back, so it can always be sent
	// again:
	//   - Postgres sends a transaction's commit to logical decoding once it
	//     is in the WAL, a moment before other sessions see it: a policy
	//     that reads other tables (a team's members) must see what the
	//     batch's transactions wrote, so a check whose snapshot does not
	//     cover them yet waits and asks again;
	//   - a connection error (Postgres restarted, the pool's connections
	//     are broken) is retried on fresh connections.
	// An error Postgres reports (a policy that raises) is not retried.
	fail := func(err error) (map[rlsCheck]int, error) {
		return nil, fmt.Errorf("wal: RLS check for role %s: %w", strconv.Quote(v.role), err)
	}
	conns, wait := 0, time.Millisecond
	for {
		res, snap, err := a.visibleOnce(ctx, v, query, args, rows)
		var pgErr *pgconn.PgError
		switch {
		case err == nil && snap.sees(xids):
			return res, nil
		case err == nil:
			if wait > time.Second {
				return fail(errors.New("the batch's transactions are still not visible"))
			}
		case errors.As(err, &pgErr) || ctx.Err() != nil:
			return fail(err)
		default:
			if conns++; conns == rlsAttempts {
				return fail(err)
			}
			a.pool.Reset()
			wait = time.Duration(conns) * 100 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			return fail(ctx.Err())
		case <-time.After(wait):
		}
		if err == nil {
			wait *= 2
		}
	}
}

// rlsQuery writes the check of items: one SELECT per table, in a UNION
// ALL, each over a jsonb array of the rows' values (the new row, and the
// old one of an update that has it whole); rows[t][o-1] is what ordinal o
// of the t-th SELECT is. The statement's snapshot comes along, to tell
// whether it saw the batch's transactions at all.
func rlsQuery(changes []*Change, items []rlsItem) (string, []any, [][]rlsCheck) {
	var order []*tableInfo
	byTable := map[*tableInfo]int{}
	var rows [][]rlsCheck
	var values [][]byte
	for _, it := range items {
		t, ok := byTable[it.info]
		if !ok {
			t = len(order)
			byTable[it.info] = t
			order = append(order, it.info)
			rows = append(rows, nil)
			values = append(values, []byte{'['})
		}
		c := changes[it.i]
		add := func(row []json.RawMessage, old bool) {
			if len(rows[t]) > 0 {
				values[t] = append(values[t], ',')
			}
			values[t] = it.info.policy.rlsValues(values[t], c.Columns, row)
			rows[t] = append(rows[t], rlsCheck{it.i, old})
		}
		add(c.Record, false)
		if fullOld(c) {
			add(c.OldRecord, true)
		}
	}
	parts := []string{"SELECT -1, 0::bigint, 0, pg_current_snapshot()::text"}
	var args []any
	for t, info := range order {
		args = append(args, string(append(values[t], ']')))
		parts = append(parts, info.policy.query(t, "$"+strconv.Itoa(len(args))))
	}
	return strings.Join(parts, " UNION ALL "), args, rows
}

// rlsAttempts bounds how often an RLS check is sent when the connection
// fails: about 1.5 s of retries, longer than a Postgres restart takes.
const rlsAttempts = 6

// retrying runs f, and again on fresh connections while it fails to reach
// the database (a restarted Postgres breaks the pool's connections), as
// visible does: rlsAttempts times at most.
func (a *Authorizer) retrying(ctx context.Context, f func() error) error {
	for conns := 1; ; conns++ {
		err := f()
		var pgErr *pgconn.PgError
		var ours *pgError
		if err == nil || errors.As(err, &pgErr) || errors.As(err, &ours) || errors.Is(err, errTableChanged) ||
			ctx.Err() != nil || conns == rlsAttempts {
			return err
		}
		a.pool.Reset()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(conns) * 100 * time.Millisecond):
		}
	}
}

// visibleOnce sends the check in one round trip (BEGIN READ ONLY, the
// role and claims, query, ROLLBACK) and returns the statuses it found and
// the snapshot it saw them with.
func (a *Authorizer) visibleOnce(ctx context.Context, v viewer, query string, args []any, rows [][]rlsCheck) (map[rlsCheck]int, snapshot, error) {
	b := &pgx.Batch{}
	b.Queue("BEGIN READ ONLY")
	b.Queue("SELECT set_config('role', $1, true), set_config('request.jwt.claims', $2, true)", v.role, v.claims)
	q := b.Queue(query, args...)
	res := make(map[rlsCheck]int, len(rows))
	for _, r := range rows {
		for _, k := range r {
			res[k] = rlsHidden
		}
	}
	var snap snapshot
	q.Query(func(r pgx.Rows) error {
		for r.Next() {
			var t, o, st int
			var text *string
			if err := r.Scan(&t, &o, &st, &text); err != nil {
				return err
			}
			switch {
			case t == -1 && text != nil:
				var err error
				if snap, err = parseSnapshot(*text); err != nil {
					return err
				}
			case t >= 0 && t < len(rows) && o >= 1 && o <= len(rows[t]):
				res[rows[t][o-1]] = st
			}
		}
		return r.Err()
	})
	b.Queue("ROLLBACK")
	a.queries.Add(1)
	if err := a.pool.SendBatch(ctx, b).Close(); err != nil {
		return nil, snapshot{}, err
	}
	return res, snap, nil
}

// snapshot is a pg_snapshot: transactions below xmin have ended, those
// from xmax on had not begun, and of those between, xip were in progress.
type snapshot struct {
	xmin, xmax uint64
	xip        []uint64
}

// parseSnapshot parses pg_snapshot's text form, "xmin:xmax:xip,…".
func parseSnapshot(s string) (snapshot, error) {
	var snap snapshot
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return snap, fmt.Errorf("wal: snapshot %q", s)
	}
	var err1, err2 error
	snap.xmin, err1 = strconv.ParseUint(parts[0], 10, 64)
	snap.xmax, err2 = strconv.ParseUint(parts[1], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return snap, fmt.Errorf("wal: snapshot %q: %w", s, err)
	}
	if parts[2] != "" {
		for _, x := range strings.Split(parts[2], ",") {
			v, err := strconv.ParseUint(x, 10, 64)
			if err != nil {
				return snap, fmt.Errorf("wal: snapshot %q: %w", s, err)
			}
			snap.xip = append(snap.xip, v)
		}
	}
	return snap, nil
}

// sees reports whether every transaction of xids (32-bit, as pgoutput
// gives them), all committed, had ended for the snapshot. A snapshot never
// read (xmax 0) sees nothing.
func (s snapshot) sees(xids []uint32) bool {
	for _, x := range xids {
		if s.xmax == 0 {
			return false
		}
		// The full ID is the one of x's epoch below xmax: x committed,
		// so it began before the snapshot.
		full := s.xmax&^0xFFFFFFFF | uint64(x)
		if full >= s.xmax {
			if full < 1<<32 {
				return false
			}
			full -= 1 << 32
		}
		if full >= s.xmin && slices.Contains(s.xip, full) {
			return false
		}
	}
	return true
}
