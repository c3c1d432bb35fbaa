package edge

import (
	"unicode/utf8"

	"github.com/meshcast/meshcast/edge/history"
	"github.com/meshcast/meshcast/mesh/presence"
	"github.com/meshcast/meshcast/wire/meshproto"
)

// Cluster is what a Server needs of the other nodes of its cluster: the
// seam between the edge and whatever carries messages between nodes. The
// QUIC mesh (mesh.Node, through cmd/meshcast's adapter) is one;
// MemoryCluster, which joins Servers of one process, is another.
//
// Topics are the server's cluster names (a private channel's is prefixed,
// so that it never mixes with the public channel of the same name). The
// server calls Publish under a connection's lock, SendPresence under a
// topic's lock, Subscribe and Unsubscribe under its topic table's lock: a
// Cluster must not block in them, and must not call the ClusterHandler
// from inside them.
type Cluster interface {
	// ID is this node's ID in the cluster; the node's presence entries
	// carry it, so it must equal Config.NodeID.
	ID() string
	// Register sets what the cluster calls with what other nodes send.
	// NewServer calls it once, before the server publishes anything; the
	// cluster calls h from its own goroutines, never from inside one of
	// the methods above.
	Register(h ClusterHandler)
	// Publish sends a broadcast to the other nodes that have subscribers
	// of its topic. Delivery is at most once, in order per topic.
	Publish(b *Broadcast)
	// Subscribe records that topic has local subscribers (its first
	// joined). The channel closes once the other nodes' presence of topic
	// has reached the handler (ApplyPresenceSnapshot), or the cluster
	// gave up waiting for it; a join waits for it so that its first
	// presence_state is the cluster's.
	Subscribe(topic string) <-chan struct{}
	// Unsubscribe records that topic's last local subscriber has gone.
	Unsubscribe(topic string)
	// SendPresence sends this node's presence delta of topic to the nodes
	// that subscribe to it, in the order of the calls.
	SendPresence(topic string, d presence.Delta)
	// Send sends one of the edge's own frames (PeerFrameTypes: broadcast
	// recovery's stream heads, history requests and replies) to peer,
	// ordered with presence; false when peer is not connected.
	Send(peer string, f meshproto.Frame) bool
}

// PeerFrameTypes are the frames of the edge's own that travel between
// nodes (Cluster.Send, ClusterHandler.TopicFrames); a Cluster hands those
// it receives to ClusterHandler.Receive.
var PeerFrameTypes = []meshproto.Type{meshproto.TypeStreamHeads, meshproto.TypeHistoryRequest, meshproto.TypeHistoryReply}

// ClusterHandler is the server's side of its Cluster: what the cluster
// calls with what other nodes send. NewServer registers the server's; the
// calls may come from any goroutine, but the cluster holds none of the
// server's locks while it makes them.
type ClusterHandler interface {
	// Deliver fans a broadcast from another node out to local
	// subscribers.
	Deliver(b *Broadcast)
	// ApplyPresence applies another node's presence delta of topic. false
	// reports a gap in the owner's sequence: nothing was applied, and the
	// cluster should fetch the owner's snapshot (OwnPresence there) and
	// apply it with ApplyPresenceSnapshot.
	ApplyPresence(topic string, d presence.Delta) bool
	// ApplyPresenceSnapshot replaces everything held of the snapshot's
	// owner in topic.
	ApplyPresenceSnapshot(topic string, s presence.Snapshot)
	// OwnPresence returns this node's own presence entries of topic, for
	// a node that needs all of them.
	OwnPresence(topic string) presence.Snapshot
	// NodeDown drops what a dead or departed node owned; local clients
	// get its presence leaves.
	NodeDown(id string)
	// TopicFrames returns the frames a node that subscribes to topic gets
	// from this one just ahead of its presence snapshot (recovery's stream
	// heads), or nil.
	TopicFrames(topic string) []meshproto.Frame
	// Receive handles a frame of PeerFrameTypes from another node. Its
	// byte slices may alias a buffer the cluster reuses once Receive
	// returns.
	Receive(from string, f meshproto.Frame)
}

// Broadcast is a client's broadcast as it travels between nodes: what
// another node needs to fan it out as this one did.
type Broadcast struct {
	Topic   string // the topic's cluster name
	Event   string // the user's event
	Payload []byte // the user's payload: JSON, or raw bytes (Enc)
	Meta    []byte // the broadcast's meta object (realtime-js's binary frames), or nil
	Enc     byte   // the payload's encoding (phx.EncJSON or phx.EncBytes)
	// Binary: subscribers that speak the binary serializer get a binary
	// frame, as they would from the publishing node.
	Binary bool
	// Unreliable marks a latest-wins broadcast (a client's datagram):
	// receivers deliver it as a datagram where they can.
	Unreliable bool
	// Origin is the node that published it, set by the Cluster when it
	// delivers (for logs).
	Origin string
}

