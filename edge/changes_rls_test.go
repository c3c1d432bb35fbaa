package edge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/jackc/pgx/v5"

	"github.com/meshcast/meshcast/wal/pgtest"
)

// rlsSchema is Supabase's setup in small: the anon and authenticated roles
// (cluster-wide, so created only if missing), auth.uid() reading the JWT's
// sub from request.jwt.claims as Supabase defines it, and a notes table
// whose rows only their owner may read.
const rlsSchema = `
DO $$ BEGIN CREATE ROLE anon NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
DO $$ BEGIN CREATE ROLE authenticated NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
CREATE SCHEMA auth;
CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $$
	SELECT coalesce(nullif(current_setting('request.jwt.claim.sub', true), ''),
		(nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub'))::uuid $$;
GRANT USAGE ON SCHEMA auth TO anon, authenticated;
CREATE TABLE notes (id int8 PRIMARY KEY, user_id uuid NOT NULL, body text);
ALTER TABLE notes REPLICA IDENTITY FULL;
ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
CREATE POLICY owner ON notes FOR SELECT TO authenticated USING (user_id = auth.uid());
GRANT SELECT ON notes TO authenticated;
CREATE TABLE secrets (id int8 PRIMARY KEY, x text);
CREATE TABLE marker (id int PRIMARY KEY);
GRANT SELECT ON marker TO anon, authenticated;
CREATE PUBLICATION supabase_realtime FOR ALL TABLES;
`

const (
	aliceID = "a0000000-0000-0000-0000-000000000001"
	bobID   = "b0000000-0000-0000-0000-000000000002"
)

// userToken is a JWT for role with sub, valid for ttl.
func userToken(t *testing.T, role, sub string, ttl time.Duration) string {
	t.Helper()
	return mintWith(t, testSecret, jwt.MapClaims{"role": role, "sub": sub, "exp": time.Now().Add(ttl).Unix()})
}

// rowOf summarizes a change as "KIND id body" (the old row for a delete),
// and the keys of the row it carries.
func rowOf(ch changeOf) string {
	row := ch.Data.Record
	if ch.Data.Type == "DELETE" {
		row = ch.Data.OldRecord
	}
	var m map[string]any
	json.Unmarshal(row, &m)
	s := fmt.Sprintf("%s %v", ch.Data.Type, m["id"])
	if b, ok := m["body"]; ok {
		s += fmt.Sprintf(" %v", b)
	}
	if _, ok := m["user_id"]; !ok {
		s += " (no user_id)"
	}
	return s
}

// expectRows reads the client's next len(want) changes and compares them
// with want, in order.
func expectRows(t *testing.T, who string, c *wsClient, want ...string) {
	t.Helper()
	var got []string
	for _, ch := range collectChanges(t, c, len(want), testWait) {
		got = append(got, rowOf(ch))
	}
	if strings.Join(got, "; ") != strings.Join(want, "; ") {
		t.Errorf("%s received %q, want %q", who, got, want)
	}
}

// joinSystem joins topic with bindings on c and returns the system
// message that follows the (ok) join reply.
func joinSystem(t *testing.T, c *wsClient, topic, bindings string) map[string]string {
	t.Helper()
	c.write(joinFrame("1", topic, `{"postgres_changes":`+bindings+`}`))
	if f := c.next(); f.Event != "phx_reply" || jsonField(f.Payload, "status") != `"ok"` {
		t.Fatalf("join %s: %s", topic, f)
	}
	f := c.next()
	var m map[string]string
	if f.Event != "system" || json.Unmarshal(f.Payload, &m) != nil {
		t.Fatalf("after the join reply: %s, want a system message", f)
	}
	return m
}

