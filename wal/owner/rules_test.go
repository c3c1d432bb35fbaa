package owner

import (
	"reflect"
	"testing"
	"time"

	"github.com/meshcast/meshcast/wire/meshproto"
)

func TestRegistration(t *testing.T) {
	// n1's view: o owns the database.
	node := []step{{0, members(o, n1), []Effect{sendTo("o", replaceOf())}}}
	reg := func(ids ...uint64) Send { return sendTo("o", &meshproto.SubRegister{DB: "db", Subs: subs(ids...)}) }
	cases := []struct {
		name  string
		cfg   Config
		steps []step
	}{
		{"Subscribe waits for the owner's acknowledgement of every subscription", config("n1"), with(node,
			step{0, Subscribe{Call: 1, Subs: subs(1, 2)}, []Effect{reg(1, 2)}},
			step{time.Second, Receive{From: "o", Frame: &meshproto.SubAck{DB: "db", IDs: []uint64{1}}}, nil},
			step{time.Second, Receive{From: "o", Frame: &meshproto.SubAck{DB: "db", IDs: []uint64{2}}}, []Effect{Subscribed{Call: 1}}},
		)},
		{"a Subscribe not acknowledged within RegisterTimeout times out", config("n1"), with(node,
			step{0, Subscribe{Call: 1, Subs: subs(1)}, []Effect{reg(1)}},
			step{registerTimeout - time.Millisecond, nil, nil},
			step{registerTimeout, nil, []Effect{Subscribed{Call: 1, TimedOut: true}}},
			step{registerTimeout, Receive{From: "o", Frame: &meshproto.SubAck{DB: "db", IDs: []uint64{1}}}, nil},
		)},
		{"a refusal answers the Subscribe at once", config("n1"), with(node,
			step{0, Subscribe{Call: 1, Subs: subs(1, 2)}, []Effect{reg(1, 2)}},
			step{0, Receive{From: "o", Frame: &meshproto.SubAck{DB: "db", IDs: []uint64{2}, Err: "no"}}, []Effect{Subscribed{Call: 1, Err: "no"}}},
			step{registerTimeout, nil, nil},
		)},
		{"without an owner the subscriptions go to the next one", config("n1"), []step{
			{0, Subscribe{Call: 1, Subs: subs(1)}, nil},
			{time.Second, members(o, n1), []Effect{sendTo("o", replaceOf(1))}},
			{time.Second, Receive{From: "o", Frame: &meshproto.SubAck{DB: "db", IDs: []uint64{1}}}, []Effect{Subscribed{Call: 1}}},
		}},
		{"the owner holds acknowledgements until its reader streams", config("o"), []step{
			{0, members(o, n1), []Effect{syncTo("n1")}},
			{0, Receive{From: "n1", Frame: replaceOf(1)}, []Effect{AddSubs{"n1", subs(1), false}, StartReader{}}},
			{0, Receive{From: "n1", Frame: &meshproto.SubRegister{DB: "db", Subs: subs(2)}}, []Effect{AddSubs{"n1", subs(2), true}}},
			{time.Second, Streaming{Gen: 0}, []Effect{ackTo("n1", 1, 2)}},
			{time.Second, Receive{From: "n1", Frame: &meshproto.SubRegister{DB: "db", Subs: subs(3)}}, []Effect{AddSubs{"n1", subs(3), true}, ackTo("n1", 3)}},
		}},
		{"a subscription the caller could not take is refused, the others kept", config("o"), with(reading(),
			step{0, Receive{From: "n1", Frame: &meshproto.SubRegister{DB: "db", Subs: subs(3, 4)}, Refused: []uint64{3}},
				[]Effect{sendTo("n1", &meshproto.SubAck{DB: "db", IDs: []uint64{3}, Err: refusedText}), AddSubs{"n1", subs(4), true}, ackTo("n1", 4)}},
		)},
		{"a Replace set replaces, an Unregister removes", config("o"), with(reading(),
			step{0, Receive{From: "n1", Frame: &meshproto.SubRegister{DB: "db", Subs: subs(3, 4)}}, []Effect{AddSubs{"n1", subs(3, 4), true}, ackTo("n1", 3, 4)}},
			step{0, Receive{From: "n1", Frame: replaceOf(4, 5)}, []Effect{RemoveSubs{IDs: []uint64{1, 3}}, AddSubs{"n1", subs(4, 5), false}, ackTo("n1", 4, 5)}},
			step{0, Receive{From: "n1", Frame: &meshproto.SubUnregister{DB: "db", IDs: []uint64{5, 99}}}, []Effect{RemoveSubs{IDs: []uint64{5}}}},
		)},
		{"a Replace set in parts counts once whole; a lost part voids it", config("o"), with(reading(),
			step{0, Receive{From: "n1", Frame: &meshproto.SubRegister{DB: "db", Replace: true, More: true, Subs: subs(3)}}, nil},
			step{0, Receive{From: "n1", Frame: &meshproto.SubRegister{DB: "db", Replace: true, Part: 1, Subs: subs(4)}},
				[]Effect{RemoveSubs{IDs: []uint64{1}}, AddSubs{"n1", subs(3, 4), false}, ackTo("n1", 3, 4)}},
			step{0, Receive{From: "n1", Frame: &meshproto.SubRegister{DB: "db", Replace: true, More: true, Subs: subs(5)}}, nil},
			step{0, Receive{From: "n1", Frame: &meshproto.SubRegister{DB: "db", Replace: true, Part: 2, Subs: subs(6)}}, nil},
		)},
		{"frames of another database are ignored", config("o"), with(reading(),
			step{0, Receive{From: "n1", Frame: &meshproto.SubRegister{DB: "other", Subs: subs(3)}}, nil},
		)},
		{"an owner's refusal of a subscription nobody waits for drops it", config("n1"), with(node,
			step{0, Subscribe{Call: 1, Subs: subs(1)}, []Effect{reg(1)}},
			step{0, Receive{From: "o", Frame: &meshproto.SubAck{DB: "db", IDs: []uint64{1}}}, []Effect{Subscribed{Call: 1}}},
			step{time.Second, Receive{From: "o", Frame: &meshproto.SubAck{DB: "db", IDs: []uint64{1, 9}, Err: "too costly"}}, []Effect{Dropped{IDs: []uint64{1}, Err: "too costly"}}},
		)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { run(t, tc.cfg, tc.steps) })
	}
}

