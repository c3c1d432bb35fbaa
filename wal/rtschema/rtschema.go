// Package rtschema keeps Supabase Realtime's realtime schema in a
// Postgres database: the table realtime.messages (partitioned by day, row
// level security on) and the functions realtime.topic, realtime.send,
// realtime.send_binary and realtime.broadcast_changes, as a Supabase
// database has them, so that an app's policies and triggers written for
// Supabase work against meshcast unchanged.
//
// Ensure creates what is missing and changes nothing that exists: on a
// database that already holds Supabase's schema it does nothing. Maintain
// then keeps daily partitions ahead of time (an insert for a day without
// a partition fails) and drops those past the retention. Several nodes may
// do both at once: they serialize on an advisory lock.
//
// SQL is the same work as a script a DBA applies instead.
package rtschema

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"text/template"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/jackc/pgx/v5"
)

// Defaults of the Config fields.
const (
	DefaultDaysAhead   = 3
	DefaultRetention   = 72 * time.Hour
	DefaultInterval    = time.Hour
	DefaultLockTimeout = 5 * time.Second
)

// LockKey is the advisory lock (pg_advisory_xact_lock, one bigint) that
// Ensure, Maintain and the script of SQL take, so that they never run at
// once in a database.
const LockKey int64 = 7290315042631155249

//go:embed schema.sql
var schemaSQL string

//go:embed missing.sql
var missingSQL string

//go:embed maintenance.sql.tmpl
var maintenanceText string

var maintenanceTmpl = template.Must(template.New("maintenance").Parse(maintenanceText))

// Config configures a Keeper.
type Config struct {
	// DaysAhead is how many days after today (UTC) have a partition ready;
	// yesterday's and today's always do. If zero, DefaultDaysAhead (as
	// Supabase); negative counts as zero days. Maintenance may fail for
	// about this many days before inserts do.
	DaysAhead int
	// Retention: a partition is dropped, with its rows, once its whole day
	// ended more than Retention ago; yesterday's and today's never are. If
	// zero, DefaultRetention (as Supabase); negative: nothing is dropped.
	Retention time.Duration
	// Interval between maintenance rounds. If zero, DefaultInterval. After
	// a failure the next round is sooner (1 second, doubling up to
	// Interval).
	Interval time.Duration
	// LockTimeout bounds how long DDL waits for a lock on
	// realtime.messages (creating or dropping a partition locks the table,
	// and inserts queue behind a waiting lock). If zero,
	// DefaultLockTimeout.
	LockTimeout time.Duration
	// Now is the clock that decides which day it is. If nil, time.Now.
	Now func() time.Time
	// Logger: if nil, slog.Default().
	Logger *slog.Logger
	// Metrics is where the counters go. If nil, a set of the Keeper's own
	// (not exported).
	Metrics *metrics.Set
}

// DB is what the Keeper needs of a connection: *pgx.Conn and
// *pgxpool.Pool have it.
type DB interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// Keeper makes the realtime schema exist and keeps its partitions.
type Keeper struct {
	cfg      Config
	log      *slog.Logger
	m        keeperMetrics
	complete atomic.Bool // Ensure made the schema whole
}

type keeperMetrics struct {
	objects, created, dropped, errors *metrics.Counter
	ahead                             *metrics.Gauge
}

// New returns a Keeper for cfg, with the defaults filled in.
func New(cfg Config) *Keeper {
	if cfg.DaysAhead == 0 {
		cfg.DaysAhead = DefaultDaysAhead
	}
	cfg.DaysAhead = max(cfg.DaysAhead, 0)
	if cfg.Retention == 0 {
		cfg.Retention = DefaultRetention
	}
	if cfg.Interval == 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.LockTimeout == 0 {
		cfg.LockTimeout = DefaultLockTimeout
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	set := cfg.Metrics
	if set == nil {
		set = metrics.NewSet()
	}
	return &Keeper{cfg: cfg, log: log.With("component", "rtschema"), m: keeperMetrics{
		objects: set.GetOrCreateCounter("meshcast_realtime_schema_objects_created_total"),
		created: set.GetOrCreateCounter("meshcast_realtime_partitions_created_total"),
		dropped: set.GetOrCreateCounter("meshcast_realtime_partitions_dropped_total"),
		errors:  set.GetOrCreateCounter("meshcast_realtime_schema_errors_total"),
		ahead:   set.GetOrCreateGauge("meshcast_realtime_partitions_days_ahead", nil),
	}}
}

// Missing lists the objects of the realtime schema that db lacks
// ("table realtime.messages", "function realtime.topic()", …), without
// changing anything.
func Missing(ctx context.Context, db DB) ([]string, error) {
	var names []string
	err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		var err error
		names, err = missingIn(ctx, tx)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("rtschema: %w", err)
	}
	return names, nil
}

