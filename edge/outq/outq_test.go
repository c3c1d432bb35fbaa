package outq

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
)

var closeFrame = []byte("CLOSE")

func frame(s string) []byte { return []byte(s) }

func names(fs [][]byte) []string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = string(f)
	}
	return out
}

func TestFirstPushStartsOneWriter(t *testing.T) {
	q := New(Options{})
	if r, start := q.Push(frame("a")); r != Start || !start {
		t.Fatalf("first push: %v start=%v, want Start", r, start)
	}
	if r, start := q.Push(frame("b")); r != Queued || start {
		t.Fatalf("second push: %v start=%v, want Queued without a second writer", r, start)
	}
	if q.State() != Writing {
		t.Fatalf("state %v, want writing", q.State())
	}
	b := q.Take()
	if got := names(b.Frames); !slices.Equal(got, []string{"a", "b"}) || b.Bytes != 2 || b.Close != nil {
		t.Fatalf("take: %v %d %q", got, b.Bytes, b.Close)
	}
	if q.Release(b.Frames) {
		t.Fatal("release of an empty queue kept the writer")
	}
	if q.State() != Idle {
		t.Fatalf("state %v, want idle", q.State())
	}
	if _, start := q.Push(frame("c")); !start {
		t.Fatal("push into an idle queue did not start a writer")
	}
}

func TestReleaseKeepsWriterWhenMoreArrived(t *testing.T) {
	q := New(Options{})
	q.Push(frame("a"))
	b := q.Take()
	if _, start := q.Push(frame("b")); start {
		t.Fatal("push during a write started a second writer")
	}
	if !q.Release(b.Frames) {
		t.Fatal("writer gave up its role with a frame queued")
	}
	if got := names(q.Take().Frames); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("second take: %v", got)
	}
}

func TestOverflowClosesAsSlowConsumer(t *testing.T) {
	q := New(Options{Limit: 10, OverflowClose: closeFrame})
	if r, _ := q.Push(make([]byte, 25)); r != Start {
		t.Fatalf("a frame larger than the limit into an empty queue: %v, want it sent", r)
	}
	// The writer holds the queue (it is writing the big frame) and more
	// arrives: over the limit.
	r, start := q.Push(frame("x"))
	if r != Overflow || start {
		t.Fatalf("overflow: %v start=%v, want Overflow with the writer already running", r, start)
	}
	if !q.Overflowed() || q.State() != Closing {
		t.Fatalf("state %v overflowed=%v", q.State(), q.Overflowed())
	}
	if r, _ := q.Push(frame("y")); r != Rejected {
		t.Fatalf("push after overflow: %v", r)
	}
	b := q.Take()
	if len(b.Frames) != 0 || string(b.Close) != "CLOSE" {
		t.Fatalf("take after overflow: %v close %q; queued frames must be dropped and the close frame sent", names(b.Frames), b.Close)
	}
}

func TestOverflowOfHeldQueueStartsWriter(t *testing.T) {
	hold := true
	var flushes int
	q := New(Options{Limit: 4, OverflowClose: closeFrame, Hold: func(int64) bool { flushes++; return hold }})
	if r, start := q.Push(frame("ab")); r != Queued || start || q.State() != Held {
		t.Fatalf("held push: %v %v %v", r, start, q.State())
	}
	if r, start := q.Push(frame("cde")); r != Overflow || !start {
		t.Fatalf("overflow of a held queue: %v start=%v, want a writer for the close frame", r, start)
	}
	if q.Flush() {
		t.Fatal("flush of a closing queue started a writer")
	}
}

func TestHoldAndFlush(t *testing.T) {
	now := int64(100)
	var lastSeen int64 = -1
	q := New(Options{
		Hold:  func(last int64) bool { lastSeen = last; return last > 0 },
		Clock: func() int64 { return now },
	})
	if _, start := q.Push(frame("a")); !start {
		t.Fatal("never-written queue was held")
	}
	q.Release(q.Take().Frames)
	if _, start := q.Push(frame("b")); start || q.State() != Held || lastSeen != 100 {
		t.Fatalf("recently written queue: start=%v state=%v last=%d", start, q.State(), lastSeen)
	}
	q.Push(frame("c"))
	if !q.Flush() || q.State() != Writing {
		t.Fatalf("flush: state %v", q.State())
	}
	if got := names(q.Take().Frames); !slices.Equal(got, []string{"b", "c"}) {
		t.Fatalf("held frames: %v", got)
	}
	if q.Flush() {
		t.Fatal("flush of a writing queue started a second writer")
	}
}