// With --jwt-secret, two users under an owner policy each receive only
// the rows they may select, as their row is when the change is checked;
// deletes on an RLS table reach both and carry only the primary key; a
// role without SELECT on a table is refused at join with Supabase's text.
func TestChangesRowLevelSecurity(t *testing.T) {
	pg := pgtest.Shared(t)
	pg.Exec(rlsSchema)
	ts, _ := startChangesPair(t, pg, pairConfig{slot: "edge_rls", secret: testSecret})
	alice := ts.connectQuery(t, "apikey="+userToken(t, "authenticated", aliceID, time.Hour)+"&vsn=2.0.0")
	bob := ts.connectQuery(t, "apikey="+userToken(t, "authenticated", bobID, time.Hour)+"&vsn=2.0.0")
	for _, c := range []*wsClient{alice, bob} {
		if m := joinSystem(t, c, "realtime:notes", `[{"event":"*","schema":"public","table":"notes"}]`); m["message"] != "Subscribed to PostgreSQL" {
			t.Fatalf("join notes: %v", m)
		}
		joinSystem(t, c, "realtime:marker", `[{"event":"INSERT","schema":"public","table":"marker"}]`)
	}

	// Each step waits for its deliveries: visibility is checked against
	// the row as it is then, so the next step must not overtake it.
	pg.Exec(fmt.Sprintf(`INSERT INTO notes VALUES (1, '%[1]s', 'a1'); INSERT INTO notes VALUES (2, '%[2]s', 'b1');
		INSERT INTO notes VALUES (3, '%[1]s', 'a2')`, aliceID, bobID))
	expectRows(t, "alice", alice, "INSERT 1 a1", "INSERT 3 a2")
	expectRows(t, "bob", bob, "INSERT 2 b1")
	pg.Exec(`UPDATE notes SET body = 'b2' WHERE id = 2`)
	expectRows(t, "bob", bob, "UPDATE 2 b2")
	pg.Exec(`UPDATE notes SET user_id = $1 WHERE id = 2`, aliceID) // bob's row becomes alice's
	expectRows(t, "alice", alice, "UPDATE 2 b2")
	pg.Exec(`DELETE FROM notes WHERE id = 1`)
	pg.Exec(`INSERT INTO marker VALUES (1)`)
	// bob's next change is the delete: he did not get the row that left him.
	expectRows(t, "alice", alice, "DELETE 1 (no user_id)", "INSERT 1 (no user_id)")
	expectRows(t, "bob", bob, "DELETE 1 (no user_id)", "INSERT 1 (no user_id)")

	// No SELECT: refused at join, the channel stays joined.
	anon := ts.connectQuery(t, "apikey="+userToken(t, "anon", "", time.Hour)+"&vsn=2.0.0")
	for _, tc := range []struct {
		c     *wsClient
		table string
	}{{alice, "secrets"}, {anon, "notes"}} {
		m := joinSystem(t, tc.c, "realtime:refused-"+tc.table, `[{"event":"*","schema":"public","table":"`+tc.table+`"}]`)
		want := "Unable to subscribe to changes with given parameters. An exception happened so please check your connect parameters: " +
			"[event: *, schema: public, table: " + tc.table + ", filters: [], select: nil]. " +
			"Exception: ERROR 42501 (insufficient_privilege) permission denied for table " + tc.table
		if m["extension"] != "postgres_changes" || m["status"] != "error" || m["message"] != want {
			t.Errorf("binding on %s without SELECT: system %v\nwant message %q", tc.table, m, want)
		}
	}
}

// An access_token with other claims moves the channel's bindings to them:
// from the "Subscribed to PostgreSQL" that follows the refresh, RLS
// filters by the new claims, the client's listeners still get the binding
// ids of the join reply, and the owner no longer holds the old
// subscriptions. A token whose role may not read the table any more closes
// the channel.
func TestChangesTokenRefreshFollowsClaims(t *testing.T) {
	pg := pgtest.Shared(t)
	pg.Exec(rlsSchema)
	ts, owner := startChangesPair(t, pg, pairConfig{slot: "edge_refresh", secret: testSecret})
	c := ts.connectQuery(t, "apikey="+userToken(t, "authenticated", aliceID, time.Hour)+"&vsn=2.0.0")
	topics := []string{"realtime:notes", "realtime:notes2", "realtime:marker"}
	ids := map[string]uint64{}
	for i, topic := range topics {
		table := "notes"
		if i == 2 {
			table = "marker"
		}
		got, sys := joinWithBindings(t, c, "1", topic, `[{"event":"*","schema":"public","table":"`+table+`"}]`)
		if sys != `"Subscribed to PostgreSQL"` {
			t.Fatalf("join %s: %s", topic, sys)
		}
		ids[topic] = got[0]
	}
	ownerSubs := func(want string) {
		t.Helper()
		var v string
		if !waitFor(testWait, func() bool { v, _ = owner.metric("meshcast_wal_subscriptions"); return v == want }) {
			t.Fatalf("the owner holds %s subscriptions, want %s", v, want)
		}
	}
	ownerSubs("2") // the notes channels share one
	// received reads a batch of changes (their order across channels
	// is not defined) and checks each carries its channel's join-reply id.
	received := func(n int) string {
		t.Helper()
		var got []string
		for _, ch := range collectChanges(t, c, n, testWait) {
			if len(ch.IDs) != 1 || ch.IDs[0] != ids[ch.Topic] {
				t.Errorf("%s: ids %v, want the join reply's [%d]", ch.Topic, ch.IDs, ids[ch.Topic])
			}
			got = append(got, strings.TrimPrefix(ch.Topic, "realtime:")+": "+rowOf(ch))
		}
		slices.Sort(got)
		return strings.Join(got, "; ")
	}
	pg.Exec(fmt.Sprintf(`INSERT INTO notes VALUES (1, '%s', 'alice''s'); INSERT INTO notes VALUES (2, '%s', 'bob''s');
		INSERT INTO marker VALUES (1)`, aliceID, bobID))
	if got, want := received(3), "marker: INSERT 1 (no user_id); notes2: INSERT 1 alice's; notes: INSERT 1 alice's"; got != want {
		t.Errorf("as alice: %s, want %s", got, want)
	}

	// realtime-js sends the new token to every joined channel.
	bob := userToken(t, "authenticated", bobID, time.Hour)
	for i, topic := range topics {
		c.write(fmt.Sprintf(`["1","%d",%q,"access_token",{"access_token":%q}]`, 10+i, topic, bob))
	}
	for range topics {
		f := c.next()
		if f.Event != "system" || jsonField(f.Payload, "message") != `"Subscribed to PostgreSQL"` || jsonField(f.Payload, "status") != `"ok"` {
			t.Fatalf("after the refresh: %s, want Subscribed to PostgreSQL", f)
		}
	}
	ownerSubs("2") // bob's replaced alice's
	pg.Exec(fmt.Sprintf(`INSERT INTO notes VALUES (3, '%s', 'alice''s'); INSERT INTO notes VALUES (4, '%s', 'bob''s');
		INSERT INTO marker VALUES (2)`, aliceID, bobID))
	if got, want := received(3), "marker: INSERT 2 (no user_id); notes2: INSERT 4 bob's; notes: INSERT 4 bob's"; got != want {
		t.Errorf("as bob: %s, want %s", got, want)
	}

	// anon may not select from notes: that channel closes, the others stay.
	c.write(fmt.Sprintf(`["1","20","realtime:notes","access_token",{"access_token":%q}]`, userToken(t, "anon", "", time.Hour)))
	f := c.next()
	want := "Unable to subscribe to changes with given parameters. An exception happened so please check your connect parameters: " +
		"[event: *, schema: public, table: notes, filters: [], select: nil]. " +
		"Exception: ERROR 42501 (insufficient_privilege) permission denied for table notes"
	if f.Event != "system" || f.Topic != "realtime:notes" || jsonField(f.Payload, "extension") != `"system"` ||
		jsonField(f.Payload, "message") != strconvQuote(want) {
		t.Errorf("refresh to a role without SELECT: %s\nwant a system error %q", f, want)
	}
	if f := c.next(); f.Event != "phx_close" || f.Topic != "realtime:notes" {
		t.Errorf("after the system error: %s, want phx_close", f)
	}
	pg.Exec(fmt.Sprintf(`INSERT INTO notes VALUES (5, '%s', 'bob''s'); INSERT INTO marker VALUES (3)`, bobID))
	if got, want := received(2), "marker: INSERT 3 (no user_id); notes2: INSERT 5 bob's"; got != want {
		t.Errorf("after notes closed: %s, want %s", got, want)
	}
}

