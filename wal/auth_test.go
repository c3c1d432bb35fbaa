package wal

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/meshcast/meshcast/wal/pgtest"
)

func newAuthorizer(t *testing.T, pg *pgtest.Server) *Authorizer {
	t.Helper()
	a, err := NewAuthorizer(context.Background(), pg.URL(), "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	return a
}

func TestAuthorizerCheck(t *testing.T) {
	pg := pgtest.Shared(t)
	reader, nobody := "reader_"+pg.Database(), "nobody_"+pg.Database()
	pg.Exec(`CREATE TYPE mood AS ENUM ('sad', 'ok');
		CREATE TABLE todos (id int8 PRIMARY KEY, title text, done bool, due timestamptz, m mood, secret text, n numeric);
		CREATE TABLE test (id int PRIMARY KEY, subject text);
		CREATE TABLE hidden (id int PRIMARY KEY);
		CREATE PUBLICATION supabase_realtime FOR TABLE todos, test`)
	pg.Exec(fmt.Sprintf(`DROP ROLE IF EXISTS %[1]s; DROP ROLE IF EXISTS %[2]s; CREATE ROLE %[1]s; CREATE ROLE %[2]s;
		GRANT SELECT (id, title, done, due, m, n) ON todos TO %[1]s; GRANT SELECT ON test TO %[1]s`, reader, nobody))
	t.Cleanup(func() {
		pg.Exec(fmt.Sprintf("DROP OWNED BY %[1]s, %[2]s; DROP ROLE %[1]s; DROP ROLE %[2]s", reader, nobody))
	})
	a := newAuthorizer(t, pg)
	ctx := context.Background()

	unable := "Unable to subscribe to changes with given parameters. "
	exc := func(params, e string) string {
		return unable + "An exception happened so please check your connect parameters: [" + params + "]. Exception: " + e
	}
	for _, tc := range []struct {
		b    Binding
		role string
		err  string
	}{
		// Supabase's own texts (realtime_channel_test.exs, subscriptions_test.exs).
		{b: Binding{Table: "doesnotexist"}, role: "postgres",
			err: unable + "Please check Realtime is enabled for the given connect parameters: [event: *, schema: public, table: doesnotexist, filters: [], select: nil]"},
		{b: Binding{Table: "test", Filter: "notacolumn=eq.123"}, role: "postgres",
			err: exc(`event: *, schema: public, table: test, filters: [{"notacolumn", "eq", "123", false}], select: nil`,
				"ERROR P0001 (raise_exception) invalid column for filter notacolumn")},
		{b: Binding{Table: "test", Filter: "id=eq.hey"}, role: "postgres",
			err: exc(`event: *, schema: public, table: test, filters: [{"id", "eq", "hey", false}], select: nil`,
				`ERROR 22P02 (invalid_text_representation) invalid input syntax for type integer: "hey"`)},
		{b: Binding{Table: "test", Filter: "subject=foo.hey"}, role: "postgres", err: "Error parsing `filter` params: [\"foo\", \"hey\"]"},
		{b: Binding{Table: "hidden"}, role: "postgres", // not in the publication
			err: unable + "Please check Realtime is enabled for the given connect parameters: [event: *, schema: public, table: hidden, filters: [], select: nil]"},
		{b: Binding{Schema: "nope", Event: "INSERT"}, role: "postgres",
			err: unable + "Please check Realtime is enabled for the given connect parameters: [event: INSERT, schema: nope, table: *, filters: [], select: nil]"},
		{b: Binding{}, role: "postgres",
			err: "No subscription params provided. Please provide at least a `schema` or `table` to subscribe to: %{}"},
		{b: Binding{Event: "*", Schema: "public", Filter: "id=eq.1"}, role: "postgres",
			err: "No subscription params provided. Please provide at least a `schema` or `table` to subscribe to: " +
				`%{"event" => "*", "filter" => "id=eq.1", "schema" => "public"}`},
		{b: Binding{Schema: "public", Select: []string{"id"}}, role: "postgres",
			err: "Column selection is not supported for wildcard subscriptions. Provide an explicit schema and table name."},
		{b: Binding{Table: "todos", Select: []string{"nope"}}, role: "postgres",
			err: exc(`event: *, schema: public, table: todos, filters: [], select: ["nope"]`, "ERROR P0001 (raise_exception) invalid column for select nope")},
		{b: Binding{Table: "todos", Filter: "done=is.maybe"}, role: "postgres",
			err: exc(`event: *, schema: public, table: todos, filters: [{"done", "is", "maybe", false}], select: nil`,
				"ERROR P0001 (raise_exception) invalid value for is filter: must be null, true, false, or unknown")},
		{b: Binding{Table: "todos", Filter: "id=is.true"}, role: "postgres",
			err: exc(`event: *, schema: public, table: todos, filters: [{"id", "is", "true", false}], select: nil`,
				"ERROR P0001 (raise_exception) is true filter requires a boolean column, got bigint")},
		{b: Binding{Table: "todos", Filter: "id=like.1%"}, role: "postgres",
			err: exc(`event: *, schema: public, table: todos, filters: [{"id", "like", "1%", false}], select: nil`,
				"ERROR P0001 (raise_exception) operator like requires a text-compatible column type, got bigint")},
		{b: Binding{Table: "todos", Filter: "title=match.(a"}, role: "postgres",
			err: exc(`event: *, schema: public, table: todos, filters: [{"title", "match", "(a", false}], select: nil`,
				"ERROR P0001 (raise_exception) invalid regular expression for match filter: invalid regular expression: parentheses () not balanced")},
		{b: Binding{Table: "todos", Filter: "id=in.(" + strings.Repeat("1,", 100) + "1)"}, role: "postgres",
			err: "ERROR P0001 (raise_exception) too many values for `in` filter. Maximum 100"},
		{b: Binding{Table: "todos", Filter: "due=lt.soon"}, role: "postgres",
			err: `ERROR 22007 (invalid_datetime_format) invalid input syntax for type timestamp with time zone: "soon"`},
		{b: Binding{Table: "todos", Filter: "m=lt.ok"}, role: "postgres",
			err: "operator lt is not supported on column type mood (meshcast cannot evaluate this filter)"},
		// Privileges: a role without SELECT is refused; a column it may not
		// read cannot be filtered on.
		{b: Binding{Table: "todos"}, role: nobody,
			err: exc(`event: *, schema: public, table: todos, filters: [], select: nil`, "ERROR 42501 (insufficient_privilege) permission denied for table todos")},
		{b: Binding{Table: "todos", Filter: "secret=eq.x"}, role: reader,
			err: exc(`event: *, schema: public, table: todos, filters: [{"secret", "eq", "x", false}], select: nil`,
				"ERROR P0001 (raise_exception) invalid column for filter secret")},
		{b: Binding{Table: "todos"}, role: "ghost",
			err: exc(`event: *, schema: public, table: todos, filters: [], select: nil`, `ERROR 42704 (undefined_object) role "ghost" does not exist`)},
	} {
		_, err := a.Check(ctx, tc.b, tc.role, "{}")
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%+v as %s:\n got %v\nwant %s", tc.b, tc.role, err, tc.err)
		}
	}

	// Accepted bindings: values normalized, columns limited to what the
	// role reads.
	sub, err := a.Check(ctx, Binding{Event: "update", Table: "todos",
		Filter: `due=gt.2024-05-01 12:00+02,id=in.(1,"2"),n=eq.1.50,m=neq.sad,title=ilike.A%`}, reader, `{"sub":"u1"}`)
	if err != nil {
		t.Fatal(err)
	}
	var vals []string
	for _, f := range sub.Filters {
		vals = append(vals, f.Value)
	}
	if got := strings.Join(vals, " | "); got != `2024-05-01T10:00:00+00:00 | {"1","2"} | 1.50 | sad | A%` {
		t.Errorf("normalized values: %s", got)
	}
	if sub.Event != Update || sub.Schema != "public" || sub.Table != "todos" || sub.Role != reader || sub.Claims != `{"sub":"u1"}` {
		t.Errorf("subscription %+v", sub)
	}
	if want := []string{"id", "title", "done", "due", "m", "n"}; !slices.Equal(sub.Columns, want) {
		t.Errorf("columns %v, want %v", sub.Columns, want)
	}
	// select's columns in the table's order, each once, with the key.
	sub, err = a.Check(ctx, Binding{Table: "todos", Select: []string{"title", "id", "title"}}, "postgres", "{}")
	if err != nil || !slices.Equal(sub.Columns, []string{"id", "title"}) {
		t.Errorf("select: %v %v", sub, err)
	}
	if sub, err = a.Check(ctx, Binding{Schema: "public"}, reader, "{}"); err != nil || sub.Table != "*" || sub.Columns != nil {
		t.Errorf("schema-wide: %+v %v", sub, err)
	}
}

