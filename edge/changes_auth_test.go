package edge

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/meshcast/meshcast/wal/pgtest"
)

// Issue 15, items 1 and 2, from outside: a client of the node that does
// not own the database, real Postgres, and what the victim receives.

// readUntil reads frames until done says so, within testWait, and returns
// them all (done's frame last).
func readUntil(t *testing.T, c *wsClient, what string, done func(f wsFrame) bool) []wsFrame {
	t.Helper()
	deadline := time.Now().Add(testWait)
	var out []wsFrame
	for {
		data, op, err := c.read(time.Until(deadline))
		if err != nil {
			t.Fatalf("waiting for %s, after %d frames: %v", what, len(out), err)
		}
		f, err := decodeFrame(data, op, false)
		if err != nil {
			t.Fatalf("decoding %q: %v", data, err)
		}
		out = append(out, f)
		if done(f) {
			return out
		}
	}
}

// rowsOf summarizes the changes among frames of topic, as rowOf does.
func rowsOf(t *testing.T, frames []wsFrame, topic string) []string {
	t.Helper()
	var out []string
	for _, f := range frames {
		if f.Event != "postgres_changes" || f.Topic != topic {
			continue
		}
		var ch changeOf
		if err := json.Unmarshal(f.Payload, &ch); err != nil {
			t.Fatal(err)
		}
		out = append(out, rowOf(ch))
	}
	return out
}

// The visibility of a change is decided on the row as it was committed,
// not as it is when checked: bob inserts a secret row and deletes it,
// alice inserts her own with the same key, 200 times as fast as Postgres
// takes them. alice never receives bob's row (she gets the delete, as
// everyone does, with the key only), and bob gets every one of his inserts
// although each was gone by the time it was checked. Then the same within
// single transactions (insert, update, delete, re-insert by alice).
func TestChangesRLSDecidedOnCommittedRow(t *testing.T) {
	pg := pgtest.Shared(t)
	pg.Exec(rlsSchema)
	ts, _ := startChangesPair(t, pg, pairConfig{slot: "edge_rls_values", secret: testSecret})
	conn := pgConn(t, pg)
	alice := ts.connectQuery(t, "apikey="+userToken(t, "authenticated", aliceID, time.Hour)+"&vsn=2.0.0")
	bob := ts.connectQuery(t, "apikey="+userToken(t, "authenticated", bobID, time.Hour)+"&vsn=2.0.0")
	for _, c := range []*wsClient{alice, bob} {
		if m := joinSystem(t, c, "realtime:notes", `[{"event":"*","schema":"public","table":"notes"}]`); m["message"] != "Subscribed to PostgreSQL" {
			t.Fatalf("join notes: %v", m)
		}
	}
	const rounds = 200
	var wantAlice, wantBob []string
	for k := 1; k <= rounds; k++ {
		execSQL(t, conn, "INSERT INTO notes VALUES ($1, $2, $3)", k, bobID, fmt.Sprintf("BOB-SECRET-%d", k))
		execSQL(t, conn, "DELETE FROM notes WHERE id = $1", k)
		execSQL(t, conn, "INSERT INTO notes VALUES ($1, $2, $3)", k, aliceID, fmt.Sprintf("alice-%d", k))
		wantBob = append(wantBob, fmt.Sprintf("INSERT %d BOB-SECRET-%d", k, k), fmt.Sprintf("DELETE %d (no user_id)", k))
		wantAlice = append(wantAlice, fmt.Sprintf("DELETE %d (no user_id)", k), fmt.Sprintf("INSERT %d alice-%d", k, k))
	}
	for k := rounds + 1; k <= rounds+20; k++ {
		pg.Exec(fmt.Sprintf(`INSERT INTO notes VALUES (%[1]d, '%[2]s', 'BOB-SECRET-tx'); UPDATE notes SET body = 'BOB-SECRET-tx2' WHERE id = %[1]d;
			DELETE FROM notes WHERE id = %[1]d; INSERT INTO notes VALUES (%[1]d, '%[3]s', 'alice-tx')`, k, bobID, aliceID))
		wantBob = append(wantBob, fmt.Sprintf("INSERT %d BOB-SECRET-tx", k), fmt.Sprintf("UPDATE %d BOB-SECRET-tx2", k), fmt.Sprintf("DELETE %d (no user_id)", k))
		wantAlice = append(wantAlice, fmt.Sprintf("DELETE %d (no user_id)", k), fmt.Sprintf("INSERT %d alice-tx", k))
	}
	for _, tc := range []struct {
		who  string
		c    *wsClient
		want []string
	}{{"alice", alice, wantAlice}, {"bob", bob, wantBob}} {
		var got []string
		for _, ch := range collectChanges(t, tc.c, len(tc.want), 20*time.Second) {
			got = append(got, rowOf(ch))
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("%s's change %d is %q, want %q (and %d more differ)", tc.who, i, got[i], tc.want[i], countDiff(got[i:], tc.want[i:])-1)
				break
			}
		}
	}
}