func TestCloseAfterFlushAndDrop(t *testing.T) {
	for _, drop := range []bool{false, true} {
		t.Run(fmt.Sprint("drop=", drop), func(t *testing.T) {
			q := New(Options{})
			q.Push(frame("a"))
			b := q.Take()
			q.Push(frame("b"))
			if q.Close(closeFrame, drop) {
				t.Fatal("close with a writer running asked for another")
			}
			if q.Close(frame("other"), false) {
				t.Fatal("second close did something")
			}
			if !q.Release(b.Frames) {
				t.Fatal("writer gave up with a close pending")
			}
			b = q.Take()
			want := []string{"b"}
			if drop {
				want = []string{}
			}
			if got := names(b.Frames); !slices.Equal(got, want) || string(b.Close) != "CLOSE" {
				t.Fatalf("take: %v close %q, want %v then CLOSE", got, b.Close, want)
			}
			if !q.Finish() || q.Finish() {
				t.Fatal("Finish must report true exactly once")
			}
			if r, _ := q.Push(frame("c")); r != Rejected {
				t.Fatalf("push after finish: %v", r)
			}
		})
	}
}

func TestCloseIdleStartsWriter(t *testing.T) {
	q := New(Options{})
	if !q.Close(closeFrame, false) {
		t.Fatal("closing an idle queue must hand out the writer role for the close frame")
	}
	if b := q.Take(); string(b.Close) != "CLOSE" {
		t.Fatalf("close frame: %q", b.Close)
	}
}

// A frame whose head reached the socket is finished before the close
// frame, even when the close drops the rest.
func TestDropKeepsBegunFrame(t *testing.T) {
	q := New(Options{})
	q.Push(frame("aaaa"))
	q.Push(frame("bbbb"))
	b := q.Take()
	// The socket took 2 bytes of "aaaa".
	q.Requeue([][]byte{b.Frames[0][2:], b.Frames[1]}, true)
	q.Push(frame("cccc"))
	q.Close(closeFrame, true)
	got := q.Take()
	if names(got.Frames)[0] != "aa" || len(got.Frames) != 1 || got.Bytes != 2 {
		t.Fatalf("after drop: %v (%d bytes), want only the begun frame's tail", names(got.Frames), got.Bytes)
	}
}

func TestRequeueOrder(t *testing.T) {
	q := New(Options{})
	q.Push(frame("1"))
	q.Push(frame("2"))
	b := q.Take()
	q.Push(frame("3"))
	q.Requeue(b.Frames[1:], false)
	if got := names(q.Take().Frames); !slices.Equal(got, []string{"2", "3"}) {
		t.Fatalf("requeued order: %v", got)
	}
}

// TestConcurrentSendersOneWriter runs many senders against one writer
// loop: every frame is written exactly once, in each sender's order, and
// there is never more than one writer.
func TestConcurrentSendersOneWriter(t *testing.T) {
	q := New(Options{})
	const senders, each = 8, 2000
	var (
		mu      sync.Mutex
		written [][]byte
		holders atomic.Int32 // writers between getting the role and giving it back
		overlap atomic.Bool
		wg      sync.WaitGroup
		writers sync.WaitGroup
	)
	hold := func() {
		if holders.Add(1) != 1 {
			overlap.Store(true)
		}
	}
	writer := func() {
		defer writers.Done()
		hold()
		for {
			b := q.Take()
			mu.Lock()
			written = append(written, b.Frames...)
			mu.Unlock()
			// Give the role back before Release can hand it to the next
			// Push; take it again if Release says we keep it.
			holders.Add(-1)
			if !q.Release(b.Frames) {
				return
			}
			hold()
		}
	}
	for s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if _, start := q.Push(fmt.Appendf(nil, "%d/%d", s, i)); start {
					writers.Add(1)
					go writer()
				}
				if rand.IntN(50) == 0 {
					runtime.Gosched() // let writers catch up now and then
				}
			}
		}()
	}
	wg.Wait()
	writers.Wait()
	if overlap.Load() {
		t.Fatal("two writers held the queue at once")
	}
	if q.State() != Idle {
		t.Fatalf("state %v after everything was written", q.State())
	}
	next := make([]int, senders)
	for _, f := range written {
		var s, i int
		fmt.Sscanf(string(f), "%d/%d", &s, &i)
		if i != next[s] {
			t.Fatalf("sender %d: frame %d written after %d", s, i, next[s]-1)
		}
		next[s]++
	}
	for s, n := range next {
		if n != each {
			t.Fatalf("sender %d: %d of %d frames written", s, n, each)
		}
	}
}

