package route

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/meshcast/meshcast/wire/meshproto"
)

const (
	linger   = 2 * time.Second
	snapWait = 3 * time.Second
)

var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// step ticks the fake clock to t0+at, then (unless ev is nil) steps ev,
// and expects want: the Tick's effects followed by the event's.
type step struct {
	at   time.Duration
	ev   Event
	want []Effect
}

func add(topic string) Effect { return Send{Frame: &meshproto.InterestAdd{Topics: []string{topic}}} }
func remove(topic string) Effect {
	return Send{Frame: &meshproto.InterestRemove{Topics: []string{topic}}}
}

// run plays steps on a new core and returns it.
func run(t *testing.T, steps []step) *Core {
	t.Helper()
	c := New(Config{Linger: linger, SnapshotWait: snapWait})
	for i, s := range steps {
		got := c.Tick(t0.Add(s.at))
		if s.ev != nil {
			got = append(got, c.Step(s.ev)...)
		}
		if len(got) == 0 && len(s.want) == 0 {
			continue
		}
		if !reflect.DeepEqual(got, s.want) {
			t.Fatalf("step %d (%v at %v): effects\n got %s\nwant %s", i, s.ev, s.at, show(got), show(s.want))
		}
	}
	return c
}

func show(es []Effect) string {
	out := "["
	for i, e := range es {
		if i > 0 {
			out += " "
		}
		switch e := e.(type) {
		case Send:
			out += fmt.Sprintf("Send{%q %T%v}", e.To, e.Frame, e.Frame)
		default:
			out += fmt.Sprintf("%T%v", e, e)
		}
	}
	return out + "]"
}

func TestLinger(t *testing.T) {
	cases := []struct {
		name  string
		steps []step
		local bool // whether "T" is local at the end
	}{
		{"first subscriber announces, the last leaving is debounced", []step{
			{0, Subscribe{Topic: "T"}, []Effect{add("T"), Ready{"T"}}},
			{time.Second, Unsubscribe{"T"}, nil},
			{time.Second + linger - time.Millisecond, nil, nil},
			{time.Second + linger, nil, []Effect{remove("T")}},
		}, false},
		{"a subscriber back within the linger cancels it, and nothing is sent", []step{
			{0, Subscribe{Topic: "T"}, []Effect{add("T"), Ready{"T"}}},
			{0, Unsubscribe{"T"}, nil},
			{time.Second, Subscribe{Topic: "T", Connected: []string{"B"}}, []Effect{Ready{"T"}}},
			{10 * linger, nil, nil},
		}, true},
		{"the linger runs from the last subscriber's leaving, once", []step{
			{0, Subscribe{Topic: "T"}, []Effect{add("T"), Ready{"T"}}},
			{0, Unsubscribe{"T"}, nil},
			{time.Second, Unsubscribe{"T"}, nil}, // already lingering: no later deadline
			{linger, nil, []Effect{remove("T")}},
		}, false},
		{"0→1→0→1 across a full linger announces twice", []step{
			{0, Subscribe{Topic: "T"}, []Effect{add("T"), Ready{"T"}}},
			{0, Unsubscribe{"T"}, nil},
			{linger, nil, []Effect{remove("T")}},
			{linger, Subscribe{Topic: "T"}, []Effect{add("T"), Ready{"T"}}},
		}, true},
		{"a re-add and a new leave restart the linger", []step{
			{0, Subscribe{Topic: "T"}, []Effect{add("T"), Ready{"T"}}},
			{0, Unsubscribe{"T"}, nil},
			{time.Second, Subscribe{Topic: "T"}, []Effect{Ready{"T"}}},
			{time.Second, Unsubscribe{"T"}, nil},
			{linger, nil, nil}, // the first linger's time: cancelled
			{time.Second + linger, nil, []Effect{remove("T")}},
		}, false},
		{"leaving a topic never subscribed does nothing", []step{
			{0, Unsubscribe{"T"}, nil},
			{10 * linger, nil, nil},
		}, false},
		{"each topic lingers on its own", []step{
			{0, Subscribe{Topic: "T"}, []Effect{add("T"), Ready{"T"}}},
			{0, Subscribe{Topic: "U"}, []Effect{add("U"), Ready{"U"}}},
			{0, Unsubscribe{"U"}, nil},
			{time.Second, Unsubscribe{"T"}, nil},
			{linger, nil, []Effect{remove("U")}},
			{linger, Subscribe{Topic: "T"}, []Effect{Ready{"T"}}},
			{10 * linger, nil, nil},
		}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := run(t, tc.steps)
			if c.Local("T") != tc.local {
				t.Errorf("Local(T) = %v, want %v", c.Local("T"), tc.local)
			}
		})
	}
}

