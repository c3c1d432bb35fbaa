//go:build linux

package client

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
)

// Poller holds many WebSockets without a goroutine each: a connection is
// dialled and joined as an ordinary WS, then its socket is handed to one
// of a few pollers, which wait on epoll, read whatever is ready into one
// shared buffer and parse the frames in place (frame.go, as WS does). A
// held connection costs a small struct and the kernel's socket buffers;
// the start of a frame a read cut is its only buffer, and only until the
// rest arrives. That lets one process hold 20 000 subscribers (the
// open-file limit here) with a constant number of goroutines.
type Poller struct {
	ps       []*poller
	next     atomic.Uint64
	now      func() int64
	hb       Heartbeat
	every    time.Duration
	stopping atomic.Bool
	wg       sync.WaitGroup
	failures
}

// pollConn is one held connection; its poller's goroutine owns it after
// Hold.
type pollConn struct {
	fd      int
	h       Handler
	partial []byte // the start of a frame the last read cut
	msg     message
	nextHB  int64
	hbRef   uint64
	open    bool
}

type poller struct {
	g     *Poller
	epfd  int
	mu    sync.Mutex // guards conns (Hold runs on other goroutines)
	conns map[int]*pollConn
	buf   []byte
	wbuf  []byte
	mask  uint32
}

const pollReadBuf = 256 << 10

// NewPoller starts n pollers on clock now; hb, if set, is sent on every
// connection every period.
func NewPoller(n int, now func() int64, hb Heartbeat, every time.Duration) (*Poller, error) {
	g := &Poller{now: now, hb: hb, every: every}
	for range n {
		fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		if err != nil {
			g.Close()
			return nil, fmt.Errorf("client: epoll: %w", err)
		}
		p := &poller{g: g, epfd: fd, conns: map[int]*pollConn{}, buf: make([]byte, pollReadBuf), mask: uint32(time.Now().UnixNano()) | 1}
		g.ps = append(g.ps, p)
		g.wg.Add(1)
		go p.run()
	}
	return g, nil
}

// Hold takes over c, a *WS that is joined already: its socket moves to a
// poller and c must not be used afterwards. What c read past the join is
// parsed first, at the poller's next tick or read.
func (g *Poller) Hold(c Conn, h Handler) error {
	w, ok := c.(*WS)
	if !ok {
		c.Close()
		return errors.New("client: the poller holds WebSockets only")
	}
	sc, ok := w.nc.(syscall.Conn)
	if !ok {
		w.Close()
		return errors.New("client: connection has no file descriptor")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		w.Close()
		return err
	}
	fd := -1
	var derr error
	if err := rc.Control(func(f uintptr) { fd, derr = unix.FcntlInt(f, unix.F_DUPFD_CLOEXEC, 0) }); err != nil || derr != nil {
		w.Close()
		return fmt.Errorf("client: dup socket: %v %v", err, derr)
	}
	pc := &pollConn{fd: fd, h: h, partial: append([]byte(nil), w.buf[w.r:w.w]...), msg: w.msg, open: true}
	w.nc.Close() // the runtime forgets its copy; the socket lives on in fd
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return err
	}
	if g.hb != nil {
		pc.nextHB, pc.hbRef = g.now()+int64(g.every), hbRefs
	}
	p := g.ps[int(g.next.Add(1))%len(g.ps)]
	p.mu.Lock()
	p.conns[fd] = pc
	p.mu.Unlock()
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(fd)}); err != nil {
		p.mu.Lock()
		delete(p.conns, fd)
		p.mu.Unlock()
		unix.Close(fd)
		return fmt.Errorf("client: epoll add: %w", err)
	}
	return nil
}

// Close stops the pollers, then sends every open connection a close frame
// and closes it.
func (g *Poller) Close() {
	if g.stopping.Swap(true) {
		return
	}
	g.wg.Wait()
	for _, p := range g.ps {
		for _, c := range p.conns {
			if c.open {
				p.write(c, ws.OpClose, ws.NewCloseFrameBody(ws.StatusNormalClosure, ""))
				unix.Close(c.fd)
				c.open = false
			}
		}
		unix.Close(p.epfd)
	}
}

func (p *poller) run() {
	defer p.g.wg.Done()
	events := make([]unix.EpollEvent, 256)
	lastTick := int64(0)
	for !p.g.stopping.Load() {
		n, err := unix.EpollWait(p.epfd, events, 50)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return
		}
		for i := 0; i < n; i++ {
			p.mu.Lock()
			c := p.conns[int(events[i].Fd)]
			p.mu.Unlock()
			if c != nil && c.open {
				p.read(c)
			}
		}
		if now := p.g.now(); now-lastTick > int64(100*time.Millisecond) {
			lastTick = now
			p.tick(now)
		}
	}
}

// tick parses bytes handed over by Hold and sends the heartbeats due.
func (p *poller) tick(now int64) {
	p.mu.Lock()
	cs := make([]*pollConn, 0, len(p.conns))
	for _, c := range p.conns {
		if c.open {
			cs = append(cs, c)
		}
	}
	p.mu.Unlock()
	for _, c := range cs {
		if len(c.partial) > 0 {
			p.parse(c, nil)
		}
		if c.open && c.nextHB != 0 && now >= c.nextHB {
			c.nextHB = now + int64(p.g.every)
			c.hbRef++
			p.write(c, ws.OpText, p.g.hb(nil, c.hbRef))
		}
	}
}

func (p *poller) read(c *pollConn) {
	n, err := unix.Read(c.fd, p.buf)
	if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
		return
	}
	if n <= 0 {
		if err == nil {
			err = errors.New("client: connection closed by the server without a close frame")
		}
		p.fail(c, err)
		return
	}
	p.parse(c, p.buf[:n])
}

// parse handles the complete frames of c.partial + data and keeps the rest.
func (p *poller) parse(c *pollConn, data []byte) {
	if len(c.partial) > 0 {
		c.partial = append(c.partial, data...)
		data = c.partial
	}
	now := p.g.now()
	reply := func(op ws.OpCode, b []byte) error { p.write(c, op, b); return nil }
	for c.open {
		f, n, err := parseFrame(data)
		if err != nil {
			p.fail(c, err)
			return
		}
		if n == 0 {
			break
		}
		data = data[n:]
		op, msg, done, err := c.msg.add(f, reply)
		if err != nil {
			p.fail(c, err)
			return
		}
		if done {
			c.h.OnMessage(op, msg, now)
		}
	}
	// What is left is the start of a frame: keep it (data may alias
	// c.partial itself, and copy handles the overlap).
	c.partial = append(c.partial[:0], data...)
	if len(c.partial) == 0 && cap(c.partial) > 64<<10 {
		c.partial = nil
	}
}

// write sends one masked frame; a socket too full to take it at once (a
// server that stopped reading) fails the connection.
func (p *poller) write(c *pollConn, op ws.OpCode, body []byte) {
	b := appendFrame(p.wbuf[:0], op, body, nextMask(&p.mask))
	p.wbuf = b
	for len(b) > 0 {
		n, err := unix.Write(c.fd, b)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if op != ws.OpClose {
				p.fail(c, fmt.Errorf("client: write: %w", err))
			}
			return
		}
		b = b[n:]
	}
}

// fail closes c early and counts why (unless the holder is closing).
func (p *poller) fail(c *pollConn, err error) {
	if !c.open {
		return
	}
	c.open = false
	if !p.g.stopping.Load() {
		p.g.add(err)
	}
	unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, c.fd, nil)
	unix.Close(c.fd)
	c.partial = nil
}
