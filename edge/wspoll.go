package edge

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/meshcast/meshcast/edge/netpoll"
)

// readPool reads WebSockets without a goroutine per connection: the poller
// reports a socket readable, and one of a few workers reads what it holds
// with a buffer borrowed for that read, handles every frame it completes
// and arms the socket again. An idle connection thus holds its socket and
// its wsPollReader, not a goroutine stack and a buffer; a frame that
// arrives in pieces keeps its received bytes in the reader (bounded as
// ever by MaxFrameBytes and MessageTimeout) between reads.
//
// A connection is handled by one worker at a time (the poller reports it
// once per arming; see netpoll), so its frames are handled one after the
// other, in order, as by a goroutine of its own.
type readPool struct {
	poller *netpoll.Poller
	work   *workers
	log    *slog.Logger

	mu      sync.Mutex
	readers map[uint64]*wsPollReader
	nextKey uint64

	dispatched chan struct{} // closed when dispatch returns

	// bufs are the buffers a worker borrows for one turn's reads.
	bufs sync.Pool
}

const (
	// pollReadSize is the buffer of one read from a readable socket.
	pollReadSize = 16 << 10
	// readsPerTurn bounds what one connection reads while others wait:
	// past it, it waits behind them.
	readsPerTurn = 4
)

// newReadPool starts the poller and size workers; an error where the
// system has no poller.
func newReadPool(size int, log *slog.Logger, counted func(string)) (*readPool, error) {
	pl, err := netpoll.New()
	if err != nil {
		return nil, err
	}
	p := &readPool{
		poller:     pl,
		work:       newWorkers(size, counted),
		log:        log,
		readers:    make(map[uint64]*wsPollReader),
		dispatched: make(chan struct{}),
	}
	p.bufs.New = func() any { b := make([]byte, pollReadSize); return &b }
	go p.dispatch()
	return p, nil
}

// readWorkers is the number of reader workers Config.ReadWorkers asks for.
func readWorkers(n int) int {
	if n > 0 {
		return n
	}
	return max(2, runtime.GOMAXPROCS(0))
}

// dispatch hands the connections the poller reports to the workers.
func (p *readPool) dispatch() {
	defer close(p.dispatched)
	keys := make([]uint64, 256)
	var ready []*wsPollReader
	for {
		n, err := p.poller.Wait(keys)
		if err != nil {
			if !errors.Is(err, os.ErrClosed) {
				p.log.Error("websocket poller failed; connections read through it stall", "err", err)
			}
			return
		}
		ready = ready[:0]
		p.mu.Lock()
		for _, k := range keys[:n] {
			// A key no longer known is a socket that ended after the
			// kernel reported it.
			if r := p.readers[k]; r != nil {
				ready = append(ready, r)
			}
		}
		p.mu.Unlock()
		for _, r := range ready {
			r.wake()
		}
		clear(ready)
	}
}

// close stops the poller and the workers; called once no connection is
// left.
func (p *readPool) close() {
	p.poller.Close()
	<-p.dispatched
	p.work.close()
}

// add reads c's socket through the pool from now on: false (and nothing
// done) when the poller refuses it, and the caller starts a goroutine.
func (p *readPool) add(c *conn, t *wsTransport, early []byte) bool {
	r := &wsPollReader{pool: p, c: c, t: t, in: c.newWSInput(), early: early}
	// The reader is running (owned here) until the first worker arms it:
	// what the poller reports meanwhile is read by that worker anyway.
	r.state.Store(readerRunning)
	p.mu.Lock()
	p.nextKey++
	r.key = p.nextKey
	p.readers[r.key] = r
	p.mu.Unlock()
	if err := p.poller.Add(t.raw, r.key); err != nil {
		p.forget(r.key)
		return false
	}
	c.reader = r
	t.reader.Store(r)
	r.armTimer()
	p.work.submit(r)
	return true
}

func (p *readPool) forget(key uint64) {
	p.mu.Lock()
	delete(p.readers, key)
	p.mu.Unlock()
}

// A wsPollReader's states. Armed: the poller (or the timer, or the
// transport's close) may hand it to a worker. Running: a worker has it, or
// is about to. Dead: it ended.
const (
	readerArmed uint32 = iota
	readerRunning
	readerDead
)

// wsPollReader is a WebSocket read through the readPool: all a connection
// keeps between reads.
type wsPollReader struct {
	pool  *readPool
	c     *conn
	t     *wsTransport
	key   uint64
	state atomic.Uint32
	// kicked: something other than bytes needs a look (the socket was
	// closed, a deadline passed); the running worker checks again before
	// it arms the reader.
	kicked atomic.Bool
	in     wsInput
	early  []byte  // bytes that came with the upgrade request
	worker *worker // the worker running it (the handlers' wait)

	tmu      sync.Mutex
	timer    *time.Timer
	timerAt  time.Time // when the timer fires; zero: not pending
	deadline time.Time // the last deadline armTimer saw
}

// wake hands an armed reader to a worker.
func (r *wsPollReader) wake() {
	if r.state.CompareAndSwap(readerArmed, readerRunning) {
		r.pool.work.submit(r)
	}
}