func strconvQuote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// A Postgres restart mid-stream loses nothing for an RLS subscriber
// either: the owner's visibility queries run on a pool whose connections
// the restart broke.
func TestChangesRowLevelSecurityAcrossPostgresRestart(t *testing.T) {
	pg := pgtest.Start(t)
	pg.Exec(rlsSchema)
	ts, _ := startChangesPair(t, pg, pairConfig{slot: "edge_rls_restart", secret: testSecret})
	alice := ts.connectQuery(t, "apikey="+userToken(t, "authenticated", aliceID, time.Hour)+"&vsn=2.0.0")
	joinSystem(t, alice, "realtime:notes", `[{"event":"INSERT","schema":"public","table":"notes"}]`)
	const rows = 60
	got := make(chan []int, 1)
	go func() {
		var ids []int
		deadline := time.Now().Add(30 * time.Second)
		for len(ids) < rows {
			data, op, err := alice.read(time.Until(deadline))
			if err != nil {
				break
			}
			f, err := decodeFrame(data, op, false)
			if err != nil || f.Event != "postgres_changes" {
				continue
			}
			var id int
			fmt.Sscan(jsonField(f.Payload, "data.record.id"), &id)
			ids = append(ids, id)
		}
		got <- ids
	}()
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	for id := 1; id <= rows; id++ {
		if id == rows/2 {
			pg.Restart()
		}
		// Retried while Postgres comes back; a retry of a commit that did
		// happen inserts nothing.
		deadline := time.Now().Add(20 * time.Second)
		for {
			err := errors.New("no connection")
			if conn == nil {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				conn, err = pgx.Connect(ctx, pg.URL())
				cancel()
			}
			if conn != nil {
				if _, err = conn.Exec(context.Background(), "INSERT INTO notes VALUES ($1, $2, 'x') ON CONFLICT DO NOTHING", id, aliceID); err != nil {
					conn.Close(context.Background())
					conn = nil
				}
			}
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("insert %d: Postgres did not come back: %v", id, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		time.Sleep(10 * time.Millisecond) // a steady stream of transactions
	}
	ids := <-got
	var want []int
	for id := 1; id <= rows; id++ {
		want = append(want, id)
	}
	if !slices.Equal(ids, want) {
		t.Errorf("alice received %v, want every row 1..%d once, in order", ids, rows)
	}
}
