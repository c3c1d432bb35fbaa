package edge

import (
	"strings"
	"sync"

	"golang.org/x/time/rate"

	"github.com/meshcast/meshcast/mesh"
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
// Lock order: conn.mu (held while a client's frame is handled), then
// hub.mu, then topic.mu, then what is taken under a topic lock: each
// receiver's queue lock (outq) in turn and the coalescer's under it, and
// changeSubs.mu (a join attaching its bindings; conn.mu is held over
// changeSubs.mu alone too). The mesh's locks come after all of them:
// Subscribe and Unsubscribe are called under hub.mu, SendPresence under
// topic.mu and Publish under conn.mu, and the mesh calls the edge with
// none of its own held. No wait on the mesh or on Postgres happens with
// conn.mu held (a join lets it go). A broadcast's fan-out holds only a
// topic's read lock and each receiver's queue lock in turn, never across
// I/O.
type hub struct {
	self    string     // node ID, the owner of local presence entries
	cluster *mesh.Node // nil on a single node
	// presenceRate is each topic's presence events/s limit (0 = none).
	presenceRate float64

	mu     sync.RWMutex
	topics map[topicKey]*topic

	// leaveHook, if set (tests only), runs in leave while the topic is
	// locked, where the presence leaves are fanned out.
	leaveHook func()
}

// meshTopic is the topic's name in the cluster.
func (k topicKey) meshTopic() string {
	if k.private {
		return privateMeshPrefix + k.name
	}
	return k.name
}

const privateMeshPrefix = "private|"

func parseMeshTopic(s string) topicKey {
	if name, ok := strings.CutPrefix(s, privateMeshPrefix); ok {
		return topicKey{name: name, private: true}
	}
	return topicKey{name: s}
}

// topic is one channel topic: its joined channels and its presence, the
// entries of this node's clients and the replicas of other nodes'.
type topic struct {
	key      topicKey
	mu       sync.RWMutex
	subs     []*channel
	presence *presence.Topic
	// presenceRate limits track/untrack on this topic (nil = none);
	// guarded by mu.
	presenceRate *rate.Limiter
	// captures gather database broadcasts for joins reading their replay
	// (dbcast.go); guarded by mu.
	captures []*capture

	// Guarded by hub.mu.
	joining int             // joins between acquire and join
	ready   <-chan struct{} // closed once the cluster's presence snapshots arrived
}

func newHub(self string, presenceRate float64) *hub {
	return &hub{topics: make(map[topicKey]*topic), self: self, presenceRate: presenceRate}
}

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

// acquire finds or makes the topic of key and holds it for a join that
// must follow. The returned channel closes when the topic is ready: on a
// new topic in a cluster, once the other nodes' presence has arrived.
func (h *hub) acquire(k topicKey) (*topic, <-chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	t := h.topics[k]
	if t == nil {
		t = &topic{key: k, presence: presence.NewTopic(h.self)}
		if h.presenceRate > 0 {
			t.presenceRate = rate.NewLimiter(rate.Limit(h.presenceRate), burst(h.presenceRate))
		}
		h.topics[k] = t
		if h.cluster != nil {
			t.ready = h.cluster.Subscribe(k.meshTopic())
		}
	}
	t.joining++
	return t, t.ready
}

// join adds ch to the topic it acquired and runs then under the topic's
// write lock, so that what then queues (the join reply, presence_state) is
// ordered consistently with every fan-out to the topic.
func (h *hub) join(ch *channel, t *topic, then func(t *topic)) {
	h.mu.Lock()
	t.joining--
	t.mu.Lock()
	h.mu.Unlock()
	t.subs = append(t.subs, ch)
	ch.t = t
	then(t)
	t.mu.Unlock()
}

// release gives up a topic acquired for a join that did not happen.
func (h *hub) release(t *topic) {
	h.mu.Lock()
	t.joining--
	h.mu.Unlock()
	h.dropIfEmpty(t)
}

// leave removes ch from its topic and runs then under the topic's write
// lock (not the hub's: presence leaves are encoded and fanned out there,
// and a disconnect storm must not serialise every topic lookup behind
// them); an empty topic is then forgotten.
func (h *hub) leave(ch *channel, then func(t *topic)) {
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
	if h.leaveHook != nil {
		h.leaveHook()
	}
	empty := len(t.subs) == 0
	t.mu.Unlock()
	if empty {
		h.dropIfEmpty(t)
	}
}

// dropIfEmpty forgets a topic that has no subscribers and no join on the
// way: without local subscribers the node drops the topic, other nodes'
// presence included, and the cluster stops sending it.
func (h *hub) dropIfEmpty(t *topic) {
	h.mu.Lock()
	defer h.mu.Unlock()
	t.mu.RLock()
	empty := len(t.subs) == 0
	t.mu.RUnlock()
	if !empty || t.joining > 0 || h.topics[t.key] != t {
		return
	}
	delete(h.topics, t.key)
	if h.cluster != nil {
		// Under h.mu, so that Subscribe and Unsubscribe of one topic reach
		// the mesh in the order the hub made and dropped it; both only
		// update the mesh's tables and queue frames.
		h.cluster.Unsubscribe(t.key.meshTopic())
	}
}

// fanout queues m for every channel of the topic except skip, and returns
// how many queues took it. Frames are built once per frame format.
func (t *topic) fanout(m *outMsg, skip *channel) deliveries {
	t.mu.RLock()
	n := t.fanoutLocked(m, skip)
	t.mu.RUnlock()
	return n
}

func (t *topic) fanoutLocked(m *outMsg, skip *channel) deliveries {
	var n deliveries
	for _, ch := range t.subs {
		if ch == skip || (ch.floors != nil && m.offset != 0 && m.offset <= ch.floors[m.stream]) {
			continue // floors: before the seam of a join that recovered
		}
		if ch.deliver(m) {
			n[ch.conn.kind]++
		}
	}
	return n
}
