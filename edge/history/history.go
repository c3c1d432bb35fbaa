// Package history keeps the recent broadcasts of each channel topic so that
// a client that reconnects can be sent what it missed (issue 18), as a pure
// state machine in the shape of etcd raft's: messages and peer reports go in
// through Step, the passing of time through Tick, and what a join must be
// sent comes back as a Plan. Nothing inside locks, reads a clock, starts a
// goroutine or does I/O; the edge drives it under one mutex.
//
// A topic's broadcast stream is the union of per-origin streams: every node
// incarnation (its epoch, a random 64-bit value drawn at start) numbers the
// broadcasts it accepts on a topic 1, 2, 3, … with no gap. A node keeps, per
// topic and stream, the newest contiguous run of messages it has seen (its
// own and the replicas it received), bounded by the window (each message is
// kept that long after it arrived) and a byte budget shared by every topic
// (the oldest message goes first). It also remembers each stream's head (the
// highest offset it has seen) and what its peers report they hold, so that
// it can prove a range complete, or say it cannot.
package history

import (
	"sort"
	"time"
)

// Config bounds what a Core keeps.
type Config struct {
	// Window is how long a message is kept after it arrived. It must be
	// positive: a node with recovery off keeps no Core at all.
	Window time.Duration
	// MaxBytes bounds the bytes of messages kept, across topics (each
	// message counts its Size plus EntryOverhead); if zero, only the
	// window bounds them.
	MaxBytes int
}

// EntryOverhead is what a kept message costs beyond its Size: the entry,
// its place in the queues.
const EntryOverhead = 96

// Range is what a node knows of one stream of a topic: it holds offsets
// Low..Head (nothing when Low > Head) and knows of none beyond Head.
type Range struct {
	Stream    uint64
	Low, Head uint64
}

// Core is one node's history of every topic it handles. It is not safe for
// concurrent use.
type Core[V any] struct {
	cfg    Config
	self   uint64
	now    time.Time
	topics map[string]*topicState[V]
	queue  []*entry[V] // every kept message in arrival order (dead ones skipped)
	bytes  int
	count  int    // kept messages (queue less its dead entries)
	seq    uint64 // arrival counter: orders messages across streams
	sweep  time.Time
}

type topicState[V any] struct {
	name    string
	streams map[uint64]*stream[V]
	peers   map[string][]Range // what each peer reported it holds
}

// stream is one origin's messages of a topic: msgs are the contiguous run
// of offsets head-len(msgs)+1 .. head.
type stream[V any] struct {
	head  uint64 // highest offset seen here
	known uint64 // highest offset seen here or reported by a peer
	msgs  []*entry[V]
	last  time.Time // when a message last arrived
}

type entry[V any] struct {
	topic  *topicState[V]
	st     *stream[V]
	offset uint64
	size   int
	at     time.Time
	seq    uint64
	dead   bool
	value  V
}

// New returns an empty core for the node incarnation self.
func New[V any](cfg Config, self uint64) *Core[V] {
	return &Core[V]{cfg: cfg, self: self, topics: make(map[string]*topicState[V])}
}

// Self is this node's stream id (its epoch).
func (c *Core[V]) Self() uint64 { return c.self }

// Bytes is what the kept messages count against MaxBytes.
func (c *Core[V]) Bytes() int { return c.bytes }

// Messages is how many messages are kept.
func (c *Core[V]) Messages() int { return c.count }

func (c *Core[V]) topic(name string) *topicState[V] {
	t := c.topics[name]
	if t == nil {
		t = &topicState[V]{name: name, streams: make(map[uint64]*stream[V])}
		c.topics[name] = t
	}
	return t
}

func (t *topicState[V]) stream(id uint64) *stream[V] {
	s := t.streams[id]
	if s == nil {
		s = &stream[V]{}
		t.streams[id] = s
	}
	return s
}