func missingIn(ctx context.Context, tx pgx.Tx) ([]string, error) {
	rows, err := tx.Query(ctx, missingSQL)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// Ensure creates the objects of the realtime schema that db lacks, in one
// transaction, and then runs a maintenance round so that today has a
// partition. It returns an error only when the schema could not be made
// whole (Maintain then tries again); a failed maintenance round is logged
// and counted, and Maintain tries again.
func (k *Keeper) Ensure(ctx context.Context, db DB) error {
	if err := k.ensureSchema(ctx, db); err != nil {
		return err
	}
	k.maintain(ctx, db)
	return nil
}

// ensureSchema creates what is missing and records that the schema is
// complete.
func (k *Keeper) ensureSchema(ctx context.Context, db DB) error {
	missing, err := Missing(ctx, db)
	if err != nil {
		k.m.errors.Inc()
		return err
	}
	if len(missing) > 0 {
		created, err := k.create(ctx, db)
		k.m.objects.Add(len(created))
		if len(created) > 0 {
			k.log.Info("realtime schema: created what was missing", "objects", strings.Join(created, "; "))
		}
		if err != nil {
			k.m.errors.Inc()
			return fmt.Errorf("rtschema: creating %s: %w", strings.Join(missing, "; "), err)
		}
	}
	k.complete.Store(true)
	return nil
}

// create runs schema.sql under the lock and returns what it created:
// the objects missing once the lock is held (another node may have made
// them meanwhile).
func (k *Keeper) create(ctx context.Context, db DB) (created []string, err error) {
	err = pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		// The lock first, so that lock_timeout does not bound the wait for
		// another node's Ensure.
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", LockKey); err != nil {
			return err
		}
		if err := setLockTimeout(ctx, tx, k.cfg.LockTimeout); err != nil {
			return err
		}
		missing, err := missingIn(ctx, tx)
		if err != nil || len(missing) == 0 {
			return err
		}
		if _, err := tx.Exec(ctx, schemaSQL); err != nil {
			return err
		}
		left, err := missingIn(ctx, tx)
		if err != nil {
			return err
		}
		if len(left) > 0 {
			return fmt.Errorf("still missing after creating them: %s", strings.Join(left, ", "))
		}
		created = missing
		return nil
	})
	if err != nil {
		return nil, err
	}
	return created, nil
}

func setLockTimeout(ctx context.Context, tx pgx.Tx, d time.Duration) error {
	_, err := tx.Exec(ctx, "SELECT set_config('lock_timeout', $1, true)", fmt.Sprintf("%dms", max(d.Milliseconds(), 1)))
	return err
}

// SQL is the script a DBA applies instead of letting meshcast do it
// (--manage-realtime-schema=false): the schema objects as Ensure creates
// them, then one maintenance round as Maintain runs it (the partitions of
// cfg's DaysAhead and Retention, as of the database's clock), each in a
// transaction under LockKey. Like Ensure it creates only what is missing;
// the maintenance block is to be run again at least daily.
func SQL(cfg Config) string {
	k := New(Config{DaysAhead: cfg.DaysAhead, Retention: cfg.Retention})
	var b strings.Builder
	b.WriteString("-- The realtime schema meshcast needs (printed by `meshcast realtime-schema-sql`).\n")
	b.WriteString("-- Apply with: psql -v ON_ERROR_STOP=1 -f this.sql \"$DATABASE_URL\"\n\n")
	fmt.Fprintf(&b, "BEGIN;\nSELECT pg_advisory_xact_lock(%d);\n", LockKey)
	b.WriteString(schemaSQL)
	b.WriteString("COMMIT;\n\n")
	b.WriteString("BEGIN;\n")
	b.WriteString(k.maintenanceSQL("now() AT TIME ZONE 'UTC'"))
	b.WriteString("COMMIT;\n")
	return b.String()
}

// maintenanceSQL is the DO block of one maintenance round with the time
// given by the SQL expression now (a timestamp in UTC).
func (k *Keeper) maintenanceSQL(now string) string {
	var b bytes.Buffer
	err := maintenanceTmpl.Execute(&b, map[string]any{
		"Now":              now,
		"LockKey":          LockKey,
		"DaysAhead":        k.cfg.DaysAhead,
		"Drop":             k.cfg.Retention >= 0,
		"Retention":        shortDuration(k.cfg.Retention),
		"RetentionSeconds": int64(k.cfg.Retention / time.Second),
	})
	if err != nil { // the template and its data are ours
		panic(fmt.Sprintf("rtschema: maintenance template: %v", err))
	}
	return b.String()
}

// shortDuration is d as a flag would give it: 72h rather than 72h0m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// errNoTable is the error of a round on a database without
// realtime.messages.
var errNoTable = errors.New("rtschema: realtime.messages does not exist")
