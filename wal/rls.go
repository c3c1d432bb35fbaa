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
)

// Authorize removes from hits[i], the subscriptions changes[i] reaches,
// those whose role may not see the change:
//
//   - a wildcard binding's hits on a table the role cannot wholly read
//     (a binding of one table was limited to its readable columns at
//     Check);
//   - on tables with row level security, hits of inserts and updates whose
//     row the role and claims do not see now, by primary key. This takes one
//     query (a pipelined BEGIN, set_config, SELECT, ROLLBACK) per distinct
//     (role, claims) among the batch's hits on RLS tables, whatever the
//     number of changes and subscribers.
//
// A delete on an RLS table is not checked, and its OldRecord is reduced to
// the primary key, as Supabase does. When a query fails, its role and
// claims see nothing of the batch (fail closed) and the error is returned.
// The queries run concurrently on the pool; Authorize returns when all are
// done.
func (a *Authorizer) Authorize(ctx context.Context, changes []*Change, hits [][]*Subscription) error {
	type viewer struct{ role, claims string }
	infos := make([]*tableInfo, len(changes))
	need := map[viewer][]int{} // change indices to check, per viewer
	var xids []uint32          // transactions of the changes to check
	var errs []error
	for i, c := range changes {
		if len(hits[i]) == 0 || c.Kind == Truncate {
			continue
		}
		info, err := a.table(ctx, tableName{c.Schema, c.Table})
		if err != nil {
			errs = append(errs, err)
			hits[i] = hits[i][:0]
			continue
		}
		infos[i] = info
		kept := hits[i][:0]
		for _, s := range hits[i] {
			if wildcard(s) {
				acc, err := a.roleAccess(ctx, s.Role, info)
				if err != nil || !acc.all() {
					continue
				}
			}
			kept = append(kept, s)
			if info.rls && c.Kind != Delete {
				if c.XID != 0 && !slices.Contains(xids, c.XID) {
					xids = append(xids, c.XID)
				}
				v := viewer{s.Role, s.Claims}
				if l := need[v]; len(l) == 0 || l[len(l)-1] != i {
					need[v] = append(need[v], i)
				}
			}
		}
		hits[i] = kept
		if info.rls && c.Kind == Delete {
			old := make([]json.RawMessage, len(c.OldRecord))
			for j, v := range c.OldRecord {
				if c.Columns[j].Key {
					old[j] = v
				}
			}
			c.OldRecord = old
		}
	}
	// Postgres streams a commit once its WAL is flushed, a moment before
	// the transaction is visible to other sessions: checked then, its
	// rows would look invisible (an update's old version would be
	// checked). So the checks wait until a snapshot sees the batch's
	// transactions.
	if len(need) > 0 && len(xids) > 0 {
		if err := a.awaitVisible(ctx, xids); err != nil {
			errs = append(errs, err)
		}
	}
	// The queries run side by side, as many as the pool has connections.
	visible := map[viewer]map[int]bool{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, a.pool.Config().MaxConns)
	for v, idx := range need {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			vis, err := a.visible(ctx, v.role, v.claims, changes, infos, idx)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
			}
			visible[v] = vis
		})
	}
	wg.Wait()
	for i, c := range changes {
		if infos[i] == nil || !infos[i].rls || c.Kind == Delete {
			continue
		}
		kept := hits[i][:0]
		for _, s := range hits[i] {
			if visible[viewer{s.Role, s.Claims}][i] {
				kept = append(kept, s)
			}
		}
		hits[i] = kept
	}
	return errors.Join(errs...)
}

