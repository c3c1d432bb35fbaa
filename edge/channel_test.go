package edge

import (
	"fmt"
	"strings"
	"testing"

	"github.com/gobwas/ws"
)

func TestJoinReply(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.connect(t)
	c.write(`["6","6","realtime:room1","phx_join",{"config":{"broadcast":{"self":false,"ack":false},"presence":{"key":"","enabled":false},"postgres_changes":[],"private":false},"version":"realtime-js/2.119.1"}]`)
	f := c.next()
	if !jsonEq(f.Raw, `["6","6","realtime:room1","phx_reply",{"status":"ok","response":{"postgres_changes":[]}}]`) {
		t.Errorf("join reply = %s", f)
	}
	// Nothing else follows a join without presence.
	c.write(heartbeatFrame)
	if f := c.next(); !isHeartbeatReply(f) {
		t.Errorf("got %s, want the heartbeat reply", f)
	}
}

func TestJoinReplyV1(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.connectQuery(t, "apikey=k&vsn=1.0.0")
	c.write(`{"topic":"realtime:room1","event":"phx_join","payload":{"config":{}},"ref":"3","join_ref":"3"}`)
	f := c.next()
	if f.Topic != "realtime:room1" || f.Event != "phx_reply" || refOf(f.Ref) != "3" {
		t.Errorf("join reply = %s", f)
	}
	if !jsonEq(f.Payload, `{"status":"ok","response":{"postgres_changes":[]}}`) {
		t.Errorf("join reply payload = %s", f.Payload)
	}
}

func TestJoinPresenceState(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.connect(t)
	c.write(joinFrame("6", "realtime:room1", `{"presence":{"key":"k1","enabled":true}}`))
	if f := c.next(); !jsonEq(f.Raw, `["6","6","realtime:room1","phx_reply",{"status":"ok","response":{"postgres_changes":[]}}]`) {
		t.Fatalf("join reply = %s", f)
	}
	f := c.next()
	if !jsonEq(f.Raw, `["6",null,"realtime:room1","presence_state",{}]`) {
		t.Errorf("after the join reply got %s, want an empty presence_state with join_ref 6 and ref null", f)
	}
}

func TestJoinRefusals(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.connect(t)
	cases := []struct {
		topic, config, want string
	}{
		{"room1", `{}`, `{"reason":"unmatched topic"}`},
		{"phoenix", `{}`, `{"reason":"unmatched topic"}`},
		{"realtime:", `{}`, `{"reason":"TopicNameRequired: You must provide a topic name"}`},
	}
	for i, tc := range cases {
		jr := string(rune('a' + i))
		c.write(joinFrame(jr, tc.topic, tc.config))
		f := c.next()
		if f.Event != "phx_reply" || f.Topic != tc.topic || refOf(f.JoinRef) != jr || refOf(f.Ref) != jr {
			t.Errorf("join %q: reply %s, want a phx_reply with refs %s", tc.topic, f, jr)
		}
		if !jsonEq(f.Payload, `{"status":"error","response":`+tc.want+`}`) {
			t.Errorf("join %q: payload %s, want error %s", tc.topic, f.Payload, tc.want)
		}
	}

	// None of those left a channel behind: a push on them is unmatched.
	c.write(broadcastFrame("p", "q", "realtime:nope", "e", `{}`))
	f := c.next()
	if refOf(f.Ref) != "q" || !jsonEq(f.Payload, `{"status":"error","response":{"reason":"unmatched topic"}}`) {
		t.Errorf("push after a refused join: %s, want unmatched topic", f)
	}
}

func TestPushOnUnjoinedTopic(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.connect(t)
	c.write(`[null,"3","realtime:nope","broadcast",{"type":"broadcast","event":"e","payload":{}}]`)
	f := c.next()
	if !jsonEq(f.Raw, `[null,"3","realtime:nope","phx_reply",{"status":"error","response":{"reason":"unmatched topic"}}]`) {
		t.Errorf("push on an unjoined topic: %s", f)
	}
	c.write(`["1","4","realtime:nope","presence",{"type":"presence","event":"track","payload":{}}]`)
	f = c.next()
	if refOf(f.Ref) != "4" || !jsonEq(f.Payload, `{"status":"error","response":{"reason":"unmatched topic"}}`) {
		t.Errorf("presence on an unjoined topic: %s", f)
	}
}