// A node registers its whole set with each new owner: after the owner's
// crash, with the next one, which waits for it before reading.
func TestFailoverReregistration(t *testing.T) {
	n := New(config("n1"))
	play(t, n, []step{
		{0, members(o, p, n1), []Effect{sendTo("o", replaceOf())}},
		{0, Subscribe{Call: 1, Subs: subs(1, 2)}, []Effect{sendTo("o", &meshproto.SubRegister{DB: "db", Subs: subs(1, 2)})}},
		{0, Receive{From: "o", Frame: &meshproto.SubAck{DB: "db", IDs: []uint64{1, 2}}}, []Effect{Subscribed{Call: 1}}},
		{0, Unsubscribe{IDs: []uint64{1}}, []Effect{sendTo("o", &meshproto.SubUnregister{DB: "db", IDs: []uint64{1}})}},
		{time.Second, members(p, n1), []Effect{sendTo("p", replaceOf(2))}},
	})
	if got := n.Resync("p", LaneControl); len(got) != 1 {
		t.Fatalf("resync toward the new owner: %d frames, want its Replace set", len(got))
	}
	next := New(config("p"))
	play(t, next, []step{
		{0, members(o, p, n1), []Effect{sendTo("o", replaceOf())}},
		{time.Second, members(p, n1), []Effect{syncTo("n1")}},
		{time.Second, Receive{From: "n1", Frame: replaceOf(2)}, []Effect{AddSubs{"n1", subs(2), false}, StartReader{TakeOver: true}}},
		{time.Second, Streaming{Gen: 0}, []Effect{ackTo("n1", 2)}},
	})
}

