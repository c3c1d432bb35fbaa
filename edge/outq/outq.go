// Package outq is the outbound queue of one client connection: the frames
// prepared for it and the role of its single writer, as one small state
// machine with no I/O, so that every transport (a WebSocket's file
// descriptor, a WebTransport stream) hands frames over the same way and the
// rules can be tested without sockets.
//
// Senders (the connection's own reader, other connections' fan-out, timers)
// only Push prepared frames; they never block and never write. The first
// Push into an idle queue hands the caller the writer role, which it gives
// to whatever writes for that transport. The writer Takes everything queued,
// writes it, and calls Release, which either keeps the role (more arrived,
// or a close is pending) or gives it back (the queue is idle again). An idle
// queue holds no writer at all.
//
// A queue over its byte limit is a slow consumer: the Push that overflows
// turns the queue to Closing with a policy-violation close frame, and the
// connection is closed once that frame is written. Frames shared between
// many queues (one broadcast to many subscribers) are never copied.
//
// Frames of a stream with flow control (Postgres changes, which come from a
// durable log that can wait) go in with PushChange instead: they never
// overflow the queue. While ChangeLimit bytes of them wait, PushChange
// queues nothing and reports Full; the sender waits on Room, which opens
// when the writer takes the queue, and pushes again. Only a queue whose
// writer made no progress (took nothing, and reported no Progress) for
// Stall is given up on: that PushChange closes it as a slow consumer
// (Stalled). Change bytes do not
// count against Limit, so a subscriber busy with changes still has the
// whole Limit for broadcasts; the queue holds at most Limit + ChangeLimit
// (plus one frame).
//
// Beside the frames, a queue has a small datagram lane for transports that
// can send unreliable datagrams (WebTransport): PushDatagram never
// overflows the queue; a full lane drops its oldest datagram (latest-wins
// traffic such as cursors wants the newest). The same writer takes both.
package outq

import (
	"sync"
)

// State is where a queue is in its life.
type State uint8

// The states. Writing and Closing are the two states in which exactly one
// writer holds the queue (or is about to, when a call returned Start).
const (
	// Idle: nothing queued, no writer.
	Idle State = iota
	// Held: frames wait for the Hold hook's deferred Flush; no writer.
	Held
	// Writing: a writer holds the queue.
	Writing
	// Closing: nothing more is accepted; the writer writes what is left
	// (or only a begun frame, when the close dropped the rest), then the
	// close frame, then calls Finish.
	Closing
	// Closed: the transport is closed; nothing is queued or written again.
	Closed
)

func (s State) String() string {
	switch s {
	case Idle:
		return "idle"
	case Held:
		return "held"
	case Writing:
		return "writing"
	case Closing:
		return "closing"
	case Closed:
		return "closed"
	}
	return "invalid"
}

// Result says what a Push did.
type Result uint8

const (
	// Queued: the frame is queued; someone else writes it.
	Queued Result = iota
	// Start: the frame is queued and the caller now holds the writer role:
	// it must start the writer.
	Start
	// Overflow: the frame did not fit; the queue is now Closing as a slow
	// consumer.
	Overflow
	// Rejected: the queue is closing or closed; the frame was dropped.
	Rejected
	// Full: PushChange queued nothing: ChangeLimit bytes of changes wait.
	// Wait on Room and push again.
	Full
	// Stalled: PushChange found the queue full of changes and its writer
	// without progress for Stall: the client stopped reading. The queue is
	// now Closing as a slow consumer, as with Overflow.
	Stalled
)

