package edge

import (
	"context"
	"sync"
	"time"

	"github.com/gobwas/ws"
	"github.com/quic-go/webtransport-go"
)

// A session has one bidirectional stream and no unidirectional ones. A
// client without WebTransport's flow-control settings (webtransport-go
// then sets no per-session stream limit) may open more: QUIC refuses a
// second bidirectional stream while the session's CONNECT stream and its
// one stream are open (the listener allows two), but up to three
// unidirectional ones are allowed for HTTP/3's own, and a client that
// skips QPACK's may open WebTransport ones instead. A stream nobody reads
// holds its flow-control window of the client's bytes, so those are reset.
//
// Instead of two goroutines per session blocked in AcceptStream and
// AcceptUniStream (8 KiB or more of stacks per idle session), one
// goroutine sweeps every session's accept queues every wtSweepEvery:
// webtransport-go's Accept with a context already cancelled returns a
// queued stream, or at once the context's error. An extra stream lives
// at most that long and holds at most its first window
// (wtInitialStreamWindow).

// wtSweepEvery is how often extra streams are looked for.
const wtSweepEvery = 250 * time.Millisecond

// streamRefuser resets the extra streams of the sessions it holds.
type streamRefuser struct {
	counted func() // counts one refused stream
	now     context.Context

	mu       sync.Mutex
	sessions map[*webtransport.Session]struct{}
	scratch  []*webtransport.Session // sweep's copy of sessions (only run uses it)
}

func newStreamRefuser(counted func()) *streamRefuser {
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // Accept(ctx) polls: a queued stream, or an error at once
	return &streamRefuser{counted: counted, now: ctx, sessions: make(map[*webtransport.Session]struct{})}
}

// add starts refusing sess's extra streams; its one stream is accepted.
func (r *streamRefuser) add(sess *webtransport.Session) {
	r.mu.Lock()
	r.sessions[sess] = struct{}{}
	r.mu.Unlock()
}

func (r *streamRefuser) remove(sess *webtransport.Session) {
	r.mu.Lock()
	delete(r.sessions, sess)
	r.mu.Unlock()
}

// run sweeps every interval until stop is closed.
func (r *streamRefuser) run(stop <-chan struct{}, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		r.sweep()
	}
}

// sweep resets every stream waiting in the held sessions' accept queues.
func (r *streamRefuser) sweep() {
	r.mu.Lock()
	list := r.scratch[:0]
	for sess := range r.sessions {
		list = append(list, sess)
	}
	r.mu.Unlock()
	const code = webtransport.StreamErrorCode(ws.StatusPolicyViolation)
	for _, sess := range list {
		for {
			str, err := sess.AcceptStream(r.now)
			if err != nil {
				break
			}
			r.counted()
			str.CancelRead(code)
			str.CancelWrite(code)
		}
		for {
			str, err := sess.AcceptUniStream(r.now)
			if err != nil {
				break
			}
			r.counted()
			str.CancelRead(code)
		}
	}
	clear(list)
	r.scratch = list[:0]
}