// Next is the offset Originate gives topic's next message.
func (c *Core[V]) Next(topic string) uint64 {
	if t := c.topics[topic]; t != nil && t.streams[c.self] != nil {
		return t.streams[c.self].head + 1
	}
	return 1
}

// Originate assigns the next offset of this node's own stream of topic to a
// message of size bytes and keeps it; it returns the offset. Offsets of one
// topic are never reused while the Core lives.
func (c *Core[V]) Originate(topic string, size int, v V) uint64 {
	s := c.topic(topic).stream(c.self)
	off := s.head + 1
	c.keep(c.topics[topic], s, off, size, v)
	return off
}

// Append keeps a message of another origin's stream (a replica). A message
// that does not follow the stream's head (one was lost on the way, or this
// node was not listening) starts a new run: what was kept before it can no
// longer be proven complete up to it, so it is dropped. A message at or
// below the head is a duplicate and is ignored; Append reports whether it
// was kept.
func (c *Core[V]) Append(topic string, stream, offset uint64, size int, v V) bool {
	t := c.topic(topic)
	s := t.stream(stream)
	if offset <= s.head && s.head > 0 {
		return false
	}
	if offset != s.head+1 {
		c.drop(s, len(s.msgs))
	}
	c.keep(t, s, offset, size, v)
	return true
}

func (c *Core[V]) keep(t *topicState[V], s *stream[V], off uint64, size int, v V) {
	c.seq++
	e := &entry[V]{topic: t, st: s, offset: off, size: size + EntryOverhead, at: c.now, seq: c.seq, value: v}
	s.head = off
	s.known = max(s.known, off)
	s.last = c.now
	s.msgs = append(s.msgs, e)
	c.queue = append(c.queue, e)
	c.bytes += e.size
	c.count++
	for c.cfg.MaxBytes > 0 && c.bytes > c.cfg.MaxBytes && c.evictOldest() {
	}
}

// drop forgets the n oldest messages of s.
func (c *Core[V]) drop(s *stream[V], n int) {
	for _, e := range s.msgs[:n] {
		e.dead = true
		c.bytes -= e.size
		c.count--
		var zero V
		e.value = zero
	}
	clear(s.msgs[:n])
	s.msgs = s.msgs[n:]
	if len(s.msgs) == 0 {
		s.msgs = nil
	}
}

// evictOldest drops the oldest kept message; false when none is left.
func (c *Core[V]) evictOldest() bool {
	for len(c.queue) > 0 {
		e := c.queue[0]
		c.queue[0] = nil
		c.queue = c.queue[1:]
		if !e.dead {
			// e is its stream's oldest arrival; offsets Filled in front
			// of it arrived later but are older: they go with it.
			low := e.st.head - uint64(len(e.st.msgs)) + 1
			c.drop(e.st, int(e.offset-low)+1)
			return true
		}
	}
	return false
}

// Fill keeps a run fetched from a peer (offsets first, first+1, …, each
// of the given size) where it extends the front of this node's run of the
// stream, so that the next join needing it finds it here. A run that does
// not reach this node's, or a stream this node holds nothing of, is not
// kept: only what cannot arrive live any more (it is older than what has)
// is added.
func (c *Core[V]) Fill(topic string, stream, first uint64, vs []V, sizes []int) {
	t := c.topics[topic]
	if t == nil || t.streams[stream] == nil || len(vs) != len(sizes) {
		return
	}
	s := t.streams[stream]
	if len(s.msgs) == 0 {
		return
	}
	low := s.head - uint64(len(s.msgs)) + 1
	if first >= low || first+uint64(len(vs)) < low {
		return
	}
	n := int(low - first)
	front := s.msgs[0]
	add := make([]*entry[V], n, n+len(s.msgs))
	for i := 0; i < n; i++ {
		// The front's arrival number: Plan orders by it, and stably, so
		// these stay ahead of the front.
		e := &entry[V]{topic: t, st: s, offset: first + uint64(i), size: sizes[i] + EntryOverhead, at: c.now, seq: front.seq, value: vs[i]}
		add[i] = e
		c.queue = append(c.queue, e)
		c.bytes += e.size
		c.count++
	}
	s.msgs = append(add, s.msgs...)
	for c.cfg.MaxBytes > 0 && c.bytes > c.cfg.MaxBytes && c.evictOldest() {
	}
}

