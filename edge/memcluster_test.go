package edge

import (
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/meshcast/meshcast/mesh/presence"
	"github.com/meshcast/meshcast/wire/meshproto"
)

// These tests check the edge's cluster rules over MemoryCluster: servers
// of one process joined without sockets, and peers the test plays itself.
// The QUIC tests (cluster_test.go) check the same edge over the real mesh.

// startMemCluster starts one server per ID, joined by a MemoryCluster,
// which stops when the test ends (after the servers).
func startMemCluster(t *testing.T, ids ...string) (*MemoryCluster, []*testServer) {
	t.Helper()
	mc := NewMemoryCluster()
	t.Cleanup(mc.Close)
	var servers []*testServer
	for _, id := range ids {
		cfg := DefaultConfig()
		cfg.Logger = slog.New(slog.DiscardHandler)
		cfg.NodeID = id
		cfg.RecoveryWindow = -1 // exact frames, as startCluster's
		s, err := NewServer(cfg, Deps{Cluster: mc.Node(id)})
		if err != nil {
			t.Fatal(err)
		}
		ts := serve(t, s)
		t.Cleanup(func() {
			if err := ts.stop(); err != nil {
				t.Errorf("Shutdown: %v", err)
			}
		})
		servers = append(servers, ts)
	}
	return mc, servers
}

// playedNode is a node of a MemoryCluster played by the test: it records
// the broadcasts it gets and answers for its own presence.
type playedNode struct {
	Cluster
	mu    sync.Mutex
	got   []*Broadcast
	own   presence.Snapshot
	asked chan string // topics whose snapshot was asked for
}

func newPlayedNode(mc *MemoryCluster, id string) *playedNode {
	p := &playedNode{Cluster: mc.Node(id), asked: make(chan string, 100), own: presence.Snapshot{Owner: id}}
	p.Register(p)
	return p
}

func (p *playedNode) Deliver(b *Broadcast) {
	p.mu.Lock()
	p.got = append(p.got, b)
	p.mu.Unlock()
}

func (p *playedNode) received() []*Broadcast {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.got
}

func (p *playedNode) ApplyPresence(string, presence.Delta) bool       { return true }
func (p *playedNode) ApplyPresenceSnapshot(string, presence.Snapshot) {}
func (p *playedNode) NodeDown(string)                                 {}
func (p *playedNode) TopicFrames(string) []meshproto.Frame            { return nil }
func (p *playedNode) Receive(string, meshproto.Frame)                 {}

func (p *playedNode) OwnPresence(topic string) presence.Snapshot {
	p.asked <- topic
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.own
}

// askedFor waits for the next snapshot request and returns its topic.
func (p *playedNode) askedFor(t *testing.T) string {
	t.Helper()
	select {
	case topic := <-p.asked:
		return topic
	case <-time.After(testWait):
		t.Fatal("no snapshot was asked for")
		return ""
	}
}

// A broadcast crosses to the nodes with subscribers of its topic, in the
// order it was published, and to no other node.
func TestMemClusterBroadcastOnlyToInterestedNodes(t *testing.T) {
	mc, s := startMemCluster(t, "a", "b")
	bystander := newPlayedNode(mc, "c")
	bystander.Subscribe("realtime:barrier")
	const topic = "realtime:room"
	sub := s[1].connect(t)
	mustJoin(t, sub, "1", topic, `{}`)
	for i := 0; i < 20; i++ {
		if r, err := s[0].do("POST", "/api/broadcast", "application/json",
			fmt.Sprintf(`{"messages":[{"topic":"room","event":"e","payload":{"i":%d}}]}`, i)); err != nil || r.status != 202 {
			t.Fatalf("REST: %v %+v", err, r)
		}
	}
	for i := 0; i < 20; i++ {
		if f := sub.next(); f.Event != "broadcast" || jsonField(f.Payload, "payload.i") != strconv.Itoa(i) {
			t.Fatalf("message %d: %s", i, f)
		}
	}
	// What a node sends arrives in order, so once the barrier's broadcast
	// has reached the bystander, any of room's would have too.
	if r, err := s[0].do("POST", "/api/broadcast", "application/json",
		`{"messages":[{"topic":"barrier","event":"e","payload":{}}]}`); err != nil || r.status != 202 {
		t.Fatalf("REST: %v %+v", err, r)
	}
	if !waitFor(testWait, func() bool { return len(bystander.received()) > 0 }) {
		t.Fatal("the barrier's broadcast never reached its subscriber")
	}
	if got := bystander.received(); len(got) != 1 || got[0].Topic != "realtime:barrier" || got[0].Origin != "a" {
		t.Fatalf("the node without subscribers of %s got %d broadcasts, the first %+v", topic, len(got), *got[0])
	}
}

