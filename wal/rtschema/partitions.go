package rtschema

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Partitions of realtime.messages are named messages_YYYY_MM_DD and hold
// the rows whose inserted_at falls in that UTC day, as Supabase's do.
const (
	partitionPrefix = "messages_"
	partitionLayout = "2006_01_02"
	day             = 24 * time.Hour
)

// partitionName is the name of day d's partition.
func partitionName(d time.Time) string { return partitionPrefix + d.Format(partitionLayout) }

// partitionDay is the day a partition name stands for; ok is false for
// names that are not messages_YYYY_MM_DD of a real date.
func partitionDay(name string) (d time.Time, ok bool) {
	s, found := strings.CutPrefix(name, partitionPrefix)
	if !found {
		return time.Time{}, false
	}
	d, err := time.Parse(partitionLayout, s)
	if err != nil || d.Format(partitionLayout) != s {
		return time.Time{}, false
	}
	return d, true
}

// plan decides a maintenance round at now: the days from yesterday to
// today+daysAhead whose partition is missing from existing, and the
// partitions of existing whose day ended more than retention before now
// (negative: none), never yesterday's or today's. Names that are not daily
// partitions are left alone.
func plan(now time.Time, existing []string, daysAhead int, retention time.Duration) (create []time.Time, drop []string) {
	now = now.UTC()
	today := now.Truncate(day)
	have := map[string]bool{}
	for _, name := range existing {
		have[name] = true
	}
	for d := today.Add(-day); !d.After(today.AddDate(0, 0, daysAhead)); d = d.AddDate(0, 0, 1) {
		if !have[partitionName(d)] {
			create = append(create, d)
		}
	}
	if retention < 0 {
		return create, nil
	}
	for _, name := range existing {
		d, ok := partitionDay(name)
		if ok && d.Before(today.Add(-day)) && !d.Add(day).After(now.Add(-retention)) {
			drop = append(drop, name)
		}
	}
	return create, drop
}

// daysAhead counts the days after today that have a partition, up to the
// first that does not.
func daysAhead(now time.Time, existing []string) int {
	have := map[string]bool{}
	for _, name := range existing {
		have[name] = true
	}
	n := 0
	for d := now.UTC().Truncate(day).AddDate(0, 0, 1); have[partitionName(d)]; d = d.AddDate(0, 0, 1) {
		n++
	}
	return n
}

// Round is what one maintenance round did.
type Round struct {
	Created, Dropped []string // partition names
	// Skipped: another session (another node) held the lock, so this
	// round left the work to it.
	Skipped bool
}

// MaintainOnce runs one maintenance round now: it creates the missing
// partitions and drops the expired ones, in one transaction under
// LockKey. When another session holds the lock it does nothing (Skipped).
// Partitions it creates belong to realtime.messages's owner when the
// database lets it hand them over. A partition that cannot be created or
// dropped does not stop the others: the round commits what it could and
// returns the errors.
func (k *Keeper) MaintainOnce(ctx context.Context, db DB) (Round, error) {
	var r Round
	var errs []error
	err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		var locked bool
		if err := tx.QueryRow(ctx, "SELECT pg_try_advisory_xact_lock($1)", LockKey).Scan(&locked); err != nil {
			return err
		}
		if !locked {
			r.Skipped = true
			return nil
		}
		if err := setLockTimeout(ctx, tx, k.cfg.LockTimeout); err != nil {
			return err
		}
		owner, existing, err := partitions(ctx, tx)
		if err != nil {
			return err
		}
		now := k.cfg.Now()
		create, drop := plan(now, existing, k.cfg.DaysAhead, k.cfg.Retention)
		for _, d := range create {
			name := partitionName(d)
			if err := k.createPartition(ctx, tx, d, owner); err != nil {
				errs = append(errs, fmt.Errorf("creating realtime.%s: %w", name, err))
				continue
			}
			r.Created = append(r.Created, name)
			existing = append(existing, name)
		}
		for _, name := range drop {
			if err := savepoint(ctx, tx, "DROP TABLE IF EXISTS realtime."+ident(name)); err != nil {
				errs = append(errs, fmt.Errorf("dropping realtime.%s: %w", name, err))
				continue
			}
			r.Dropped = append(r.Dropped, name)
		}
		k.m.ahead.Set(float64(daysAhead(now, existing)))
		return nil
	})
	if err != nil {
		return Round{}, fmt.Errorf("rtschema: maintenance: %w", err)
	}
	k.m.created.Add(len(r.Created))
	k.m.dropped.Add(len(r.Dropped))
	if len(errs) > 0 {
		return r, fmt.Errorf("rtschema: maintenance: %w", errors.Join(errs...))
	}
	return r, nil
}

