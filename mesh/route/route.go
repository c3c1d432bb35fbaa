// Package route holds the rules by which nodes tell each other which topics
// they listen to, as a pure state machine in the shape of etcd raft's:
// events go in through Step, the passing of time through Tick, and what the
// node must do comes back as effects (frames to send, presence snapshots to
// send, topics whose first local join may proceed). Nothing inside locks,
// reads a clock, starts a goroutine or does I/O; the mesh runs it on one
// goroutine and carries out its effects.
//
// The rules:
//   - Interest: a node announces InterestAdd(T) to every peer when T's
//     local subscribers go from 0 to 1, and InterestRemove(T) when they go
//     back to 0 and stay there for Config.Linger (a subscriber returning
//     within the linger cancels it, and nothing is sent).
//   - Snapshot wait: every peer answers an InterestAdd with its presence
//     snapshot of the topic (empty when it holds none), after recording the
//     interest. A topic that became local is Ready once every peer connected
//     at the time has answered, or has died, or after Config.SnapshotWait:
//     only then does its first local client get presence_state, which is
//     then complete, and a message published on any of those peers reaches
//     it.
//   - Remote interest: InterestAdd, InterestRemove and InterestSnapshot
//     frames from peers feed the interest table broadcasts are routed by.
//     A peer's interest snapshot (sent at every resync) is answered with
//     this node's presence of the topics both nodes listen to.
//   - Dead nodes: a node declared dead loses its interests, no longer holds
//     up a snapshot wait, and what it sent before it died is ignored until
//     it is alive again.
//   - Resync: a new or reconnected peer, or one whose control frames were
//     lost to a full queue, gets this node's whole interest set and its
//     presence of every topic the peer listens to that this node does too
//     (Core.Resync).
package route

import (
	"sort"
	"time"

	"github.com/meshcast/meshcast/internal/timerq"
	"github.com/meshcast/meshcast/mesh/interest"
	"github.com/meshcast/meshcast/wire/meshproto"
)

// Config holds the core's timings.
type Config struct {
	// Linger is how long a topic whose last local subscriber left stays
	// announced before peers are told (debounce); if zero, they are told at
	// the next Tick.
	Linger time.Duration
	// SnapshotWait bounds how long a topic that became local waits for its
	// peers' presence snapshots; if zero, it waits for none past the next
	// Tick.
	SnapshotWait time.Duration
}

// Core is the interest state of one node: its local topics, the topics
// its peers listen to, and the snapshot waits under way. It is not safe
// for concurrent use; its queries may run concurrently with each other.
type Core struct {
	cfg   Config
	now   time.Time
	table interest.Table
	local map[string]*localTopic
	waits map[string]*wait
	dead  map[string]bool
	timer timerq.Queue[timer]
}

// localTopic is a topic with local subscribers; until is set while the
// last one has gone and the InterestRemove is being debounced.
type localTopic struct{ until time.Time }

// wait is a snapshot wait: the peers yet to answer, and its deadline.
type wait struct {
	pending map[string]bool
	until   time.Time
}

// New returns an empty core.
func New(cfg Config) *Core {
	return &Core{cfg: cfg, local: make(map[string]*localTopic), waits: make(map[string]*wait), dead: make(map[string]bool)}
}

// An Event is an input of Step.
type Event interface{ event() }

// Subscribe says that topic has local subscribers again (the first joined).
// Connected lists the peers connected now: the snapshot wait counts their
// answers.
type Subscribe struct {
	Topic     string
	Connected []string
}

// Unsubscribe says that topic's last local subscriber has gone.
type Unsubscribe struct{ Topic string }

// InterestAdd, InterestRemove and InterestSnapshot are the frames of the
// same names from peer From (an InterestSnapshot complete, all its parts
// joined).
type (
	InterestAdd struct {
		From   string
		Topics []string
	}
	InterestRemove struct {
		From   string
		Topics []string
	}
	InterestSnapshot struct {
		From   string
		Topics []string
	}
)

// SnapshotArrived says that peer From's presence snapshot of Topic has
// been applied.
type SnapshotArrived struct{ From, Topic string }

// NodeUp says that node ID is a live member (again).
type NodeUp struct{ ID string }

// NodeDown says that node ID left or was declared dead.
type NodeDown struct{ ID string }

func (Subscribe) event()        {}
func (Unsubscribe) event()      {}
func (InterestAdd) event()      {}
func (InterestRemove) event()   {}
func (InterestSnapshot) event() {}
func (SnapshotArrived) event()  {}
func (NodeUp) event()           {}
func (NodeDown) event()         {}

// An Effect is what the node must do, returned by Step and Tick in the
// order it must be done.
type Effect interface{ effect() }

// Send is a frame for the control lane of peer To, or of every peer when
// To is empty.
type Send struct {
	To    string
	Frame meshproto.Frame
}

// SendPresence asks for this node's presence snapshot of Topic to go to
// peer To (in parts, on the control lane).
type SendPresence struct{ To, Topic string }

// Ready says that the local joins of Topic may proceed: the snapshot wait
// is over (or there was none).
type Ready struct{ Topic string }

func (Send) effect()         {}
func (SendPresence) effect() {}
func (Ready) effect()        {}

