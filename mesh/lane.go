package mesh

import (
	"sync"

	"github.com/VictoriaMetrics/metrics"
)

// Lanes of a peer connection: each is its own QUIC stream, so bulk data
// never blocks control.
const (
	laneControl byte = 0 // interest, presence, subscriptions: resynced when lost
	laneData    byte = 1 // broadcasts: dropped (counted) when full
	laneChanges byte = 2 // Postgres changes: resynced (resent) when lost
	numLanes         = 3
)

// lanes lists the lanes in the order a connection opens their streams.
var lanes = [numLanes]byte{laneControl, laneData, laneChanges}

func laneName(l byte) string {
	switch l {
	case laneControl:
		return "control"
	case laneChanges:
		return "changes"
	}
	return "data"
}

// Lane names a lane for the mesh's users.
type Lane byte

// The lanes other packages send on.
const (
	// LaneControl carries small, ordered, never-dropped frames: a full
	// queue, or a new connection, resyncs the peer (see OnResync).
	LaneControl = Lane(laneControl)
	// LaneChanges carries bulk frames that must not be dropped (Postgres
	// changes), resynced like the control lane, on a stream of its own so
	// that they never delay control frames.
	LaneChanges = Lane(laneChanges)
)

// lane is one bounded send queue toward a peer. Senders append encoded
// frames (shared between peers when the same frame goes to several) and
// never block; the connection's writer for the lane takes everything queued
// and writes it at once: batching comes from the queue, not from timers.
type lane struct {
	id    byte
	limit int

	mu       sync.Mutex
	queue    [][]byte
	bytes    int
	signaled bool
	resync   bool // control and changes lanes: the peer needs a resync (new session, or frames were lost)
	wake     chan struct{}

	sentFrames, sentBytes, drops *metrics.Counter
}

func newLane(id byte, limit int) *lane {
	return &lane{id: id, limit: limit, wake: make(chan struct{}, 1)}
}

// push queues a frame. Over the limit a data frame is dropped (counted);
// on the control and changes lanes, which must lose nothing, the queue is
// emptied (its frames counted as drops) and the lane marked for a resync,
// which supersedes what was lost: snapshots on the control lane, what the
// OnResync hooks send again on both. The resync is written by the lane's
// writer itself, around the queue, so that however large it is it cannot
// overflow the queue again: every resync completes.
func (l *lane) push(f []byte) bool {
	l.mu.Lock()
	if l.bytes+len(f) > l.limit && l.bytes > 0 {
		if l.id == laneData {
			l.mu.Unlock()
			l.drops.Inc()
			return false
		}
		l.drops.Add(len(l.queue))
		clear(l.queue)
		l.queue, l.bytes, l.resync = l.queue[:0], 0, true
	}
	l.queue = append(l.queue, f)
	l.bytes += len(f)
	wake := !l.signaled
	l.signaled = true
	l.mu.Unlock()
	if wake {
		select {
		case l.wake <- struct{}{}:
		default:
		}
	}
	return true
}

// kick wakes the writer.
func (l *lane) kick() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// requestResync marks the lane for a resync and wakes its writer.
func (l *lane) requestResync() {
	l.mu.Lock()
	l.resync = true
	l.mu.Unlock()
	l.kick()
}

// take returns everything queued and whether a resync is needed.
func (l *lane) take(spare [][]byte) (batch [][]byte, resync bool) {
	l.mu.Lock()
	batch, resync = l.queue, l.resync
	l.queue, l.bytes, l.signaled, l.resync = spare[:0], 0, false, false
	l.mu.Unlock()
	return batch, resync
}

// reset drops what is queued (the connection is gone; the control and
// changes lanes resync on reconnect) and reports how many frames it
// dropped.
func (l *lane) reset() int {
	l.mu.Lock()
	n := len(l.queue)
	clear(l.queue)
	l.queue, l.bytes = l.queue[:0], 0
	l.mu.Unlock()
	return n
}

func (l *lane) depth() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.bytes
}