func countDiff(a, b []string) int {
	n := 0
	for i := range a {
		if a[i] != b[i] {
			n++
		}
	}
	return n
}

// A row updated many times a second, passed between alice and bob, reaches
// each of them in exactly the versions they own, each version decided on
// its own values. An update that hands the row over carries only the key
// in old_record: its old content was the previous owner's (Supabase sends
// it whole); one between versions of the same owner carries the whole old
// row (REPLICA IDENTITY FULL).
func TestChangesRLSEachVersionToItsOwner(t *testing.T) {
	pg := pgtest.Shared(t)
	pg.Exec(rlsSchema)
	ts, _ := startChangesPair(t, pg, pairConfig{slot: "edge_rls_versions", secret: testSecret})
	conn := pgConn(t, pg)
	users := map[string]*wsClient{}
	for _, id := range []string{aliceID, bobID} {
		users[id] = ts.connectQuery(t, "apikey="+userToken(t, "authenticated", id, time.Hour)+"&vsn=2.0.0")
		joinSystem(t, users[id], "realtime:notes", `[{"event":"UPDATE","schema":"public","table":"notes"}]`)
	}
	execSQL(t, conn, "INSERT INTO notes VALUES (1, $1, 'v0')", aliceID)
	rng := rand.New(rand.NewPCG(15, 1))
	want := map[string][]string{}
	prev := aliceID
	for v := 1; v <= 100; v++ {
		owner := []string{aliceID, bobID}[rng.IntN(2)]
		execSQL(t, conn, "UPDATE notes SET user_id = $1, body = $2 WHERE id = 1", owner, fmt.Sprintf("v%d", v))
		old := fmt.Sprintf(`{"body":"v%d","id":1,"user_id":%q}`, v-1, prev)
		if prev != owner {
			old = `{"id":1}`
		}
		want[owner] = append(want[owner], fmt.Sprintf("v%d old %s", v, old))
		prev = owner
	}
	for id, c := range users {
		var got []string
		for _, ch := range collectChanges(t, c, len(want[id]), 20*time.Second) {
			var old any
			json.Unmarshal(ch.Data.OldRecord, &old)
			oldJSON, _ := json.Marshal(old)
			got = append(got, fmt.Sprintf("%s old %s", jsonField(ch.Data.Record, "body")[1:len(jsonField(ch.Data.Record, "body"))-1], oldJSON))
		}
		if strings.Join(got, "\n") != strings.Join(want[id], "\n") {
			t.Errorf("user %s received:\n%s\nwant:\n%s", id[:1], strings.Join(got, "\n"), strings.Join(want[id], "\n"))
		}
	}
}

// wantRefusal is the system error of a binding on table refused at join
// for lack of SELECT.
func wantRefusal(table string) string {
	return "Unable to subscribe to changes with given parameters. An exception happened so please check your connect parameters: " +
		"[event: *, schema: public, table: " + table + ", filters: [], select: nil]. " +
		"Exception: ERROR 42501 (insufficient_privilege) permission denied for table " + table
}

