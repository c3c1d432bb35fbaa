package edge

import (
	"sync/atomic"
	"time"
)

// A WebTransport session has no write pool: webtransport-go's stream has
// no non-blocking write (quic-go's SendStream.TryWriteAll is not exposed
// through it), and a stream write blocks until the connection's goroutine
// has packed all but the last packet of it. So a session's writer is a
// goroutine of its own, as a WebSocket's is when its socket is full. Made
// afresh on every wake, that goroutine grows its stack again through
// quic-go's call chain each time (README, "WebSocket vs WebTransport"). A
// writerLinger lets a writer whose queue went idle wait a moment for the
// next frames instead of exiting: a session receiving steadily keeps one
// writer goroutine, with its grown stack, and an idle session none.

// wtLinger is how long a WebTransport writer waits for more frames before
// it exits. Frames that come faster than this (above 10 a second) find
// the writer of the previous ones; a session that received nothing for
// this long holds no writer.
const wtLinger = 100 * time.Millisecond

// writerLinger hands the writer role of a conn to a writer goroutine that
// is waiting for it, if there is one. Writers wait in linger; starters
// call handOff first.
type writerLinger struct {
	// idle counts the writers waiting in linger that no wake is promised
	// to. A waiting writer is idle, or a wake on the channel is its.
	idle atomic.Int32
	// wake carries the writer role to one waiting writer. At most one
	// wake is ever pending: the role it carries is released (and handed
	// out again) only by the writer that receives it.
	wake chan struct{}
	// wait is how long a writer waits (wtLinger).
	wait time.Duration
}

func newWriterLinger() *writerLinger {
	return &writerLinger{wake: make(chan struct{}, 1), wait: wtLinger}
}

// handOff gives the writer role the caller holds to a waiting writer; false
// when none waits (the caller starts one).
func (l *writerLinger) handOff() bool {
	for {
		n := l.idle.Load()
		if n == 0 {
			return false
		}
		if l.idle.CompareAndSwap(n, n-1) {
			l.wake <- struct{}{}
			return true
		}
	}
}

// linger waits up to l.wait for the writer role, after the writer gave it
// up. It reports whether the role came (the caller writes on) or the wait
// ended (the caller exits). done ends the wait early: the conn is closed.
func (l *writerLinger) linger(t *time.Timer, done <-chan struct{}) bool {
	l.idle.Add(1)
	t.Reset(l.wait)
	select {
	case <-l.wake:
		t.Stop()
		return true
	case <-t.C:
	case <-done:
		t.Stop()
	}
	for {
		n := l.idle.Load()
		if n == 0 {
			// A wake was promised to a waiting writer after all: this
			// one takes it (any waiting writer may).
			<-l.wake
			return true
		}
		if l.idle.CompareAndSwap(n, n-1) {
			return false
		}
	}
}
