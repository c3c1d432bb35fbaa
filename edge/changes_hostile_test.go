package edge

import (
	"encoding/json"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshcast/meshcast/wal/pgtest"
)

// unquote decodes a JSON string.
func unquote(js string) string {
	var s string
	json.Unmarshal([]byte(js), &s)
	return s
}

// bindingsJSON is a postgres_changes list of bindings on public.notes
// with these filters.
func bindingsJSON(filters ...string) string {
	var bs []string
	for _, f := range filters {
		b, _ := json.Marshal(map[string]string{"event": "*", "schema": "public", "table": "notes", "filter": f})
		bs = append(bs, string(b))
	}
	return "[" + strings.Join(bs, ",") + "]"
}

// A client's like filters cost others nothing noticeable: 100 bindings
// (the default per join) of 60 a's and a b between %s, which a
// backtracking matcher walks 60 characters deep from each position of a
// 200 KB title of a's (some 0.12 s per binding), leave an innocent
// subscriber's rows as prompt as ever, and the attacker's own bindings
// still match right.
func TestChangesLikeCannotStallOthers(t *testing.T) {
	pg := pgtest.Shared(t)
	pg.Exec(`CREATE TABLE notes (id int PRIMARY KEY, title text); CREATE PUBLICATION supabase_realtime FOR ALL TABLES`)
	ts := startChangesServer(t, pg, "edge_like", nil)
	attacker, victim := ts.connect(t), ts.connect(t)
	var filters []string
	n := 99
	if raceEnabled {
		n = 10 // the backtracking matcher takes seconds per binding there
	}
	for i := range n {
		a := strings.Repeat("a", 60)
		if i%2 == 0 {
			filters = append(filters, fmt.Sprintf("title=like.%%%sb%d%%", a, i))
		} else {
			filters = append(filters, fmt.Sprintf("title=ilike.%%%s_b%d%%", a, i))
		}
	}
	filters = append(filters, "title=like.a%a") // matches the long title
	ids, sys := joinWithBindings(t, attacker, "1", "realtime:attack", bindingsJSON(filters...))
	if sys != `"Subscribed to PostgreSQL"` {
		t.Fatalf("attacker's join: %s", sys)
	}
	if _, sys := joinWithBindings(t, victim, "1", "realtime:victim", bindingsJSON("id=gt.0")); sys != `"Subscribed to PostgreSQL"` {
		t.Fatalf("victim's join: %s", sys)
	}
	start := time.Now()
	pg.Exec(`INSERT INTO notes VALUES (1, repeat('a', 200000))`)
	pg.Exec(`INSERT INTO notes VALUES (2, 'hello')`)
	// Within testWait (5 s): the backtracking matcher took about 12 s.
	got := collectChanges(t, victim, 2, testWait)
	t.Logf("the victim had both rows after %v", time.Since(start).Round(time.Millisecond))
	if jsonField(got[1].Data.Record, "title") != `"hello"` {
		t.Errorf("victim's second row: %s", got[1].Data.Record)
	}
	mine := collectChanges(t, attacker, 1, testWait)
	if !slices.Equal(mine[0].IDs, ids[len(ids)-1:]) || jsonField(mine[0].Data.Record, "id") != "1" {
		t.Errorf("attacker got ids %v for row %s, want %v for row 1", mine[0].IDs, jsonField(mine[0].Data.Record, "id"), ids[len(ids)-1:])
	}
}

