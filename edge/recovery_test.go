package edge

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/meshcast/meshcast/mesh"
)

func withRecovery(c *Config) { c.RecoveryWindow, c.RecoveryBytes = time.Minute, 1<<20 }

// recJoin joins topic on c asking to recover from vec (a JSON object, or
// "" for none) and returns the reply's response.
func recJoin(t *testing.T, c *wsClient, ref, topic, vec string) json.RawMessage {
	t.Helper()
	cfg := `{"broadcast":{"self":false}}`
	if vec != "" {
		cfg = fmt.Sprintf(`{"broadcast":{"self":false},"recover":{"broadcast":%s}}`, vec)
	}
	c.write(joinFrame(ref, topic, cfg))
	f := c.next()
	if f.Event != "phx_reply" || jsonField(f.Payload, "status") != `"ok"` {
		t.Fatalf("join reply: %s", f)
	}
	var r struct{ Response json.RawMessage }
	json.Unmarshal(f.Payload, &r)
	return r.Response
}

// publishN sends n broadcasts numbered from first on pub (joined with ack)
// and waits for their acks, so that the node has accepted them.
func publishN(t *testing.T, pub *wsClient, topic string, first, n int) {
	t.Helper()
	for i := first; i < first+n; i++ {
		pub.write(broadcastFrame("1", fmt.Sprint(100+i), topic, "seq", fmt.Sprintf(`{"n":%d}`, i)))
		if f := pub.next(); f.Event != "phx_reply" {
			t.Fatalf("ack: %s", f)
		}
	}
}

// readSeq reads n broadcasts and checks they are numbered from first,
// each with a meta.pos; it returns the last pos.
func readSeq(t *testing.T, c *wsClient, first, n int) string {
	t.Helper()
	var pos string
	for i := first; i < first+n; i++ {
		f := c.next()
		if f.Event != "broadcast" || jsonField(f.Payload, "payload.n") != fmt.Sprint(i) {
			t.Fatalf("want broadcast n=%d, got %s", i, f)
		}
		if pos = jsonField(f.Payload, "meta.pos"); pos == "" {
			t.Fatalf("broadcast without meta.pos: %s", f)
		}
	}
	return pos
}

// vecOf turns the last "epoch:offset" seen into a one-stream vector.
func vecOf(pos string) string {
	p := strings.Trim(pos, `"`)
	i := strings.IndexByte(p, ':')
	return fmt.Sprintf(`{%q:%s}`, p[:i], p[i+1:])
}

func TestRecoveryAfterRejoin(t *testing.T) {
	ts := startServer(t, withRecovery)
	pub := ts.connect(t)
	recJoin(t, pub, "1", "realtime:r", "")
	pub.write(joinFrame("1", "realtime:r", `{"broadcast":{"ack":true}}`))
	pub.next()
	sub := ts.connect(t)
	resp := recJoin(t, sub, "1", "realtime:r", "")
	if jsonField(resp, "positions.broadcast") == "" || jsonField(resp, "recovered") != "" {
		t.Fatalf("a join without recover: %s, want positions and no recovered", resp)
	}
	publishN(t, pub, "realtime:r", 1, 3)
	last := readSeq(t, sub, 1, 3)
	sub.nc.Close() // the subscriber drops off

	publishN(t, pub, "realtime:r", 4, 5)
	sub = ts.connect(t)
	resp = recJoin(t, sub, "1", "realtime:r", vecOf(last))
	if jsonField(resp, "recovered") != "true" {
		t.Fatalf("rejoin: %s, want recovered", resp)
	}
	readSeq(t, sub, 4, 5) // what it missed, then live
	publishN(t, pub, "realtime:r", 9, 1)
	readSeq(t, sub, 9, 1)
}

