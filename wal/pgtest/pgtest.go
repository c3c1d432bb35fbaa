// Package pgtest starts throwaway PostgreSQL servers for tests, so that code
// which talks to Postgres is tested against a real one rather than a mock.
//
// A server is initdb'd into a temporary directory and runs with
// wal_level=logical, room for replication slots, trust authentication on
// 127.0.0.1 at a free port, its unix socket in the same directory, and
// durability turned off (fsync, full_page_writes) because tests throw it
// away. The database uses UTF8 and the C locale, so text sorts by bytes.
//
// Start gives a test its own server, which it may Stop, Start again and
// Restart. Shared gives a test its own database on a server shared by the
// whole test binary, which is much cheaper; it needs TestMain to wrap the
// run with Main so the server is stopped at the end:
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m).Run()) }
//
// Postgres must not run as root: when the tests do, the server runs as the
// "postgres" user and its directory belongs to that user. The binaries are
// looked up in $PGTEST_BINDIR, /usr/lib/postgresql/15/bin and $PATH; when
// none has them, the test fails (it does not skip) naming the package to
// install. wal/pglocal runs the servers.
package pgtest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshcast/meshcast/wal/pglocal"
)

// DefaultBinDir is where Debian's postgresql-15 package puts its binaries.
const DefaultBinDir = pglocal.DefaultBinDir

// Option changes how Start configures a server.
type Option func(*config)

type config struct {
	settings [][2]string
}

// WithSetting adds a postgresql.conf setting, e.g.
// WithSetting("max_slot_wal_keep_size", "64MB"). Later settings win.
func WithSetting(name, value string) Option {
	return func(c *config) { c.settings = append(c.settings, [2]string{name, value}) }
}

// Server is a running (or stopped) test Postgres, seen through one
// database. Its methods fail the test that made it.
type Server struct {
	t    testing.TB
	inst *pglocal.Server
	db   string
	// shared handles may not stop or restart the server others use.
	shared bool
}

// Start initdb's a new server, starts it and stops it and removes its
// directory when t ends.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	var c config
	for _, o := range opts {
		o(&c)
	}
	inst, err := newInstance(c)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(inst.Remove)
	return &Server{t: t, inst: inst, db: "postgres"}
}

// newInstance starts a server configured for tests: room for slots and
// connections, small, and without durability.
func newInstance(c config) (*pglocal.Server, error) {
	bin := os.Getenv("PGTEST_BINDIR")
	if bin != "" {
		if _, err := os.Stat(filepath.Join(bin, "postgres")); err != nil {
			bin = "" // not there: the default places, as documented
		}
	}
	conf := []string{
		"max_replication_slots = 20",
		"max_wal_senders = 20",
		"max_connections = 60",
		"shared_buffers = 16MB",
		"fsync = off",
		"full_page_writes = off",
		"log_min_error_statement = panic",
	}
	for _, kv := range c.settings {
		conf = append(conf, kv[0]+" = '"+strings.ReplaceAll(kv[1], "'", "''")+"'")
	}
	return pglocal.Start(context.Background(), pglocal.Config{BinDir: bin, Settings: conf})
}

// URL is a superuser connection URL for the server's database.
func (s *Server) URL() string { return s.inst.URL(s.db) }

// Database is the name of the database URL points at.
func (s *Server) Database() string { return s.db }

// Exec runs sql (one statement when args are given, any number otherwise)
// on a new connection and fails the test on error.
func (s *Server) Exec(sql string, args ...any) {
	s.t.Helper()
	if err := s.exec(sql, args...); err != nil {
		s.t.Fatalf("pgtest: %s: %v", sql, err)
	}
}

func (s *Server) exec(sql string, args ...any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.URL())
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql, args...)
	return err
}

// Stop kills the server as a crash would (immediate shutdown): committed
// transactions survive, recovery runs at the next start.
func (s *Server) Stop() {
	s.t.Helper()
	s.own("Stop")
	s.inst.Stop()
}

// Start starts a stopped server again on the same port and data.
func (s *Server) Start() {
	s.t.Helper()
	s.own("Start")
	if err := s.inst.Start(context.Background()); err != nil {
		s.t.Fatalf("pgtest: %v", err)
	}
}

// Restart is Stop then Start.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	s.Start()
}

func (s *Server) own(what string) {
	if s.shared {
		s.t.Fatalf("pgtest: %s on a shared server; use pgtest.Start for a server of your own", what)
	}
}
