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
		// No cache may be trusted: nothing is shown (counted per change
		// and claims set, as the checks that fail are).
		for i := range hits {
			seen := map[viewer]bool{}
			for _, s := range hits[i] {
				seen[viewer{s.Role, s.Claims}] = true
			}
			a.m.failed.Add(len(seen))
			hits[i] = hits[i][:0]
		}
		return err
	}
	b := &authBatch{changes: changes, subs: map[*Subscription]*subState{}, viewers: map[viewer]*viewerCheck{}}
	errs := a.authorizePrivileges(ctx, b, hits)
	// The queries run side by side, as many as the pool has connections.
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, a.pool.Config().MaxConns)
	for _, vc := range b.checks {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			budget := rlsSplitBudget
			if err := a.decide(ctx, vc, changes, vc.items, &budget); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	a.applyRLS(b, hits)
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

// authBatch is what Authorize learns of a batch: per subscription, whether
// its role may read what it gets (computed once per subscription and
// table, not per hit), and per viewer the RLS checks to make.
type authBatch struct {
	changes []*Change
	subs    map[*Subscription]*subState
	viewers map[viewer]*viewerCheck
	checks  []*viewerCheck
}

type subState struct {
	table tableName
	info  *tableInfo
	ok    bool         // its role may read what it sends and filters on
	vc    *viewerCheck // its viewer's RLS checks, if the batch needs any
}

// viewerCheck is the RLS check of one viewer: the changes to check and
// then, by change index, the status of each one's new and old row
// (rlsUnchecked for the changes it does not concern).
type viewerCheck struct {
	v        viewer
	items    []rlsItem
	new, old []int8
}

// Statuses of a viewerCheck beside the query's: not concerned, and a
// check whose query failed.
const (
	rlsUnchecked = -2
	rlsFailed    = -1
)

// rlsSplitBudget bounds the queries a viewer's check of a batch may take
// when Postgres rejects it (a value that does not cast, a policy that
// raises): the batch is halved until the failing changes are found, and
// what the budget does not cover is hidden.
const rlsSplitBudget = 16

// authorizePrivileges drops the hits whose role may no longer read what
// they send, reduces RLS deletes to their key, and lists the RLS checks
// each viewer needs.
func (a *Authorizer) authorizePrivileges(ctx context.Context, b *authBatch, hits [][]*Subscription) []error {
	type access struct {
		info *tableInfo
		acc  *tableAccess
	}
	known := map[accessKey]access{}
	var errs []error
	for i, c := range b.changes {
		if len(hits[i]) == 0 {
			continue
		}
		name := tableName{c.Schema, c.Table}
		rls := false
		kept := hits[i][:0]
		for _, s := range hits[i] {
			st := b.subs[s]
			if st == nil || st.table != name {
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
				next := &subState{table: name, info: got.info, ok: got.acc != nil && got.acc.allows(s)}
				if st != nil {
					next.vc = st.vc
				}
				st = next
				b.subs[s] = st
			}
			if !st.ok {
				if !wildcard(s) && st.info != nil {
					a.m.revoked.Inc() // a wildcard binding never had the table
				}
				continue
			}
			kept = append(kept, s)
			rls = rls || st.info.rls
			if st.info.rls && (c.Kind == Insert || c.Kind == Update) {
				b.need(st, s, i)
			}
		}
		hits[i] = kept
		if rls && c.Kind == Delete {
			c.OldRecord = keyOnly(c)
		}
	}
	return errs
}

// need adds change i to the checks of s's viewer.
func (b *authBatch) need(st *subState, s *Subscription, i int) {
	vc := st.vc
	if vc == nil {
		v := viewer{s.Role, s.Claims}
		if vc = b.viewers[v]; vc == nil {
			vc = &viewerCheck{v: v, new: make([]int8, len(b.changes))}
			for j := range vc.new {
				vc.new[j] = rlsUnchecked
			}
			b.viewers[v] = vc
			b.checks = append(b.checks, vc)
		}
		st.vc = vc
	}
	if vc.new[i] != rlsUnchecked {
		return
	}
	vc.new[i] = rlsHidden
	vc.items = append(vc.items, rlsItem{i, st.info})
	if fullOld(b.changes[i]) && vc.old == nil {
		vc.old = make([]int8, len(b.changes))
	}
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
func (a *Authorizer) applyRLS(b *authBatch, hits [][]*Subscription) {
	for _, vc := range b.checks {
		for _, it := range vc.items {
			switch vc.new[it.i] {
			case rlsMissing:
				a.m.missingColumn.Inc()
			case rlsRoundTrip:
				a.m.roundTrip.Inc()
			case rlsFailed:
				a.m.failed.Inc()
			}
		}
	}
	for i, c := range b.changes {
		kept := hits[i][:0]
		reduce := false
		for _, s := range hits[i] {
			vc := b.subs[s].vc
			if vc == nil || vc.new[i] == rlsUnchecked {
				kept = append(kept, s) // no RLS on its table, or a delete
				continue
			}
			if vc.new[i] != rlsVisible {
				continue
			}
			kept = append(kept, s)
			if vc.old != nil && fullOld(c) && vc.old[i] != rlsVisible {
				reduce = true
			}
		}
		hits[i] = kept
		if reduce {
			c.OldRecord = keyOnly(c)
		}
	}
}

// decide runs the RLS check of items for vc, setting their statuses. When
// Postgres rejects the query, the items are halved (within budget) so that
// only the changes it cannot take are hidden.
func (a *Authorizer) decide(ctx context.Context, vc *viewerCheck, changes []*Change, items []rlsItem, budget *int) error {
	err := a.visible(ctx, vc, changes, items)
	if err == nil || len(items) == 1 || *budget < 2 || !rowError(err) || ctx.Err() != nil {
		if err != nil {
			for _, it := range items {
				vc.new[it.i] = rlsFailed
				if vc.old != nil {
					vc.old[it.i] = rlsFailed
				}
			}
		}
		return err
	}
	*budget -= 2
	half := len(items) / 2
	return errors.Join(a.decide(ctx, vc, changes, items[:half], budget), a.decide(ctx, vc, changes, items[half:], budget))
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
func (a *Authorizer) visible(ctx context.Context, vc *viewerCheck, changes []*Change, items []rlsItem) error {
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
	fail := func(err error) error {
		return fmt.Errorf("wal: RLS check for role %s: %w", strconv.Quote(vc.v.role), err)
	}
	conns, wait := 0, time.Millisecond
	for {
		snap, err := a.visibleOnce(ctx, vc, query, args, rows)
		var pgErr *pgconn.PgError
		switch {
		case err == nil && snap.sees(xids):
			return nil
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
// role and claims, query, ROLLBACK), sets the statuses it found in vc and
// returns the snapshot it saw them with.
func (a *Authorizer) visibleOnce(ctx context.Context, vc *viewerCheck, query string, args []any, rows [][]rlsCheck) (snapshot, error) {
	b := &pgx.Batch{}
	b.Queue("BEGIN READ ONLY")
	b.Queue("SELECT set_config('role', $1, true), set_config('request.jwt.claims', $2, true)", vc.v.role, vc.v.claims)
	q := b.Queue(query, args...)
	set := func(k rlsCheck, st int8) {
		if k.old {
			vc.old[k.i] = st
		} else {
			vc.new[k.i] = st
		}
	}
	for _, r := range rows {
		for _, k := range r {
			set(k, rlsHidden)
		}
	}
	var snap snapshot
	q.Query(func(r pgx.Rows) error {
		for r.Next() {
			var t, o int
			var st int8
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
				set(rows[t][o-1], st)
			}
		}
		return r.Err()
	})
	b.Queue("ROLLBACK")
	a.queries.Add(1)
	if err := a.pool.SendBatch(ctx, b).Close(); err != nil {
		return snapshot{}, err
	}
	return snap, nil
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