// Peer records what peer holds of topic (its report replaces the last
// one): the heads it knows become known here too.
func (c *Core[V]) Peer(peer, topic string, ranges []Range) {
	t := c.topic(topic)
	if t.peers == nil {
		t.peers = make(map[string][]Range)
	}
	t.peers[peer] = ranges
	for _, r := range ranges {
		s := t.stream(r.Stream)
		s.known = max(s.known, r.Head)
		if s.last.IsZero() {
			s.last = c.now
		}
	}
}

// PeerDown forgets what a dead or departed peer held. The heads it
// reported stay known: what it held may still be held elsewhere.
func (c *Core[V]) PeerDown(peer string) {
	for _, t := range c.topics {
		delete(t.peers, peer)
	}
}

// Tick advances the clock: messages older than the window go, and streams
// that hold nothing and saw nothing for a window are forgotten (this
// node's own streams never are: their offsets must not be reused).
func (c *Core[V]) Tick(now time.Time) {
	if now.After(c.now) {
		c.now = now
	}
	cut := c.now.Add(-c.cfg.Window)
	for len(c.queue) > 0 && (c.queue[0].dead || c.queue[0].at.Before(cut)) {
		c.evictOldest()
	}
	if c.now.Before(c.sweep) {
		return
	}
	c.sweep = c.now.Add(min(c.cfg.Window, 10*time.Second))
	for name, t := range c.topics {
		for id, s := range t.streams {
			if id != c.self && len(s.msgs) == 0 && s.last.Before(cut) {
				delete(t.streams, id)
			}
		}
		if len(t.streams) == 0 {
			delete(c.topics, name)
		}
	}
}

// Ranges reports what this node holds and knows of topic's streams, for
// its peers (sorted by stream).
func (c *Core[V]) Ranges(topic string) []Range {
	t := c.topics[topic]
	if t == nil {
		return nil
	}
	out := make([]Range, 0, len(t.streams))
	for id, s := range t.streams {
		r := Range{Stream: id, Low: s.head - uint64(len(s.msgs)) + 1, Head: s.head}
		if s.known > s.head {
			r = Range{Stream: id, Low: s.known + 1, Head: s.known}
			if len(s.msgs) > 0 {
				// Held, but not up to what is known: report what is held.
				r = Range{Stream: id, Low: s.head - uint64(len(s.msgs)) + 1, Head: s.head}
			}
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Stream < out[j].Stream })
	return out
}

// Read returns the messages of topic's stream after offset after, up to
// upto, oldest first, stopping once maxBytes (if positive) are reached,
// with the offset of the last one returned. ok is false when the message
// after after is not held.
func (c *Core[V]) Read(topic string, stream, after, upto uint64, maxBytes int) (vs []V, last uint64, ok bool) {
	t := c.topics[topic]
	if t == nil || t.streams[stream] == nil {
		return nil, after, false
	}
	if after >= upto {
		return nil, after, true
	}
	s := t.streams[stream]
	low := s.head - uint64(len(s.msgs)) + 1
	if len(s.msgs) == 0 || after+1 < low || after >= s.head {
		return nil, after, false
	}
	n := 0
	for o := after + 1; o <= min(upto, s.head); o++ {
		e := s.msgs[o-low]
		if maxBytes > 0 && n > 0 && n+e.size > maxBytes {
			break
		}
		n += e.size
		vs = append(vs, e.value)
		last = o
	}
	return vs, last, true
}
