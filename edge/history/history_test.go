package history

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

const (
	self  = 0xaa
	other = 0xbb
	third = 0xcc
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func newCore(window time.Duration, maxBytes int) *Core[string] {
	c := New[string](Config{Window: window, MaxBytes: maxBytes}, self)
	c.Tick(t0)
	return c
}

// originate keeps n messages of the own stream named "<prefix><offset>".
func originate(c *Core[string], topic, prefix string, n int) {
	for i := 0; i < n; i++ {
		c.Originate(topic, 10, prefix+itoa(c.headOf(topic, self)+1))
	}
}

func (c *Core[V]) headOf(topic string, id uint64) uint64 {
	if t := c.topics[topic]; t != nil && t.streams[id] != nil {
		return t.streams[id].head
	}
	return 0
}

func itoa(n uint64) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}

func TestOriginateNumbersFromOne(t *testing.T) {
	c := newCore(time.Minute, 0)
	for want := uint64(1); want <= 3; want++ {
		if got := c.Originate("a", 1, "x"); got != want {
			t.Fatalf("offset %d, want %d", got, want)
		}
	}
	if got := c.Originate("b", 1, "x"); got != 1 {
		t.Fatalf("other topic starts at %d, want 1", got)
	}
}

func TestPlan(t *testing.T) {
	cases := []struct {
		name    string
		setup   func(c *Core[string])
		recover map[uint64]uint64
		want    []string
		pos     map[uint64]uint64
		fail    string // substring of Failed
		fetch   []Fetch
	}{
		{
			name:  "fresh join gets the join vector and nothing else",
			setup: func(c *Core[string]) { originate(c, "a", "m", 5) },
			pos:   map[uint64]uint64{self: 5},
		},
		{
			name:    "missed messages of the own stream",
			setup:   func(c *Core[string]) { originate(c, "a", "m", 5) },
			recover: map[uint64]uint64{self: 2},
			want:    []string{"m3", "m4", "m5"},
			pos:     map[uint64]uint64{self: 5},
		},
		{
			name:    "nothing missed",
			setup:   func(c *Core[string]) { originate(c, "a", "m", 5) },
			recover: map[uint64]uint64{self: 5},
			want:    nil,
			pos:     map[uint64]uint64{self: 5},
		},
		{
			name: "streams interleave in arrival order",
			setup: func(c *Core[string]) {
				c.Originate("a", 1, "s1")
				c.Append("a", other, 1, 1, "o1")
				c.Originate("a", 1, "s2")
				c.Append("a", other, 2, 1, "o2")
			},
			recover: map[uint64]uint64{self: 0, other: 0},
			want:    []string{"s1", "o1", "s2", "o2"},
			pos:     map[uint64]uint64{self: 2, other: 2},
		},
		{
			name: "a stream absent from the vector is sent from its start",
			setup: func(c *Core[string]) {
				originate(c, "a", "m", 2)
				c.Append("a", other, 1, 1, "o1")
			},
			recover: map[uint64]uint64{self: 2},
			want:    []string{"o1"},
			pos:     map[uint64]uint64{self: 2, other: 1},
		},
		{
			name:    "an epoch nobody holds fails",
			setup:   func(c *Core[string]) { originate(c, "a", "m", 2) },
			recover: map[uint64]uint64{self: 2, third: 9},
			fail:    "no live node holds stream 00000000000000cc",
			pos:     map[uint64]uint64{self: 2},
		},
		{
			name: "a gap in a replica starts a new run: the old one is not proof",
			setup: func(c *Core[string]) {
				c.Append("a", other, 1, 1, "o1")
				c.Append("a", other, 2, 1, "o2")
				c.Append("a", other, 5, 1, "o5")
			},
			recover: map[uint64]uint64{other: 1},
			fail:    "messages 2..4 of stream 00000000000000bb are no longer held",
			pos:     map[uint64]uint64{other: 5},
		},
		{
			name: "a range only a peer holds is fetched",
			setup: func(c *Core[string]) {
				c.Peer("n2", "a", []Range{{Stream: other, Low: 1, Head: 4}})
				c.Peer("n3", "a", []Range{{Stream: other, Low: 3, Head: 4}})
			},
			recover: map[uint64]uint64{other: 1},
			fetch:   []Fetch{{Stream: other, After: 1, Upto: 4, Peers: []string{"n2"}}},
			pos:     map[uint64]uint64{other: 4},
		},
		{
			name: "a range nobody holds fails even if a peer knows its head",
			setup: func(c *Core[string]) {
				c.Peer("n2", "a", []Range{{Stream: other, Low: 5, Head: 4}})
			},
			recover: map[uint64]uint64{other: 1},
			fail:    "messages 2..4",
			pos:     map[uint64]uint64{other: 4},
		},
		{
			name: "a dead peer's range is not fetched from",
			setup: func(c *Core[string]) {
				c.Peer("n2", "a", []Range{{Stream: other, Low: 1, Head: 4}})
				c.PeerDown("n2")
			},
			recover: map[uint64]uint64{other: 0},
			fail:    "messages 1..4",
			pos:     map[uint64]uint64{other: 4},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newCore(time.Minute, 0)
			tc.setup(c)
			p := c.Plan("a", tc.recover, nil, false)
			if tc.fail != "" {
				if !strings.Contains(p.Failed, tc.fail) {
					t.Fatalf("Failed = %q, want it to contain %q", p.Failed, tc.fail)
				}
				if len(p.Send) != 0 {
					t.Fatalf("a failed plan sends %v", p.Send)
				}
			} else if p.Failed != "" {
				t.Fatalf("Failed = %q", p.Failed)
			}
			if !reflect.DeepEqual(p.Send, tc.want) {
				t.Fatalf("Send = %v, want %v", p.Send, tc.want)
			}
			if !reflect.DeepEqual(p.Positions, tc.pos) {
				t.Fatalf("Positions = %v, want %v", p.Positions, tc.pos)
			}
			if !reflect.DeepEqual(p.Fetch, tc.fetch) {
				t.Fatalf("Fetch = %v, want %v", p.Fetch, tc.fetch)
			}
		})
	}
}