// Confirmation: a transaction is confirmed once every node it reached
// acknowledged it, in commit order; nothing while a member is absent.
func TestConfirmation(t *testing.T) {
	a, b := change("n1", 100, 0, 10), change("n2", 100, 1, 10)
	c2 := change("n1", 200, 0, 10)
	ack := func(from string, lsn uint64, seq uint32) Receive {
		return Receive{From: from, Frame: changesAck(lsn, seq)}
	}
	routed := step{0, Routed{Items: []Item{a, b, commit(100), c2, commit(200), commit(300)}}, []Effect{goes(a), goes(c2), goes(b), RouteMore{}}}
	cases := []struct {
		name  string
		steps []step
	}{
		{"in order, once every node acknowledged", with(reading(), routed,
			step{0, ack("n1", 200, 0), nil},
			step{0, ack("n2", 100, 1), []Effect{Confirm{LSN: 300}}},
		)},
		{"a transaction no node needed is confirmed with those before it", with(reading(),
			step{0, Routed{Items: []Item{commit(50)}}, []Effect{Confirm{LSN: 50}, RouteMore{}}},
		)},
		{"an absent member holds confirmation until AbsentWait, noticed by Tick alone", with(reading(), routed,
			step{0, ack("n1", 200, 0), nil},
			step{time.Second, members(o, n1), []Effect{RemoveSubs{IDs: []uint64{2}}}}, // n2 vanished: no longer waited on, but absent
			step{time.Second + absentWait - time.Millisecond, nil, nil},
			step{time.Second + absentWait, nil, []Effect{Confirm{LSN: 300}}},
		)},
		{"a member back from absence registers and the reader reads again for it", with(reading(), routed,
			step{0, ack("n1", 200, 0), nil},
			step{time.Second, members(o, n1), []Effect{RemoveSubs{IDs: []uint64{2}}}},
			step{2 * time.Second, members(o, n1, n2), []Effect{syncTo("n2")}}, // asked for its set
			step{2 * time.Second, Receive{From: "n2", Frame: replaceOf(2)}, []Effect{AddSubs{"n2", subs(2), false}, StopReader{Gen: 0}, ackTo("n2", 2)}},
			step{2 * time.Second, ReaderStopped{Gen: 0}, []Effect{StartReader{Gen: 1}}},
			step{2 * time.Second, Routed{Gen: 0, Items: []Item{commit(400)}}, nil}, // the stopped run's
			step{2 * time.Second, Routed{Gen: 1, Items: []Item{b, commit(100), commit(300)}}, []Effect{goes(b), RouteMore{Gen: 1}}},
			step{2 * time.Second, ack("n2", 100, 1), []Effect{Confirm{LSN: 300}}},
		)},
		{"a new incarnation of an absent member ends the wait", with(reading(), routed,
			step{0, ack("n1", 200, 0), nil},
			step{time.Second, members(o, n1), []Effect{RemoveSubs{IDs: []uint64{2}}}},
			step{2 * time.Second, members(o, n1, Member{ID: "n2b", Name: "n2", Region: "fra", DB: "db"}), []Effect{Confirm{LSN: 300}, syncTo("n2b")}},
		)},
		{"a member that drains and leaves is not waited for", with(reading(), routed,
			step{0, ack("n1", 200, 0), nil},
			step{time.Second, members(o, n1, draining(n2)), nil},
			step{time.Second, members(o, n1), []Effect{RemoveSubs{IDs: []uint64{2}}, Confirm{LSN: 300}}},
		)},
		{"a late member is asked for its subscriptions and held like an absent one", with(reading(), routed,
			step{0, members(o, n1, n2, n3), []Effect{syncTo("n3")}},
			step{0, ack("n1", 200, 0), nil},
			step{0, ack("n2", 100, 1), nil},
			step{time.Second, Receive{From: "n3", Frame: replaceOf()}, []Effect{Confirm{LSN: 300}}},
		)},
		{"a late member with subscriptions makes the reader read again", with(reading(), routed,
			step{0, members(o, n1, n2, n3), []Effect{syncTo("n3")}},
			step{time.Second, Receive{From: "n3", Frame: replaceOf(9)}, []Effect{AddSubs{"n3", subs(9), false}, StopReader{Gen: 0}, ackTo("n3", 9)}},
		)},
		{"the reader's forced confirmation supersedes what it covers", with(reading(), routed,
			step{0, members(o, n1), []Effect{RemoveSubs{IDs: []uint64{2}}}}, // n2 absent
			step{0, Forced{LSN: 150}, nil},
			step{0, Routed{Items: []Item{commit(400)}}, []Effect{RouteMore{}}},
			step{absentWait, nil, nil}, // n2's absence ends; n1 has not acknowledged 200, and 150 is confirmed already
			step{absentWait, ack("n1", 200, 0), []Effect{Confirm{LSN: 400}}},
		)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { run(t, config("o"), tc.steps) })
	}
}

