package gossipnet

import "net/netip"

// pendingSet is the bounded set of inbound streams that have not proven
// yet that they come from a member: at most max at once. When a new one
// arrives at a full set, the oldest stream of the address holding the
// most is pushed out, so that one address flooding the port evicts its
// own streams first and a member's stream (which proves itself within
// milliseconds) is never the oldest for long. No locks, clocks or I/O:
// the transport serialises calls.
type pendingSet[T comparable] struct {
	max    int
	order  []pendingEntry[T] // arrival order, oldest first
	perKey map[netip.Addr]int
}

type pendingEntry[T comparable] struct {
	s    T
	addr netip.Addr
}

func newPendingSet[T comparable](max int) *pendingSet[T] {
	return &pendingSet[T]{max: max, perKey: make(map[netip.Addr]int)}
}

// add admits s from addr. If the set was full, it returns the stream
// pushed out to make room (ok true); the caller closes it.
func (p *pendingSet[T]) add(s T, addr netip.Addr) (evicted T, ok bool) {
	if len(p.order) >= p.max {
		evicted, ok = p.evict()
	}
	p.order = append(p.order, pendingEntry[T]{s: s, addr: addr})
	p.perKey[addr]++
	return evicted, ok
}

// evict removes the oldest stream of the address with the most streams.
func (p *pendingSet[T]) evict() (T, bool) {
	var zero T
	if len(p.order) == 0 {
		return zero, false
	}
	top, most := netip.Addr{}, 0
	for _, e := range p.order { // oldest first: ties go to the oldest stream's address
		if n := p.perKey[e.addr]; n > most {
			top, most = e.addr, n
		}
	}
	for i, e := range p.order {
		if e.addr == top {
			p.removeAt(i)
			return e.s, true
		}
	}
	return zero, false // unreachable: top is the address of some entry
}

// remove takes s out of the set; false if it was not there (evicted).
func (p *pendingSet[T]) remove(s T) bool {
	for i, e := range p.order {
		if e.s == s {
			p.removeAt(i)
			return true
		}
	}
	return false
}

func (p *pendingSet[T]) removeAt(i int) {
	a := p.order[i].addr
	p.order = append(p.order[:i], p.order[i+1:]...)
	if p.perKey[a]--; p.perKey[a] == 0 {
		delete(p.perKey, a)
	}
}

func (p *pendingSet[T]) len() int { return len(p.order) }