func TestPlanWithFetched(t *testing.T) {
	c := newCore(time.Minute, 0)
	// This node was away for offsets 3..4 of other's stream: it holds
	// 5..6, a peer holds 1..6, and 7..8 are known but not here yet.
	c.Append("a", other, 5, 1, "o5")
	c.Append("a", other, 6, 1, "o6")
	c.Peer("n2", "a", []Range{{Stream: other, Low: 1, Head: 8}})
	p := c.Plan("a", map[uint64]uint64{other: 2}, nil, false)
	want := []Fetch{{Stream: other, After: 2, Upto: 4, Peers: []string{"n2"}}, {Stream: other, After: 6, Upto: 8, Peers: []string{"n2"}}}
	if !reflect.DeepEqual(p.Fetch, want) || p.Failed != "" {
		t.Fatalf("Fetch = %v (failed %q), want %v", p.Fetch, p.Failed, want)
	}
	// The peer's run covers both holes; 7 arrived live meanwhile.
	c.Append("a", other, 7, 1, "o7")
	got := map[uint64][]Fetched[string]{other: {{First: 3, Msgs: []string{"o3", "o4"}}, {First: 6, Msgs: []string{"o6", "o7", "o8"}}}}
	p = c.Plan("a", map[uint64]uint64{other: 2}, got, true)
	if p.Failed != "" || !reflect.DeepEqual(p.Send, []string{"o3", "o4", "o5", "o6", "o7", "o8"}) {
		t.Fatalf("Send = %v (failed %q)", p.Send, p.Failed)
	}
	if p.Positions[other] != 8 || p.Floors[other] != 8 {
		t.Fatalf("Positions %v Floors %v: want 8 for both (8 may still arrive live)", p.Positions, p.Floors)
	}
	// Final, and a hole is left: fail rather than ask again.
	p = c.Plan("a", map[uint64]uint64{other: 0}, got, true)
	if !strings.Contains(p.Failed, "messages 1..") || len(p.Fetch) != 0 {
		t.Fatalf("Failed = %q Fetch = %v", p.Failed, p.Fetch)
	}
}