// Windows: a node gets changes while what it has not acknowledged is
// under Window bytes; the router goes on once the chunk is out, and once
// this node's own subscribers took theirs.
func TestWindows(t *testing.T) {
	x, y, z := change("n1", 100, 0, 60), change("n1", 100, 1, 60), change("n1", 100, 2, 60)
	l1, l2 := local(100, 3), local(100, 4)
	cases := []struct {
		name  string
		steps []step
	}{
		{"a full window holds the rest of the chunk, and the router", with(reading(),
			step{0, Routed{Items: []Item{x, y, z, commit(100)}}, []Effect{goes(x), goes(y)}},
			step{0, Receive{From: "n1", Frame: changesAck(100, 0)}, []Effect{goes(z), RouteMore{}}},
			step{0, Receive{From: "n1", Frame: changesAck(100, 2)}, []Effect{Confirm{LSN: 100}}},
		)},
		{"a node that goes frees the router", with(reading(),
			step{0, Routed{Items: []Item{x, y, z, commit(100)}}, []Effect{goes(x), goes(y)}},
			step{time.Second, members(o, n2, draining(n1)), nil},
			step{time.Second, members(o, n2), []Effect{RemoveSubs{IDs: []uint64{1}}, Confirm{LSN: 100}, RouteMore{}}},
		)},
		{"this node's changes go at once; the router waits until they are delivered", []step{
			{0, members(o), nil},
			{0, Subscribe{Call: 1, Subs: subs(5)}, nil},
			{settleWait, nil, []Effect{AddSubs{"o", subs(5), false}, StartReader{}}},
			{settleWait, Streaming{}, []Effect{Subscribed{Call: 1}}},
			{settleWait, Routed{Items: []Item{l1, l2, commit(100)}}, []Effect{delivered(l1), delivered(l2)}},
			{settleWait, Delivered{From: "o", Pos: l1.Pos}, nil},
			{settleWait, Delivered{From: "o", Pos: l2.Pos}, []Effect{Confirm{LSN: 100}, RouteMore{}}},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { run(t, config("o"), tc.steps) })
	}
}

// The node side: each change delivered once, in order; repeats counted,
// not delivered; acknowledgements gathered for AckDelay.
func TestNodeSideDuplicatesAndAcks(t *testing.T) {
	ch := func(lsn uint64, seq uint32) *meshproto.Changes {
		return &meshproto.Changes{DB: "db", LSN: lsn, Seq: seq, IDs: []uint64{1}}
	}
	deliver := func(f *meshproto.Changes, dup bool) Deliver {
		return Deliver{From: "o", Pos: Pos{f.LSN, f.Seq}, Changes: f, Dup: dup}
	}
	a, b, old, again := ch(100, 0), ch(100, 1), ch(90, 5), ch(100, 1)
	run(t, config("n1"), []step{
		{0, members(o, n1), []Effect{sendTo("o", replaceOf())}},
		{0, Receive{From: "o", Frame: a}, []Effect{deliver(a, false)}},
		{0, Receive{From: "o", Frame: b}, []Effect{deliver(b, false)}},
		{0, Receive{From: "o", Frame: old}, []Effect{deliver(old, true)}},
		{0, Receive{From: "o", Frame: again}, []Effect{deliver(again, true)}},
		{0, Delivered{From: "o", Pos: Pos{100, 0}}, nil},
		{time.Millisecond, Delivered{From: "o", Pos: Pos{100, 1}}, nil},
		{ackDelay - time.Microsecond, nil, nil},
		{ackDelay, nil, []Effect{sendTo("o", changesAck(100, 1))}},
		{time.Second, Delivered{From: "o", Pos: Pos{90, 5}}, nil}, // a repeat: nothing new to say
		{time.Second + ackDelay, nil, []Effect{sendTo("o", changesAck(100, 1))}},
		{2 * time.Second, members(p, n1), []Effect{sendTo("p", replaceOf())}},
		{2 * time.Second, Delivered{From: "o", Pos: Pos{100, 1}}, nil}, // o is gone
		{3 * time.Second, nil, nil},
	})
}

// Resync: what a peer gets when its lane is new or lost frames.
func TestResync(t *testing.T) {
	x, y := change("n1", 100, 0, 10), change("n1", 100, 1, 10)
	own := run(t, config("o"), with(reading(),
		step{0, members(o, n1, n2, n3), []Effect{syncTo("n3")}},
		step{0, Routed{Items: []Item{x, y, commit(100)}}, []Effect{goes(x), goes(y), RouteMore{}}},
		step{0, Receive{From: "n1", Frame: changesAck(100, 0)}, nil},
	))
	if got := own.Resync("n1", LaneChanges); !reflect.DeepEqual(got, [][]byte{y.Frame}) {
		t.Errorf("changes lane toward n1: %q, want the unacknowledged %q", got, y.Frame)
	}
	if got := own.Resync("n3", LaneControl); !reflect.DeepEqual(got, [][]byte{meshproto.Append(nil, &meshproto.SubSync{DB: "db"})}) {
		t.Errorf("control lane toward a late member the owner waits for: %q, want a SubSync", got)
	}
	if got := own.Resync("n2", LaneControl); len(got) != 0 {
		t.Errorf("control lane toward a registered member: %q, want nothing", got)
	}
	node := run(t, config("n1"), []step{
		{0, members(o, n1), []Effect{sendTo("o", replaceOf())}},
		{0, Subscribe{Call: 1, Subs: subs(1)}, []Effect{sendTo("o", &meshproto.SubRegister{DB: "db", Subs: subs(1)})}},
		{0, Receive{From: "o", Frame: &meshproto.Changes{DB: "db", LSN: 100}}, []Effect{Deliver{From: "o", Pos: Pos{100, 0}, Changes: &meshproto.Changes{DB: "db", LSN: 100}}}},
		{0, Delivered{From: "o", Pos: Pos{100, 0}}, nil},
	})
	want := [][]byte{meshproto.Append(nil, replaceOf(1)), meshproto.Append(nil, changesAck(100, 0))}
	if got := node.Resync("o", LaneControl); !reflect.DeepEqual(got, want) {
		t.Errorf("control lane toward the owner: %q, want its whole set and the last acknowledgement", got)
	}
}

// The reader: started when the owner may read, stopped when it may not,
// started again after RetryWait when it failed.
func TestReaderRuns(t *testing.T) {
	run(t, config("o"), with(reading(),
		step{time.Second, ReaderStopped{Gen: 0, Failed: true}, nil},
		step{time.Second, Streaming{Gen: 0}, nil},
		step{time.Second + retryWait - time.Millisecond, nil, nil},
		step{time.Second + retryWait, nil, []Effect{StartReader{Gen: 1}}},
		step{3 * time.Second, ReadAgain{Gen: 0}, nil},
		step{3 * time.Second, ReadAgain{Gen: 1}, []Effect{StopReader{Gen: 1}}},
		step{3 * time.Second, ReadAgain{Gen: 1}, nil},
		step{4 * time.Second, ReaderStopped{Gen: 1}, []Effect{StartReader{Gen: 2}}},
	))
}