func TestSnapshotWait(t *testing.T) {
	bc := []string{"B", "C"}
	cases := []struct {
		name    string
		steps   []step
		waiting bool // whether T's wait is still under way at the end
	}{
		{"no peer connected: ready at once", []step{
			{0, Subscribe{Topic: "T"}, []Effect{add("T"), Ready{"T"}}},
		}, false},
		{"ready once every connected peer answered", []step{
			{0, Subscribe{Topic: "T", Connected: bc}, []Effect{add("T")}},
			{time.Millisecond, SnapshotArrived{From: "B", Topic: "T"}, nil},
			{2 * time.Millisecond, SnapshotArrived{From: "B", Topic: "T"}, nil}, // a repeat counts once
			{3 * time.Millisecond, SnapshotArrived{From: "C", Topic: "T"}, []Effect{Ready{"T"}}},
		}, false},
		{"a peer not connected at the subscribe is not waited for", []step{
			{0, Subscribe{Topic: "T", Connected: []string{"B"}}, []Effect{add("T")}},
			{0, SnapshotArrived{From: "C", Topic: "T"}, nil},
			{0, SnapshotArrived{From: "B", Topic: "U"}, nil}, // another topic
			{0, SnapshotArrived{From: "B", Topic: "T"}, []Effect{Ready{"T"}}},
		}, false},
		{"a peer that never answers holds it up to SnapshotWait", []step{
			{0, Subscribe{Topic: "T", Connected: bc}, []Effect{add("T")}},
			{time.Millisecond, SnapshotArrived{From: "B", Topic: "T"}, nil},
			{snapWait - time.Millisecond, nil, nil},
			{snapWait, nil, []Effect{Ready{"T"}}},
			{snapWait, SnapshotArrived{From: "C", Topic: "T"}, nil}, // late: nothing more
		}, false},
		{"a holder dying meanwhile no longer holds it up", []step{
			{0, Subscribe{Topic: "T", Connected: bc}, []Effect{add("T")}},
			{time.Millisecond, SnapshotArrived{From: "B", Topic: "T"}, nil},
			{time.Second, NodeDown{"C"}, []Effect{Ready{"T"}}},
			{snapWait, nil, nil}, // the timeout of a finished wait does nothing
		}, false},
		{"the death of a peer not waited for changes nothing", []step{
			{0, Subscribe{Topic: "T", Connected: []string{"B"}}, []Effect{add("T")}},
			{0, NodeDown{"C"}, nil},
		}, true},
		{"a dead peer still listed as connected is not waited for", []step{
			{0, NodeDown{"C"}, nil},
			{0, Subscribe{Topic: "T", Connected: bc}, []Effect{add("T")}},
			{0, SnapshotArrived{From: "B", Topic: "T"}, []Effect{Ready{"T"}}},
		}, false},
		{"a join back within the linger shares the wait under way", []step{
			{0, Subscribe{Topic: "T", Connected: bc}, []Effect{add("T")}},
			{0, Unsubscribe{"T"}, nil},
			{time.Millisecond, Subscribe{Topic: "T", Connected: bc}, nil},
			{time.Second, SnapshotArrived{From: "B", Topic: "T"}, nil},
			{time.Second, SnapshotArrived{From: "C", Topic: "T"}, []Effect{Ready{"T"}}},
		}, false},
		{"a topic gone at the end of its linger ends its wait", []step{
			{0, Subscribe{Topic: "T", Connected: bc}, []Effect{add("T")}},
			{0, Unsubscribe{"T"}, nil},
			{linger, nil, []Effect{remove("T"), Ready{"T"}}},
			{snapWait, nil, nil},
		}, false},
		{"several waits of one peer end together when it dies", []step{
			{0, Subscribe{Topic: "U", Connected: bc}, []Effect{add("U")}},
			{0, Subscribe{Topic: "T", Connected: []string{"C"}}, []Effect{add("T")}},
			{0, NodeDown{"C"}, []Effect{Ready{"T"}}},
			{0, NodeDown{"B"}, []Effect{Ready{"U"}}},
		}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := run(t, tc.steps)
			if c.Waiting("T") != tc.waiting {
				t.Errorf("Waiting(T) = %v, want %v", c.Waiting("T"), tc.waiting)
			}
		})
	}
}