// kick makes a worker look at the reader though no bytes came: the socket
// was closed, or its deadline passed.
func (r *wsPollReader) kick() {
	r.kicked.Store(true)
	r.wake()
}

// run is a worker's turn: read and handle what the socket holds, then arm
// the reader again, or end it.
func (r *wsPollReader) run(w *worker) {
	r.worker = w
	for {
		r.kicked.Store(false)
		ok, more := r.read()
		if !ok || r.timedOut() {
			r.end()
			return
		}
		if more {
			// The socket holds more: read on, unless other connections
			// wait, then after them (without a trip through the poller).
			if !r.pool.work.waiting() {
				w.progress()
				continue
			}
			r.armTimer()
			r.pool.work.submit(r)
			return
		}
		r.armTimer()
		r.state.Store(readerArmed)
		if r.kicked.Load() && r.state.CompareAndSwap(readerArmed, readerRunning) {
			continue
		}
		err := r.pool.poller.Rearm(r.t.raw, r.key)
		if err == nil || !r.state.CompareAndSwap(readerArmed, readerRunning) {
			return // armed, or another worker has it now
		}
		if !errors.Is(err, os.ErrClosed) {
			// The socket is open but cannot be watched: no reader
			// would ever see it again.
			r.pool.log.Warn("websocket poller refused a socket", "remote", r.c.remote, "err", err)
			r.c.srv.metrics.errorReason("read")
			r.c.closeNow(ws.StatusInternalServerError, "")
			r.end()
			return
		}
		// Closed: the next read says so.
	}
}

// read reads and handles what the socket holds, at most readsPerTurn
// buffers. ok is false when the connection stops reading; more, when the
// turn ended with bytes perhaps left in the socket.
func (r *wsPollReader) read() (ok, more bool) {
	c := r.c
	if r.early != nil {
		b := r.early
		r.early = nil
		if !c.wsInput(&r.in, b, time.Now()) {
			return false, false
		}
	}
	bp := r.pool.bufs.Get().(*[]byte)
	defer r.pool.bufs.Put(bp)
	buf := *bp
	for range readsPerTurn {
		n, err := r.t.readNow(buf)
		if n > 0 && !c.wsInput(&r.in, buf[:n], time.Now()) {
			return false, false
		}
		switch {
		case errors.Is(err, errWouldBlock):
			return true, false
		case err != nil:
			c.readFailed(err, &r.in.msg)
			return false, false
		case n < len(buf):
			return true, false // most likely empty; arming checks
		}
	}
	return true, true
}

// timedOut closes the connection if its deadline has passed.
func (r *wsPollReader) timedOut() bool {
	d := r.c.wsDeadline(&r.in)
	if d.IsZero() || time.Now().Before(d) {
		return false
	}
	r.c.readFailed(os.ErrDeadlineExceeded, &r.in.msg)
	return true
}

// armTimer makes sure the timer fires by the connection's deadline. A
// later deadline (the client spoke) leaves the timer as it is: when it
// fires it finds the new deadline and waits again, so a busy connection
// does not move its timer on every read.
func (r *wsPollReader) armTimer() {
	d := r.c.wsDeadline(&r.in)
	r.tmu.Lock()
	defer r.tmu.Unlock()
	r.deadline = d
	if d.IsZero() || !r.timerAt.IsZero() && !d.Before(r.timerAt) {
		return
	}
	r.timerAt = d
	if r.timer == nil {
		r.timer = time.AfterFunc(time.Until(d), r.fire)
	} else {
		r.timer.Reset(time.Until(d))
	}
}

// fire runs on the timer: past the deadline the reader is kicked, before
// it the timer waits again.
func (r *wsPollReader) fire() {
	r.tmu.Lock()
	r.timerAt = time.Time{}
	d := r.deadline
	if wait := time.Until(d); !d.IsZero() && wait > 0 {
		r.timerAt = d
		r.timer.Reset(wait)
		d = time.Time{}
	}
	r.tmu.Unlock()
	if !d.IsZero() {
		r.kick()
	}
}

// end stops reading and tears the connection down (on a goroutine: the
// teardown waits for the writer).
func (r *wsPollReader) end() {
	r.state.Store(readerDead)
	r.tmu.Lock()
	r.deadline = time.Time{}
	if r.timer != nil {
		r.timer.Stop()
	}
	r.tmu.Unlock()
	r.pool.forget(r.key)
	c := r.c
	go func() {
		defer c.srv.wg.Done()
		c.teardown()
	}()
}

// errWouldBlock: the socket has nothing to read now.
var errWouldBlock = errors.New("edge: read would block")

// readNow reads what the socket holds into b without waiting: io.EOF when
// the client closed it, errWouldBlock when it is empty.
func (t *wsTransport) readNow(b []byte) (int, error) {
	var n int
	var err error
	cerr := t.raw.Read(func(fd uintptr) bool {
		for {
			n, err = unix.Read(int(fd), b)
			if err != unix.EINTR {
				return true
			}
		}
	})
	switch {
	case cerr != nil:
		return 0, cerr // closed
	case err == unix.EAGAIN:
		return 0, errWouldBlock
	case err != nil:
		return 0, &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", err)}
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}