func TestLeave(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.connect(t)
	pub := ts.connect(t)
	for _, cl := range []*wsClient{c, pub} {
		cl.write(joinFrame("5", "realtime:room1", `{"broadcast":{"ack":true}}`))
		if f := cl.next(); jsonField(f.Payload, "status") != `"ok"` {
			t.Fatalf("join: %s", f)
		}
	}

	c.write(`["5","10","realtime:room1","phx_leave",{}]`)
	if f := c.next(); !jsonEq(f.Raw, `["5","10","realtime:room1","phx_reply",{"status":"ok","response":{}}]`) {
		t.Errorf("leave reply = %s", f)
	}
	if f := c.next(); !jsonEq(f.Raw, `["5","5","realtime:room1","phx_close",{}]`) {
		t.Errorf("after the leave reply got %s, want phx_close with ref = join_ref", f)
	}

	// Leaving a topic that isn't joined is still ok, and nothing else
	// follows.
	c.write(`["7","11","realtime:other","phx_leave",{}]`)
	if f := c.next(); refOf(f.Ref) != "11" || !jsonEq(f.Payload, `{"status":"ok","response":{}}`) {
		t.Errorf("leave of an unjoined topic = %s", f)
	}
	c.write(heartbeatFrame)
	if f := c.next(); !isHeartbeatReply(f) {
		t.Errorf("after leaving an unjoined topic got %s, want nothing before the heartbeat reply", f)
	}
}

// Once a client has its phx_close, the channel is gone: a broadcast
// published after that must not reach it. Each round leaves, waits for
// phx_close, publishes from another socket and waits for the publisher's
// ack (by then the fan-out is queued), then uses a heartbeat as a barrier
// on the left socket. The race this catches is narrow, so it runs many
// rounds.
func TestNoDeliveryAfterLeave(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.JoinsPerSecond = 0 })
	c := ts.connect(t)
	pub := ts.connect(t)
	pub.write(joinFrame("1", "realtime:room1", `{"broadcast":{"ack":true}}`))
	if f := pub.next(); jsonField(f.Payload, "status") != `"ok"` {
		t.Fatalf("join: %s", f)
	}
	for round := range 200 {
		jr := fmt.Sprint(round + 100)
		c.write(joinFrame(jr, "realtime:room1", `{}`))
		if f := c.next(); refOf(f.Ref) != jr || jsonField(f.Payload, "status") != `"ok"` {
			t.Fatalf("round %d: join: %s", round, f)
		}
		c.write(`["` + jr + `","l","realtime:room1","phx_leave",{}]`)
		if f := c.next(); refOf(f.Ref) != "l" {
			t.Fatalf("round %d: leave reply: %s", round, f)
		}
		if f := c.next(); f.Event != "phx_close" {
			t.Fatalf("round %d: got %s, want phx_close", round, f)
		}
		pub.write(broadcastFrame("1", jr, "realtime:room1", "after-close", `{}`))
		if f := pub.next(); refOf(f.Ref) != jr {
			t.Fatalf("round %d: ack: %s", round, f)
		}
		c.write(heartbeatFrame)
		if f := c.next(); !isHeartbeatReply(f) {
			t.Fatalf("round %d: after phx_close the left channel got %s (channel.go queues phx_close before removeChannel)", round, f)
		}
	}
}

func TestDuplicateJoinAndStaleRefs(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.connect(t)
	sub := ts.connect(t)
	sub.write(joinFrame("1", "realtime:room1", `{}`))
	if f := sub.next(); jsonField(f.Payload, "status") != `"ok"` {
		t.Fatalf("subscriber join: %s", f)
	}

	c.write(joinFrame("1", "realtime:room1", `{"broadcast":{"ack":true}}`))
	if f := c.next(); jsonField(f.Payload, "status") != `"ok"` {
		t.Fatalf("first join: %s", f)
	}
	c.write(joinFrame("3", "realtime:room1", `{"broadcast":{"ack":true}}`))
	if f := c.next(); !jsonEq(f.Raw, `["1","1","realtime:room1","phx_close",{}]`) {
		t.Errorf("second join: got %s first, want phx_close of join_ref 1", f)
	}
	if f := c.next(); !jsonEq(f.Raw, `["3","3","realtime:room1","phx_reply",{"status":"ok","response":{"postgres_changes":[]}}]`) {
		t.Errorf("second join reply = %s", f)
	}

	// A push carrying the old join_ref is ignored: no ack, no delivery.
	c.write(broadcastFrame("1", "4", "realtime:room1", "stale", `{"n":1}`))
	c.write(heartbeatFrame)
	if f := c.next(); !isHeartbeatReply(f) {
		t.Errorf("stale push answered with %s", f)
	}
	c.write(broadcastFrame("3", "5", "realtime:room1", "fresh", `{"n":2}`))
	if f := c.next(); refOf(f.Ref) != "5" || jsonField(f.Payload, "status") != `"ok"` {
		t.Errorf("current push ack = %s", f)
	}
	f := sub.next()
	if got := jsonField(f.Payload, "event"); got != `"fresh"` {
		t.Errorf("subscriber got %s, want only the push with the current join_ref", f)
	}
}

