package mesh

import (
	"sync"
	"time"

	"github.com/meshcast/meshcast/mesh/route"
	"github.com/meshcast/meshcast/wire/meshproto"
)

// The interest rules (mesh/route) run on one goroutine, the driver: it
// takes the events other goroutines post (Subscribe and Unsubscribe from
// the edge, interest frames and snapshot arrivals from lane readers,
// deaths and returns from the membership), steps the core, ticks it when
// its next deadline falls due, and carries out its effects. Only the driver changes the core, and
// it does so under n.mu, because the fan-out path (Publish, SendPresence)
// and the lane writers' resyncs read the core's interest table under
// n.mu's read lock on their own goroutines: a round trip to the driver per
// broadcast would cost the hot path. Frames the core sends are queued in
// the same critical section, so a resync (which reads the core) never
// sees a state whose frames are not queued yet.

// input is one event for the driver.
type input struct {
	ev route.Event
	// ready, for a Subscribe, closes when the topic is Ready, or when the
	// node stops.
	ready chan struct{}
	// then, if set, runs on the driver once ev's effects are carried out.
	then func()
	// done, if set, closes after then, or when the node stops.
	done chan struct{}
}

// release lets go whoever waits on in: the node stops.
func (in input) release() {
	if in.ready != nil {
		close(in.ready)
	}
	if in.done != nil {
		close(in.done)
	}
}

// stepAndWait posts ev and returns once the driver has carried it out. A
// lane reader posts a peer's interest frames with it, so that it reads no
// faster than the driver answers them (as when it answered them itself)
// and the frames it reads next find them applied.
func (n *Node) stepAndWait(ev route.Event) {
	done := make(chan struct{})
	if !n.in.post(input{ev: ev, done: done}) {
		return
	}
	select {
	case <-done:
	case <-n.ctx.Done():
	}
}

// inbox is the driver's queue. Posting never blocks, so the edge may post
// under its hub lock; it is bounded by the posters, none of which posts
// without limit: a join posts once per topic it makes, a lane reader
// waits for the interest frames it posts (stepAndWait).
type inbox struct {
	mu     sync.Mutex
	queue  []input
	closed bool
	wake   chan struct{}
}

func newInbox() *inbox { return &inbox{wake: make(chan struct{}, 1)} }

// post queues in and wakes the driver; false once the inbox is closed.
func (q *inbox) post(in input) bool {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return false
	}
	q.queue = append(q.queue, in)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
	return true
}

// take returns what is queued, handing spare's array back for reuse.
func (q *inbox) take(spare []input) []input {
	q.mu.Lock()
	defer q.mu.Unlock()
	batch := q.queue
	q.queue = spare[:0]
	return batch
}

// close refuses later posts and releases what is still queued.
func (q *inbox) close() {
	q.mu.Lock()
	left := q.queue
	q.queue, q.closed = nil, true
	q.mu.Unlock()
	for _, in := range left {
		in.release()
	}
}

// drive runs the core until the node stops; then every join still waiting
// on a topic is let go.
func (n *Node) drive() {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	waiters := make(map[string][]chan struct{})
	defer func() {
		n.in.close()
		for _, ws := range waiters {
			for _, w := range ws {
				close(w)
			}
		}
	}()
	var batch []input
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-n.in.wake:
		case <-timer.C:
		}
		batch = n.in.take(batch)
		later, deadline, ok := n.stepCore(batch, waiters)
		for _, e := range later {
			switch e := e.(type) {
			case route.SendPresence:
				n.sendPresenceSnapshot(e.To, e.Topic)
			case route.Ready:
				for _, w := range waiters[e.Topic] {
					close(w)
				}
				delete(waiters, e.Topic)
			}
		}
		for i, in := range batch {
			if in.then != nil {
				in.then()
			}
			if in.done != nil {
				close(in.done)
			}
			batch[i] = input{}
		}
		if ok {
			timer.Reset(time.Until(deadline))
		}
	}
}

// stepCore ticks the core and steps batch under n.mu, queues the frames
// it sends, and returns the effects to carry out without the lock (they
// call the Handler) and the core's next deadline.
func (n *Node) stepCore(batch []input, waiters map[string][]chan struct{}) (later []route.Effect, deadline time.Time, ok bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	effects := n.core.Tick(time.Now())
	for _, in := range batch {
		ev := in.ev
		if s, isSub := ev.(route.Subscribe); isSub {
			waiters[s.Topic] = append(waiters[s.Topic], in.ready)
			for id, p := range n.peers {
				if p.connected.Load() {
					s.Connected = append(s.Connected, id)
				}
			}
			ev = s
		}
		effects = append(effects, n.core.Step(ev)...)
	}
	for _, e := range effects {
		s, isSend := e.(route.Send)
		if !isSend {
			later = append(later, e)
			continue
		}
		frame := meshproto.Append(nil, s.Frame)
		if s.To != "" {
			if p := n.peers[s.To]; p != nil {
				p.send(laneControl, frame)
			}
			continue
		}
		for _, p := range n.peers {
			p.send(laneControl, frame)
		}
	}
	deadline, ok = n.core.Deadline()
	return later, deadline, ok
}
