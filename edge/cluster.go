package edge

import (
	"unicode/utf8"

	"github.com/meshcast/meshcast/edge/history"
	"github.com/meshcast/meshcast/mesh/presence"
	"github.com/meshcast/meshcast/wire/meshproto"
)

// The Server is the mesh's Handler: what other nodes send ends up here.

// Deliver fans a broadcast from another node out to local subscribers.
func (s *Server) Deliver(b *meshproto.Broadcast) {
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
func (s *Server) ApplyPresence(topic string, d presence.Delta) bool {
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
func (s *Server) ApplyPresenceSnapshot(topic string, snap presence.Snapshot) {
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
func (s *Server) OwnPresence(topic string) presence.Snapshot {
	t := s.hub.lookup(parseMeshTopic(topic))
	if t == nil {
		return presence.Snapshot{Owner: s.cfg.NodeID}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.presence.OwnSnapshot()
}

// NodeDown removes a dead or departed node's presence everywhere; local
// clients get the leaves.
func (s *Server) NodeDown(id string) {
	if s.rec != nil {
		s.rec.peerDown(id)
	}
	s.hub.mu.RLock()
	topics := make([]*topic, 0, len(s.hub.topics))
	for _, t := range s.hub.topics {
		topics = append(topics, t)
	}
	s.hub.mu.RUnlock()
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
