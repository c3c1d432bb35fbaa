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
		parts = append(parts, fmt.Sprintf(`SELECT %d, e.o, NULL FROM jsonb_array_elements($%d::jsonb) WITH ORDINALITY AS e(v, o)
			WHERE EXISTS (SELECT FROM %s t WHERE %s)`, t, len(args), pgx.Identifier{info.name.schema, info.name.table}.Sanitize(),
			strings.Join(cond, " AND ")))
	}
	// The statement's snapshot comes along, to tell whether it saw the
	// batch's transactions at all.
	query := "SELECT -1, 0::bigint, pg_current_snapshot()::text UNION ALL " + strings.Join(parts, " UNION ALL ")
	var xids []uint32
	for _, i := range idx {
		if x := changes[i].xid; x != 0 && !slices.Contains(xids, x) {
			xids = append(xids, x)
		}
	}
	// The check is read-only and rolled back, so it can always be sent
	// again:
	//   - Postgres sends a transaction's commit to logical decoding once it
	//     is in the WAL, a moment before other sessions see it: a check
	//     whose snapshot does not cover the batch's transactions yet would
	//     hide their rows, so it waits and asks again;
	//   - a connection error (Postgres restarted, the pool's connections
	//     are broken) is retried on fresh connections.
	// An error Postgres reports (a policy that raises) is not retried.
	var err error
	conns, wait := 0, time.Millisecond
	for {
		var vis map[int]bool
		var snap snapshot
		vis, snap, err = a.visibleOnce(ctx, role, claims, query, args, order, byTable)
		var pgErr *pgconn.PgError
		switch {
		case err == nil && snap.sees(xids):
			return vis, nil
		case err == nil:
			if wait > time.Second {
				return vis, fmt.Errorf("wal: RLS check for role %s: the batch's transactions are still not visible", strconv.Quote(role))
			}
		case errors.As(err, &pgErr) || ctx.Err() != nil:
			return map[int]bool{}, fmt.Errorf("wal: RLS check for role %s: %w", strconv.Quote(role), err)
		default:
			if conns++; conns == rlsAttempts {
				return map[int]bool{}, fmt.Errorf("wal: RLS check for role %s: %w", strconv.Quote(role), err)
			}
			a.pool.Reset()
			wait = time.Duration(conns) * 100 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			return map[int]bool{}, fmt.Errorf("wal: RLS check for role %s: %w", strconv.Quote(role), ctx.Err())
		case <-time.After(wait):
		}
		if err == nil {
			wait *= 2
		}
	}
}

// rlsAttempts bounds how often an RLS check is sent when the connection
// fails: about 1.5 s of retries, longer than a Postgres restart takes.
const rlsAttempts = 6

// visibleOnce sends the check in one round trip (BEGIN READ ONLY, the
// role and claims, query, ROLLBACK) and returns what it found visible and
// the snapshot it saw that with.
func (a *Authorizer) visibleOnce(ctx context.Context, role, claims, query string, args []any, order []*tableInfo, byTable map[*tableInfo][]int) (map[int]bool, snapshot, error) {
	b := &pgx.Batch{}
	b.Queue("BEGIN READ ONLY")
	b.Queue("SELECT set_config('role', $1, true), set_config('request.jwt.claims', $2, true)", role, claims)
	q := b.Queue(query, args...)
	vis := map[int]bool{}
	var snap snapshot
	q.Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var t, o int
			var text *string
			if err := rows.Scan(&t, &o, &text); err != nil {
				return err
			}
			switch {
			case t == -1 && text != nil:
				var err error
				if snap, err = parseSnapshot(*text); err != nil {
					return err
				}
			case t >= 0 && t < len(order) && o >= 1 && o <= len(byTable[order[t]]):
				vis[byTable[order[t]][o-1]] = true
			}
		}
		return rows.Err()
	})
	b.Queue("ROLLBACK")
	a.queries.Add(1)
	if err := a.pool.SendBatch(ctx, b).Close(); err != nil {
		return nil, snapshot{}, err
	}
	return vis, snap, nil
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
