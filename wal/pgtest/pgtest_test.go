package pgtest

import (
	"context"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(Main(m)) }

func query(t *testing.T, url, sql string) string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var s string
	if err := conn.QueryRow(ctx, sql).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestStartRestart(t *testing.T) {
	s := Start(t, WithSetting("max_slot_wal_keep_size", "64MB"))
	if got := query(t, s.URL(), "SHOW wal_level"); got != "logical" {
		t.Fatalf("wal_level = %q", got)
	}
	if got := query(t, s.URL(), "SHOW max_slot_wal_keep_size"); got != "64MB" {
		t.Fatalf("max_slot_wal_keep_size = %q", got)
	}
	s.Exec("CREATE TABLE t (x int)")
	s.Exec("INSERT INTO t VALUES ($1)", 7)
	s.Restart()
	if got := query(t, s.URL(), "SELECT x::text FROM t"); got != "7" {
		t.Fatalf("after restart x = %q", got)
	}
	s.Stop()
	if _, err := pgx.Connect(context.Background(), s.URL()); err == nil {
		t.Fatal("connected to a stopped server")
	}
	s.Start()
	if got := query(t, s.URL(), "SELECT current_user"); got != "postgres" {
		t.Fatalf("user = %q", got)
	}
	if os.Geteuid() == 0 {
		if got := query(t, s.URL(), "SELECT pg_catalog.current_setting('data_directory')"); got == "" {
			t.Fatal("no data directory")
		}
	}
}

func TestSharedDatabases(t *testing.T) {
	a, b := Shared(t), Shared(t)
	if a.Database() == b.Database() {
		t.Fatalf("both got %s", a.Database())
	}
	a.Exec("CREATE TABLE only_a (x int)")
	if got := query(t, b.URL(), "SELECT count(*)::text FROM pg_class WHERE relname = 'only_a'"); got != "0" {
		t.Fatal("databases are not separate")
	}
	// A slot in a's database must not keep it from being dropped.
	a.Exec("SELECT pg_create_logical_replication_slot('pgtest_slot', 'pgoutput')")
}