// Queue is one connection's outbound queue. The zero value is not usable;
// call New.
type Queue struct {
	// Limit is the byte bound (0 = none): a Push that would take a
	// non-empty queue above it overflows. A frame into an empty queue is
	// always accepted, so one frame larger than Limit still goes out.
	limit int
	// hold, if set, is asked (with the queue locked) whether a writer
	// about to start should wait instead; when it says yes it has arranged
	// for Flush to be called later. It gets the time of the last Take.
	hold     func(lastTake int64) bool
	clock    func() int64
	overflow []byte

	changeLimit int
	stall       int64

	mu         sync.Mutex
	state      State
	frames     [][]byte
	spare      [][]byte // the writer's previous batch array, reused
	bytes      int      // bytes in frames
	partial    bool     // frames[0] is the rest of a frame already partly written
	closeFrame []byte
	overflowed bool
	lastTake   int64

	// Flow control of PushChange: the bytes of its frames in frames, those
	// the writer took last (what a Requeue may put back), the clock
	// reading of the writer's last progress (its start or a Take), and the
	// channel Room hands out, closed at the next Take.
	changeBytes int
	takenChange int
	progress    int64
	room        chan struct{}

	datagramLimit int
	datagrams     [][]byte
	dspare        [][]byte // the array of the datagrams last taken
}

// Options configure a Queue.
type Options struct {
	// Limit bounds the queued bytes (0 = unbounded).
	Limit int
	// Hold, if set, may defer a writer's start (write coalescing): called
	// with the queue locked and the clock reading of the last Take, it
	// returns true when it has scheduled a Flush for later. It must not
	// call back into the queue.
	Hold func(lastTake int64) bool
	// Clock reads the time recorded at each Take for Hold (nil: none).
	Clock func() int64
	// OverflowClose is the transport's close frame for a slow consumer,
	// written after the begun frame (if any) when a Push overflows.
	OverflowClose []byte
	// DatagramLimit is how many datagrams the datagram lane holds (0:
	// DefaultDatagramLimit).
	DatagramLimit int
	// ChangeLimit bounds the bytes of PushChange's frames waiting in the
	// queue: past it PushChange reports Full (0: no bound, PushChange
	// always queues).
	ChangeLimit int
	// Stall is how long, in Clock units, a queue full of changes may go
	// without its writer taking anything before PushChange closes it as
	// a slow consumer (0, or no Clock: never; the sender waits until the
	// writer takes or the queue closes).
	Stall int64
}

// DefaultDatagramLimit is the datagram lane's size when Options leave it 0.
const DefaultDatagramLimit = 16

// New returns an idle queue.
func New(o Options) *Queue {
	if o.DatagramLimit <= 0 {
		o.DatagramLimit = DefaultDatagramLimit
	}
	return &Queue{limit: o.Limit, hold: o.Hold, clock: o.Clock, overflow: o.OverflowClose, datagramLimit: o.DatagramLimit,
		changeLimit: o.ChangeLimit, stall: o.Stall}
}

// closedRoom is what Room returns when there is room already.
var closedRoom = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func (q *Queue) now() int64 {
	if q.clock == nil {
		return 0
	}
	return q.clock()
}

// State returns the queue's state.
func (q *Queue) State() State {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.state
}

// Len returns the queued bytes.
func (q *Queue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.bytes
}

// Push queues a prepared frame. It never blocks. With Overflow the queue
// has turned Closing with the OverflowClose frame. Whenever start is true
// the caller holds the writer role and must start the writer.
func (q *Queue) Push(f []byte) (r Result, start bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	switch q.state {
	case Closing, Closed:
		return Rejected, false
	}
	// Changes wait for room instead of overflowing: they do not count.
	if other := q.bytes - q.changeBytes; q.limit > 0 && other > 0 && other+len(f) > q.limit {
		q.overflowed = true
		return Overflow, q.closeLocked(q.overflow, true)
	}
	q.frames = append(q.frames, f)
	q.bytes += len(f)
	return q.wakeLocked()
}