func TestChannelLimit(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.MaxChannelsPerConn = 2 })
	c := ts.connect(t)
	for i, topic := range []string{"realtime:a", "realtime:b"} {
		jr := string(rune('1' + i))
		c.write(joinFrame(jr, topic, `{}`))
		if f := c.next(); jsonField(f.Payload, "status") != `"ok"` {
			t.Fatalf("join %s: %s", topic, f)
		}
	}
	c.write(joinFrame("3", "realtime:c", `{}`))
	f := c.next()
	if refOf(f.Ref) != "3" || !jsonEq(f.Payload, `{"status":"error","response":{"reason":"ChannelRateLimitReached: Too many channels"}}`) {
		t.Errorf("third channel: %s, want ChannelRateLimitReached", f)
	}
	// Rejoining a joined topic at the limit replaces it, it does not add.
	c.write(joinFrame("4", "realtime:a", `{}`))
	if f := c.next(); f.Event != "phx_close" || refOf(f.JoinRef) != "1" {
		t.Errorf("rejoin at the limit: got %s, want phx_close of the old join", f)
	}
	if f := c.next(); refOf(f.Ref) != "4" || jsonField(f.Payload, "status") != `"ok"` {
		t.Errorf("rejoin at the limit: %s, want ok", f)
	}
	// A leave frees a slot.
	c.write(`["2","5","realtime:b","phx_leave",{}]`)
	c.next() // reply
	c.next() // phx_close
	c.write(joinFrame("6", "realtime:c", `{}`))
	if f := c.next(); refOf(f.Ref) != "6" || jsonField(f.Payload, "status") != `"ok"` {
		t.Errorf("join after a leave: %s, want ok", f)
	}
}

func TestJoinRateLimitClosesSocket(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.JoinsPerSecond = 2 })
	c := ts.connect(t)
	// Written back to back, so the bucket (2) cannot refill in between.
	c.write(joinFrame("1", "realtime:a", `{}`))
	c.write(joinFrame("2", "realtime:b", `{}`))
	c.write(joinFrame("3", "realtime:c", `{}`))
	for _, jr := range []string{"1", "2"} {
		if f := c.next(); refOf(f.Ref) != jr || jsonField(f.Payload, "status") != `"ok"` {
			t.Errorf("join %s: %s, want ok", jr, f)
		}
	}
	f := c.next()
	if refOf(f.Ref) != "3" || !jsonEq(f.Payload, `{"status":"error","response":{"reason":"ClientJoinRateLimitReached: Too many joins per second"}}`) {
		t.Errorf("third join: %s, want ClientJoinRateLimitReached", f)
	}
	code, reason, skipped, err := c.closed(testWait)
	if err != nil {
		t.Fatalf("socket not closed after the join rate limit: %v", err)
	}
	if code != ws.StatusPolicyViolation || skipped != 0 {
		t.Errorf("close %d %q after %d frames, want 1008", code, reason, skipped)
	}
	if err := c.eof(testWait); err != nil {
		t.Error(err)
	}
}

func TestEventRateLimitClosesChannel(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.EventsPerSecond = 2 })
	c := ts.connect(t)
	c.write(joinFrame("1", "realtime:room1", `{"broadcast":{"ack":true}}`))
	if f := c.next(); jsonField(f.Payload, "status") != `"ok"` {
		t.Fatalf("join: %s", f)
	}
	// Three pushes back to back: the burst is 2.
	for _, r := range []string{"2", "3", "4"} {
		c.write(broadcastFrame("1", r, "realtime:room1", "e", `{}`))
	}
	for _, r := range []string{"2", "3"} {
		if f := c.next(); refOf(f.Ref) != r || jsonField(f.Payload, "status") != `"ok"` {
			t.Errorf("push %s: %s, want ok", r, f)
		}
	}
	f := c.next()
	if !jsonEq(f.Raw, `["1",null,"realtime:room1","system",{"extension":"system","status":"error","message":"Too many messages per second","channel":"room1"}]`) {
		t.Errorf("over the limit: %s, want the system error", f)
	}
	if f := c.next(); !jsonEq(f.Raw, `["1","1","realtime:room1","phx_close",{}]`) {
		t.Errorf("after the system error: %s, want phx_close", f)
	}
	// The socket stays open.
	c.write(heartbeatFrame)
	if f := c.next(); !isHeartbeatReply(f) {
		t.Errorf("got %s, want the heartbeat reply", f)
	}
}