func TestRecoveryFailsExplicitly(t *testing.T) {
	cases := []struct {
		name  string
		tweak func(*Config)
		// between runs after the subscriber left; vec is its vector.
		between func(t *testing.T, ts *testServer, pub *wsClient)
		vec     func(last string) string
		reason  string
	}{
		{
			name:    "an epoch no node holds (the node restarted)",
			tweak:   withRecovery,
			between: func(*testing.T, *testServer, *wsClient) {},
			vec:     func(string) string { return `{"00000000000000ab":4}` },
			reason:  "no live node holds stream 00000000000000ab",
		},
		{
			name:  "history evicted by the byte budget",
			tweak: func(c *Config) { c.RecoveryWindow, c.RecoveryBytes = time.Minute, 4*(history0+16) },
			between: func(t *testing.T, ts *testServer, pub *wsClient) {
				publishN(t, pub, "realtime:r", 4, 10)
			},
			vec:    func(last string) string { return vecOf(last) },
			reason: "are no longer held",
		},
		{
			name:  "window passed",
			tweak: func(c *Config) { c.RecoveryWindow, c.RecoveryBytes = 300*time.Millisecond, 0 },
			between: func(t *testing.T, ts *testServer, pub *wsClient) {
				publishN(t, pub, "realtime:r", 4, 1)
				time.Sleep(400 * time.Millisecond) // the window itself must pass
				publishN(t, pub, "realtime:r", 5, 1)
			},
			vec:    func(last string) string { return vecOf(last) },
			reason: "are no longer held",
		},
		{
			name:    "a malformed vector",
			tweak:   withRecovery,
			between: func(*testing.T, *testServer, *wsClient) {},
			vec:     func(string) string { return `{"00000000000000ab":"x"}` },
			reason:  "recover.broadcast must map",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, tc.tweak)
			pub := ts.connect(t)
			pub.write(joinFrame("1", "realtime:r", `{"broadcast":{"ack":true}}`))
			pub.next()
			sub := ts.connect(t)
			recJoin(t, sub, "1", "realtime:r", "")
			publishN(t, pub, "realtime:r", 1, 3)
			last := readSeq(t, sub, 1, 3)
			sub.nc.Close()
			tc.between(t, ts, pub)
			sub = ts.connect(t)
			resp := recJoin(t, sub, "1", "realtime:r", tc.vec(last))
			if jsonField(resp, "recovered") != "false" {
				t.Fatalf("rejoin: %s, want recovered false", resp)
			}
			f := sub.next()
			if f.Event != "system" || jsonField(f.Payload, "extension") != `"broadcast"` ||
				jsonField(f.Payload, "status") != `"error"` || jsonField(f.Payload, "channel") != `"r"` ||
				!strings.Contains(jsonField(f.Payload, "message"), "recovery failed: ") ||
				!strings.Contains(jsonField(f.Payload, "message"), tc.reason) {
				t.Fatalf("want the system error (%s), got %s", tc.reason, f)
			}
			// Then live, from the join vector.
			publishN(t, pub, "realtime:r", 50, 1)
			readSeq(t, sub, 50, 1)
		})
	}
}

// history0 is what one test broadcast's payload and meta count.
const history0 = 100

func TestRecoveryOffSendsNoPositions(t *testing.T) {
	ts := startServer(t, nil) // startServer turns recovery off
	sub := ts.connect(t)
	if resp := recJoin(t, sub, "1", "realtime:r", `{"00000000000000ab":4}`); jsonField(resp, "positions") != "" || jsonField(resp, "recovered") != "" {
		t.Fatalf("recovery off: %s", resp)
	}
}