func TestDatagramLaneStartsTheWriter(t *testing.T) {
	q := New(Options{})
	if r, dropped, start := q.PushDatagram(frame("d1")); r != Start || dropped || !start {
		t.Fatalf("first datagram: %v dropped=%v start=%v, want Start", r, dropped, start)
	}
	if r, _, start := q.PushDatagram(frame("d2")); r != Queued || start {
		t.Fatalf("second datagram: %v start=%v, want Queued", r, start)
	}
	if r, start := q.Push(frame("f")); r != Queued || start {
		t.Fatalf("frame behind datagrams: %v start=%v, want Queued", r, start)
	}
	b := q.Take()
	if got := names(b.Datagrams); !slices.Equal(got, []string{"d1", "d2"}) {
		t.Fatalf("datagrams %v", got)
	}
	if got := names(b.Frames); !slices.Equal(got, []string{"f"}) || b.Bytes != 1 {
		t.Fatalf("frames %v, %d bytes: datagrams must not count as queued bytes", got, b.Bytes)
	}
	if q.Release(b.Frames) || q.State() != Idle {
		t.Fatalf("state %v after the last batch", q.State())
	}
	// Only a datagram arriving during a write keeps the writer.
	q.Push(frame("g"))
	b = q.Take()
	q.PushDatagram(frame("d3"))
	if !q.Release(b.Frames) {
		t.Fatal("writer gave up with a datagram waiting")
	}
	if got := names(q.Take().Datagrams); !slices.Equal(got, []string{"d3"}) {
		t.Fatalf("datagrams %v", got)
	}
}

func TestDatagramLaneDropsOldest(t *testing.T) {
	q := New(Options{DatagramLimit: 3, Limit: 4})
	var dropped int
	for i := range 5 {
		r, d, _ := q.PushDatagram(frame(fmt.Sprintf("d%d", i)))
		if r == Rejected || r == Overflow {
			t.Fatalf("datagram %d: %v", i, r)
		}
		if d {
			dropped++
		}
	}
	if dropped != 2 || q.Datagrams() != 3 {
		t.Fatalf("dropped %d, %d queued; want 2 dropped, 3 queued", dropped, q.Datagrams())
	}
	if q.State() != Writing || q.Overflowed() {
		t.Fatalf("state %v overflowed=%v: a full datagram lane is no slow consumer", q.State(), q.Overflowed())
	}
	if got := names(q.Take().Datagrams); !slices.Equal(got, []string{"d2", "d3", "d4"}) {
		t.Fatalf("datagrams %v, want the newest three", got)
	}
}

func TestDatagramBatchStaysValidUntilNextTake(t *testing.T) {
	q := New(Options{DatagramLimit: 2})
	q.PushDatagram(frame("a"))
	q.PushDatagram(frame("b"))
	b := q.Take()
	// Pushes while the writer sends its batch go elsewhere.
	q.PushDatagram(frame("c"))
	q.PushDatagram(frame("d"))
	q.PushDatagram(frame("e"))
	if got := names(b.Datagrams); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("the batch being written changed: %v", got)
	}
	q.Release(b.Frames)
	if got := names(q.Take().Datagrams); !slices.Equal(got, []string{"d", "e"}) {
		t.Fatalf("second batch %v", got)
	}
}

func TestCloseDiscardsDatagrams(t *testing.T) {
	q := New(Options{})
	q.Push(frame("f"))
	q.PushDatagram(frame("d"))
	if start := q.Close(closeFrame, false); start {
		t.Fatal("close with a writer running started another")
	}
	if r, _, _ := q.PushDatagram(frame("late")); r != Rejected {
		t.Fatalf("datagram after close: %v, want Rejected", r)
	}
	b := q.Take()
	if len(b.Datagrams) != 0 || !slices.Equal(names(b.Frames), []string{"f"}) || string(b.Close) != "CLOSE" {
		t.Fatalf("batch after close: datagrams %v frames %v close %q", names(b.Datagrams), names(b.Frames), b.Close)
	}
	q.Finish()
	if r, _, _ := q.PushDatagram(frame("x")); r != Rejected || q.Datagrams() != 0 {
		t.Fatalf("datagram after finish: %v", r)
	}
}

