package edge

import (
	"sync"

	"github.com/meshcast/meshcast/mesh/presence"
)

// topicKey names a topic. Public and private channels of one name are
// separate namespaces.
type topicKey struct {
	name    string // full topic, e.g. "realtime:room1"
	private bool
}

// hub holds the topics that have local subscribers.
//
// Lock order: hub.mu, then topic.mu, then conn.qmu. Fan-out holds only a
// topic's read lock and each receiver's queue lock in turn, never across
// I/O.
type hub struct {
	mu     sync.RWMutex
	topics map[topicKey]*topic
}

// topic is one channel topic: its joined channels and its presence.
type topic struct {
	key      topicKey
	mu       sync.RWMutex
	subs     []*channel
	presence presence.Set
}

func newHub() *hub { return &hub{topics: make(map[topicKey]*topic)} }

func (h *hub) topicCount() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.topics)
}

func (h *hub) lookup(k topicKey) *topic {
	h.mu.RLock()
	t := h.topics[k]
	h.mu.RUnlock()
	return t
}

// join adds ch to its topic and runs then under the topic's write lock, so
// that what then queues (the join reply, presence_state) is ordered
// consistently with every fan-out to the topic.
func (h *hub) join(ch *channel, then func(t *topic)) {
	h.mu.Lock()
	t := h.topics[ch.key]
	if t == nil {
		t = &topic{key: ch.key}
		h.topics[ch.key] = t
	}
	t.mu.Lock()
	h.mu.Unlock()
	t.subs = append(t.subs, ch)
	ch.t = t
	then(t)
	t.mu.Unlock()
}

// leave removes ch from its topic and runs then under the topic's write
// lock; an empty topic is forgotten.
func (h *hub) leave(ch *channel, then func(t *topic)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	t := ch.t
	if t == nil {
		return
	}
	t.mu.Lock()
	for i, s := range t.subs {
		if s == ch {
			last := len(t.subs) - 1
			t.subs[i] = t.subs[last]
			t.subs[last] = nil
			t.subs = t.subs[:last]
			break
		}
	}
	if then != nil {
		then(t)
	}
	if len(t.subs) == 0 && t.presence.Len() == 0 && h.topics[t.key] == t {
		delete(h.topics, t.key)
	}
	t.mu.Unlock()
}

// fanout queues m for every channel of the topic except skip, and returns
// how many queues took it. Frames are built once per serializer version.
func (t *topic) fanout(m *outMsg, skip *channel) int {
	t.mu.RLock()
	n := t.fanoutLocked(m, skip)
	t.mu.RUnlock()
	return n
}

func (t *topic) fanoutLocked(m *outMsg, skip *channel) int {
	n := 0
	for _, ch := range t.subs {
		if ch == skip {
			continue
		}
		if f := m.frame(ch.conn.vsn); f != nil && ch.conn.enqueue(f) {
			n++
		}
	}
	return n
}
