package mesh

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"log/slog"
	"reflect"
	"testing"
	"time"

	"github.com/meshcast/meshcast/mesh/presence"
	"github.com/meshcast/meshcast/mesh/route"
	"github.com/meshcast/meshcast/wire/meshproto"
)

// The rules themselves are table-tested in mesh/route; these tests check
// that the driver carries them out.

// fakePeer makes id a member this node believes connected. Its dialer
// finds nobody at the address and retries until the member goes.
func fakePeer(n *Node, id string) *peer {
	n.memberUp(Member{ID: id, Name: id, MeshAddr: "127.0.0.1:9"})
	n.mu.RLock()
	p := n.peers[id]
	n.mu.RUnlock()
	p.connected.Store(true)
	return p
}

func closedWithin(ch <-chan struct{}, d time.Duration) bool {
	select {
	case <-ch:
		return true
	case <-time.After(d):
		return false
	}
}

// A join waiting on a peer that never answers is let go when the node
// stops, not left hanging (and the driver ends: goleak checks).
func TestWaitingJoinsLetGoWhenNodeStops(t *testing.T) {
	n := startNode(t, "a", "s", nil, newRecorder(), func(c *Config) { c.SnapshotWait = time.Hour })
	fakePeer(n, "x-1")
	ready := n.Subscribe("t")
	if !waitFor(5*time.Second, func() bool {
		n.mu.RLock()
		defer n.mu.RUnlock()
		return n.core.Waiting("t")
	}) {
		t.Fatal("the subscribe never waited for the connected peer")
	}
	select {
	case <-ready:
		t.Fatal("ready before the connected peer answered")
	default:
	}
	n.Close()
	if !closedWithin(ready, 5*time.Second) {
		t.Fatal("a waiting join was not let go when the node stopped")
	}
	if !closedWithin(n.Subscribe("u"), time.Second) {
		t.Fatal("a subscribe after Close waits")
	}

	never, err := New(Config{Name: "y", GossipAddr: "127.0.0.1:0", MeshAddr: "127.0.0.1:0", ClusterSecret: []byte("s"), Logger: slog.New(slog.DiscardHandler)}, newRecorder())
	if err != nil {
		t.Fatal(err)
	}
	ready = never.Subscribe("t")
	never.Close()
	if !closedWithin(ready, time.Second) {
		t.Fatal("a subscribe to a node closed before it started waits")
	}
}

// downRecorder notes, when the node tells it a member went, whether the
// mesh still routes topic "t" to anyone.
type downRecorder struct {
	*recorder
	n      *Node
	routes chan []string
}

func (d *downRecorder) NodeDown(string) { d.routes <- d.n.InterestedNodes("t") }

// The edge drops a dead member's presence only once the mesh has stopped
// routing to it: clients that see the member leave see no more of it.
// Its snapshot no longer holds up a join, and what it sent before its
// death is ignored.
func TestNodeDownAfterItsInterestsGo(t *testing.T) {
	h := &downRecorder{recorder: newRecorder(), routes: make(chan []string, 1)}
	n := startNode(t, "a", "s", nil, h, func(c *Config) { c.SnapshotWait = time.Hour })
	h.n = n
	fakePeer(n, "x-1")
	n.dispatch("x-1", &meshproto.InterestAdd{Topics: []string{"t"}})
	if !waitFor(5*time.Second, func() bool { return len(n.InterestedNodes("t")) == 1 }) {
		t.Fatal("the peer's interest was never recorded")
	}
	ready := n.Subscribe("u")
	n.memberDown("x-1", false)
	select {
	case routes := <-h.routes:
		if len(routes) != 0 {
			t.Fatalf("the edge was told of the death while t still routed to %v", routes)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the edge was never told of the death")
	}
	if !closedWithin(ready, 5*time.Second) {
		t.Fatal("a join still waits for a dead peer's snapshot")
	}
}

// A resync carries this node's whole interest set and its presence of the
// topics the peer shares with it, as snapshots.
func TestResyncFrames(t *testing.T) {
	r := newRecorder()
	r.own = func(topic string) presence.Snapshot {
		return presence.Snapshot{Owner: "a-1", Seq: 3, Entries: []presence.Entry{{Owner: "a-1", Holder: 1, Key: "k-" + topic, Ref: "r", Meta: []byte(`{}`)}}}
	}
	n, err := New(Config{Name: "a", GossipAddr: "127.0.0.1:0", MeshAddr: "127.0.0.1:0", ClusterSecret: []byte("s"), Logger: slog.New(slog.DiscardHandler)}, r)
	if err != nil {
		t.Fatal(err)
	}
	// Not started: the test steps the core in the driver's place.
	n.core.Tick(time.Now())
	for _, ev := range []route.Event{
		route.Subscribe{Topic: "t"}, route.Subscribe{Topic: "u"}, route.Unsubscribe{Topic: "u"},
		route.InterestAdd{From: "b-1", Topics: []string{"u", "v"}},
	} {
		n.core.Step(ev)
	}
	var buf bytes.Buffer
	emit := func(f []byte) error { buf.Write(f); return nil }
	if err := n.resyncFrames(&peer{n: n, m: Member{ID: "b-1"}}, laneControl, emit); err != nil {
		t.Fatal(err)
	}
	var got []meshproto.Frame
	br := bufio.NewReader(&buf)
	for {
		f, _, err := meshproto.ReadFrame(br, 1<<20, nil)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, f)
	}
	want := []meshproto.Frame{
		&meshproto.InterestSnapshot{Topics: []string{"t", "u"}},
		&meshproto.PresenceSnapshot{Topic: "u", Owner: "a-1", Seq: 3, Entries: []meshproto.PresenceEntry{{Holder: 1, Key: "k-u", Ref: "r", Meta: []byte(`{}`)}}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("resync frames\n got %+v\nwant %+v", got, want)
	}
}
