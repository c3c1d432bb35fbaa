package owner

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/meshcast/meshcast/wire/meshproto"
)

// The core's rules, each as a table of steps on one core with a fake
// clock: the effects of each step are compared whole (but for Log lines).

var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

const (
	registerTimeout = 5 * time.Second
	takeoverWait    = 2 * time.Second
	settleWait      = 3 * time.Second
	absentWait      = time.Minute
	ackDelay        = 2 * time.Millisecond
	retryWait       = time.Second
	window          = 100
)

func config(self string) Config {
	return Config{DB: "db", Self: self, Regions: []string{"iad", "fra"}, Clustered: true, RegisterTimeout: registerTimeout,
		TakeoverWait: takeoverWait, SettleWait: settleWait, AbsentWait: absentWait, Window: window, AckDelay: ackDelay, RetryWait: retryWait}
}

// Members of the tests: o and p can read the database (o in the
// preferred region, so o owns it while it is there); n1, n2 and n3 take
// part without reading.
var (
	o  = Member{ID: "o", Name: "o", Region: "iad", DB: "db", Reader: true}
	p  = Member{ID: "p", Name: "p", Region: "fra", DB: "db", Reader: true}
	n1 = Member{ID: "n1", Name: "n1", Region: "fra", DB: "db"}
	n2 = Member{ID: "n2", Name: "n2", Region: "fra", DB: "db"}
	n3 = Member{ID: "n3", Name: "n3", Region: "fra", DB: "db"}
)

func members(ms ...Member) Members { return Members{ms} }

func draining(m Member) Member { m.Draining = true; return m }

func sub(id uint64) meshproto.Sub { return meshproto.Sub{ID: id, Schema: "public", Table: "t"} }

func subs(ids ...uint64) []meshproto.Sub {
	var out []meshproto.Sub
	for _, id := range ids {
		out = append(out, sub(id))
	}
	return out
}

func replaceOf(ids ...uint64) *meshproto.SubRegister {
	return &meshproto.SubRegister{DB: "db", Replace: true, Subs: subs(ids...)}
}

func sendTo(to string, f meshproto.Frame) Send { return Send{To: to, Lane: LaneControl, Frame: f} }
func syncTo(to string) Send                    { return sendTo(to, &meshproto.SubSync{DB: "db"}) }
func ackTo(to string, ids ...uint64) Send      { return sendTo(to, &meshproto.SubAck{DB: "db", IDs: ids}) }
func changesAck(lsn uint64, seq uint32) *meshproto.ChangesAck {
	return &meshproto.ChangesAck{DB: "db", LSN: lsn, Seq: seq}
}

// change is an item for node of size bytes at (lsn, seq); its frame
// names it.
func change(node string, lsn uint64, seq uint32, size int) Item {
	return Item{Node: node, Pos: Pos{lsn, seq}, Frame: []byte(fmt.Sprintf("%s@%d.%d", node, lsn, seq)), Size: size}
}

func local(lsn uint64, seq uint32) Item {
	return Item{Node: "o", Pos: Pos{lsn, seq}, Local: fmt.Sprintf("local@%d.%d", lsn, seq), Size: 10}
}

func commit(lsn uint64) Item { return Item{Commit: lsn} }

func goes(it Item) Send { return Send{To: it.Node, Lane: LaneChanges, Raw: it.Frame} }

func delivered(it Item) Deliver { return Deliver{From: "o", Pos: it.Pos, Local: it.Local} }

// step ticks the fake clock to t0+at, then (unless ev is nil) steps ev,
// and expects want: the Tick's effects followed by the event's.
type step struct {
	at   time.Duration
	ev   Event
	want []Effect
}

// run plays steps on a new core configured by cfg and returns it.
func run(t *testing.T, cfg Config, steps []step) *Core {
	t.Helper()
	c := New(cfg)
	play(t, c, steps)
	return c
}

func play(t *testing.T, c *Core, steps []step) {
	t.Helper()
	for i, s := range steps {
		got := withoutLogs(c.Tick(t0.Add(s.at)))
		if s.ev != nil {
			got = append(got, withoutLogs(c.Step(s.ev))...)
		}
		if len(got) == 0 && len(s.want) == 0 {
			continue
		}
		if !reflect.DeepEqual(got, s.want) {
			t.Fatalf("step %d (%T%+v at %v): effects\n got %s\nwant %s", i, s.ev, s.ev, s.at, show(got), show(s.want))
		}
	}
}

