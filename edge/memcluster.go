package edge

import (
	"fmt"
	"sync"

	"github.com/meshcast/meshcast/mesh/presence"
	"github.com/meshcast/meshcast/wire/meshproto"
)

// MemoryCluster joins Servers of one process into a cluster without a
// network, as Centrifuge's memory broker joins its nodes: each Node it
// makes is one Server's Cluster (Deps.Cluster). It keeps the rules the
// QUIC mesh keeps, so that the edge's cluster behaviour can be tested
// without sockets, gossip or timing:
//
//   - a broadcast reaches each other node with subscribers of its topic
//     once, and a node's broadcasts and presence arrive in the order it
//     sent them;
//   - a first subscriber's Subscribe is ready once every other node's
//     presence of the topic has been applied;
//   - presence deltas reach the nodes that subscribe to the topic; a gap
//     (ApplyPresence false) is repaired with the owner's snapshot;
//   - a node that leaves (Leave) has its presence dropped everywhere
//     (NodeDown), and a Subscribe waiting for it stops waiting.
//
// A node's handler runs on one goroutine of its own, started by Register
// and stopped by Leave or Close; its queue is unbounded (this is for tests
// and single-process tools, not for load). A test may also register a
// ClusterHandler of its own on a node and act as a peer.
type MemoryCluster struct {
	mu     sync.Mutex
	nodes  map[string]*memNode
	waits  map[*memWait]struct{} // Subscribes not ready yet
	closed bool
}

// memWait is one Subscribe waiting for the other nodes' presence.
type memWait struct {
	node    *memNode
	pending map[string]bool // nodes whose snapshot has not been applied
	ready   chan struct{}
}

// memNode is one node of a MemoryCluster.
type memNode struct {
	c      *MemoryCluster
	id     string
	h      ClusterHandler  // set by Register
	topics map[string]bool // topics with local subscribers (c.mu)

	// The inbox: calls of h, run in order on the node's goroutine.
	qmu      sync.Mutex
	q        []func(ClusterHandler)
	wake     chan struct{}
	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}
	started  bool // c.mu
}

// NewMemoryCluster returns an empty cluster.
func NewMemoryCluster() *MemoryCluster {
	return &MemoryCluster{nodes: make(map[string]*memNode), waits: make(map[*memWait]struct{})}
}

// Node adds a node with ID id (unique in the cluster) and returns its
// Cluster. The others see it at once; what they send it waits until it
// registers its handler.
func (c *MemoryCluster) Node(id string) Cluster {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, dup := c.nodes[id]; dup {
		panic(fmt.Sprintf("edge: MemoryCluster already has a node %q", id))
	}
	n := &memNode{c: c, id: id, topics: make(map[string]bool), wake: make(chan struct{}, 1),
		stop: make(chan struct{}), done: make(chan struct{})}
	if !c.closed {
		c.nodes[id] = n
	}
	return n
}

// Leave takes node id out of the cluster, as a crash or a graceful leave
// would: the other nodes drop its presence (NodeDown) and stop waiting for
// it, and its handler is called no more once Leave returns.
func (c *MemoryCluster) Leave(id string) {
	c.mu.Lock()
	n := c.nodes[id]
	if n == nil {
		c.mu.Unlock()
		return
	}
	delete(c.nodes, id)
	for _, p := range c.nodes {
		p.post(func(h ClusterHandler) { h.NodeDown(id) })
	}
	for w := range c.waits {
		if w.node == n {
			c.release(w)
		} else {
			c.arrivedLocked(w, id)
		}
	}
	c.mu.Unlock()
	n.halt()
}

// Close stops every node; Subscribes still waiting are let go.
func (c *MemoryCluster) Close() {
	c.mu.Lock()
	c.closed = true
	nodes := c.nodes
	c.nodes = map[string]*memNode{}
	for w := range c.waits {
		c.release(w)
	}
	c.mu.Unlock()
	for _, n := range nodes {
		n.halt()
	}
}

// release closes a wait's ready channel and forgets it. Called with c.mu
// held.
func (c *MemoryCluster) release(w *memWait) {
	delete(c.waits, w)
	close(w.ready)
}

// arrivedLocked records that from's presence reached w's node (or that
// from is gone). Called with c.mu held.
func (c *MemoryCluster) arrivedLocked(w *memWait, from string) {
	if _, waiting := c.waits[w]; !waiting {
		return
	}
	delete(w.pending, from)
	if len(w.pending) == 0 {
		c.release(w)
	}
}