func TestWindowExpiry(t *testing.T) {
	c := newCore(time.Minute, 0)
	originate(c, "a", "m", 2)
	c.Tick(t0.Add(30 * time.Second))
	originate(c, "a", "m", 1)
	c.Tick(t0.Add(61 * time.Second))
	if p := c.Plan("a", map[uint64]uint64{self: 2}, nil, false); !reflect.DeepEqual(p.Send, []string{"m3"}) {
		t.Fatalf("within the window: Send = %v, failed %q", p.Send, p.Failed)
	}
	if p := c.Plan("a", map[uint64]uint64{self: 1}, nil, false); !strings.Contains(p.Failed, "messages 2..2") {
		t.Fatalf("past the window: Failed = %q", p.Failed)
	}
	c.Tick(t0.Add(200 * time.Second))
	if c.Bytes() != 0 || c.Messages() != 0 {
		t.Fatalf("after the window: %d bytes, %d messages kept", c.Bytes(), c.Messages())
	}
	// The own stream's head stays: offsets are never reused.
	if got := c.Originate("a", 1, "m4"); got != 4 {
		t.Fatalf("offset after expiry %d, want 4", got)
	}
}

func TestStreamsForgottenAfterWindow(t *testing.T) {
	c := newCore(time.Minute, 0)
	c.Append("a", other, 1, 1, "o1")
	c.Tick(t0.Add(3 * time.Minute))
	c.Tick(t0.Add(4 * time.Minute))
	if p := c.Plan("a", map[uint64]uint64{other: 1}, nil, false); !strings.Contains(p.Failed, "no live node holds") {
		t.Fatalf("Failed = %q", p.Failed)
	}
	if len(c.topics) != 0 {
		t.Fatalf("%d topics kept", len(c.topics))
	}
}

func TestByteBudgetEvictsOldestAcrossTopics(t *testing.T) {
	per := 10 + EntryOverhead
	c := newCore(time.Hour, 3*per)
	c.Originate("a", 10, "a1")
	c.Originate("b", 10, "b1")
	c.Originate("a", 10, "a2")
	c.Originate("b", 10, "b2") // evicts a1
	if c.Bytes() != 3*per {
		t.Fatalf("bytes %d, want %d", c.Bytes(), 3*per)
	}
	if p := c.Plan("a", map[uint64]uint64{self: 0}, nil, false); !strings.Contains(p.Failed, "messages 1..1") {
		t.Fatalf("evicted: Failed = %q", p.Failed)
	}
	if p := c.Plan("b", map[uint64]uint64{self: 0}, nil, false); !reflect.DeepEqual(p.Send, []string{"b1", "b2"}) {
		t.Fatalf("kept: Send = %v, failed %q", p.Send, p.Failed)
	}
}

func TestReadAndRanges(t *testing.T) {
	c := newCore(time.Hour, 0)
	c.Append("a", other, 3, 1, "o3")
	c.Append("a", other, 4, 1, "o4")
	c.Append("a", other, 5, 1, "o5")
	originate(c, "a", "m", 1)
	if vs, last, ok := c.Read("a", other, 3, 5, 0); !ok || last != 5 || !reflect.DeepEqual(vs, []string{"o4", "o5"}) {
		t.Fatalf("Read = %v %d %v", vs, last, ok)
	}
	if vs, last, ok := c.Read("a", other, 2, 5, 1); !ok || last != 3 || !reflect.DeepEqual(vs, []string{"o3"}) {
		t.Fatalf("Read bounded = %v %d %v", vs, last, ok)
	}
	if _, _, ok := c.Read("a", other, 1, 5, 0); ok {
		t.Fatal("Read of an offset not held succeeded")
	}
	c.Peer("n2", "a", []Range{{Stream: third, Low: 1, Head: 9}})
	want := []Range{{Stream: self, Low: 1, Head: 1}, {Stream: other, Low: 3, Head: 5}, {Stream: third, Low: 10, Head: 9}}
	if got := c.Ranges("a"); !reflect.DeepEqual(got, want) {
		t.Fatalf("Ranges = %v, want %v", got, want)
	}
}