// REVOKE SELECT takes effect for what is committed after it: the anon
// socket that joined before gets no row committed after the revoke, and
// its channel is closed with the join-time refusal (as a token refresh
// that loses access closes it); a new socket is refused at join. A GRANT
// lets a new join in again.
func TestChangesRevokeApplies(t *testing.T) {
	pg := pgtest.Shared(t)
	pg.Exec(rlsSchema + `CREATE TABLE pay (id int PRIMARY KEY, amount int); GRANT SELECT ON pay TO anon;`)
	ts, owner := startChangesPair(t, pg, pairConfig{slot: "edge_revoke", secret: testSecret})
	anonToken := "apikey=" + userToken(t, "anon", "", time.Hour) + "&vsn=2.0.0"
	old := ts.connectQuery(t, anonToken)
	if m := joinSystem(t, old, "realtime:pay", `[{"event":"*","schema":"public","table":"pay"}]`); m["message"] != "Subscribed to PostgreSQL" {
		t.Fatalf("join pay: %v", m)
	}
	joinSystem(t, old, "realtime:marker", `[{"event":"INSERT","schema":"public","table":"marker"}]`)
	pg.Exec(`INSERT INTO pay VALUES (1, 100)`)
	expectRows(t, "the old socket", old, "INSERT 1 (no user_id)")

	// The revoke and the next rows, without a pause between them.
	pg.Exec(`REVOKE SELECT ON pay FROM anon`)
	pg.Exec(`INSERT INTO pay VALUES (2, 200)`)
	pg.Exec(`INSERT INTO marker VALUES (1)`)
	closed, marked := false, false
	frames := readUntil(t, old, "the marker and the channel's close", func(f wsFrame) bool {
		closed = closed || f.Event == "phx_close" && f.Topic == "realtime:pay"
		marked = marked || f.Event == "postgres_changes" && f.Topic == "realtime:marker"
		return closed && marked
	})
	if got := rowsOf(t, frames, "realtime:pay"); len(got) > 0 {
		t.Errorf("after the revoke the old socket received %v", got)
	}
	var system string
	for _, f := range frames {
		if f.Event == "system" && f.Topic == "realtime:pay" {
			system = jsonField(f.Payload, "message")
		}
	}
	if system != strconvQuote(wantRefusal("pay")) {
		t.Errorf("the old socket's pay channel got system message %s, want %q", system, wantRefusal("pay"))
	}
	if v, _ := owner.metric("meshcast_wal_revoked_hidden_total"); v != "1" {
		t.Errorf("meshcast_wal_revoked_hidden_total = %q on the owner, want 1 (row 2)", v)
	}

	fresh := ts.connectQuery(t, anonToken)
	if m := joinSystem(t, fresh, "realtime:pay", `[{"event":"*","schema":"public","table":"pay"}]`); m["message"] != wantRefusal("pay") {
		t.Errorf("a new socket after the revoke: %v, want the refusal", m)
	}
	pg.Exec(`GRANT SELECT ON pay TO anon`)
	if m := joinSystem(t, fresh, "realtime:pay2", `[{"event":"*","schema":"public","table":"pay"}]`); m["message"] != "Subscribed to PostgreSQL" {
		t.Errorf("a join after the grant: %v", m)
	}
	pg.Exec(`INSERT INTO pay VALUES (3, 300)`)
	expectRows(t, "the new socket after the grant", fresh, "INSERT 3 (no user_id)")
}

