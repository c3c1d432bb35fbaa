package history

import (
	"fmt"
	"sort"
)

// Plan is what a join of a topic is sent, decided under the topic's lock so
// that nothing is fanned out to the topic meanwhile.
type Plan[V any] struct {
	// Positions is the join vector: per stream, the offset the client holds
	// once Send is in (the seam). Live messages follow it.
	Positions map[uint64]uint64
	// Send is what the client missed, oldest first: per stream in offset
	// order (messages fetched from before this node's runs first, then this
	// node's in arrival order, then those fetched from past its heads).
	Send []V
	// Fetch lists ranges held only by peers: fetch them and plan again with
	// them (Plan's fetched). Empty once the plan is final.
	Fetch []Fetch
	// Floors are, per stream, offsets this node knows of but has not seen
	// yet: they may still arrive live and are not to be delivered to this
	// join at or below them (they are before its seam).
	Floors map[uint64]uint64
	// Failed says why recovery failed ("" when it did not, or was not asked
	// for): then Send is empty and the client goes on live from Positions.
	Failed string
}

// Fetch is a range of a stream (offsets After+1..Upto) to fetch from one
// of the peers that report holding it.
type Fetch struct {
	Stream, After, Upto uint64
	Peers               []string
}

// Fetched is a run of a stream fetched from a peer: offsets First, First+1,
// … (Plan takes a stream's runs in ascending order).
type Fetched[V any] struct {
	First uint64
	Msgs  []V
}

// Plan decides what a join of topic is sent. recover is the client's vector
// (stream → last offset received), nil when it asked for no recovery: then
// it gets the join vector and nothing else. A stream absent from recover
// began after the client's last join and is sent from offset 1. fetched
// holds what peers sent of the ranges an earlier Plan asked for; with final
// set, a range still missing fails the recovery instead of asking again.
func (c *Core[V]) Plan(topic string, recover map[uint64]uint64, fetched map[uint64][]Fetched[V], final bool) Plan[V] {
	p := Plan[V]{Positions: make(map[uint64]uint64)}
	t := c.topics[topic]
	var ids []uint64
	if t != nil {
		for id, s := range t.streams {
			ids = append(ids, id)
			p.Positions[id] = max(s.head, s.known)
			if s.known > s.head {
				p.setFloor(id, s.known)
			}
		}
	}
	if recover == nil {
		return p
	}
	for id := range recover {
		if t == nil || t.streams[id] == nil {
			ids = append(ids, id)
		}
	}
	sortUint64(ids)
	var b planBuf[V]
	for _, id := range ids {
		var s *stream[V]
		if t != nil {
			s = t.streams[id]
		}
		if s == nil {
			p.fail(fmt.Sprintf("no live node holds stream %016x", id))
			continue
		}
		c.planStream(&p, &b, t, id, recover[id], fetched[id], final)
	}
	if p.Failed != "" || len(p.Fetch) > 0 {
		return p
	}
	sort.SliceStable(b.send, func(i, j int) bool { return b.send[i].seq < b.send[j].seq })
	p.Send = b.early
	for _, e := range b.send {
		p.Send = append(p.Send, e.value)
	}
	p.Send = append(p.Send, b.late...)
	return p
}

// planBuf gathers a plan's messages: fetched ones older than this node's
// runs, this node's, fetched ones past its heads.
type planBuf[V any] struct {
	early, late []V
	send        []*entry[V]
}

// planStream plans stream id of t from offset from (the client's last).
func (c *Core[V]) planStream(p *Plan[V], b *planBuf[V], t *topicState[V], id, from uint64, got []Fetched[V], final bool) {
	s := t.streams[id]
	upto := p.Positions[id]
	if from >= upto {
		if from > upto {
			// The client saw more than any live node knows of: a stream
			// of a node that died before anyone else saw them.
			p.Positions[id] = from
			p.setFloor(id, from)
		}
		return
	}
	low := s.head - uint64(len(s.msgs)) + 1
	if len(s.msgs) == 0 {
		low = s.head + 1
	}
	// Offsets from+1..upto come from what was fetched (from+1 up to the
	// local run) then from the local run (up to its head) then, past the
	// head, from what was fetched again.
	next := from + 1
	if next < low {
		next += takeFetched(got, next, low-1, &b.early)
	}
	if next < low {
		c.missing(p, t, id, next-1, min(low-1, upto), final)
		next = low
	}
	for o := next; o <= min(s.head, upto); o++ {
		b.send = append(b.send, s.msgs[o-low])
	}
	next = max(next, s.head+1)
	if next <= upto {
		n := takeFetched(got, next, upto, &b.late)
		if next+n <= upto {
			c.missing(p, t, id, next+n-1, upto, final)
		}
	}
}

// takeFetched appends the fetched messages of offsets from..upto that the
// runs hold contiguously from from, and reports how many.
func takeFetched[V any](runs []Fetched[V], from, upto uint64, out *[]V) uint64 {
	var n uint64
	for _, f := range runs {
		o := from + n
		if f.First == 0 || o < f.First || o-f.First >= uint64(len(f.Msgs)) {
			continue
		}
		for ; o <= upto && o-f.First < uint64(len(f.Msgs)); o++ {
			*out = append(*out, f.Msgs[o-f.First])
			n++
		}
	}
	return n
}

// missing handles offsets after+1..upto of stream id that this node does
// not hold: fetch them from a peer that reports holding them, or fail.
func (c *Core[V]) missing(p *Plan[V], t *topicState[V], id, after, upto uint64, final bool) {
	if !final {
		var peers []string
		for peer, rs := range t.peers {
			for _, r := range rs {
				if r.Stream == id && r.Low <= after+1 && r.Head >= upto {
					peers = append(peers, peer)
				}
			}
		}
		if len(peers) > 0 {
			sort.Strings(peers)
			p.Fetch = append(p.Fetch, Fetch{Stream: id, After: after, Upto: upto, Peers: peers})
			return
		}
	}
	p.fail(fmt.Sprintf("messages %d..%d of stream %016x are no longer held (window or memory bound passed)", after+1, upto, id))
}

func (p *Plan[V]) fail(reason string) {
	if p.Failed == "" {
		p.Failed = reason
	}
	p.Fetch = nil
}

func (p *Plan[V]) setFloor(id, off uint64) {
	if p.Floors == nil {
		p.Floors = make(map[uint64]uint64)
	}
	p.Floors[id] = off
}

func sortUint64(s []uint64) { sort.Slice(s, func(i, j int) bool { return s[i] < s[j] }) }
