package rtschema

import (
	"context"
	_ "embed"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshcast/meshcast/wal/pgtest"
)

//go:embed testdata/supabase.sql
var supabaseSQL string

// supabaseDB is a fresh database holding Supabase's realtime schema with
// an app's policies, and the partitions Supabase's janitor keeps on
// testNow's day (yesterday to today + 3, owned by supabase_realtime_admin).
func supabaseDB(t *testing.T) (*pgtest.Server, *conn) {
	t.Helper()
	pg := pgtest.Shared(t)
	c := connect(t, pg.URL())
	appRoles(t, c)
	c.exec(t, supabaseSQL)
	for d := testNow.Truncate(day).Add(-day); !d.After(testNow.AddDate(0, 0, 3)); d = d.AddDate(0, 0, 1) {
		name := partitionName(d)
		c.exec(t, "CREATE TABLE realtime."+name+" PARTITION OF realtime.messages FOR VALUES FROM ('"+
			d.Format(time.DateOnly)+"') TO ('"+d.AddDate(0, 0, 1).Format(time.DateOnly)+"')")
		c.exec(t, "ALTER TABLE realtime."+name+" OWNER TO supabase_realtime_admin")
	}
	return pg, c
}

// A database that already holds Supabase's realtime schema, its policies
// and its partitions comes out of Ensure and a maintenance round exactly
// as it went in.
func TestEnsureChangesNothingOfSupabase(t *testing.T) {
	pg, c := supabaseDB(t)
	before := catalog(t, pg.URL())
	if len(before) < 40 {
		t.Fatalf("the fixture's catalog is too small to mean anything: %d lines", len(before))
	}
	if missing, err := Missing(context.Background(), c); err != nil || len(missing) > 0 {
		t.Fatalf("Missing on Supabase's schema: %v, %v", missing, err)
	}
	now := testNow
	k := keeper(&now, Config{})
	if err := k.Ensure(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	if r, err := k.MaintainOnce(context.Background(), c); err != nil || len(r.Created)+len(r.Dropped) > 0 {
		t.Fatalf("maintenance round: %+v, %v", r, err)
	}
	sameCatalog(t, "Supabase's schema before and after Ensure", before, catalog(t, pg.URL()))

	// A day later the new partition belongs to the table's owner, as
	// Supabase's janitor makes it.
	now = now.AddDate(0, 0, 1)
	if r, err := k.MaintainOnce(context.Background(), c); err != nil || !slices.Equal(r.Created, []string{"messages_2026_08_14"}) {
		t.Fatalf("next day's round: %+v, %v", r, err)
	}
	if got := c.value(t, "SELECT pg_get_userbyid(relowner)::text FROM pg_class WHERE oid = 'realtime.messages_2026_08_14'::regclass"); got != "supabase_realtime_admin" {
		t.Errorf("new partition owned by %s", got)
	}
}

// On a fresh database Ensure creates the schema with Supabase's grants to
// the roles that exist.
func TestEnsureGrants(t *testing.T) {
	_, c := ensured(t)
	for _, q := range []struct{ sql, want string }{
		{`SELECT string_agg(r || ':' || has_schema_privilege(r, 'realtime', 'USAGE')::text
			|| has_table_privilege(r, 'realtime.messages', 'SELECT')::text
			|| has_table_privilege(r, 'realtime.messages', 'INSERT')::text
			|| has_table_privilege(r, 'realtime.messages', 'UPDATE')::text
			|| has_table_privilege(r, 'realtime.messages', 'DELETE')::text, ' ' ORDER BY r)
			FROM unnest(ARRAY['anon', 'authenticated', 'service_role']) AS r`,
			"anon:truetruetruetruefalse authenticated:truetruetruetruefalse service_role:truetruetruetruefalse"},
		{"SELECT relrowsecurity::text FROM pg_class WHERE oid = 'realtime.messages'::regclass", "true"},
		{"SELECT pg_get_partkeydef('realtime.messages'::regclass)", "RANGE (inserted_at)"},
		{"SELECT pg_get_indexdef('realtime.messages_inserted_at_topic_index'::regclass)",
			"CREATE INDEX messages_inserted_at_topic_index ON ONLY realtime.messages USING btree (inserted_at DESC, topic) WHERE ((extension = 'broadcast'::text) AND (private IS TRUE))"},
	} {
		if got := c.value(t, q.sql); got != q.want {
			t.Errorf("%s\n = %s\nwant %s", q.sql, got, q.want)
		}
	}
}

// Without Supabase's roles Ensure creates everything, grants nothing, and
// creates no role; the grants are the DBA's to give.
func TestEnsureWithoutAppRoles(t *testing.T) {
	pg := pgtest.Start(t)
	c := connect(t, pg.URL())
	if err := keeper(nil, Config{}).Ensure(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	if got := c.value(t, "SELECT count(*)::text FROM pg_roles WHERE rolname IN ('anon', 'authenticated', 'service_role')"); got != "0" {
		t.Errorf("%s app roles exist", got)
	}
	if got := c.value(t, "SELECT coalesce(relacl::text, 'none') FROM pg_class WHERE oid = 'realtime.messages'::regclass"); got != "none" {
		t.Errorf("grants on realtime.messages: %s", got)
	}
	c.exec(t, `SELECT realtime.send('{}', 'e', 'room')`) // the owner may
	if got := c.value(t, "SELECT count(*)::text FROM realtime.messages"); got != "1" {
		t.Errorf("%s messages", got)
	}
}

// The script of SQL, applied with psql to a fresh database, makes the
// same objects and partitions as Ensure and a round at the same time; and
// again on either, or on Supabase's schema, it changes nothing.
func TestSQLAppliedWithPsql(t *testing.T) {
	psql := filepath.Join(pgtest.DefaultBinDir, "psql")
	if _, err := os.Stat(psql); err != nil {
		if psql, err = exec.LookPath("psql"); err != nil {
			t.Fatal("psql not found: install Debian's postgresql-client-15")
		}
	}
	now := testNow
	k := keeper(&now, Config{DaysAhead: 2, Retention: 30 * time.Hour})
	script := SQL(Config{DaysAhead: 2, Retention: 30 * time.Hour})
	// The script's clock is the database's; here it is testNow's.
	atTestNow := strings.Replace(script, "now() AT TIME ZONE 'UTC'", "'"+testNow.Format(time.DateTime)+"'::timestamp", 1)
	if atTestNow == script {
		t.Fatal("the script does not read the time as expected")
	}
	apply := func(url, sql string) {
		t.Helper()
		cmd := exec.Command(psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url)
		cmd.Stdin = strings.NewReader(sql)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("psql: %v\n%s", err, out)
		}
	}

	byEnsure, c := ensuredAt(t, &now, k)
	byPsql := pgtest.Shared(t)
	apply(byPsql.URL(), atTestNow)
	want := catalog(t, byEnsure.URL())
	sameCatalog(t, "Ensure and the script", want, catalog(t, byPsql.URL()))
	if got := partitionsOf(t, c); !slices.Equal(got, []string{"messages_2026_08_09", "messages_2026_08_10", "messages_2026_08_11", "messages_2026_08_12"}) {
		t.Errorf("partitions: %v", got)
	}

	apply(byPsql.URL(), atTestNow)
	sameCatalog(t, "the script applied twice", want, catalog(t, byPsql.URL()))

	sb, _ := supabaseDB(t)
	before := catalog(t, sb.URL())
	apply(sb.URL(), strings.Replace(script, "now() AT TIME ZONE 'UTC'", "'"+testNow.Format(time.DateTime)+"'::timestamp", 1))
	sameCatalog(t, "Supabase's schema after the script", before, catalog(t, sb.URL()))
}

func ensuredAt(t *testing.T, now *time.Time, k *Keeper) (*pgtest.Server, *conn) {
	t.Helper()
	pg := pgtest.Shared(t)
	c := connect(t, pg.URL())
	appRoles(t, c)
	if err := k.Ensure(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	return pg, c
}

// Nodes starting together: Ensure and maintenance rounds at once on one
// fresh database all succeed, and each object and partition is made once.
func TestConcurrentEnsure(t *testing.T) {
	pg := pgtest.Shared(t)
	appRoles(t, connect(t, pg.URL()))
	now := testNow
	const n = 3
	conns := make([]*conn, n)
	for i := range conns {
		conns[i] = connect(t, pg.URL())
	}
	keepers := make([]*Keeper, n)
	for i := range keepers {
		keepers[i] = keeper(&now, Config{})
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = keepers[i].Ensure(context.Background(), conns[i]) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Ensure %d: %v", i, err)
		}
	}
	objects, created := 0, 0
	for _, k := range keepers {
		objects += int(k.m.objects.Get())
		created += int(k.m.created.Get())
	}
	if objects != 7 || created != 5 {
		t.Errorf("objects created %d (want 7 once), partitions %d (want 5 once)", objects, created)
	}

	// Two days on, rounds at once: the new partitions and drops happen once.
	now = now.AddDate(0, 0, 5)
	rounds := make([]Round, n)
	for i := range n {
		wg.Go(func() { rounds[i], errs[i] = keepers[i].MaintainOnce(context.Background(), conns[i]) })
	}
	wg.Wait()
	var made, dropped []string
	for i := range n {
		if errs[i] != nil {
			t.Errorf("round %d: %v", i, errs[i])
		}
		made = append(made, rounds[i].Created...)
		dropped = append(dropped, rounds[i].Dropped...)
	}
	slices.Sort(made)
	slices.Sort(dropped)
	if !slices.Equal(made, []string{"messages_2026_08_14", "messages_2026_08_15", "messages_2026_08_16", "messages_2026_08_17", "messages_2026_08_18"}) ||
		!slices.Equal(dropped, []string{"messages_2026_08_09", "messages_2026_08_10", "messages_2026_08_11"}) {
		t.Errorf("rounds at once created %v, dropped %v", made, dropped)
	}
}

// partitionsOf lists realtime.messages's partitions in url's database.
func partitionsOf(t *testing.T, c *conn) []string {
	t.Helper()
	rows, err := c.Query(context.Background(), `SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		WHERE i.inhparent = 'realtime.messages'::regclass ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// README shows the script with the default flags as it is.
func TestREADMEShowsTheSQL(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "```sql\n"+SQL(Config{})+"```\n") {
		t.Error("README's SQL differs from SQL(Config{}): paste the output of `meshcast realtime-schema-sql` into README")
	}
}