func TestHeldQueueFlushesDatagrams(t *testing.T) {
	hold := true
	q := New(Options{Hold: func(int64) bool { return hold }})
	if r, _, start := q.PushDatagram(frame("d")); r != Queued || start || q.State() != Held {
		t.Fatalf("held datagram: %v start=%v state %v", r, start, q.State())
	}
	if !q.Flush() {
		t.Fatal("flush of a held queue with a datagram gave no writer")
	}
	if got := names(q.Take().Datagrams); !slices.Equal(got, []string{"d"}) {
		t.Fatalf("datagrams %v", got)
	}
}

// fakeClock is a Clock the test moves.
type fakeClock struct{ t int64 }

func (c *fakeClock) now() int64 { return c.t }

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// Changes fill the queue up to ChangeLimit, then wait: nothing is
// queued, nothing overflows, and Room opens when the writer takes them.
func TestPushChangeWaitsForRoom(t *testing.T) {
	clk := &fakeClock{}
	q := New(Options{Limit: 100, ChangeLimit: 10, Stall: 50, Clock: clk.now, OverflowClose: closeFrame})
	if r, start := q.PushChange(frame("aaaa")); r != Start || !start {
		t.Fatalf("first change: %v start=%v", r, start)
	}
	if r, _ := q.PushChange(frame("bbbbbb")); r != Queued {
		t.Fatalf("second change (at the limit): %v", r)
	}
	room, stallIn := q.Room(1)
	if isClosed(room) || stallIn != 50 {
		t.Fatalf("room open=%v stallIn=%d with 10 bytes of changes queued, want closed room, 50 left", isClosed(room), stallIn)
	}
	if r, _ := q.PushChange(frame("c")); r != Full {
		t.Fatalf("change past the limit: %v, want Full", r)
	}
	if q.Len() != 10 || q.Overflowed() {
		t.Fatalf("len %d overflowed %v", q.Len(), q.Overflowed())
	}
	clk.t = 30
	b := q.Take()
	if !isClosed(room) {
		t.Fatal("Take did not open the room")
	}
	if got := names(b.Frames); !slices.Equal(got, []string{"aaaa", "bbbbbb"}) {
		t.Fatalf("take: %v", got)
	}
	if room, _ := q.Room(1); !isClosed(room) {
		t.Fatal("Room of a queue with room is not open")
	}
	if r, _ := q.PushChange(frame("c")); r != Queued {
		t.Fatalf("change after the take: %v", r)
	}
	// The stall clock runs from the last Take.
	q.PushChange(frame("ddddddddd"))
	if _, stallIn := q.Room(1); stallIn != 50 {
		t.Fatalf("stallIn %d after a take at 30, want 50", stallIn)
	}
}

// A change into a queue without changes is queued whatever its size, so
// one change larger than the limit still goes out.
func TestPushChangeTakesOneLargeChange(t *testing.T) {
	q := New(Options{ChangeLimit: 4})
	if r, _ := q.PushChange(frame("0123456789")); r != Start {
		t.Fatalf("large change into an empty queue: %v", r)
	}
	if r, _ := q.PushChange(frame("x")); r != Full {
		t.Fatalf("next change: %v, want Full", r)
	}
}

// Changes do not count against Limit: a subscriber whose queue is full of
// changes still has the whole Limit for broadcasts, and broadcasts keep
// their slow-consumer rule.
func TestChangesDoNotOverflowBroadcasts(t *testing.T) {
	q := New(Options{Limit: 10, ChangeLimit: 10, OverflowClose: closeFrame})
	q.PushChange(frame("cccccccccc"))
	if r, _ := q.Push(frame("bbbbbbbb")); r != Queued {
		t.Fatalf("broadcast beside 10 bytes of changes: %v, want Queued", r)
	}
	if r, _ := q.PushChange(frame("c")); r != Full {
		t.Fatalf("change: %v, want Full", r)
	}
	if r, _ := q.Push(frame("bbb")); r != Overflow {
		t.Fatalf("broadcasts past Limit: %v, want Overflow", r)
	}
}