// Step applies one event at the time of the last Tick and returns its
// effects.
func (c *Core) Step(ev Event) []Effect {
	switch ev := ev.(type) {
	case Subscribe:
		return c.subscribe(ev)
	case Unsubscribe:
		c.unsubscribe(ev.Topic)
	case InterestAdd:
		if c.dead[ev.From] {
			return nil
		}
		out := make([]Effect, 0, len(ev.Topics))
		for _, t := range ev.Topics {
			c.table.Add(ev.From, t)
		}
		// Always answered, even with an empty snapshot: the new listener
		// counts answers (see Subscribe).
		for _, t := range ev.Topics {
			out = append(out, SendPresence{To: ev.From, Topic: t})
		}
		return out
	case InterestRemove:
		if c.dead[ev.From] {
			return nil
		}
		for _, t := range ev.Topics {
			c.table.Remove(ev.From, t)
		}
	case InterestSnapshot:
		if c.dead[ev.From] {
			return nil
		}
		c.table.Replace(ev.From, ev.Topics)
		var out []Effect
		for _, t := range ev.Topics {
			if c.local[t] != nil {
				out = append(out, SendPresence{To: ev.From, Topic: t})
			}
		}
		return out
	case SnapshotArrived:
		if w := c.waits[ev.Topic]; w != nil && w.pending[ev.From] {
			return c.answered(ev.Topic, w, ev.From, nil)
		}
	case NodeUp:
		delete(c.dead, ev.ID)
	case NodeDown:
		return c.nodeDown(ev.ID)
	}
	return nil
}

func (c *Core) subscribe(ev Subscribe) []Effect {
	if lt := c.local[ev.Topic]; lt != nil {
		lt.until = time.Time{} // back within the linger: peers never knew
		if c.waits[ev.Topic] != nil {
			return nil // the wait under way covers this join too
		}
		return []Effect{Ready{ev.Topic}}
	}
	c.local[ev.Topic] = &localTopic{}
	out := []Effect{Send{Frame: &meshproto.InterestAdd{Topics: []string{ev.Topic}}}}
	w := &wait{pending: make(map[string]bool), until: c.now.Add(c.cfg.SnapshotWait)}
	for _, id := range ev.Connected {
		if !c.dead[id] {
			w.pending[id] = true
		}
	}
	if len(w.pending) == 0 {
		return append(out, Ready{ev.Topic})
	}
	c.waits[ev.Topic] = w
	c.timer.Add(w.until, timer{at: w.until, topic: ev.Topic, wait: w})
	return out
}

func (c *Core) unsubscribe(topic string) {
	lt := c.local[topic]
	if lt == nil || !lt.until.IsZero() {
		return
	}
	lt.until = c.now.Add(c.cfg.Linger)
	c.timer.Add(lt.until, timer{at: lt.until, topic: topic, linger: lt})
}

// answered takes peer id off w's pending peers and ends the wait, Ready,
// when none is left.
func (c *Core) answered(topic string, w *wait, id string, out []Effect) []Effect {
	delete(w.pending, id)
	if len(w.pending) > 0 {
		return out
	}
	delete(c.waits, topic)
	return append(out, Ready{topic})
}

func (c *Core) nodeDown(id string) []Effect {
	c.dead[id] = true
	c.table.RemoveNode(id)
	var topics []string
	for t, w := range c.waits {
		if w.pending[id] {
			topics = append(topics, t)
		}
	}
	sort.Strings(topics)
	var out []Effect
	for _, t := range topics {
		out = c.answered(t, c.waits[t], id, out)
	}
	return out
}

// Tick advances the core's clock to now and returns the effects of what
// fell due: lingers that ran out (InterestRemove to every peer) and
// snapshot waits that timed out (Ready).
func (c *Core) Tick(now time.Time) []Effect {
	if now.After(c.now) {
		c.now = now
	}
	var out []Effect
	for {
		_, t, ok := c.timer.PopDue(c.now)
		if !ok {
			break
		}
		switch {
		case t.linger != nil:
			if c.local[t.topic] != t.linger || !t.linger.until.Equal(t.at) {
				continue // the topic came back, or lingers again since
			}
			delete(c.local, t.topic)
			out = append(out, Send{Frame: &meshproto.InterestRemove{Topics: []string{t.topic}}})
			if c.waits[t.topic] != nil {
				// Nobody waits on a topic that has gone.
				delete(c.waits, t.topic)
				out = append(out, Ready{t.topic})
			}
		case c.waits[t.topic] == t.wait:
			delete(c.waits, t.topic)
			out = append(out, Ready{t.topic})
		}
	}
	return out
}

// Deadline returns when the next Tick may have something to do (it may
// find nothing: a linger that was cancelled still has its time here).
func (c *Core) Deadline() (time.Time, bool) {
	return c.timer.Next()
}

// Nodes returns the peers interested in topic, sorted. The slice is
// shared: callers must not modify it.
func (c *Core) Nodes(topic string) []string { return c.table.Nodes(topic) }

// Topics returns the topics peer id listens to, sorted.
func (c *Core) Topics(id string) []string { return c.table.Topics(id) }

// Local reports whether topic has local subscribers (or lingers).
func (c *Core) Local(topic string) bool { return c.local[topic] != nil }

// Waiting reports whether topic's snapshot wait is under way.
func (c *Core) Waiting(topic string) bool { return c.waits[topic] != nil }

// Resync returns what peer id needs after a new connection or lost
// control frames: every local topic (lingering ones too: the peer has not
// been told they went), for an interest snapshot, and the topics of those
// it listens to, for this node's presence snapshots. Both are sorted.
func (c *Core) Resync(id string) (interest, presence []string) {
	interest = make([]string, 0, len(c.local))
	for t := range c.local {
		interest = append(interest, t)
	}
	sort.Strings(interest)
	for _, t := range c.table.Topics(id) {
		if c.local[t] != nil {
			presence = append(presence, t)
		}
	}
	return interest, presence
}

// timer is a linger or a snapshot wait falling due at at. Timers are not
// removed when cancelled: Tick skips those no longer current.
type timer struct {
	at     time.Time
	topic  string
	linger *localTopic
	wait   *wait
}