// Row level security enabled on a table after clients subscribed, with an
// owner policy: from then on, old and new subscribers get only their own
// rows, with no restart.
func TestChangesRLSEnabledAfterSubscribe(t *testing.T) {
	pg := pgtest.Shared(t)
	pg.Exec(rlsSchema + `CREATE TABLE docs (id int PRIMARY KEY, owner uuid, body text); GRANT SELECT ON docs TO authenticated;`)
	ts, _ := startChangesPair(t, pg, pairConfig{slot: "edge_rls_enable", secret: testSecret})
	const carolID = "c0000000-0000-0000-0000-000000000003"
	join := func(id string) *wsClient {
		c := ts.connectQuery(t, "apikey="+userToken(t, "authenticated", id, time.Hour)+"&vsn=2.0.0")
		if m := joinSystem(t, c, "realtime:docs", `[{"event":"INSERT","schema":"public","table":"docs"}]`); m["message"] != "Subscribed to PostgreSQL" {
			t.Fatalf("join docs: %v", m)
		}
		return c
	}
	alice, bob := join(aliceID), join(bobID)
	pg.Exec(fmt.Sprintf(`INSERT INTO docs VALUES (1, '%s', 'a'); INSERT INTO docs VALUES (2, '%s', 'b')`, aliceID, bobID))
	expectRows(t, "alice before RLS", alice, "INSERT 1 a (no user_id)", "INSERT 2 b (no user_id)")
	expectRows(t, "bob before RLS", bob, "INSERT 1 a (no user_id)", "INSERT 2 b (no user_id)")

	pg.Exec(`ALTER TABLE docs ENABLE ROW LEVEL SECURITY`)
	pg.Exec(`CREATE POLICY own ON docs FOR SELECT TO authenticated USING (owner = auth.uid())`)
	carol := join(carolID)
	pg.Exec(fmt.Sprintf(`INSERT INTO docs VALUES (3, '%s', 'a3')`, aliceID))
	pg.Exec(fmt.Sprintf(`INSERT INTO docs VALUES (4, '%s', 'b4')`, bobID))
	pg.Exec(fmt.Sprintf(`INSERT INTO docs VALUES (5, '%s', 'c5')`, carolID))
	expectRows(t, "alice", alice, "INSERT 3 a3 (no user_id)")
	expectRows(t, "bob", bob, "INSERT 4 b4 (no user_id)")
	expectRows(t, "carol, who joined after", carol, "INSERT 5 c5 (no user_id)")
}

// A table refused because it was not in the publication can be joined
// once ALTER PUBLICATION adds it; a column added to a table does not make
// the joins of roles not seen before fail, and the existing subscriber
// gets the new column.
func TestChangesPublicationAndColumnChanges(t *testing.T) {
	pg := pgtest.Shared(t)
	pg.Exec(strings.Replace(rlsSchema, "CREATE PUBLICATION supabase_realtime FOR ALL TABLES", "CREATE PUBLICATION supabase_realtime FOR TABLE marker", 1) +
		`CREATE TABLE late (id int PRIMARY KEY, body text); GRANT SELECT ON late TO anon, authenticated;`)
	ts, _ := startChangesPair(t, pg, pairConfig{slot: "edge_pub_change", secret: testSecret})
	anon := ts.connectQuery(t, "apikey="+userToken(t, "anon", "", time.Hour)+"&vsn=2.0.0")
	notInPub := "Unable to subscribe to changes with given parameters. Please check Realtime is enabled for the given connect parameters: " +
		"[event: *, schema: public, table: late, filters: [], select: nil]"
	if m := joinSystem(t, anon, "realtime:late1", `[{"event":"*","schema":"public","table":"late"}]`); m["message"] != notInPub {
		t.Fatalf("join before the table is published: %v", m)
	}
	pg.Exec(`ALTER PUBLICATION supabase_realtime ADD TABLE late`)
	if m := joinSystem(t, anon, "realtime:late2", `[{"event":"*","schema":"public","table":"late"}]`); m["message"] != "Subscribed to PostgreSQL" {
		t.Fatalf("join after ALTER PUBLICATION … ADD TABLE: %v", m)
	}
	pg.Exec(`INSERT INTO late VALUES (1, 'one')`)
	expectRows(t, "anon", anon, "INSERT 1 one (no user_id)")

	pg.Exec(`ALTER TABLE late ADD COLUMN extra text`)
	user := ts.connectQuery(t, "apikey="+userToken(t, "authenticated", aliceID, time.Hour)+"&vsn=2.0.0")
	if m := joinSystem(t, user, "realtime:late", `[{"event":"*","schema":"public","table":"late"}]`); m["message"] != "Subscribed to PostgreSQL" {
		t.Fatalf("join after ADD COLUMN: %v", m)
	}
	pg.Exec(`INSERT INTO late VALUES (2, 'two', 'more')`)
	for who, c := range map[string]*wsClient{"anon": anon, "authenticated": user} {
		got := collectChanges(t, c, 1, testWait)[0]
		if extra := jsonField(got.Data.Record, "extra"); extra != `"more"` {
			t.Errorf("%s: record %s, want the new column", who, got.Data.Record)
		}
	}
}