func withoutLogs(es []Effect) []Effect {
	var out []Effect
	for _, e := range es {
		if _, ok := e.(Log); !ok {
			out = append(out, e)
		}
	}
	return out
}

func show(es []Effect) string {
	var parts []string
	for _, e := range es {
		switch e := e.(type) {
		case Send:
			if e.Frame != nil {
				parts = append(parts, fmt.Sprintf("Send{%s %T%+v}", e.To, e.Frame, e.Frame))
			} else {
				parts = append(parts, fmt.Sprintf("Send{%s raw %q}", e.To, e.Raw))
			}
		default:
			parts = append(parts, fmt.Sprintf("%T%+v", e, e))
		}
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// reading is the start of most tables: o owns the database with n1 and
// n2, who registered subscriptions 1 and 2; its reader (run 0) streams.
func reading() []step {
	return []step{
		{0, members(o, n1, n2), []Effect{syncTo("n1"), syncTo("n2")}},
		{0, Receive{From: "n1", Frame: replaceOf(1)}, []Effect{AddSubs{"n1", subs(1), false}}},
		{0, Receive{From: "n2", Frame: replaceOf(2)}, []Effect{AddSubs{"n2", subs(2), false}, StartReader{Gen: 0}}},
		{0, Streaming{Gen: 0}, []Effect{ackTo("n1", 1), ackTo("n2", 2)}},
	}
}

func with(prefix []step, steps ...step) []step { return append(prefix, steps...) }

func TestOwnershipHandOff(t *testing.T) {
	single := config("o")
	single.Clustered = false
	cases := []struct {
		name  string
		cfg   Config
		steps []step
	}{
		{"a single node owns the database at once", single, []step{
			{0, members(o), []Effect{StartReader{}}},
		}},
		{"a clustered node alone waits SettleWait before it owns the database", config("o"), []step{
			{0, members(o), nil},
			{settleWait - time.Millisecond, nil, nil},
			{settleWait, nil, []Effect{StartReader{}}},
		}},
		{"seeing another member settles at once; the owner waits for its subscriptions", config("o"), []step{
			{0, members(o, n1), []Effect{syncTo("n1")}},
			{time.Second, Receive{From: "n1", Frame: replaceOf(7)}, []Effect{AddSubs{"n1", subs(7), false}, StartReader{}}},
		}},
		{"the takeover wait ends without a member that does not answer", config("o"), []step{
			{0, members(o, n1, n2), []Effect{syncTo("n1"), syncTo("n2")}},
			{0, Receive{From: "n1", Frame: replaceOf(7)}, []Effect{AddSubs{"n1", subs(7), false}}},
			{takeoverWait - time.Millisecond, nil, nil},
			{takeoverWait, nil, []Effect{StartReader{}}},
		}},
		{"a member that leaves during the takeover wait is not waited for", config("o"), []step{
			{0, members(o, n1, n2), []Effect{syncTo("n1"), syncTo("n2")}},
			{0, Receive{From: "n1", Frame: replaceOf(7)}, []Effect{AddSubs{"n1", subs(7), false}}},
			{time.Second, members(o, n1, draining(n2)), nil},
			{time.Second, members(o, n1), []Effect{StartReader{}}},
		}},
		{"the next owner after a crash takes the slot over", config("p"), []step{
			{0, members(o, p, n1), []Effect{sendTo("o", replaceOf())}},
			{time.Second, members(p, n1), []Effect{syncTo("n1")}},
			{time.Second, Receive{From: "n1", Frame: replaceOf(7)}, []Effect{AddSubs{"n1", subs(7), false}, StartReader{TakeOver: true}}},
		}},
		{"the next owner after a draining owner does not take the slot over", config("p"), []step{
			{0, members(o, p), []Effect{sendTo("o", replaceOf())}},
			{time.Second, members(draining(o), p), []Effect{syncTo("o")}},
			{time.Second, members(p), []Effect{StartReader{}}},
		}},
		{"a draining owner stops its reader and registers with the next", config("o"), with(reading(),
			step{time.Second, members(o, p, n1, n2), []Effect{syncTo("p")}},
			step{time.Second, Receive{From: "p", Frame: replaceOf()}, nil},
			step{time.Second, Drain{}, []Effect{StopReader{Gen: 0}, sendTo("p", replaceOf())}},
		)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { run(t, tc.cfg, tc.steps) })
	}
}
