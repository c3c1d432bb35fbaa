package gossipnet

import (
	"net/netip"
	"testing"
)

func TestPendingSetEvictsTheOldestOfTheBusiestAddress(t *testing.T) {
	a, b, c := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.3")
	type step struct {
		add     int
		from    netip.Addr
		remove  int // instead of add, when non-zero
		evicted int // 0: none
	}
	cases := []struct {
		name  string
		max   int
		steps []step
		left  int
	}{
		{"room", 3, []step{{add: 1, from: a}, {add: 2, from: b}, {add: 3, from: a}}, 3},
		{"full: the busiest address's oldest goes", 3, []step{
			{add: 1, from: b}, {add: 2, from: a}, {add: 3, from: a}, {add: 4, from: c, evicted: 2},
		}, 3},
		{"tie: the address of the oldest stream", 2, []step{
			{add: 1, from: a}, {add: 2, from: b}, {add: 3, from: c, evicted: 1},
		}, 2},
		{"a flood evicts itself, not the member", 3, []step{
			{add: 1, from: a}, {add: 2, from: b}, {add: 3, from: b}, {add: 4, from: b, evicted: 2}, {add: 5, from: b, evicted: 3},
		}, 3},
		{"removed streams free their place", 2, []step{
			{add: 1, from: a}, {add: 2, from: a}, {remove: 1}, {add: 3, from: b},
		}, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := newPendingSet[int](tc.max)
			for i, s := range tc.steps {
				if s.remove != 0 {
					if !p.remove(s.remove) {
						t.Fatalf("step %d: %d was not pending", i, s.remove)
					}
					continue
				}
				got, ok := p.add(s.add, s.from)
				if s.evicted == 0 && ok {
					t.Fatalf("step %d: evicted %d, want none", i, got)
				}
				if s.evicted != 0 && (!ok || got != s.evicted) {
					t.Fatalf("step %d: evicted %d (%v), want %d", i, got, ok, s.evicted)
				}
			}
			if p.len() != tc.left {
				t.Fatalf("%d pending, want %d", p.len(), tc.left)
			}
			n := 0
			for _, k := range p.perKey {
				n += k
			}
			if n != p.len() {
				t.Fatalf("per-address counts sum to %d, %d pending", n, p.len())
			}
		})
	}
	p := newPendingSet[int](1)
	p.add(1, a)
	if p.remove(2) {
		t.Fatal("removed a stream that was never added")
	}
}
