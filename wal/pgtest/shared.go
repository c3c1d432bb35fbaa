package pgtest

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshcast/meshcast/wal/pglocal"
)

// shared is the server of Shared. It is package state on purpose: one
// server per test binary is the point, and Main owns its lifetime.
var shared struct {
	mu      sync.Mutex
	main    bool // Main is running the tests
	inst    *pglocal.Server
	err     error
	started bool
	dbs     atomic.Int64
}

// M is what Main returns: a testing.M whose Run also stops the shared
// server. It satisfies goleak's TestingM, so
//
//	goleak.VerifyTestMain(pgtest.Main(m))
//
// checks for leaks after the server is gone.
type M struct{ m *testing.M }

// Main wraps m for TestMain so that tests may use Shared.
func Main(m *testing.M) M {
	shared.mu.Lock()
	shared.main = true
	shared.mu.Unlock()
	return M{m}
}

// Run runs the tests and then stops the shared server, if one started.
func (m M) Run() int {
	code := m.m.Run()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.inst != nil {
		shared.inst.Remove()
		shared.inst = nil
	}
	return code
}

// Shared gives t a fresh database, dropped when t ends, on the server the
// test binary shares (started by the first call). Its Stop, Start and
// Restart fail the test: use Start for a server of your own.
func Shared(t testing.TB) *Server {
	t.Helper()
	shared.mu.Lock()
	if !shared.main {
		shared.mu.Unlock()
		t.Fatal("pgtest: Shared needs TestMain to run the tests through pgtest.Main(m).Run()")
	}
	if !shared.started {
		shared.started = true
		shared.inst, shared.err = newInstance(config{})
	}
	inst, err := shared.inst, shared.err
	shared.mu.Unlock()
	if err != nil {
		t.Fatalf("pgtest: shared server: %v", err)
	}
	root := &Server{t: t, inst: inst, db: "postgres", shared: true}
	db := fmt.Sprintf("t%d", shared.dbs.Add(1))
	// FILE_COPY copies the template's files instead of WAL-logging every
	// page: much faster for a small template.
	root.Exec("CREATE DATABASE " + db + " STRATEGY FILE_COPY")
	t.Cleanup(func() {
		if err := dropDatabase(root, db); err != nil {
			t.Errorf("pgtest: drop database %s: %v", db, err)
		}
	})
	return &Server{t: t, inst: inst, db: db, shared: true}
}

// dropDatabase drops db with its replication slots (a database with slots
// cannot be dropped), ending whatever still uses either.
func dropDatabase(root *Server, db string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, root.URL())
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	// A slot's walsender may take a moment to exit once terminated; poll
	// until no slot of db is left.
	for {
		if _, err := conn.Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots
			WHERE database = $1 AND active_pid IS NOT NULL`, db); err != nil {
			return err
		}
		if _, err := conn.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
			WHERE database = $1 AND active_pid IS NULL`, db); err != nil {
			return err
		}
		var n int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_replication_slots WHERE database = $1`, db).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("slots of %s still active: %w", db, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
	_, err = conn.Exec(ctx, "DROP DATABASE "+db+" WITH (FORCE)")
	return err
}