// partitions returns realtime.messages's owner and the names of its
// partitions.
func partitions(ctx context.Context, tx pgx.Tx) (owner string, names []string, err error) {
	err = tx.QueryRow(ctx, `SELECT pg_get_userbyid(relowner) FROM pg_class
		WHERE oid = to_regclass('realtime.messages')`).Scan(&owner)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil, errNoTable
	}
	if err != nil {
		return "", nil, err
	}
	rows, err := tx.Query(ctx, `SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		WHERE i.inhparent = to_regclass('realtime.messages')`)
	if err != nil {
		return "", nil, err
	}
	names, err = pgx.CollectRows(rows, pgx.RowTo[string])
	return owner, names, err
}

// createPartition creates day d's partition and hands it to owner, the
// owner of realtime.messages, as Supabase's partitions are. Not being
// allowed to hand it over leaves it to the URL's user (logged).
func (k *Keeper) createPartition(ctx context.Context, tx pgx.Tx, d time.Time, owner string) error {
	name := ident(partitionName(d))
	bound := func(t time.Time) string { return "'" + t.Format(time.DateOnly) + "'" }
	err := savepoint(ctx, tx, fmt.Sprintf("CREATE TABLE IF NOT EXISTS realtime.%s PARTITION OF realtime.messages FOR VALUES FROM (%s) TO (%s)",
		name, bound(d), bound(d.AddDate(0, 0, 1))))
	if err != nil {
		return err
	}
	var me string
	if err := tx.QueryRow(ctx, "SELECT current_user::text").Scan(&me); err != nil {
		return err
	}
	if me != owner {
		if err := savepoint(ctx, tx, fmt.Sprintf("ALTER TABLE realtime.%s OWNER TO %s", name, ident(owner))); err != nil {
			k.log.Warn("realtime schema: partition left to the URL's user", "partition", partitionName(d), "owner", owner, "err", err)
		}
	}
	return nil
}

// savepoint runs sql in a savepoint of tx, so that its failure leaves tx
// usable.
func savepoint(ctx context.Context, tx pgx.Tx, sql string) error {
	return pgx.BeginFunc(ctx, tx, func(sp pgx.Tx) error {
		_, err := sp.Exec(ctx, sql)
		return err
	})
}

func ident(s string) string { return pgx.Identifier{s}.Sanitize() }

// maintain runs a round and logs it; it reports whether it succeeded.
func (k *Keeper) maintain(ctx context.Context, db DB) bool {
	r, err := k.MaintainOnce(ctx, db)
	if len(r.Created) > 0 || len(r.Dropped) > 0 {
		k.log.Info("realtime.messages partitions", "created", r.Created, "dropped", r.Dropped)
	}
	if err != nil {
		if ctx.Err() == nil {
			k.m.errors.Inc()
			k.log.Error("realtime.messages partitions", "err", err)
		}
		return false
	}
	if r.Skipped {
		k.log.Debug("realtime.messages partitions: another session holds the lock")
	}
	return true
}

// Maintain runs a maintenance round every Interval until ctx ends,
// after making the schema whole if Ensure could not. After a failure the
// next round comes sooner: after 1 second, then twice as long after each
// failure, up to Interval. Its first round is one Interval away (Ensure
// runs one) unless Ensure failed.
func (k *Keeper) Maintain(ctx context.Context, db DB) {
	const firstRetry = time.Second
	retry := firstRetry
	next := k.cfg.Interval
	if !k.complete.Load() {
		next = retry
	}
	t := time.NewTimer(next)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if k.step(ctx, db) {
			retry, next = firstRetry, k.cfg.Interval
		} else {
			next = min(k.cfg.Interval, retry)
			retry *= 2
		}
		t.Reset(next)
	}
}

// step is one turn of Maintain; it reports whether it succeeded.
func (k *Keeper) step(ctx context.Context, db DB) bool {
	if !k.complete.Load() {
		if err := k.ensureSchema(ctx, db); err != nil {
			if ctx.Err() == nil {
				k.log.Error("realtime schema: incomplete", "err", err)
			}
			return false
		}
	}
	return k.maintain(ctx, db)
}
