package edge

import (
	"github.com/meshcast/meshcast/mesh/presence"
	"github.com/meshcast/meshcast/wire/meshproto"
)

// The Server is the mesh's Handler: what other nodes send ends up here.

// Deliver fans a broadcast from another node out to local subscribers.
func (s *Server) Deliver(b *meshproto.Broadcast) {
	k := parseMeshTopic(b.Topic)
	t := s.hub.lookup(k)
	if t == nil {
		return
	}
	out := &outMsg{topic: k.name, event: b.Event, data: b.Payload, meta: b.Meta, enc: b.Enc, binary: b.Binary}
	s.metrics.messagesOut.Add(t.fanout(out, nil))
}

// ApplyPresence applies another node's presence delta. A topic without
// local subscribers is not kept, so its deltas are ignored.
func (s *Server) ApplyPresence(topic string, d presence.Delta) bool {
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
