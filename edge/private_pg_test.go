package edge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/gobwas/ws"

	"github.com/meshcast/meshcast/wal/chanauth"
	"github.com/meshcast/meshcast/wal/pgtest"
	"github.com/meshcast/meshcast/wal/rtschema"
)

// Private channels decided by an app's row level security policies on
// realtime.messages (wal/chanauth), end to end through WebSocket clients
// and REST, with a membership table as the oracle.

// membersSchema is a Supabase app in small: its roles, auth.uid(), and a
// membership table saying which extensions each user may read and write
// in a room; membersPolicies are the policies it writes on
// realtime.messages with realtime.topic() and the JWT's sub.
const membersSchema = `
DO $$ BEGIN CREATE ROLE anon NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
DO $$ BEGIN CREATE ROLE authenticated NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
DO $$ BEGIN CREATE ROLE service_role NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
CREATE SCHEMA auth;
CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $$
	SELECT nullif(current_setting('request.jwt.claim.sub', true), '')::uuid $$;
GRANT USAGE ON SCHEMA auth TO anon, authenticated;
CREATE TABLE members (user_id uuid, room text, reads text[], writes text[], PRIMARY KEY (user_id, room));
GRANT SELECT ON members TO authenticated;
`

const membersPolicies = `
CREATE POLICY "members read" ON realtime.messages FOR SELECT TO authenticated USING (
	EXISTS (SELECT 1 FROM members m WHERE m.user_id = auth.uid() AND m.room = realtime.topic()
		AND realtime.messages.extension = ANY (m.reads)));
CREATE POLICY "members write" ON realtime.messages FOR INSERT TO authenticated WITH CHECK (
	EXISTS (SELECT 1 FROM members m WHERE m.user_id = auth.uid() AND m.room = realtime.topic()
		AND realtime.messages.extension = ANY (m.writes)));
`

// rlsPolicy is the ChannelPolicy of a chanauth.Checker, as cmd/meshcast
// wires it.
type rlsPolicy struct{ c *chanauth.Checker }

func (p rlsPolicy) CanRead(ctx context.Context, id *Identity, topic string, want Extensions) (Extensions, error) {
	return p.check(ctx, false, id, topic, want)
}

func (p rlsPolicy) CanWrite(ctx context.Context, id *Identity, topic string, want Extensions) (Extensions, error) {
	return p.check(ctx, true, id, topic, want)
}

func (p rlsPolicy) check(ctx context.Context, write bool, id *Identity, topic string, want Extensions) (Extensions, error) {
	// edge's and chanauth's bits are the same: broadcast 1, presence 2.
	got, err := p.c.Check(ctx, chanauth.Request{Write: write, Ext: chanauth.Ext(want), Topic: topic, Role: id.Role,
		Sub: id.Sub, Claims: string(id.Claims), Headers: string(id.Headers)})
	if errors.Is(err, chanauth.ErrUnavailable) {
		err = fmt.Errorf("%w: %w", ErrPolicyUnavailable, err)
	}
	return Extensions(got), err
}

