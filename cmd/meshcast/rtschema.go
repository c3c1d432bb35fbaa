package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/meshcast/meshcast/edge"
	"github.com/meshcast/meshcast/wal/rtschema"
)

// schemaSQLCommand names the subcommand that prints the realtime schema's
// SQL for a DBA.
const schemaSQLCommand = "realtime-schema-sql"

// subcommand returns the subcommand args[0] names, or nil when args are a
// node's flags.
func subcommand(args []string) func(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == schemaSQLCommand {
		return printSchemaSQL
	}
	return nil
}

// printSchemaSQL prints what --manage-realtime-schema does, as SQL.
func printSchemaSQL(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("meshcast "+schemaSQLCommand, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var s schemaFlags
	s.register(fs)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: meshcast %s [flags] > realtime.sql\n\n"+
			"Prints the SQL that a node with --manage-realtime-schema runs: Supabase's realtime schema,\n"+
			"created where missing, then one round of daily partitions of realtime.messages (run that\n"+
			"block again at least daily, e.g. hourly from pg_cron). See README.\n\nFlags:\n", schemaSQLCommand)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if err := s.check(); err != nil {
		return err
	}
	_, err := io.WriteString(stdout, rtschema.SQL(s.config()))
	return err
}

// schemaFlags are the flags of the realtime schema, for the node and the
// subcommand alike.
type schemaFlags struct {
	manage    bool
	retention time.Duration
	daysAhead int
}

func (s *schemaFlags) register(fs *flag.FlagSet) {
	fs.DurationVar(&s.retention, "realtime-retention", rtschema.DefaultRetention, "realtime schema: drop a daily partition of realtime.messages, with its rows, once its whole day (UTC) ended this long ago; yesterday's and today's always stay; negative: never drop")
	fs.IntVar(&s.daysAhead, "realtime-partitions-ahead", rtschema.DefaultDaysAhead, "realtime schema: days after today (UTC) whose partition of realtime.messages is made ahead of time (at least 1)")
}

func (s *schemaFlags) check() error {
	if s.retention == 0 {
		return errors.New("--realtime-retention 0 would drop yesterday's rows; give a duration, or a negative one to keep every partition")
	}
	if s.daysAhead < 1 {
		return errors.New("--realtime-partitions-ahead must be at least 1 (tomorrow's partition must exist before midnight)")
	}
	return nil
}

func (s *schemaFlags) config() rtschema.Config {
	return rtschema.Config{DaysAhead: s.daysAhead, Retention: s.retention}
}

// schemaKeeper owns the realtime schema's maintenance: its pool and the
// goroutine of rtschema.Keeper.Maintain.
type schemaKeeper struct {
	pool   *pgxpool.Pool
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// newSchemaKeeper makes sure the realtime schema of --database-url exists
// (a first try before the node serves, then in the background until it
// succeeds) and starts keeping its partitions; with
// --manage-realtime-schema=false it only warns about what is missing, and
// returns nil.
func newSchemaKeeper(o *options, srv *edge.Server, log *slog.Logger) (*schemaKeeper, error) {
	cfg, err := pgxpool.ParseConfig(o.databaseURL)
	if err != nil {
		return nil, fmt.Errorf("--database-url: %w", err)
	}
	// One connection at a time, closed between the hourly rounds.
	cfg.MaxConns = 1
	cfg.MaxConnIdleTime = time.Minute
	cfg.ConnConfig.RuntimeParams["application_name"] = "meshcast-rtschema"
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		return nil, fmt.Errorf("--database-url: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if !o.schema.manage {
		defer pool.Close()
		missing, err := rtschema.Missing(ctx, pool)
		switch {
		case err != nil:
			log.Warn("realtime schema: not managed (--manage-realtime-schema=false), and could not be checked", "err", err)
		case len(missing) > 0:
			log.Warn("realtime schema: not managed (--manage-realtime-schema=false) and incomplete: apply `meshcast "+schemaSQLCommand+"`",
				"missing", strings.Join(missing, "; "))
		}
		return nil, nil
	}
	set := metrics.NewSet()
	sc := o.schema.config()
	sc.Logger, sc.Metrics = log, set
	k := rtschema.New(sc)
	// The node serves without the schema (all else works) and Maintain
	// tries again: a database that is down or a privilege granted later
	// must not keep it from starting.
	if err := k.Ensure(ctx, pool); err != nil {
		log.Error("realtime schema: incomplete, trying again in the background; give the URL's user what README's Schema management says, or run with --manage-realtime-schema=false and apply `meshcast "+schemaSQLCommand+"`", "err", err)
	}
	srv.AddMetrics(set)
	mctx, mcancel := context.WithCancel(context.Background())
	s := &schemaKeeper{pool: pool, cancel: mcancel}
	s.wg.Add(1)
	go func() { defer s.wg.Done(); k.Maintain(mctx, pool) }()
	return s, nil
}

// close stops the maintenance and closes the pool; nil is a keeper that
// does nothing.
func (s *schemaKeeper) close() {
	if s == nil {
		return
	}
	s.cancel()
	s.wg.Wait()
	s.pool.Close()
}