// A writer that took nothing for Stall while changes wait is a client
// that stopped reading: the next PushChange closes the queue as a slow
// consumer, and waiters see the room open (and the queue closed).
func TestPushChangeClosesAStalledQueue(t *testing.T) {
	clk := &fakeClock{t: 1000}
	q := New(Options{ChangeLimit: 4, Stall: 100, Clock: clk.now, OverflowClose: closeFrame})
	q.PushChange(frame("aaaa"))
	q.Take() // the writer is now stuck writing aaaa
	q.PushChange(frame("bbbb"))
	room, stallIn := q.Room(1)
	if stallIn != 100 {
		t.Fatalf("stallIn %d", stallIn)
	}
	clk.t = 1099
	if r, _ := q.PushChange(frame("c")); r != Full {
		t.Fatalf("before Stall: %v, want Full", r)
	}
	if _, stallIn := q.Room(1); stallIn != 1 {
		t.Fatalf("stallIn %d at 1099, want 1", stallIn)
	}
	clk.t = 1100
	if r, start := q.PushChange(frame("c")); r != Stalled || start {
		t.Fatalf("after Stall: %v start=%v, want Stalled with the writer still running", r, start)
	}
	if !isClosed(room) || q.State() != Closing || !q.Overflowed() {
		t.Fatalf("room open=%v state %v overflowed %v", isClosed(room), q.State(), q.Overflowed())
	}
	if r, _ := q.PushChange(frame("d")); r != Rejected {
		t.Fatalf("change after the close: %v", r)
	}
	if b := q.Take(); len(b.Frames) != 0 || string(b.Close) != "CLOSE" {
		t.Fatalf("take after stall: %v close %q: queued changes must be dropped and the close frame sent", names(b.Frames), b.Close)
	}
}

// A queue idle for long that fills with changes before its writer's
// first Take is not stalled: the stall clock starts with the writer.
func TestPushChangeStallClockStartsWithTheWriter(t *testing.T) {
	clk := &fakeClock{}
	q := New(Options{ChangeLimit: 4, Stall: 100, Clock: clk.now})
	q.PushChange(frame("a"))
	q.Release(q.Take().Frames) // idle again
	clk.t = 1_000_000
	q.PushChange(frame("aaaa"))
	if r, _ := q.PushChange(frame("b")); r != Full {
		t.Fatalf("%v, want Full (not Stalled) right after the writer started", r)
	}
}

// The unwritten rest of a batch that held changes counts as changes
// again, so it cannot make broadcasts overflow.
func TestRequeueCountsChanges(t *testing.T) {
	q := New(Options{Limit: 4, ChangeLimit: 8, OverflowClose: closeFrame})
	q.PushChange(frame("cccccccc"))
	b := q.Take()
	q.Requeue([][]byte{b.Frames[0][3:]}, true)
	if r, _ := q.Push(frame("bbbb")); r != Queued {
		t.Fatalf("broadcast after a requeue of changes: %v, want Queued", r)
	}
	if r, _ := q.PushChange(frame("cccc")); r != Full {
		t.Fatalf("change after a requeue of 5 change bytes: %v, want Full", r)
	}
}

// Closing or finishing a queue opens its room: a waiting sender sees the
// queue gone instead of waiting for a Take that never comes.
func TestCloseOpensRoom(t *testing.T) {
	for _, close := range []func(q *Queue){
		func(q *Queue) { q.Close(closeFrame, false) },
		func(q *Queue) { q.Finish() },
	} {
		q := New(Options{ChangeLimit: 1})
		q.PushChange(frame("a"))
		room, _ := q.Room(1)
		close(q)
		if !isClosed(room) {
			t.Fatal("room not opened by close")
		}
		if r, _ := q.PushChange(frame("b")); r != Rejected {
			t.Fatalf("push after close: %v", r)
		}
	}
}

// A writer that reports Progress is not stalled while a large batch goes
// out in pieces.
func TestProgressDefersTheStall(t *testing.T) {
	clk := &fakeClock{}
	q := New(Options{ChangeLimit: 4, Stall: 100, Clock: clk.now})
	q.PushChange(frame("aaaa"))
	q.Take()
	q.PushChange(frame("bbbb"))
	clk.t = 90
	q.Progress()
	clk.t = 150
	if r, _ := q.PushChange(frame("c")); r != Full {
		t.Fatalf("%v at 150 after progress at 90, want Full", r)
	}
	if _, stallIn := q.Room(1); stallIn != 40 {
		t.Fatalf("stallIn %d, want 40", stallIn)
	}
	clk.t = 190
	if r, _ := q.PushChange(frame("c")); r != Stalled {
		t.Fatalf("%v at 190, want Stalled", r)
	}
}
