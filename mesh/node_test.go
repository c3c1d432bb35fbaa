package mesh

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/meshcast/meshcast/mesh/presence"
	"github.com/meshcast/meshcast/wire/meshproto"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recorder is a Handler that keeps what it was given.
type recorder struct{ delivered chan *meshproto.Broadcast }

func newRecorder() *recorder { return &recorder{delivered: make(chan *meshproto.Broadcast, 100)} }

func (r *recorder) Deliver(b *meshproto.Broadcast)                  { r.delivered <- b }
func (r *recorder) ApplyPresence(string, presence.Delta) bool       { return true }
func (r *recorder) ApplyPresenceSnapshot(string, presence.Snapshot) {}
func (r *recorder) OwnPresence(string) presence.Snapshot            { return presence.Snapshot{} }
func (r *recorder) NodeDown(string)                                 {}

func startNode(t *testing.T, name, secret string, join []string, h Handler) *Node {
	t.Helper()
	n, err := New(Config{
		Name:          name,
		GossipAddr:    "127.0.0.1:0",
		MeshAddr:      "127.0.0.1:0",
		Join:          join,
		ClusterSecret: []byte(secret),
		Gossip:        GossipConfig{ProbeInterval: 200 * time.Millisecond},
		PeerTimeout:   time.Second,
		Logger:        slog.New(slog.DiscardHandler),
	}, h)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	return n
}

func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

func metric(n *Node, name string) string {
	var b strings.Builder
	n.WritePrometheus(&b)
	for _, line := range strings.Split(b.String(), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return v
		}
	}
	return ""
}

func TestNodesConnectAndDeliver(t *testing.T) {
	ra, rb := newRecorder(), newRecorder()
	a := startNode(t, "a", "s3cret", nil, ra)
	b := startNode(t, "b", "s3cret", []string{a.GossipAddr()}, rb)
	if !waitFor(5*time.Second, func() bool { return a.Connected(b.ID()) && b.Connected(a.ID()) }) {
		t.Fatal("nodes never connected")
	}
	<-b.Subscribe("t")
	if !waitFor(5*time.Second, func() bool { return len(a.InterestedNodes("t")) == 1 }) {
		t.Fatal("a never learned b's interest")
	}
	if sent := a.Publish(&meshproto.Broadcast{Topic: "t", Event: "e", Payload: []byte(`{}`), Enc: 1}); sent != 1 {
		t.Fatalf("Publish queued %d frames, want 1", sent)
	}
	select {
	case got := <-rb.delivered:
		if got.Topic != "t" || got.Origin != a.ID() {
			t.Fatalf("delivered %+v", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("broadcast not delivered")
	}
	if sent := a.Publish(&meshproto.Broadcast{Topic: "nobody", Event: "e", Payload: []byte(`{}`)}); sent != 0 {
		t.Fatalf("a topic without remote interest went to %d nodes", sent)
	}
}

// TestPeerWithoutSecretIsRefused points a node with another secret at a
// node's mesh directly (its gossip could not even decrypt ours): the QUIC
// handshake completes, but the Hello MAC does not, and nothing it sends is
// processed.
func TestPeerWithoutSecretIsRefused(t *testing.T) {
	ra, rm := newRecorder(), newRecorder()
	a := startNode(t, "a", "right", nil, ra)
	mallory := startNode(t, "mallory", "wrong", nil, rm)
	mallory.memberUp(Member{ID: a.ID(), Name: "a", MeshAddr: a.self.MeshAddr})
	if !waitFor(5*time.Second, func() bool { return metric(a, "meshcast_mesh_auth_failures_total") != "0" }) {
		t.Fatal("a did not refuse the peer without the secret")
	}
	mallory.Publish(&meshproto.Broadcast{Topic: "t"}) // no interest known: nothing to send
	if mallory.Connected(a.ID()) {
		t.Fatal("a peer without the secret counts as connected")
	}
	// Gossip with the wrong key is refused too.
	if _, err := mallory.ms.join([]string{a.GossipAddr()}); err == nil && waitFor(time.Second, func() bool { return len(a.Members()) > 0 }) {
		t.Fatal("a node with the wrong secret joined the gossip")
	}
	select {
	case b := <-ra.delivered:
		t.Fatalf("a delivered a frame from an unauthenticated peer: %+v", b)
	default:
	}
}

func TestBadFrameFromPeerClosesOnlyThatConnection(t *testing.T) {
	ra, rb := newRecorder(), newRecorder()
	a := startNode(t, "a", "s", nil, ra)
	b := startNode(t, "b", "s", []string{a.GossipAddr()}, rb)
	if !waitFor(5*time.Second, func() bool { return b.Connected(a.ID()) }) {
		t.Fatal("never connected")
	}
	// A frame with an unknown type on b's data lane toward a.
	b.mu.RLock()
	p := b.peers[a.ID()]
	b.mu.RUnlock()
	p.send(laneData, []byte{0, 0, 0, 2, 0xEE, 1})
	<-b.Subscribe("t")
	// a drops the connection; b redials and the cluster works again.
	if !waitFor(10*time.Second, func() bool { return len(a.InterestedNodes("t")) == 1 && a.Connected(b.ID()) && b.Connected(a.ID()) }) {
		t.Fatal("the cluster did not recover from a bad frame")
	}
	a.Publish(&meshproto.Broadcast{Topic: "t", Payload: []byte(`{}`)})
	select {
	case <-rb.delivered:
	case <-time.After(5 * time.Second):
		t.Fatal("no delivery after recovery")
	}
}

// TestJoinByDNSName joins through a host name, as fly.io's <app>.internal
// is used: memberlist resolves it and tries every address record.
func TestJoinByDNSName(t *testing.T) {
	a := startNode(t, "a", "s", nil, newRecorder())
	_, port, _ := strings.Cut(a.GossipAddr(), ":")
	b := startNode(t, "b", "s", []string{"localhost:" + port}, newRecorder())
	if !waitFor(10*time.Second, func() bool { return len(b.Members()) == 1 && len(a.Members()) == 1 }) {
		t.Fatalf("join by name failed: a sees %v, b sees %v", a.Members(), b.Members())
	}
}
