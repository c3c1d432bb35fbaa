package rtschema

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/goleak"

	"github.com/meshcast/meshcast/wal/pgtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(pgtest.Main(m)) }

// testNow is the clock of the tests that need a fixed day: partitions
// messages_2026_08_09 (yesterday) to messages_2026_08_13 (today + 3).
var testNow = time.Date(2026, 8, 10, 12, 0, 0, 0, time.UTC)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// keeper is a Keeper on the clock *now (the tests move it).
func keeper(now *time.Time, cfg Config) *Keeper {
	if now != nil {
		cfg.Now = func() time.Time { return *now }
	}
	cfg.Logger = quiet()
	return New(cfg)
}

// conn is a connection to url that collects the warnings Postgres sends
// it, closed when t ends.
type conn struct {
	*pgx.Conn
	mu       sync.Mutex
	warnings []string
}

func connect(t testing.TB, url string) *conn {
	t.Helper()
	c := &conn{}
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
		c.mu.Lock()
		defer c.mu.Unlock()
		if n.Severity == "WARNING" {
			c.warnings = append(c.warnings, n.Message)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if c.Conn, err = pgx.ConnectConfig(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// takeWarnings returns the warnings received since the last call.
func (c *conn) takeWarnings() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := c.warnings
	c.warnings = nil
	return w
}

func (c *conn) exec(t testing.TB, sql string, args ...any) {
	t.Helper()
	if _, err := c.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// value is the one value sql returns, as text.
func (c *conn) value(t *testing.T, sql string, args ...any) string {
	t.Helper()
	var s *string
	if err := c.QueryRow(context.Background(), sql, args...).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	if s == nil {
		return "<null>"
	}
	return *s
}

// appRoles creates Supabase's roles on the server if they are missing:
// roles belong to the whole server, which the tests of this binary
// share.
func appRoles(t testing.TB, c *conn) {
	t.Helper()
	c.exec(t, `DO $$
	DECLARE r text;
	BEGIN
	  FOREACH r IN ARRAY ARRAY['anon', 'authenticated', 'service_role', 'supabase_realtime_admin'] LOOP
	    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r) THEN
	      EXECUTE format('CREATE ROLE %I NOLOGIN', r);
	    END IF;
	  END LOOP;
	END $$`)
}

// catalogQueries describe everything of schema realtime (and policies on
// its tables) that a change by Ensure or Maintain would show in.
var catalogQueries = []string{
	`SELECT 'schema', nspname, pg_get_userbyid(nspowner), coalesce(nspacl::text, '') FROM pg_namespace WHERE nspname = 'realtime'`,
	`SELECT 'relation', c.relname, c.relkind::text, pg_get_userbyid(c.relowner), coalesce(c.relacl::text, ''),
		c.relrowsecurity::text, c.relforcerowsecurity::text, c.relpersistence::text,
		coalesce(pg_get_partkeydef(c.oid), ''), coalesce(pg_get_expr(c.relpartbound, c.oid), '')
		FROM pg_class c WHERE c.relnamespace = 'realtime'::regnamespace`,
	`SELECT 'column', c.relname, a.attnum::text, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull::text,
		coalesce(pg_get_expr(d.adbin, d.adrelid), ''), coalesce(a.attacl::text, '')
		FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
		LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
		WHERE c.relnamespace = 'realtime'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped`,
	`SELECT 'constraint', conrelid::regclass::text, conname, pg_get_constraintdef(oid), convalidated::text
		FROM pg_constraint WHERE connamespace = 'realtime'::regnamespace`,
	`SELECT 'index', indexrelid::regclass::text, pg_get_indexdef(indexrelid)
		FROM pg_index WHERE indrelid IN (SELECT oid FROM pg_class WHERE relnamespace = 'realtime'::regnamespace)`,
	`SELECT 'policy', tablename::text, policyname::text, permissive, roles::text, cmd, coalesce(qual, ''), coalesce(with_check, '')
		FROM pg_policies WHERE schemaname = 'realtime'`,
	`SELECT 'function', p.oid::regprocedure::text, pg_get_userbyid(p.proowner), coalesce(p.proacl::text, ''), pg_get_functiondef(p.oid)
		FROM pg_proc p WHERE p.pronamespace = 'realtime'::regnamespace`,
	`SELECT 'trigger', tgrelid::regclass::text, tgname FROM pg_trigger
		WHERE tgrelid IN (SELECT oid FROM pg_class WHERE relnamespace = 'realtime'::regnamespace)`,
}

// catalog is the sorted description of schema realtime in url's
// database; equal catalogs mean nothing of it differs.
func catalog(t *testing.T, url string) []string {
	t.Helper()
	c := connect(t, url)
	var lines []string
	for _, q := range catalogQueries {
		q := "SELECT q::text FROM (" + q + ") AS q ORDER BY 1"
		rows, err := c.Query(context.Background(), q)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		got, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, got...)
	}
	return lines
}

// sameCatalog fails t with the lines that differ.
func sameCatalog(t *testing.T, what string, want, got []string) {
	t.Helper()
	in := func(s []string) map[string]bool {
		m := map[string]bool{}
		for _, l := range s {
			m[l] = true
		}
		return m
	}
	w, g := in(want), in(got)
	var diff []string
	for _, l := range want {
		if !g[l] {
			diff = append(diff, "- "+l)
		}
	}
	for _, l := range got {
		if !w[l] {
			diff = append(diff, "+ "+l)
		}
	}
	if len(diff) > 0 || len(want) != len(got) {
		t.Errorf("%s: the catalogs differ:\n%s", what, strings.Join(diff, "\n"))
	}
}
