package client

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
)

// Handler receives the data messages of a held connection, one at a time,
// on the goroutine that reads it: b is valid only during the call, now is
// the holder's clock when it was read.
type Handler interface {
	OnMessage(op ws.OpCode, b []byte, now int64)
}

// Heartbeat appends a connection's heartbeat frame (text) with reference
// ref.
type Heartbeat func(dst []byte, ref uint64) []byte

// Holder reads held connections and keeps them alive: Readers (a goroutine
// each, any Conn) or a Poller (epoll, WebSockets). Close closes them all;
// Errs counts those that failed while held.
type Holder interface {
	Hold(c Conn, h Handler) error
	Close()
	Errs() (n int, first error)
}

// hbRefs: heartbeat refs start here, above any push ref of a run.
const hbRefs = 1 << 40

// failures counts connections that failed while held.
type failures struct {
	mu    sync.Mutex
	n     int
	first error
}

func (f *failures) add(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n++; f.n == 1 {
		f.first = err
	}
}

// Errs is how many held connections failed, and the first one's error.
func (f *failures) Errs() (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n, f.first
}

// Readers holds connections with a goroutine each, for any Conn (a
// WebTransport session has no socket to poll), and sends their
// heartbeats from one goroutine.
type Readers struct {
	now      func() int64
	hb       Heartbeat
	every    time.Duration
	stopping atomic.Bool
	mu       sync.Mutex
	conns    []*held
	readers  sync.WaitGroup
	stop     chan struct{}
	hbDone   chan struct{}
	failures
}

type held struct {
	c        Conn
	due, ref int64 // next heartbeat; owned by the heartbeat goroutine once held
}

// NewReaders returns a holder whose clock is now; hb, if set, is sent on
// every connection every period.
func NewReaders(now func() int64, hb Heartbeat, every time.Duration) *Readers {
	r := &Readers{now: now, hb: hb, every: every, stop: make(chan struct{}), hbDone: make(chan struct{})}
	go r.heartbeats()
	return r
}

// Hold starts reading c into h.
func (r *Readers) Hold(c Conn, h Handler) error {
	r.mu.Lock()
	r.conns = append(r.conns, &held{c: c, due: r.now() + int64(r.every), ref: hbRefs})
	r.mu.Unlock()
	r.readers.Add(1)
	go func() {
		defer r.readers.Done()
		for {
			op, b, err := c.ReadFrame()
			if err != nil {
				if !r.stopping.Load() {
					r.add(err)
				}
				return
			}
			h.OnMessage(op, b, r.now())
		}
	}()
	return nil
}

// heartbeats sends every connection's heartbeat when due, until Close.
func (r *Readers) heartbeats() {
	defer close(r.hbDone)
	if r.hb == nil {
		<-r.stop
		return
	}
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	var buf []byte
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
		}
		r.mu.Lock()
		conns := append([]*held(nil), r.conns...)
		r.mu.Unlock()
		now := r.now()
		for _, h := range conns {
			if h.due > now {
				continue
			}
			h.due, h.ref = now+int64(r.every), h.ref+1
			buf = r.hb(buf[:0], uint64(h.ref))
			_ = h.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			_ = h.c.WriteFrame(ws.OpText, buf) // a dead connection fails its read soon after
		}
	}
}

// Close stops the heartbeats, closes every connection gracefully and waits
// for the readers.
func (r *Readers) Close() {
	if r.stopping.Swap(true) {
		return
	}
	close(r.stop)
	<-r.hbDone
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, h := range r.conns {
		_ = h.c.CloseGracefully()
	}
	r.readers.Wait()
}
