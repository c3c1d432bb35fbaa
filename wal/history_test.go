package wal

import (
	"math"
	"slices"
	"testing"

	"github.com/meshcast/meshcast/wal/owner"
)

func histChange(table string, lsn LSN, seq uint32) *Change {
	return &Change{Kind: Insert, Schema: "public", Table: table, LSN: lsn, Seq: seq}
}

// The store proves a recovery complete only for what it holds: per table
// since its last eviction, never before where the reader started, never
// across a catalog change.
func TestChangeStoreGaps(t *testing.T) {
	h := newChangeStore(true)
	h.startAt(100, 150)
	h.append([]*Change{histChange("a", 110, 0), histChange("b", 110, 1), histChange("a", 120, 0), histChange("a", 110, 0)})
	h.append([]*Change{histChange("b", 130, 0)})
	a := []*Subscription{{Schema: "public", Table: "a"}}
	b := []*Subscription{{Schema: "public", Table: "b"}}
	all := []*Subscription{{Schema: "public", Table: "*"}}
	through := Pos{LSN: 130, Seq: 0}
	positions := func(cs []*Change) []Pos {
		var out []Pos
		for _, c := range cs {
			out = append(out, c.Pos())
		}
		return out
	}
	if cs, reason := h.snapshot(Pos{LSN: 101}, through, all); reason != "" || !slices.Equal(positions(cs), []Pos{{110, 0}, {110, 1}, {120, 0}, {130, 0}}) {
		t.Fatalf("snapshot = %v %q; want every change once, in order", positions(cs), reason)
	}
	if _, reason := h.snapshot(Pos{LSN: 100, Seq: 7}, through, all); reason != owner.ReasonWindow {
		t.Errorf("from within the transaction the reader started after: %q, want %q", reason, owner.ReasonWindow)
	}
	if _, reason := h.snapshot(caughtUp(100), through, all); reason != "" {
		t.Errorf("from where the reader started (a head a node got before any change): %q", reason)
	}
	h.evict(owner.Evict{Through: Pos{LSN: 110, Seq: math.MaxUint32}.wire(), Bytes: true})
	for _, tc := range []struct {
		after  Pos
		subs   []*Subscription
		reason string
	}{
		{Pos{LSN: 101}, a, owner.ReasonEvicted},
		{Pos{LSN: 110, Seq: 0}, a, ""}, // a's change at 110.0 is the position itself
		{Pos{LSN: 110, Seq: 0}, b, owner.ReasonEvicted},
		{Pos{LSN: 110, Seq: 1}, all, ""},
		{Pos{LSN: 101}, all, owner.ReasonEvicted},
	} {
		if _, reason := h.snapshot(tc.after, through, tc.subs); reason != tc.reason {
			t.Errorf("after %v for %s: %q, want %q", tc.after, tc.subs[0].Table, reason, tc.reason)
		}
	}
	h.noteCatalog(125)
	if _, reason := h.snapshot(Pos{LSN: 120}, through, a); reason != owner.ReasonCatalog {
		t.Errorf("across a catalog change: %q, want %q", reason, owner.ReasonCatalog)
	}
	if _, reason := h.snapshot(Pos{LSN: 125}, through, a); reason != "" {
		t.Errorf("after a catalog change: %q", reason)
	}
	if got := h.ackHead(); got != (Pos{LSN: 150, Seq: math.MaxUint32}) {
		t.Errorf("ackHead = %v, want the session's floor", got)
	}
}

// A change read before a subscription was added reaches it only along
// with one that was there (what the reader's Keep did).
func TestFreshOnly(t *testing.T) {
	p := Pos{LSN: 10, Seq: 2}
	old := &Subscription{ID: 1, from: Pos{LSN: 5}}
	fresh := &Subscription{ID: 2, from: caughtUp(10)}
	later := &Subscription{ID: 3, from: Pos{LSN: 10, Seq: 1}}
	for _, tc := range []struct {
		subs []*Subscription
		want []uint64
	}{
		{[]*Subscription{fresh}, nil},
		{[]*Subscription{old, fresh}, []uint64{1, 2}},
		{[]*Subscription{fresh, later}, []uint64{2, 3}},
		{[]*Subscription{later}, []uint64{3}},
	} {
		if got := ids(freshOnly(slices.Clone(tc.subs), p)); !slices.Equal(got, tc.want) {
			t.Errorf("freshOnly(%v) = %v, want %v", ids(tc.subs), got, tc.want)
		}
	}
}