// visible returns which of changes[idx] role and claims can see, in one
// round trip.
func (a *Authorizer) visible(ctx context.Context, role, claims string, changes []*Change, infos []*tableInfo, idx []int) (map[int]bool, error) {
	// One SELECT per table of the batch, in a UNION ALL: each returns the
	// ordinals of the keys whose row the role sees.
	byTable := map[*tableInfo][]int{}
	var order []*tableInfo
	for _, i := range idx {
		if byTable[infos[i]] == nil {
			order = append(order, infos[i])
		}
		byTable[infos[i]] = append(byTable[infos[i]], i)
	}
	var parts []string
	var args []any
	for t, info := range order {
		var keys []string
		var cond []string
		n := 0
		for j, c := range info.columns {
			if c.Key {
				cond = append(cond, fmt.Sprintf("t.%s = (e.v->>%d)::%s", pgx.Identifier{c.Name}.Sanitize(), n, info.sqlTypes[j]))
				n++
			}
		}
		for _, i := range byTable[info] {
			var vals []string
			for j, c := range changes[i].Columns {
				if c.Key {
					vals = append(vals, string(changes[i].Record[j]))
				}
			}
			keys = append(keys, "["+strings.Join(vals, ",")+"]")
		}
		args = append(args, "["+strings.Join(keys, ",")+"]")
		parts = append(parts, fmt.Sprintf(`SELECT %d, e.o FROM jsonb_array_elements($%d::jsonb) WITH ORDINALITY AS e(v, o)
			WHERE EXISTS (SELECT FROM %s t WHERE %s)`, t, len(args), pgx.Identifier{info.name.schema, info.name.table}.Sanitize(),
			strings.Join(cond, " AND ")))
	}
	b := &pgx.Batch{}
	b.Queue("BEGIN READ ONLY")
	b.Queue("SELECT set_config('role', $1, true), set_config('request.jwt.claims', $2, true)", role, claims)
	q := b.Queue(strings.Join(parts, " UNION ALL "), args...)
	vis := map[int]bool{}
	q.Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var t, o int
			if err := rows.Scan(&t, &o); err != nil {
				return err
			}
			if t < len(order) && o >= 1 && o <= len(byTable[order[t]]) {
				vis[byTable[order[t]][o-1]] = true
			}
		}
		return rows.Err()
	})
	b.Queue("ROLLBACK")
	a.queries.Add(1)
	if err := a.pool.SendBatch(ctx, b).Close(); err != nil {
		return map[int]bool{}, fmt.Errorf("wal: RLS check for role %s: %w", strconv.Quote(role), err)
	}
	return vis, nil
}

// visibleWait bounds how long Authorize waits for a streamed transaction
// to become visible; it takes microseconds unless the committing backend
// is descheduled.
const visibleWait = time.Second

// awaitVisible waits until a new snapshot sees the transactions xids
// (committed ones, as the stream delivers), at most visibleWait. Every
// later snapshot sees them too.
func (a *Authorizer) awaitVisible(ctx context.Context, xids []uint32) error {
	deadline := time.Now().Add(visibleWait)
	for pause := 100 * time.Microsecond; ; pause = min(2*pause, 10*time.Millisecond) {
		var snap string
		if err := a.pool.QueryRow(ctx, "SELECT pg_current_snapshot()::text").Scan(&snap); err != nil {
			return fmt.Errorf("wal: RLS check: read a snapshot: %w", err)
		}
		all := true
		for _, x := range xids {
			ok, err := snapshotSees(snap, x)
			if err != nil {
				return err
			}
			all = all && ok
		}
		if all {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("wal: RLS check: transactions %v still not visible after %s (snapshot %s)", xids, visibleWait, snap)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pause):
		}
	}
}

// snapshotSees reports whether a snapshot in pg_snapshot's text form
// ("xmin:xmax:xip,…", 64-bit ids) sees the committed transaction whose
// 32-bit id (pgoutput's) is xid. The id's epoch is the one that puts it
// within 2^31 of xmax, as Postgres's wraparound limits guarantee.
func snapshotSees(snap string, xid uint32) (bool, error) {
	parts := strings.SplitN(snap, ":", 3)
	if len(parts) != 3 {
		return false, fmt.Errorf("wal: snapshot %q", snap)
	}
	xmin, err1 := strconv.ParseUint(parts[0], 10, 64)
	xmax, err2 := strconv.ParseUint(parts[1], 10, 64)
	if err1 != nil || err2 != nil {
		return false, fmt.Errorf("wal: snapshot %q", snap)
	}
	full := xmax + uint64(int64(int32(xid-uint32(xmax))))
	switch {
	case full < xmin:
		return true, nil
	case full >= xmax:
		return false, nil
	}
	for _, s := range strings.Split(parts[2], ",") {
		if s == strconv.FormatUint(full, 10) {
			return false, nil
		}
	}
	return true, nil
}