// startPolicyServer starts a server with a JWT secret whose private
// channels are decided by pg's policies.
func startPolicyServer(t *testing.T, pg *pgtest.Server) (*testServer, *metrics.Set) {
	t.Helper()
	set := metrics.NewSet()
	c, err := chanauth.New(chanauth.Config{URL: pg.URL(), Metrics: set, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, func(cfg *Config) {
		cfg.JWTSecret = testSecret
		cfg.ChannelPolicy = rlsPolicy{c}
	})
	t.Cleanup(c.Close) // after the server's shutdown (cleanups run last in, first out)
	ts.AddMetrics(set)
	return ts, set
}

func membersDB(t *testing.T) *pgtest.Server {
	t.Helper()
	pg := pgtest.Shared(t)
	pg.Exec(membersSchema)
	pg.Exec(rtschema.SQL(rtschema.Config{}))
	pg.Exec(membersPolicies)
	return pg
}

// member is one user of the room, with a socket.
type member struct {
	name, sub string
	c         *wsClient
}

// until reads frames up to and including the first that matches, and
// returns those before it.
func (c *wsClient) until(what string, match func(wsFrame) bool) []wsFrame {
	c.t.Helper()
	var seen []wsFrame
	deadline := time.Now().Add(testWait)
	for {
		data, op, err := c.read(time.Until(deadline))
		if err != nil {
			c.t.Fatalf("waiting for %s: %v (read %v)", what, err, seen)
		}
		f, err := decodeFrame(data, op, c.v1)
		if err != nil {
			c.t.Fatal(err)
		}
		if match(f) {
			return seen
		}
		seen = append(seen, f)
	}
}

// barrier returns the frames the server queued for c before now.
func (c *wsClient) barrier() []wsFrame {
	c.t.Helper()
	c.write(heartbeatFrame)
	return c.until("the heartbeat reply", isHeartbeatReply)
}

func events(fs []wsFrame) string {
	var out []string
	for _, f := range fs {
		e := f.Event
		switch {
		case f.Op == ws.OpBinary:
			e = "broadcast:" + f.UserEvent
		case f.Event == "broadcast":
			e += ":" + strings.Trim(jsonField(f.Payload, "event"), `"`)
		}
		out = append(out, e)
	}
	return strings.Join(out, " ")
}

func isReplyTo(ref string) func(wsFrame) bool {
	return func(f wsFrame) bool { return f.Event == "phx_reply" && refOf(f.Ref) == ref }
}

// The policy matrix: read and write of broadcast and presence, each
// allowed or denied by a membership row, decide who joins, who receives
// what, whose sends and tracks go through, what REST may send, and a
// membership revoked closes the channel at the next access_token.
func TestPrivateChannelPolicies(t *testing.T) {
	pg := membersDB(t)
	ts, set := startPolicyServer(t, pg)
	rows := map[string][2]string{ // reads, writes
		"full":   {"{broadcast,presence}", "{broadcast,presence}"},
		"reader": {"{broadcast,presence}", "{}"},
		"bcast":  {"{broadcast}", "{broadcast}"},
		"pres":   {"{presence}", "{presence}"},
	}
	members := map[string]*member{}
	for i, name := range []string{"full", "reader", "bcast", "pres", "outsider"} {
		m := &member{name: name, sub: fmt.Sprintf("00000000-0000-0000-0000-%012d", i+1)}
		if r, ok := rows[name]; ok {
			pg.Exec("INSERT INTO members VALUES ($1, 'room', $2, $3)", m.sub, r[0], r[1])
		}
		m.c = ts.connectQuery(t, "apikey="+userToken(t, "authenticated", m.sub, time.Hour)+"&vsn=2.0.0")
		members[name] = m
	}
	config := `{"private":true,"broadcast":{"self":false,"ack":true},"presence":{"enabled":true}}`
	out := members["outsider"].c
	out.write(joinFrame("1", "realtime:room", config))
	if f := out.next(); !jsonEq(f.Payload, `{"status":"error","response":{"reason":"Unauthorized: You do not have permissions to read from this Channel topic: room"}}`) {
		t.Fatalf("outsider's join: %s", f)
	}
	for _, name := range []string{"full", "reader", "bcast", "pres"} {
		c := members[name].c
		c.write(joinFrame("1", "realtime:room", config))
		if f := c.next(); jsonField(f.Payload, "status") != `"ok"` {
			t.Fatalf("%s's join: %s", name, f)
		}
		// presence_state only for those who may read presence.
		got := events(c.barrier())
		if want := map[bool]string{true: "presence_state", false: ""}[name != "bcast"]; got != want {
			t.Errorf("%s after the join: %q, want %q", name, got, want)
		}
	}

	// Sends: full's reaches the broadcast readers; reader's and pres's
	// (no broadcast write) are dropped without a reply and reach no one.
	for _, s := range []struct{ who, event string }{{"reader", "sneaky"}, {"pres", "sneaky"}, {"full", "hello"}} {
		members[s.who].c.write(broadcastFrame("1", "b-"+s.who, "realtime:room", s.event, `{}`))
	}
	members["full"].c.until("full's ack", isReplyTo("b-full"))
	want := map[string]string{"full": "", "reader": "broadcast:hello", "bcast": "broadcast:hello", "pres": ""}
	for name, w := range want {
		if got := events(members[name].c.barrier()); got != w {
			t.Errorf("%s received %q, want %q", name, got, w)
		}
	}

	// Tracks: reader may not write presence (an error reply, {}); pres's
	// track reaches those who may read presence, not bcast.
	rc := members["reader"].c
	rc.write(`["1","t1","realtime:room","presence",{"type":"presence","event":"track","payload":{"u":"reader"}}]`)
	if f := rc.next(); !jsonEq(f.Payload, `{"status":"error","response":{}}`) {
		t.Errorf("reader's track: %s", f)
	}
	pc := members["pres"].c
	pc.write(`["1","t2","realtime:room","presence",{"type":"presence","event":"track","payload":{"u":"pres"}}]`)
	if seen := pc.until("pres's track reply", isReplyTo("t2")); events(seen) != "presence_diff" {
		t.Errorf("pres before its track reply: %q", events(seen))
	}
	for name, w := range map[string]string{"full": "presence_diff", "reader": "presence_diff", "bcast": ""} {
		if got := events(members[name].c.barrier()); got != w {
			t.Errorf("%s after pres's track: %q, want %q", name, got, w)
		}
	}

	testPrivateREST(t, ts, members)

	// Revoked: full's row goes; a new token closes full's channel. bcast,
	// still a member, refreshes and stays.
	pg.Exec("DELETE FROM members WHERE user_id = $1", members["full"].sub)
	fc := members["full"].c
	fc.write(`["1","r1","realtime:room","access_token",{"access_token":"` + userToken(t, "authenticated", members["full"].sub, 2*time.Hour) + `"}]`)
	if f := fc.next(); f.Event != "system" || jsonField(f.Payload, "message") != `"You no longer have permission to read from this Channel topic: room"` {
		t.Errorf("full after its membership was revoked: %s", f)
	}
	if f := fc.next(); f.Event != "phx_close" {
		t.Errorf("full: %s, want phx_close", f)
	}
	bc := members["bcast"].c
	bc.write(`["1","r2","realtime:room","access_token",{"access_token":"` + userToken(t, "authenticated", members["bcast"].sub, 2*time.Hour) + `"}]`)
	bc.write(broadcastFrame("1", "b2", "realtime:room", "still", `{}`))
	bc.until("bcast's ack after its refresh", isReplyTo("b2"))
	if got := events(rc.barrier()); got != "broadcast:still" {
		t.Errorf("reader after bcast's refresh: %q", got)
	}
	if n := set.GetOrCreateCounter("meshcast_channel_auth_db_queries_total").Get(); n == 0 {
		t.Error("no policy query counted")
	}
}

// testPrivateREST: private REST broadcasts are checked as the JWT's
// writes: a batch drops what it may not write (202), the single endpoint
// answers 403.
func testPrivateREST(t *testing.T, ts *testServer, members map[string]*member) {
	t.Helper()
	batch := func(who, event string) {
		tok := userToken(t, "authenticated", members[who].sub, time.Hour)
		body := `{"messages":[{"topic":"room","event":"` + event + `","payload":{},"private":true}]}`
		if r, err := ts.do("POST", "/api/broadcast", "application/json", body, "Authorization: Bearer "+tok); err != nil || r.status != 202 {
			t.Fatalf("%s's batch: %v %v", who, r, err)
		}
	}
	single := func(who, event string, status int) {
		tok := userToken(t, "authenticated", members[who].sub, time.Hour)
		r, err := ts.do("POST", "/api/broadcast/room/events/"+event+"?private=true", "application/json", `{}`, "Authorization: Bearer "+tok)
		if err != nil || r.status != status {
			t.Fatalf("%s's single broadcast: %v %v, want %d", who, r, err, status)
		}
	}
	batch("reader", "rest-denied")
	single("reader", "rest-denied", 403)
	batch("bcast", "rest-batch")
	single("bcast", "rest-single", 202)
	for name, want := range map[string]string{"full": "broadcast:rest-batch broadcast:rest-single", "reader": "broadcast:rest-batch broadcast:rest-single",
		"bcast": "broadcast:rest-batch broadcast:rest-single", "pres": ""} {
		if got := events(members[name].c.barrier()); got != want {
			t.Errorf("%s after the REST sends: %q, want %q", name, got, want)
		}
	}
}