func TestAuthorizeRLS(t *testing.T) {
	pg := pgtest.Shared(t)
	role := "authenticated_" + pg.Database()
	pg.Exec(fmt.Sprintf(`
		CREATE SCHEMA auth;
		CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $$
			SELECT coalesce(nullif(current_setting('request.jwt.claim.sub', true), ''),
				(nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub'))::uuid $$;
		DROP ROLE IF EXISTS %[1]s; CREATE ROLE %[1]s;
		GRANT USAGE ON SCHEMA auth TO %[1]s;
		CREATE TABLE notes (id int PRIMARY KEY, user_id uuid, body text);
		CREATE TABLE open (id int PRIMARY KEY);
		GRANT SELECT ON notes, open TO %[1]s;
		ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
		CREATE POLICY own ON notes FOR SELECT TO %[1]s USING (user_id = auth.uid());
		CREATE PUBLICATION supabase_realtime FOR ALL TABLES`, role))
	t.Cleanup(func() { pg.Exec(fmt.Sprintf("DROP OWNED BY %[1]s; DROP ROLE %[1]s", role)) })
	pg.Exec("SELECT pg_create_logical_replication_slot('rls_" + pg.Database() + "', 'pgoutput')")
	alice, bob := "a0000000-0000-0000-0000-000000000001", "b0000000-0000-0000-0000-000000000002"
	pg.Exec(fmt.Sprintf(`INSERT INTO notes VALUES (1, '%[1]s', 'a1'), (2, '%[2]s', 'b1'), (3, '%[1]s', 'a2');
		INSERT INTO open VALUES (1); UPDATE notes SET body = 'b2' WHERE id = 2; DELETE FROM notes WHERE id = 3`, alice, bob))

	conn := connect(t, pg.URL())
	txs := slotTransactions(t, conn, "rls_"+pg.Database(), "supabase_realtime")
	changes := txs[0].Changes // one transaction
	a := newAuthorizer(t, pg)
	ctx := context.Background()
	m := NewMatcher()
	claims := func(sub string) string { return fmt.Sprintf(`{"sub":%q,"role":%q}`, sub, role) }
	for i, user := range []string{alice, bob} {
		for j, table := range []string{"notes", "open"} {
			sub, err := a.Check(ctx, Binding{Table: table}, role, claims(user))
			if err != nil {
				t.Fatal(err)
			}
			sub.ID, sub.Node = uint64(10*i+j), "n"
			m.Add(sub)
		}
	}
	hits := make([][]*Subscription, len(changes))
	for i, c := range changes {
		hits[i] = m.Match(c, nil)
	}
	before := a.queries.Load()
	if err := a.Authorize(ctx, changes, hits); err != nil {
		t.Fatal(err)
	}
	if n := a.queries.Load() - before; n != 2 {
		t.Errorf("%d RLS queries for 2 distinct claims, want 2", n)
	}
	var got []string
	for i, c := range changes {
		for _, s := range hits[i] {
			got = append(got, fmt.Sprintf("%v %s %s->%d", c.Kind, c.Table, c.key0(), s.ID))
		}
	}
	want := []string{
		"INSERT notes 1->0", // alice's row, alice only
		"INSERT notes 2->10",
		// Row 3 is checked as it was committed: alice's, though deleted since.
		"INSERT notes 3->0",
		"INSERT open 1->1", "INSERT open 1->11", // no RLS: both
		"UPDATE notes 2->10",
		"DELETE notes 3->0", "DELETE notes 3->10", // deletes are not checked...
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("visible:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// ...and carry only the primary key.
	del := changes[len(changes)-1]
	var old map[string]any
	json.Unmarshal([]byte(recordJSON(t, del)), &old)
	if len(old) != 1 || old["id"] != float64(3) {
		t.Errorf("delete old_record %v, want the key only", old)
	}
}

// key0 is the first column's value, or the old one's for a delete.
func (c *Change) key0() string {
	if c.Kind == Delete {
		return string(c.OldRecord[0])
	}
	return string(c.Record[0])
}

// BenchmarkAuthorizeRLS measures the RLS check of one batch: 50 inserts on
// an owner-policy table, each matched by the subscriptions of 100 distinct
// users (5,000 candidate deliveries), which costs 100 round trips.
func BenchmarkAuthorizeRLS(b *testing.B) {
	pg := pgtest.Shared(b)
	role := "bench_" + pg.Database()
	pg.Exec(fmt.Sprintf(`
		CREATE SCHEMA auth;
		CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $$
			SELECT (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')::uuid $$;
		DROP ROLE IF EXISTS %[1]s; CREATE ROLE %[1]s; GRANT USAGE ON SCHEMA auth TO %[1]s;
		CREATE TABLE notes (id int PRIMARY KEY, user_id uuid, body text);
		GRANT SELECT ON notes TO %[1]s;
		ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
		CREATE POLICY own ON notes FOR SELECT TO %[1]s USING (user_id = auth.uid());
		CREATE PUBLICATION supabase_realtime FOR ALL TABLES`, role))
	b.Cleanup(func() { pg.Exec(fmt.Sprintf("DROP OWNED BY %[1]s; DROP ROLE %[1]s", role)) })
	slot := "bench_" + pg.Database()
	pg.Exec("SELECT pg_create_logical_replication_slot('" + slot + "', 'pgoutput')")
	const users, rows = 100, 50
	user := func(i int) string { return fmt.Sprintf("00000000-0000-0000-0000-%012d", i) }
	pg.Exec(fmt.Sprintf("INSERT INTO notes SELECT i, ('00000000-0000-0000-0000-' || lpad((i %% %d)::text, 12, '0'))::uuid, 'x' FROM generate_series(1, %d) i", users, rows))
	changes := slotTransactions(b, connect(b, pg.URL()), slot, "supabase_realtime")[0].Changes
	a, err := NewAuthorizer(context.Background(), pg.URL(), "")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(a.Close)
	m := NewMatcher()
	for i := range users {
		m.Add(&Subscription{ID: uint64(i), Node: "n", Schema: "public", Table: "notes", Role: role,
			Claims: fmt.Sprintf(`{"sub":%q,"role":%q}`, user(i), role)})
	}
	hits := make([][]*Subscription, len(changes))
	ctx := context.Background()
	queries := a.queries.Load()
	delivered := 0
	b.ResetTimer()
	for b.Loop() {
		for i, c := range changes {
			hits[i] = m.Match(c, hits[i][:0])
		}
		if err := a.Authorize(ctx, changes, hits); err != nil {
			b.Fatal(err)
		}
		delivered = 0
		for _, h := range hits {
			delivered += len(h)
		}
	}
	if delivered != rows {
		b.Fatalf("%d deliveries, want %d (each row to its owner)", delivered, rows)
	}
	b.ReportMetric(float64(a.queries.Load()-queries)/float64(b.N), "queries/op")
}

// BenchmarkCheck measures a join's check of one filtered binding by a role
// with column privileges: what a burst of joins costs the database.
func BenchmarkCheck(b *testing.B) {
	pg := pgtest.Shared(b)
	role := "bench_check_" + pg.Database()
	pg.Exec(fmt.Sprintf(`DROP ROLE IF EXISTS %[1]s; CREATE ROLE %[1]s;
		CREATE TABLE todos (id int8 PRIMARY KEY, title text, done bool);
		GRANT SELECT ON todos TO %[1]s;
		CREATE PUBLICATION supabase_realtime FOR ALL TABLES`, role))
	b.Cleanup(func() { pg.Exec(fmt.Sprintf("DROP OWNED BY %[1]s; DROP ROLE %[1]s", role)) })
	a, err := NewAuthorizer(context.Background(), pg.URL(), "")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(a.Close)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := a.Check(ctx, Binding{Table: "todos", Filter: "id=eq.5"}, role, `{"sub":"u"}`); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAuthorizeRLSTeams is meshbench's rls shape in one batch: 200
// inserts of 5 teams, 500 users each in one team (a policy reading the
// members table), so each insert reaches 100 users and the batch costs
// 500 queries.
func BenchmarkAuthorizeRLSTeams(b *testing.B) {
	pg := pgtest.Shared(b)
	role := "bench_teams_" + pg.Database()
	pg.Exec(fmt.Sprintf(`
		CREATE SCHEMA auth;
		CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $$
			SELECT (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')::uuid $$;
		DROP ROLE IF EXISTS %[1]s; CREATE ROLE %[1]s; GRANT USAGE ON SCHEMA auth TO %[1]s;
		CREATE TABLE members (user_id uuid PRIMARY KEY, team int NOT NULL);
		CREATE TABLE rows (id int PRIMARY KEY, team int NOT NULL, pad text);
		GRANT SELECT ON rows, members TO %[1]s;
		ALTER TABLE rows ENABLE ROW LEVEL SECURITY;
		CREATE POLICY team_rows ON rows FOR SELECT TO %[1]s
			USING (team IN (SELECT team FROM members WHERE user_id = (SELECT auth.uid())));
		CREATE PUBLICATION supabase_realtime FOR ALL TABLES;
		INSERT INTO members SELECT ('00000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid, i %% 5 FROM generate_series(0, 499) i`, role))
	b.Cleanup(func() { pg.Exec(fmt.Sprintf("DROP OWNED BY %[1]s; DROP ROLE %[1]s", role)) })
	slot := "teams_" + pg.Database()
	pg.Exec("SELECT pg_create_logical_replication_slot('" + slot + "', 'pgoutput')")
	const users, rows = 500, 200
	pg.Exec(fmt.Sprintf("INSERT INTO rows SELECT i, i %% 5, repeat('x', 400) FROM generate_series(1, %d) i", rows))
	changes := slotTransactions(b, connect(b, pg.URL()), slot, "supabase_realtime")[0].Changes
	a, err := NewAuthorizer(context.Background(), pg.URL(), "")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(a.Close)
	m := NewMatcher()
	for i := range users {
		m.Add(&Subscription{ID: uint64(i), Node: "n", Schema: "public", Table: "rows", Role: role,
			Claims: fmt.Sprintf(`{"sub":"00000000-0000-0000-0000-%012d","role":%q}`, i, role)})
	}
	hits := make([][]*Subscription, len(changes))
	ctx := context.Background()
	delivered := 0
	for b.Loop() {
		for i, c := range changes {
			hits[i] = m.Match(c, hits[i][:0])
		}
		if err := a.Authorize(ctx, changes, hits); err != nil {
			b.Fatal(err)
		}
		delivered = 0
		for _, h := range hits {
			delivered += len(h)
		}
	}
	if delivered != rows*users/5 {
		b.Fatalf("%d deliveries, want %d", delivered, rows*users/5)
	}
}