// Bindings are bounded per join and per connection, and their filters in
// size and cost, each with a clear error quoting at most a short prefix.
func TestChangesBindingLimits(t *testing.T) {
	pg := pgtest.Shared(t)
	pg.Exec(`CREATE TABLE notes (id int PRIMARY KEY, title text); CREATE PUBLICATION supabase_realtime FOR ALL TABLES`)
	ts := startChangesServer(t, pg, "edge_limits", nil, func(c *Config) { c.MaxBindingsPerJoin, c.MaxBindingsPerConn = 3, 5 })
	c := ts.connect(t)
	three := bindingsJSON("id=eq.1", "id=eq.2", "id=eq.3")
	for _, tc := range []struct{ topic, bindings, want string }{
		{"four", bindingsJSON("id=eq.1", "id=eq.2", "id=eq.3", "id=eq.4"), "PostgresChangesLimitReached: Too many postgres_changes bindings in one join (4, at most 3)"},
		{"first", three, "Subscribed to PostgreSQL"},
		{"second", three, "PostgresChangesLimitReached: Too many postgres_changes bindings on this connection (6 with this join, at most 5)"},
		{"third", bindingsJSON("id=eq.1", "id=eq.2"), "Subscribed to PostgreSQL"},
		{"long", bindingsJSON("title=eq." + strings.Repeat("é", 3000)), "Error parsing `filter` params: filter is longer than 4096 bytes: \"title=eq." + strings.Repeat("é", 45) + "\" <> ..."},
		{"pattern", bindingsJSON("title=like.%" + strings.Repeat("x", 300)), "Error parsing `filter` params: like pattern is longer than 256 bytes: \"%" + strings.Repeat("x", 99) + "\" <> ..."},
		{"regex", bindingsJSON("title=match..{100}x"), "Error parsing `filter` params: match pattern is too complex (103 instructions once compiled, at most 64): \".{100}x\""},
	} {
		if tc.topic == "long" { // room for one more
			c.write(`["1","9","realtime:third","phx_leave",{}]`)
			c.next()
			c.next()
		}
		if _, sys := joinWithBindings(t, c, "1", "realtime:"+tc.topic, tc.bindings); unquote(sys) != tc.want {
			t.Errorf("%s: %s, want %s", tc.topic, sys, tc.want)
		}
	}
}

// An error reply is never much larger than a short prefix of its input:
// a 4.4 MB filter of U+0080 without "=" came back as a 22 MB error, each
// byte printed (here 1.1 MB, which made 5.5 MB). With the filter limit
// off, the parse error quotes 20 bytes. A filter of only Unicode whitespace is refused, not taken as no
// filter; an empty one is no filter, as in Supabase.
func TestChangesErrorsQuoteAPrefix(t *testing.T) {
	pg := pgtest.Shared(t)
	pg.Exec(`CREATE TABLE notes (id int PRIMARY KEY, title text); CREATE PUBLICATION supabase_realtime FOR ALL TABLES`)
	ts := startChangesServer(t, pg, "edge_errors", nil, func(c *Config) { c.MaxFilterBytes = -1 })
	c := ts.connect(t)
	huge := strings.Repeat("\u0080", 550_000)
	c.write(joinFrame("1", "realtime:huge", `{"postgres_changes":`+bindingsJSON(huge)+`}`))
	if f := c.next(); f.Event != "phx_reply" {
		t.Fatalf("join: %.200s", f.Raw)
	}
	sys := c.next()
	want := `Error parsing ` + "`filter`" + ` params: [<<194, 128, 194, 128, 194, 128, 194, 128, 194, 128, 194, 128, 194, 128, 194, 128, 194, 128, 194, 128, ...>>]`
	if msg := unquote(jsonField(sys.Payload, "message")); msg != want || len(sys.Raw) > 512 {
		t.Errorf("system message of %d bytes: %.300s", len(sys.Raw), sys.Raw)
	}
	for _, tc := range []struct{ topic, filter, want string }{
		{"blank", "\u00a0\u2003 \u3000", "Error parsing `filter` params: filter must not be blank (send no filter to receive every row)"},
		{"empty", "", "Subscribed to PostgreSQL"},
	} {
		b, _ := json.Marshal(map[string]string{"event": "INSERT", "schema": "public", "table": "notes", "filter": tc.filter})
		if _, sys := joinWithBindings(t, c, "1", "realtime:"+tc.topic, "["+string(b)+"]"); unquote(sys) != tc.want {
			t.Errorf("filter %q: %s, want %s", tc.filter, sys, tc.want)
		}
	}
	pg.Exec(`INSERT INTO notes VALUES (1, 'x')`)
	if got := collectChanges(t, c, 1, testWait); got[0].Topic != "realtime:empty" {
		t.Errorf("the empty filter's channel: %s", got[0].Topic)
	}
}