// PushChange queues a frame of a stream with flow control. It never
// blocks and never overflows: with ChangeLimit bytes of changes queued it
// queues nothing and returns Full (wait on Room, then push again), or,
// when the writer has taken nothing for Stall, Stalled: the queue is
// closing as a slow consumer. Whenever start is true the caller holds the
// writer role and must start the writer, as with Push.
func (q *Queue) PushChange(f []byte) (r Result, start bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	switch q.state {
	case Closing, Closed:
		return Rejected, false
	}
	if q.changeFull(len(f)) {
		if q.stall > 0 && q.clock != nil && q.now()-q.progress >= q.stall {
			q.overflowed = true
			return Stalled, q.closeLocked(q.overflow, true)
		}
		return Full, false
	}
	q.frames = append(q.frames, f)
	q.bytes += len(f)
	q.changeBytes += len(f)
	return q.wakeLocked()
}

// changeFull reports whether a change of n bytes must wait. A queue
// without changes always takes one, however large.
func (q *Queue) changeFull(n int) bool {
	return q.changeLimit > 0 && q.changeBytes > 0 && q.changeBytes+n > q.changeLimit
}

// Room returns a channel closed once a change of n bytes may be pushed:
// at the writer's next Take, or when the queue closes (already closed
// when it may be pushed now), and how long, in Clock units, until a
// PushChange finding the queue still full would close it as stalled (0
// when it would not).
func (q *Queue) Room(n int) (room <-chan struct{}, stallIn int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.state == Closing || q.state == Closed || !q.changeFull(n) {
		return closedRoom, 0
	}
	if q.room == nil {
		q.room = make(chan struct{})
	}
	if q.stall > 0 && q.clock != nil {
		stallIn = max(q.progress+q.stall-q.now(), 1)
	}
	return q.room, stallIn
}

// Progress records that the writer got something written: a writer that
// writes a large batch in pieces to a slow client is not stalled while the
// pieces go out.
func (q *Queue) Progress() {
	if q.clock == nil {
		return
	}
	now := q.clock()
	q.mu.Lock()
	q.progress = now
	q.mu.Unlock()
}

// openRoomLocked wakes the senders waiting on Room.
func (q *Queue) openRoomLocked() {
	if q.room != nil {
		close(q.room)
		q.room = nil
	}
}

// wakeLocked gives a queue that just got something its writer.
func (q *Queue) wakeLocked() (Result, bool) {
	if q.state != Idle {
		return Queued, false
	}
	q.progress = q.now() // a writer is about to start (or be scheduled)
	if q.hold != nil && q.hold(q.lastTake) {
		q.state = Held
		return Queued, false
	}
	q.state = Writing
	return Start, true
}

// PushDatagram queues a datagram on the datagram lane. It never blocks and
// never overflows the queue: when the lane is full its oldest datagram is
// dropped (dropped is true). r is Rejected once the queue is closing;
// otherwise Queued or Start, and whenever start is true the caller holds
// the writer role and must start the writer, as with Push.
func (q *Queue) PushDatagram(d []byte) (r Result, dropped, start bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	switch q.state {
	case Closing, Closed:
		return Rejected, false, false
	}
	if len(q.datagrams) >= q.datagramLimit {
		copy(q.datagrams, q.datagrams[1:])
		q.datagrams[len(q.datagrams)-1] = nil
		q.datagrams = q.datagrams[:len(q.datagrams)-1]
		dropped = true
	}
	q.datagrams = append(q.datagrams, d)
	r, start = q.wakeLocked()
	return r, dropped, start
}

// Datagrams returns how many datagrams wait on the datagram lane.
func (q *Queue) Datagrams() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.datagrams)
}

// empty reports that nothing waits for the writer.
func (q *Queue) empty() bool { return len(q.frames) == 0 && len(q.datagrams) == 0 }

// Flush ends a Hold: a held queue with frames gets a writer, and the
// caller must start it when Flush returns true.
func (q *Queue) Flush() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.state != Held {
		return false
	}
	if q.empty() {
		q.state = Idle
		return false
	}
	q.state = Writing
	return true
}

// Batch is what a writer takes at once.
type Batch struct {
	Frames [][]byte
	Bytes  int
	// Datagrams are the datagram lane's, oldest first. The array is the
	// queue's: it is valid until the writer's next Take.
	Datagrams [][]byte
	// Close is the close frame to write after Frames, when the queue is
	// Closing; the writer calls Finish after writing it.
	Close []byte
}