// member reports whether n is still in the cluster. Called with c.mu
// held.
func (c *MemoryCluster) member(n *memNode) bool { return c.nodes[n.id] == n }

func (n *memNode) ID() string { return n.id }

// Register starts the node's goroutine, which calls h with what the other
// nodes send.
func (n *memNode) Register(h ClusterHandler) {
	n.c.mu.Lock()
	defer n.c.mu.Unlock()
	if n.started || !n.c.member(n) {
		return
	}
	n.h, n.started = h, true
	go n.run()
}

func (n *memNode) Publish(b *Broadcast) {
	c := n.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.member(n) {
		return
	}
	for _, p := range c.nodes {
		if p != n && p.topics[b.Topic] {
			out := *b
			out.Origin = n.id
			p.post(func(h ClusterHandler) { h.Deliver(&out) })
		}
	}
}

func (n *memNode) Subscribe(topic string) <-chan struct{} {
	c := n.c
	c.mu.Lock()
	defer c.mu.Unlock()
	w := &memWait{node: n, pending: make(map[string]bool), ready: make(chan struct{})}
	if !c.member(n) {
		close(w.ready)
		return w.ready
	}
	n.topics[topic] = true
	c.waits[w] = struct{}{}
	for _, p := range c.nodes {
		if p != n {
			w.pending[p.id] = true
			p.post(func(h ClusterHandler) { n.c.sendSnapshot(h, p, n, topic, w) })
		}
	}
	c.arrivedLocked(w, "") // ready at once when there is no other node
	return w.ready
}

func (n *memNode) Unsubscribe(topic string) {
	n.c.mu.Lock()
	delete(n.topics, topic)
	n.c.mu.Unlock()
}

func (n *memNode) SendPresence(topic string, d presence.Delta) {
	c := n.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.member(n) {
		return
	}
	for _, p := range c.nodes {
		if p != n && p.topics[topic] {
			p.post(func(h ClusterHandler) {
				if !h.ApplyPresence(topic, d) {
					// A gap: the owner's snapshot replaces what p holds.
					c.requestSnapshot(n, p, topic)
				}
			})
		}
	}
}

// Send queues f for peer's handler, as the mesh's control lane would.
func (n *memNode) Send(peer string, f meshproto.Frame) bool {
	c := n.c
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.nodes[peer]
	if !c.member(n) || p == nil || p == n {
		return false
	}
	p.post(func(h ClusterHandler) { h.Receive(n.id, f) })
	return true
}

// requestSnapshot asks owner for its presence of topic on behalf of to.
func (c *MemoryCluster) requestSnapshot(owner, to *memNode, topic string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.member(owner) {
		owner.post(func(h ClusterHandler) { c.sendSnapshot(h, owner, to, topic, nil) })
	}
}

// sendSnapshot runs on owner's goroutine (h is owner's handler): it takes
// owner's presence of topic and queues it for to, then, if w is set,
// records that to has it.
func (c *MemoryCluster) sendSnapshot(h ClusterHandler, owner, to *memNode, topic string, w *memWait) {
	snap := h.OwnPresence(topic)
	var frames []meshproto.Frame
	if w != nil { // a first subscription: the mesh sends them ahead of it
		frames = h.TopicFrames(topic)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.member(to) {
		return
	}
	to.post(func(h ClusterHandler) {
		for _, f := range frames {
			h.Receive(owner.id, f)
		}
		h.ApplyPresenceSnapshot(topic, snap)
		if w != nil {
			c.mu.Lock()
			c.arrivedLocked(w, owner.id)
			c.mu.Unlock()
		}
	})
}

// post queues a call of the node's handler.
func (n *memNode) post(fn func(ClusterHandler)) {
	n.qmu.Lock()
	n.q = append(n.q, fn)
	n.qmu.Unlock()
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// run calls the handler with what was posted, in order, until halt.
func (n *memNode) run() {
	defer close(n.done)
	for {
		select {
		case <-n.stop:
			return
		case <-n.wake:
		}
		for {
			n.qmu.Lock()
			q := n.q
			n.q = nil
			n.qmu.Unlock()
			if len(q) == 0 {
				break
			}
			for _, fn := range q {
				select {
				case <-n.stop:
					return
				default:
				}
				fn(n.h)
			}
		}
	}
}

// halt stops the node's goroutine and waits for it. Called without c.mu.
func (n *memNode) halt() {
	n.c.mu.Lock()
	started := n.started
	n.c.mu.Unlock()
	n.stopOnce.Do(func() { close(n.stop) })
	if started {
		<-n.done
	}
}
