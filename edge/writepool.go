package edge

import (
	"errors"
	"runtime"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// writePool is a few goroutines (one per CPU) that write queued frames to
// connections with non-blocking system calls. A fan-out to N subscribers
// then makes N connections ready instead of N goroutines runnable, so the
// goroutines that read from sockets (the next publisher's message, the
// mesh) are not queued behind a flood of writers, and nothing is created
// or destroyed per delivery. A connection whose socket is full is handed to
// its own blocking writer goroutine, so a slow client never holds a worker.
type writePool struct {
	ready    chan *conn
	stop     chan struct{}
	once     sync.Once // starts the workers
	stopOnce sync.Once
	wg       sync.WaitGroup
}

func newWritePool() *writePool {
	return &writePool{ready: make(chan *conn, 1<<16), stop: make(chan struct{})}
}

// submit hands a connection whose writer role the caller holds to the
// pool; false when the pool is full (the caller starts a writer itself).
func (p *writePool) submit(c *conn) bool {
	if c.raw == nil {
		return false
	}
	p.once.Do(p.start)
	select {
	case p.ready <- c:
		return true
	default:
		return false
	}
}

func (p *writePool) start() {
	n := max(2, runtime.GOMAXPROCS(0))
	p.wg.Add(n)
	for i := 0; i < n; i++ {
		go p.run()
	}
}

// yieldEvery bounds how long a busy worker keeps its CPU from the
// goroutines that read sockets.
const yieldEvery = 32

func (p *writePool) run() {
	defer p.wg.Done()
	for n := 1; ; n++ {
		select {
		case <-p.stop:
			return
		case c := <-p.ready:
			c.writeReady()
		}
		if n%yieldEvery == 0 {
			runtime.Gosched()
		}
	}
}

// close stops the workers; called once no connection is left.
func (p *writePool) close() {
	p.once.Do(func() {}) // no start after this
	p.stopOnce.Do(func() { close(p.stop) })
	p.wg.Wait()
}

// writeReady writes what is queued without blocking. The caller holds the
// writer role. What the socket does not take, and a close frame, go to a
// blocking writer.
func (c *conn) writeReady() {
	b := c.q.Take()
	n, err := c.writeNonBlocking(b.Frames)
	c.srv.metrics.wrote(c.tm, n)
	if err != nil {
		clear(b.Frames)
		c.srv.metrics.errorReason("write")
		c.finish()
		return
	}
	if n < b.Bytes {
		// The socket is full: the rest goes back in front of whatever was
		// queued meanwhile, for a writer that may block.
		rest, began := unwritten(b.Frames, n)
		clear(b.Frames)
		c.q.Requeue(rest, began)
		go c.writer()
		return
	}
	if b.Close != nil {
		go c.writer() // the close frame takes the blocking path
		return
	}
	if c.q.Release(b.Frames) {
		c.startWriter() // more arrived meanwhile
	}
}

// unwritten returns the frames of batch after its first n bytes, and
// whether the first of them was partly written.
func unwritten(batch [][]byte, n int) (rest [][]byte, began bool) {
	for i, f := range batch {
		if n < len(f) {
			rest = append(rest, f[n:])
			rest = append(rest, batch[i+1:]...)
			return rest, n > 0
		}
		n -= len(f)
	}
	return nil, false
}

// writeNonBlocking writes as much of batch as the socket takes now and
// returns how many bytes that was. An error means the connection is
// broken; a full socket is not an error.
func (c *conn) writeNonBlocking(batch [][]byte) (int, error) {
	total := 0
	var werr error
	called := false
	err := c.raw.Write(func(fd uintptr) bool {
		called = true
		for len(batch) > 0 {
			chunk := batch[:min(len(batch), 1024)] // IOV_MAX
			n, err := writev(int(fd), chunk)
			if n > 0 {
				total += n
			}
			if err != nil {
				if !errors.Is(err, syscall.EAGAIN) && !errors.Is(err, syscall.EINTR) {
					werr = err
				}
				return true
			}
			want := 0
			for _, f := range chunk {
				want += len(f)
			}
			if n < want {
				return true // socket full
			}
			batch = batch[len(chunk):]
		}
		return true
	})
	if !called || err != nil {
		// The deadline passed (or the connection is closed): let the
		// blocking writer, which renews the deadline, find out.
		return total, nil
	}
	return total, werr
}

// iovecs are writev's scratch arrays. x/sys's Writev builds its iovecs on
// the stack up to 8 frames and allocates beyond, once per write; a
// connection that fell behind by more than 8 frames then cost an
// allocation and its GC work per write (the latency run of bench/compare.sh
// under load, --pprof-addr: 7 % of the node's CPU in that growslice;
// BenchmarkWritev).
var iovecs = sync.Pool{New: func() any { return new([]unix.Iovec) }}

// writev writes frames to fd with one system call, without allocating: a
// single frame with write(2), several with writev(2) from a pooled iovec
// array.
func writev(fd int, frames [][]byte) (int, error) {
	if len(frames) == 1 {
		return unix.Write(fd, frames[0])
	}
	p := iovecs.Get().(*[]unix.Iovec)
	iov := (*p)[:0]
	for _, f := range frames {
		if len(f) > 0 {
			v := unix.Iovec{Base: &f[0]}
			v.SetLen(len(f))
			iov = append(iov, v)
		}
	}
	n := 0
	var err error
	if len(iov) > 0 {
		r, _, e := unix.Syscall(unix.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
		if e != 0 {
			err = e
		} else {
			n = int(r)
		}
	}
	clear(iov) // the pool must not keep frames alive
	*p = iov[:0]
	iovecs.Put(p)
	return n, err
}