// Take hands the writer everything queued. Only the writer calls it.
func (q *Queue) Take() Batch {
	q.mu.Lock()
	defer q.mu.Unlock()
	b := Batch{Frames: q.frames, Bytes: q.bytes}
	if q.state == Closing {
		b.Close = q.closeFrame
	}
	q.frames, q.spare, q.bytes, q.partial = q.spare[:0], nil, 0, false
	q.takenChange, q.changeBytes = q.changeBytes, 0
	q.openRoomLocked()
	if len(q.datagrams) > 0 {
		// The writer is done with the datagrams of its previous Take.
		clear(q.dspare)
		b.Datagrams = q.datagrams
		q.datagrams, q.dspare = q.dspare[:0], b.Datagrams
	}
	if q.clock != nil {
		q.lastTake = q.clock()
		q.progress = q.lastTake
	}
	return b
}

// Release returns a written batch's array for reuse and reports whether
// the writer keeps its role: true when more frames arrived meanwhile (or a
// close is pending), false when the queue went idle and the writer must
// stop.
func (q *Queue) Release(written [][]byte) (more bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	clear(written) // drop references to shared frames
	if cap(written) <= 1024 && q.spare == nil {
		q.spare = written[:0]
	}
	switch q.state {
	case Writing:
		if q.empty() {
			q.state = Idle
			return false
		}
		return true
	case Closing:
		return true
	}
	return false
}

// Requeue puts the unwritten rest of a batch back in front of whatever
// was queued meanwhile; began reports that rest[0] is the tail of a frame
// whose head was written, which must be finished before anything else.
// The writer keeps its role.
func (q *Queue) Requeue(rest [][]byte, began bool) {
	if len(rest) == 0 {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.state == Closed {
		return
	}
	n := 0
	for _, f := range rest {
		n += len(f)
	}
	q.frames = append(rest, q.frames...)
	q.bytes += n
	// The rest may hold changes: count it as changes up to what was
	// taken, so that it never makes a broadcast overflow.
	q.changeBytes += min(n, q.takenChange)
	q.takenChange = 0
	q.partial = began
}

// Close stops the queue taking frames and arranges for frame (a close
// frame of the transport, or nil) to be written after what is queued; with
// drop, what is queued is dropped first (but a begun frame is finished).
// It reports whether the caller must start the writer. Closing a closing
// or closed queue does nothing.
func (q *Queue) Close(frame []byte, drop bool) (start bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.state == Closing || q.state == Closed {
		return false
	}
	return q.closeLocked(frame, drop)
}

func (q *Queue) closeLocked(frame []byte, drop bool) (start bool) {
	start = q.state == Idle || q.state == Held
	q.state = Closing
	q.closeFrame = frame
	q.openRoomLocked()
	// Datagrams are unreliable by definition: a closing connection sends
	// none of those still waiting.
	clear(q.datagrams)
	q.datagrams = q.datagrams[:0]
	if drop {
		keep := 0
		if q.partial && len(q.frames) > 0 {
			keep = 1
		}
		clear(q.frames[keep:])
		q.frames = q.frames[:keep]
		q.bytes, q.changeBytes = 0, 0
		if keep == 1 {
			q.bytes = len(q.frames[0])
		}
	}
	return start
}

// Overflowed reports whether the queue was closed as a slow consumer.
func (q *Queue) Overflowed() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.overflowed
}

// Finish marks the transport closed and drops everything; the writer (or
// whoever closed the transport) calls it once. It reports whether this
// call was the one that closed the queue.
func (q *Queue) Finish() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.state == Closed {
		return false
	}
	q.state = Closed
	q.openRoomLocked()
	q.changeBytes, q.takenChange = 0, 0
	clear(q.frames)
	clear(q.datagrams)
	clear(q.dspare)
	q.frames, q.spare, q.bytes, q.closeFrame = nil, nil, 0, nil
	q.datagrams, q.dspare = nil, nil
	return true
}