// Each binding gets its own columns: in a channel with two bindings on
// one table, one with select, each gets a message of its own shape with
// its id (both used to get the select's columns).
func TestChangesEachBindingItsShape(t *testing.T) {
	pg := pgtest.Shared(t)
	pg.Exec(`CREATE TABLE notes (id int PRIMARY KEY, title text, body text); CREATE PUBLICATION supabase_realtime FOR ALL TABLES`)
	ts := startChangesServer(t, pg, "edge_shapes", nil)
	c, other := ts.connect(t), ts.connect(t)
	bindings := `[{"event":"INSERT","schema":"public","table":"notes","select":["title"]},
		{"event":"INSERT","schema":"public","table":"notes"},
		{"event":"*","schema":"public","table":"notes","select":["body","title","body"]}]`
	ids, sys := joinWithBindings(t, c, "1", "realtime:shapes", bindings)
	if sys != `"Subscribed to PostgreSQL"` {
		t.Fatalf("join: %s", sys)
	}
	joinWithBindings(t, other, "1", "realtime:shapes", bindings)
	pg.Exec(`INSERT INTO notes VALUES (1, 't', 'b')`)
	for _, cl := range []*wsClient{c, other} {
		got := map[string]string{}
		for _, ch := range collectChanges(t, cl, 3, testWait) {
			got[fmt.Sprint(ch.IDs)] = string(ch.Data.Record)
		}
		want := map[string]string{
			fmt.Sprint(ids[0:1]): `{"id":1,"title":"t"}`,
			fmt.Sprint(ids[1:2]): `{"id":1,"title":"t","body":"b"}`,
			fmt.Sprint(ids[2:3]): `{"id":1,"title":"t","body":"b"}`,
		}
		for k, w := range want {
			if !jsonEq(json.RawMessage(got[k]), w) {
				t.Errorf("binding %s: record %s, want %s", k, got[k], w)
			}
		}
	}
}

func heapBytes() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// What a client's bindings took is given back when it goes: 10 000 like
// bindings joined over a socket and compiled by a change, then the socket
// closed; the heap returns near where it was, without another change to
// the table (the matcher kept them until then).
func TestChangesMemoryReturnedAfterLeave(t *testing.T) {
	pg := pgtest.Shared(t)
	pg.Exec(`CREATE TABLE notes (id int PRIMARY KEY, title text); CREATE PUBLICATION supabase_realtime FOR ALL TABLES`)
	ts := startChangesServer(t, pg, "edge_memory", nil, func(c *Config) {
		c.MaxBindingsPerJoin, c.MaxBindingsPerConn, c.MaxChannelsPerConn, c.JoinsPerSecond = -1, -1, -1, -1
	})
	watcher := ts.connect(t)
	joinWithBindings(t, watcher, "1", "realtime:watch", bindingsJSON("id=eq.1"))
	base := heapBytes()
	c := ts.connect(t)
	const channels, per = 20, 500
	for ch := range channels {
		var filters []string
		for i := range per {
			filters = append(filters, fmt.Sprintf("title=like.%%%s%d.%d%%", strings.Repeat("a", 150), ch, i))
		}
		if _, sys := joinWithBindings(t, c, "1", fmt.Sprintf("realtime:m%d", ch), bindingsJSON(filters...)); sys != `"Subscribed to PostgreSQL"` {
			t.Fatalf("join: %s", sys)
		}
	}
	pg.Exec(`INSERT INTO notes VALUES (1, 'x')`) // the owner compiles every binding
	collectChanges(t, watcher, 1, testWait)
	grown := heapBytes() - base
	c.nc.Close()
	deadline := time.Now().Add(testWait)
	left := heapBytes() - base
	for left > grown/10 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		left = heapBytes() - base
	}
	t.Logf("%d bindings: heap +%d KiB; after the socket closed: %+d KiB", channels*per, grown>>10, left>>10)
	if grown < 8<<20 {
		t.Fatalf("the bindings took only %d KiB: the test proves nothing", grown>>10)
	}
	if left > grown/10 {
		t.Errorf("%d KiB of %d KiB still held %v after the socket closed", left>>10, grown>>10, testWait)
	}
}