// Config flags may be "true" strings, sub-objects default their missing
// fields, and unknown keys and events are ignored.
func TestJoinConfigLeniency(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.connect(t)
	c.write(joinFrame("1", "realtime:room1", `{"broadcast":{"self":"true","ack":"true"},"presence":{"enabled":"false"},"postgres_changes":[],"whatever":1}`))
	if f := c.next(); !jsonEq(f.Payload, `{"status":"ok","response":{"postgres_changes":[]}}`) {
		t.Fatalf("join: %s", f)
	}
	// No presence_state: presence is "false". An unknown event gets no reply.
	c.write(`["1","2","realtime:room1","custom_event",{"x":1}]`)
	// self and ack are on: the echo and the ack both come.
	c.write(broadcastFrame("1", "3", "realtime:room1", "e", `{}`))
	var got []string
	for range 2 {
		f := c.next()
		got = append(got, f.Event+"/"+refOf(f.Ref))
	}
	if len(got) != 2 || !(got[0] == "broadcast/null" && got[1] == "phx_reply/3" || got[1] == "broadcast/null" && got[0] == "phx_reply/3") {
		t.Errorf("after a push got %v, want the echo and the ack of ref 3", got)
	}
	c.write(heartbeatFrame)
	if f := c.next(); !isHeartbeatReply(f) {
		t.Errorf("got %s, want the heartbeat reply", f)
	}
}

// A v1 (JSON object) client publishes with the text broadcast event; v2
// subscribers get it as an array.
func TestBroadcastFromV1(t *testing.T) {
	ts := startServer(t, nil)
	v1 := ts.connectQuery(t, "apikey=k&vsn=1.0.0")
	v2 := ts.connect(t)
	v1.write(`{"topic":"realtime:room1","event":"phx_join","payload":{"config":{"broadcast":{"ack":true}}},"ref":"1","join_ref":"1"}`)
	if f := v1.next(); jsonField(f.Payload, "status") != `"ok"` {
		t.Fatalf("v1 join: %s", f)
	}
	v2.write(joinFrame("1", "realtime:room1", `{}`))
	if f := v2.next(); jsonField(f.Payload, "status") != `"ok"` {
		t.Fatalf("v2 join: %s", f)
	}
	v1.write(`{"topic":"realtime:room1","event":"broadcast","payload":{"type":"broadcast","event":"e","payload":{"a":1}},"ref":"2","join_ref":"1"}`)
	if f := v1.next(); f.Raw[0] != '{' || f.Event != "phx_reply" || refOf(f.Ref) != "2" || !jsonEq(f.Payload, `{"status":"ok","response":{}}`) {
		t.Errorf("v1 ack = %s", f)
	}
	if f := v2.next(); !jsonEq(f.Raw, `[null,null,"realtime:room1","broadcast",{"type":"broadcast","event":"e","payload":{"a":1}}]`) {
		t.Errorf("v2 subscriber got %s", f)
	}
}

// On a node without a database, bindings are echoed (so realtime-js sees
// no mismatch) and a system error says why there are no changes; the
// channel stays joined for broadcast and presence, as Supabase does.
func TestJoinBindingsWithoutDatabase(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.connect(t)
	c.write(joinFrame("p", "realtime:pg", `{"postgres_changes":[{"event":"INSERT","schema":"public","table":"todos"}]}`))
	f := c.next()
	if !jsonEq(f.Payload, `{"status":"ok","response":{"postgres_changes":[{"event":"INSERT","schema":"public","table":"todos","id":0}]}}`) {
		t.Errorf("join with postgres_changes: %s", f)
	}
	f = c.next()
	if f.Event != "system" || jsonField(f.Payload, "extension") != `"postgres_changes"` || jsonField(f.Payload, "status") != `"error"` ||
		!strings.Contains(jsonField(f.Payload, "message"), "--database-url") {
		t.Errorf("system message: %s", f)
	}
	c.write(broadcastFrame("p", "q", "realtime:pg", "e", `{}`))
	c.write(heartbeatFrame)
	if f := c.next(); !isHeartbeatReply(f) {
		t.Errorf("the channel is not joined: %s", f)
	}
}