func TestRemoteInterest(t *testing.T) {
	cases := []struct {
		name  string
		steps []step
		nodes map[string][]string // topic → Nodes(topic) at the end
	}{
		{"an InterestAdd is recorded and always answered with a snapshot", []step{
			{0, InterestAdd{From: "B", Topics: []string{"T", "U"}}, []Effect{SendPresence{"B", "T"}, SendPresence{"B", "U"}}},
			{0, InterestAdd{From: "C", Topics: []string{"T"}}, []Effect{SendPresence{"C", "T"}}},
		}, map[string][]string{"T": {"B", "C"}, "U": {"B"}}},
		{"an InterestRemove drops it", []step{
			{0, InterestAdd{From: "B", Topics: []string{"T", "U"}}, []Effect{SendPresence{"B", "T"}, SendPresence{"B", "U"}}},
			{0, InterestRemove{From: "B", Topics: []string{"T", "V"}}, nil},
		}, map[string][]string{"T": nil, "U": {"B"}}},
		{"an interest snapshot replaces the peer's set; shared topics are answered", []step{
			{0, Subscribe{Topic: "T"}, []Effect{add("T"), Ready{"T"}}},
			{0, InterestAdd{From: "B", Topics: []string{"U"}}, []Effect{SendPresence{"B", "U"}}},
			{0, InterestSnapshot{From: "B", Topics: []string{"T", "V"}}, []Effect{SendPresence{"B", "T"}}},
		}, map[string][]string{"T": {"B"}, "U": nil, "V": {"B"}}},
		{"a dead node's interests go, and what it sent before dying is ignored", []step{
			{0, InterestAdd{From: "B", Topics: []string{"T"}}, []Effect{SendPresence{"B", "T"}}},
			{0, InterestAdd{From: "C", Topics: []string{"T"}}, []Effect{SendPresence{"C", "T"}}},
			{0, NodeDown{"B"}, nil},
			{0, InterestAdd{From: "B", Topics: []string{"U"}}, nil},
			{0, InterestSnapshot{From: "B", Topics: []string{"U"}}, nil},
			{0, InterestRemove{From: "C", Topics: []string{"X"}}, nil},
		}, map[string][]string{"T": {"C"}, "U": nil}},
		{"a node alive again is heard again", []step{
			{0, NodeDown{"B"}, nil},
			{0, NodeUp{"B"}, nil},
			{0, InterestAdd{From: "B", Topics: []string{"T"}}, []Effect{SendPresence{"B", "T"}}},
		}, map[string][]string{"T": {"B"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := run(t, tc.steps)
			for topic, want := range tc.nodes {
				if got := c.Nodes(topic); !reflect.DeepEqual(got, want) {
					t.Errorf("Nodes(%s) = %v, want %v", topic, got, want)
				}
			}
		})
	}
}

func TestResync(t *testing.T) {
	c := run(t, []step{
		{0, Subscribe{Topic: "T"}, []Effect{add("T"), Ready{"T"}}},
		{0, Subscribe{Topic: "U"}, []Effect{add("U"), Ready{"U"}}},
		{0, Subscribe{Topic: "W"}, []Effect{add("W"), Ready{"W"}}},
		{0, InterestAdd{From: "B", Topics: []string{"T", "U", "V"}}, []Effect{SendPresence{"B", "T"}, SendPresence{"B", "U"}, SendPresence{"B", "V"}}},
		{0, Unsubscribe{"U"}, nil},
	})
	check := func(peer string, wantInterest, wantPresence []string) {
		t.Helper()
		in, pr := c.Resync(peer)
		if !reflect.DeepEqual(in, wantInterest) || !reflect.DeepEqual(pr, wantPresence) {
			t.Errorf("Resync(%s) = %v, %v; want %v, %v", peer, in, pr, wantInterest, wantPresence)
		}
	}
	// A lingering topic is still announced: the peer was not told it went.
	check("B", []string{"T", "U", "W"}, []string{"T", "U"})
	// A new peer gets the whole interest set and no presence (it listens
	// to nothing yet).
	check("C", []string{"T", "U", "W"}, nil)
	for _, e := range c.Tick(t0.Add(linger)) {
		if !reflect.DeepEqual(e, remove("U")) {
			t.Fatalf("unexpected effect %s", show([]Effect{e}))
		}
	}
	check("B", []string{"T", "W"}, []string{"T"})
	c.Step(NodeDown{"B"})
	check("B", []string{"T", "W"}, nil)
	if c.Step(Unsubscribe{"T"}); true {
		c.Tick(t0.Add(2 * linger))
	}
	check("C", []string{"W"}, nil)
}

func TestDeadline(t *testing.T) {
	c := New(Config{Linger: linger, SnapshotWait: snapWait})
	if _, ok := c.Deadline(); ok {
		t.Fatal("an idle core has a deadline")
	}
	c.Tick(t0)
	c.Step(Subscribe{Topic: "T", Connected: []string{"B"}})
	c.Step(Subscribe{Topic: "U"})
	c.Step(Unsubscribe{"U"})
	if d, ok := c.Deadline(); !ok || !d.Equal(t0.Add(linger)) {
		t.Fatalf("Deadline = %v %v, want the linger's %v", d, ok, t0.Add(linger))
	}
	c.Tick(t0.Add(linger))
	if d, ok := c.Deadline(); !ok || !d.Equal(t0.Add(snapWait)) {
		t.Fatalf("Deadline = %v %v, want the wait's %v", d, ok, t0.Add(snapWait))
	}
	c.Tick(t0.Add(snapWait))
	if _, ok := c.Deadline(); ok {
		t.Fatal("deadline left after everything fell due")
	}
	// A clock going back does not move the core's back.
	c.Tick(t0)
	c.Step(Subscribe{Topic: "V", Connected: []string{"B"}})
	if d, _ := c.Deadline(); !d.Equal(t0.Add(2 * snapWait)) {
		t.Fatalf("Deadline = %v, want %v", d, t0.Add(2*snapWait))
	}
}

// TestRandomHistories plays random histories of a few topics and peers and
// checks the rules that hold whatever happens: announcements of a topic
// alternate Add, Remove, Add…; a peer applying them ends with exactly the
// local topics once lingers have run out; every subscribe is Ready within
// SnapshotWait.
func TestRandomHistories(t *testing.T) {
	topics := []string{"T", "U", "V"}
	peers := []string{"B", "C"}
	for seed := range uint64(300) {
		rng := rand.New(rand.NewPCG(seed, 1))
		c := New(Config{Linger: linger, SnapshotWait: snapWait})
		now := t0
		announced := map[string]bool{}  // what a peer applying every Send believes
		since := map[string]time.Time{} // topic → earliest subscribe not yet Ready
		local := map[string]bool{}      // subscribed and not unsubscribed since
		apply := func(es []Effect) {
			for _, e := range es {
				switch e := e.(type) {
				case Send:
					switch f := e.Frame.(type) {
					case *meshproto.InterestAdd:
						if announced[f.Topics[0]] {
							t.Fatalf("seed %d: %s announced twice", seed, f.Topics[0])
						}
						announced[f.Topics[0]] = true
					case *meshproto.InterestRemove:
						if !announced[f.Topics[0]] {
							t.Fatalf("seed %d: %s removed while not announced", seed, f.Topics[0])
						}
						delete(announced, f.Topics[0])
					}
				case Ready:
					delete(since, e.Topic)
				}
			}
		}
		for range 60 {
			now = now.Add(time.Duration(rng.IntN(1500)) * time.Millisecond)
			apply(c.Tick(now))
			for topic, at := range since {
				if now.Sub(at) > snapWait {
					t.Fatalf("seed %d: subscribe of %s at %v not Ready at %v", seed, topic, at, now)
				}
			}
			topic, peer := topics[rng.IntN(len(topics))], peers[rng.IntN(len(peers))]
			switch rng.IntN(6) {
			case 0, 1:
				if _, ok := since[topic]; !ok {
					since[topic] = now
				}
				local[topic] = true
				apply(c.Step(Subscribe{Topic: topic, Connected: peers}))
			case 2, 3:
				if local[topic] {
					delete(local, topic)
					apply(c.Step(Unsubscribe{topic}))
				}
			case 4:
				apply(c.Step(SnapshotArrived{From: peer, Topic: topic}))
			case 5:
				apply(c.Step(NodeDown{peer}))
				apply(c.Step(NodeUp{peer}))
			}
		}
		apply(c.Tick(now.Add(linger + snapWait)))
		if !reflect.DeepEqual(announced, local) && !(len(announced) == 0 && len(local) == 0) {
			t.Fatalf("seed %d: peers believe %v, local topics are %v", seed, announced, local)
		}
		if len(since) > 0 {
			t.Fatalf("seed %d: subscribes never Ready: %v", seed, since)
		}
	}
}