// peerSide is the ClusterHandler NewServer registers: the server as the
// other nodes see it. A type of its own, so that these calls are not part
// of Server's API.
type peerSide struct{ s *Server }

// Deliver fans a broadcast from another node out to local subscribers.
func (p peerSide) Deliver(b *Broadcast) {
	s := p.s
	if !utf8.ValidString(b.Topic) || !validBroadcast(b.Event, b.Payload, b.Meta, b.Enc) {
		// Peers check what their clients send; a broadcast that still is
		// not UTF-8 must not reach a text frame.
		s.metrics.errorReason("bad_peer_message")
		s.logLimited.Warn("dropped a broadcast from the mesh: not valid UTF-8", "origin", b.Origin)
		return
	}
	k := parseMeshTopic(b.Topic)
	t := s.hub.lookup(k)
	out := &outMsg{topic: k.name, event: b.Event, data: b.Payload, meta: b.Meta, enc: b.Enc, binary: b.Binary, unreliable: b.Unreliable}
	if s.rec != nil && !b.Unreliable {
		if st, off, ok := history.MetaPos(b.Meta); ok {
			out.stream, out.offset = st, off
			s.deliverReplica(b.Topic, t, out)
			return
		}
	}
	if t == nil {
		return
	}
	s.metrics.fannedOut(t.fanout(out, nil))
}

// ApplyPresence applies another node's presence delta. A topic without
// local subscribers is not kept, so its deltas are ignored.
func (p peerSide) ApplyPresence(topic string, d presence.Delta) bool {
	s := p.s
	valid := s.validPresence(d.Owner, d.Leaves)
	for _, j := range d.Joins {
		valid = valid && utf8.ValidString(j.PrevRef) && s.validPresence(d.Owner, []presence.Entry{j.Entry})
	}
	if !valid {
		return true // dropped; asking for a snapshot would bring it back
	}
	t := s.hub.lookup(parseMeshTopic(topic))
	if t == nil {
		return true
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	diff, ok := t.presence.ApplyDelta(d)
	if ok && !diff.Empty() {
		t.fanoutPresenceDiff(diff)
	}
	return ok
}

// ApplyPresenceSnapshot replaces another node's entries of a topic.
func (p peerSide) ApplyPresenceSnapshot(topic string, snap presence.Snapshot) {
	s := p.s
	if !s.validPresence(snap.Owner, snap.Entries) {
		return
	}
	t := s.hub.lookup(parseMeshTopic(topic))
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if diff := t.presence.ApplySnapshot(snap); !diff.Empty() {
		t.fanoutPresenceDiff(diff)
	}
}

// OwnPresence returns this node's own entries of a topic.
func (p peerSide) OwnPresence(topic string) presence.Snapshot {
	t := p.s.hub.lookup(parseMeshTopic(topic))
	if t == nil {
		return presence.Snapshot{Owner: p.s.cfg.NodeID}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.presence.OwnSnapshot()
}

// TopicFrames are recovery's stream heads of topic (nil when recovery is
// off).
func (p peerSide) TopicFrames(topic string) []meshproto.Frame {
	if p.s.rec == nil {
		return nil
	}
	return p.s.rec.topicFrames(topic)
}

// Receive handles recovery's frames from other nodes.
func (p peerSide) Receive(from string, f meshproto.Frame) {
	if p.s.rec != nil && p.s.cluster != nil {
		p.s.rec.receive(p.s.cluster, from, f)
	}
}

// NodeDown removes a dead or departed node's presence everywhere; local
// clients get the leaves.
func (p peerSide) NodeDown(id string) {
	if p.s.rec != nil {
		p.s.rec.peerDown(id)
	}
	h := p.s.hub
	h.mu.RLock()
	topics := make([]*topic, 0, len(h.topics))
	for _, t := range h.topics {
		topics = append(topics, t)
	}
	h.mu.RUnlock()
	for _, t := range topics {
		t.mu.Lock()
		if diff := t.presence.Forget(id); !diff.Empty() {
			t.fanoutPresenceDiff(diff)
		}
		t.mu.Unlock()
	}
}

// validPresence checks that presence from another node can go into text
// frames: keys, refs and metas must be UTF-8.
func (s *Server) validPresence(owner string, lists ...[]presence.Entry) bool {
	for _, es := range lists {
		for _, e := range es {
			if !utf8.ValidString(e.Key) || !utf8.ValidString(e.Ref) || !utf8.Valid(e.Meta) {
				s.metrics.errorReason("bad_peer_message")
				s.logLimited.Warn("dropped presence from the mesh: not valid UTF-8", "owner", owner)
				return false
			}
		}
	}
	return true
}