func TestDuplicateIgnored(t *testing.T) {
	c := newCore(time.Hour, 0)
	c.Append("a", other, 1, 1, "o1")
	if c.Append("a", other, 1, 1, "again") {
		t.Fatal("a duplicate was kept")
	}
	if p := c.Plan("a", map[uint64]uint64{other: 0}, nil, false); !reflect.DeepEqual(p.Send, []string{"o1"}) {
		t.Fatalf("Send = %v", p.Send)
	}
}

func TestFillExtendsTheFront(t *testing.T) {
	c := newCore(time.Hour, 0)
	c.Append("a", other, 4, 1, "o4")
	c.Originate("a", 1, "s1")
	c.Append("a", other, 5, 1, "o5")
	c.Fill("a", other, 1, []string{"o1", "o2", "o3", "o4"}, []int{1, 1, 1, 1})
	p := c.Plan("a", map[uint64]uint64{other: 0, self: 0}, nil, true)
	if p.Failed != "" || !reflect.DeepEqual(p.Send, []string{"o1", "o2", "o3", "o4", "s1", "o5"}) {
		t.Fatalf("Send = %v (failed %q)", p.Send, p.Failed)
	}
	// A run that does not reach this node's is not kept.
	c.Fill("a", third, 1, []string{"x"}, []int{1})
	c.Fill("a", other, 9, []string{"x"}, []int{1})
	if got := c.Ranges("a"); got[1] != (Range{Stream: other, Low: 1, Head: 5}) {
		t.Fatalf("Ranges = %v", got)
	}
}

func TestEvictionDropsFilledFrontWithTheOldestArrival(t *testing.T) {
	per := 1 + EntryOverhead
	c := newCore(time.Hour, 4*per)
	c.Append("a", other, 3, 1, "o3")
	c.Fill("a", other, 1, []string{"o1", "o2"}, []int{1, 1})
	c.Originate("a", 1, "s1")
	// Over the budget: the oldest arrival is o3, which takes o1 and o2
	// (older offsets) with it, so the run stays contiguous.
	c.Originate("a", 1, "s2")
	if c.Bytes() != 2*per {
		t.Fatalf("bytes %d, want %d", c.Bytes(), 2*per)
	}
	c.Tick(t0.Add(2 * time.Hour))
	if c.Bytes() != 0 || c.Messages() != 0 || len(c.queue) != 0 {
		t.Fatalf("after the window: %d bytes, %d messages, %d queued", c.Bytes(), c.Messages(), len(c.queue))
	}
}

// Messages is kept as a count (the metrics gauge reads it under the lock
// publishers take); it must match the live entries through every way a
// message goes: the budget, a gap in a replica's stream, a fill, the window.
func TestMessagesCountsLiveEntries(t *testing.T) {
	per := 10 + EntryOverhead
	c := newCore(time.Minute, 6*per)
	live := func(step string) {
		t.Helper()
		n := 0
		for _, e := range c.queue {
			if !e.dead {
				n++
			}
		}
		if c.Messages() != n {
			t.Fatalf("%s: Messages() = %d, live entries %d", step, c.Messages(), n)
		}
	}
	originate(c, "a", "m", 4)
	live("originate")
	c.Append("a", other, 5, 10, "o5")
	c.Append("a", other, 6, 10, "o6")
	c.Append("a", other, 9, 10, "o9") // a gap: o5, o6 dropped
	live("gap")
	c.Fill("a", other, 7, []string{"o7", "o8"}, []int{10, 10})
	live("fill")
	originate(c, "b", "n", 3) // over the budget: the oldest go
	live("budget")
	c.Tick(t0.Add(2 * time.Minute))
	live("window")
	if c.Messages() != 0 {
		t.Fatalf("after the window: %d messages", c.Messages())
	}
}