// TestClusterRecoveryFetchesFromPeer: a subscriber's node that stopped
// listening to the topic while the subscriber was away, and a node the
// subscriber never was on, both fetch what it missed from the publisher's
// node.
func TestClusterRecoveryFetchesFromPeer(t *testing.T) {
	nodes := startClusterWith(t, []string{"r", "r", "r"}, withRecovery, func(c *mesh.Config) { c.InterestLinger = 50 * time.Millisecond })
	pub := nodes[0].connect(t)
	pub.write(joinFrame("1", "realtime:r", `{"broadcast":{"ack":true}}`))
	pub.next()
	sub := nodes[1].connect(t)
	recJoin(t, sub, "1", "realtime:r", "")
	publishN(t, pub, "realtime:r", 1, 2)
	last := readSeq(t, sub, 1, 2)
	sub.nc.Close()
	// Node 1 stops listening, so what follows never reaches it.
	if !waitFor(5*time.Second, func() bool { return len(nodes[0].node.InterestedNodes("realtime:r")) == 0 }) {
		t.Fatal("node 1 kept its interest")
	}
	publishN(t, pub, "realtime:r", 3, 4)
	for _, n := range []*clusterNode{nodes[1], nodes[2]} {
		sub = n.connect(t)
		resp := recJoin(t, sub, "1", "realtime:r", vecOf(last))
		if jsonField(resp, "recovered") != "true" {
			t.Fatalf("rejoin: %s, want recovered", resp)
		}
		readSeq(t, sub, 3, 4)
		sub.nc.Close()
		if v, _ := n.metric(`meshcast_recovery_fetches_total{result="ok"}`); v != "1" {
			t.Fatalf("fetches from the publisher's node: %q, want 1", v)
		}
	}
}

// TestClusterRecoveryAfterOriginCrash: the publisher's node crashes; a
// subscriber that was away while it published recovers on its own node
// from the replica another subscriber's node kept.
func TestClusterRecoveryAfterOriginCrash(t *testing.T) {
	nodes := startClusterWith(t, []string{"r", "r", "r"}, withRecovery, func(c *mesh.Config) { c.InterestLinger = 50 * time.Millisecond })
	pub := nodes[0].connect(t)
	pub.write(joinFrame("1", "realtime:r", `{"broadcast":{"ack":true}}`))
	pub.next()
	keeper := nodes[1].connect(t) // node 1 keeps a replica of node 0's stream
	recJoin(t, keeper, "1", "realtime:r", "")
	sub := nodes[2].connect(t)
	recJoin(t, sub, "1", "realtime:r", "")
	publishN(t, pub, "realtime:r", 1, 2)
	readSeq(t, keeper, 1, 2)
	last := readSeq(t, sub, 1, 2)
	sub.nc.Close()
	if !waitFor(5*time.Second, func() bool { return len(nodes[0].node.InterestedNodes("realtime:r")) == 1 }) {
		t.Fatal("node 2 kept its interest")
	}
	publishN(t, pub, "realtime:r", 3, 3)
	readSeq(t, keeper, 3, 3)
	nodes[0].node.Close() // the origin crashes: mesh and gossip silent
	if !waitFor(15*time.Second, func() bool { return len(nodes[2].node.Members()) == 2 }) {
		t.Fatal("node 0 was not declared dead")
	}
	sub = nodes[2].connect(t)
	resp := recJoin(t, sub, "1", "realtime:r", vecOf(last))
	if jsonField(resp, "recovered") != "true" {
		t.Fatalf("rejoin: %s, want recovered from node 1's replica", resp)
	}
	readSeq(t, sub, 3, 3)
}

func TestAppendJoinPositions(t *testing.T) {
	cases := []struct {
		jp   joinPositions
		want string
	}{
		{joinPositions{}, `{"postgres_changes":[],"positions":{"broadcast":{}}}`},
		{joinPositions{broadcast: map[uint64]uint64{0xab: 3}, asked: true, ok: true},
			`{"postgres_changes":[],"positions":{"broadcast":{"00000000000000ab":3}},"recovered":true}`},
		{joinPositions{changes: "0/16B3748:3", asked: true},
			`{"postgres_changes":[],"positions":{"broadcast":{},"postgres_changes":"0/16B3748:3"},"recovered":false}`},
	}
	for _, c := range cases {
		if got := string(appendJoinPositions(joinOK, c.jp)); got != c.want {
			t.Errorf("got %s, want %s", got, c.want)
		}
	}
}