// A first join of a topic on a node answers with the presence the other
// nodes hold: the join waits for their snapshots.
func TestMemClusterFirstJoinHasClusterPresence(t *testing.T) {
	_, s := startMemCluster(t, "a", "b")
	const topic = "realtime:lobby"
	a := s[0].connect(t)
	va := presenceView{}
	va.apply(t, wsFrame{Event: "presence_state", Payload: joinTopic(t, a, topic, "alice")})
	track(a, topic, "2", `{}`)
	awaitPresence(t, a, va, "alice", testWait) // tracked on a's node
	b := s[1].connect(t)
	v := presenceView{}
	v.apply(t, wsFrame{Event: "presence_state", Payload: joinTopic(t, b, topic, "bob")})
	if v.keys() != "alice" {
		t.Fatalf("the first join on b sees presence %q, want alice's", v.keys())
	}
}

// A node that leaves the cluster takes its presence with it: the clients
// of the other nodes get the leaves.
func TestMemClusterNodeLeavesPresence(t *testing.T) {
	mc, s := startMemCluster(t, "a", "b")
	const topic = "realtime:crash"
	a, b := s[0].connect(t), s[1].connect(t)
	va := presenceView{}
	va.apply(t, wsFrame{Event: "presence_state", Payload: joinTopic(t, a, topic, "alice")})
	joinTopic(t, b, topic, "bob")
	track(a, topic, "2", `{}`)
	track(b, topic, "2", `{}`)
	awaitPresence(t, a, va, "alice,bob", testWait)
	mc.Leave("b")
	awaitPresence(t, a, va, "alice", testWait)
}

// A presence delta that does not follow the last one applied of its
// owner is not applied: the node asks the owner for its snapshot, which
// replaces what it held.
func TestMemClusterPresenceGapAsksForSnapshot(t *testing.T) {
	mc, s := startMemCluster(t, "a")
	const topic = "realtime:gap"
	p := newPlayedNode(mc, "p")
	a := s[0].connect(t)
	va := presenceView{}
	va.apply(t, wsFrame{Event: "presence_state", Payload: joinTopic(t, a, topic, "alice")})
	if got := p.askedFor(t); got != topic { // a's first join asked p
		t.Fatalf("snapshot of %q asked, want %q", got, topic)
	}
	carol := presence.Entry{Owner: "p", Holder: 1, Key: "carol", Ref: "c1", Meta: []byte(`{}`)}
	dave := presence.Entry{Owner: "p", Holder: 2, Key: "dave", Ref: "d1", Meta: []byte(`{}`)}
	p.mu.Lock()
	p.own = presence.Snapshot{Owner: "p", Seq: 7, Entries: []presence.Entry{carol}}
	p.mu.Unlock()
	// Seq 7 after 5, which a never got: a gap.
	p.SendPresence(topic, presence.Delta{Owner: "p", Seq: 7, PrevSeq: 5, Joins: []presence.Join{{Entry: dave}}})
	if got := p.askedFor(t); got != topic {
		t.Fatalf("snapshot of %q asked, want %q", got, topic)
	}
	awaitPresence(t, a, va, "carol", testWait)
	// The next delta follows the snapshot, and applies.
	p.SendPresence(topic, presence.Delta{Owner: "p", Seq: 8, PrevSeq: 7, Joins: []presence.Join{{Entry: dave}}})
	awaitPresence(t, a, va, "carol,dave", testWait)
}
