//go:build linux

package bench

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
)

// A poller holds many subscriber WebSockets without a goroutine each: the
// connection is dialled and joined with an ordinary blocking wsConn, then
// its socket is handed to one of a few pollers (one per CPU), which wait on
// epoll, read whatever is ready into one shared buffer and parse WebSocket
// frames in place. A held connection costs a small struct and the kernel's
// socket buffers; bytes of a frame split across reads are the only
// per-connection buffer, and only until the rest arrives. That is what
// lets one process hold 20 000 subscribers (the open-file limit here) with
// a constant number of goroutines.

// msgHandler receives each data message of a polled connection, on its
// poller's goroutine: shard is the poller's index (a handler may keep
// per-shard state without locks), b is valid only during the call.
type msgHandler interface {
	onMessage(shard int, op ws.OpCode, b []byte, now int64)
}

// pollConn is one connection held by a poller; its poller's goroutine
// owns every field after add.
type pollConn struct {
	fd      int
	h       msgHandler
	partial []byte // the start of a frame the last read cut
	msg     []byte // a fragmented message being assembled
	msgOp   ws.OpCode
	nextHB  int64
	hbRef   uint64
	err     error // why it closed early
	open    bool
}

// pollGroup is the set of pollers of one run.
type pollGroup struct {
	ps       []*poller
	next     atomic.Uint64
	now      func() int64
	hbEvery  time.Duration
	stopping atomic.Bool
	wg       sync.WaitGroup
}

type poller struct {
	g     *pollGroup
	idx   int
	epfd  int
	mu    sync.Mutex // guards conns (add runs on other goroutines)
	conns map[int]*pollConn
	buf   []byte
	wbuf  []byte
	mask  uint32
	done  chan struct{}
}

const pollReadBuf = 256 << 10

// newPollGroup starts n pollers. hbEvery is the Phoenix heartbeat period
// (0 = none).
func newPollGroup(n int, now func() int64, hbEvery time.Duration) (*pollGroup, error) {
	g := &pollGroup{now: now, hbEvery: hbEvery}
	for i := range n {
		fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		if err != nil {
			g.close()
			return nil, fmt.Errorf("bench: epoll: %w", err)
		}
		p := &poller{g: g, idx: i, epfd: fd, conns: map[int]*pollConn{}, buf: make([]byte, pollReadBuf),
			mask: uint32(time.Now().UnixNano()) | 1, done: make(chan struct{})}
		g.ps = append(g.ps, p)
		g.wg.Add(1)
		go p.run()
	}
	return g, nil
}

// add takes over c (joined already): its socket moves to a poller, c must
// not be used afterwards. Bytes c had buffered past the join are handled
// first, on the caller's goroutine, before the poller sees the socket.
func (g *pollGroup) add(c *wsConn, h msgHandler) error {
	sc, ok := c.nc.(syscall.Conn)
	if !ok {
		c.Close()
		return errors.New("bench: connection has no file descriptor")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		c.Close()
		return err
	}
	fd := -1
	var derr error
	if err := rc.Control(func(f uintptr) { fd, derr = unix.FcntlInt(f, unix.F_DUPFD_CLOEXEC, 0) }); err != nil || derr != nil {
		c.Close()
		return fmt.Errorf("bench: dup socket: %v %v", err, derr)
	}
	var left []byte
	if n := c.br.Buffered(); n > 0 {
		b, _ := c.br.Peek(n)
		left = append(left, b...)
	}
	c.nc.Close() // the runtime forgets its copy; the socket lives on in fd
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return err
	}
	p := g.ps[int(g.next.Add(1))%len(g.ps)]
	pc := &pollConn{fd: fd, h: h, partial: left, open: true}
	if g.hbEvery > 0 {
		pc.nextHB = g.now() + int64(g.hbEvery)
	}
	p.mu.Lock()
	p.conns[fd] = pc
	p.mu.Unlock()
	// What was buffered is parsed at the poller's next tick (≤ 100 ms),
	// or at the next read, whichever comes first.
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(fd)}); err != nil {
		p.mu.Lock()
		delete(p.conns, fd)
		p.mu.Unlock()
		unix.Close(fd)
		return fmt.Errorf("bench: epoll add: %w", err)
	}
	return nil
}

// close stops the pollers, sends every open connection a close frame and
// closes it. Errors of connections that failed before are in each
// pollConn.err (see errs).
func (g *pollGroup) close() {
	g.stopping.Store(true)
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

// errs reports how many connections failed before close and the first
// error. Call it after close.
func (g *pollGroup) errs() (n int, first error) {
	for _, p := range g.ps {
		for _, c := range p.conns {
			if c.err != nil {
				n++
				if first == nil {
					first = c.err
				}
			}
		}
	}
	return n, first
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

// tick parses bytes handed over by add and sends the heartbeats due.
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
		if len(c.partial) > 0 && c.msg == nil {
			p.parse(c, nil)
		}
		if c.open && c.nextHB != 0 && now >= c.nextHB {
			c.nextHB = now + int64(p.g.hbEvery)
			c.hbRef++
			p.write(c, ws.OpText, AppendPhxHeartbeat(nil, 1<<40+c.hbRef))
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
			err = errors.New("bench: connection closed by server")
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
	for c.open {
		if len(data) < 2 {
			break
		}
		fin, op := data[0]&0x80 != 0, ws.OpCode(data[0]&0x0f)
		masked, l, hdr := data[1]&0x80 != 0, uint64(data[1]&0x7f), 2
		switch l {
		case 126:
			if len(data) < 4 {
				goto short
			}
			l, hdr = uint64(binary.BigEndian.Uint16(data[2:])), 4
		case 127:
			if len(data) < 10 {
				goto short
			}
			l, hdr = binary.BigEndian.Uint64(data[2:]), 10
		}
		if l > maxFrame {
			p.fail(c, fmt.Errorf("bench: frame of %d bytes exceeds limit", l))
			return
		}
		if masked {
			hdr += 4
		}
		if uint64(len(data)) < uint64(hdr)+l {
			goto short
		}
		payload := data[hdr : hdr+int(l)]
		if masked {
			var m [4]byte
			copy(m[:], data[hdr-4:hdr])
			ws.Cipher(payload, m, 0)
		}
		data = data[hdr+int(l):]
		switch {
		case op == ws.OpPing:
			p.write(c, ws.OpPong, payload)
		case op == ws.OpPong:
		case op == ws.OpClose:
			code, reason := ws.ParseCloseFrameData(payload)
			p.fail(c, fmt.Errorf("%w (code %d %q)", ErrClosed, code, reason))
			return
		case op == ws.OpContinuation:
			c.msg = append(c.msg, payload...)
			if fin {
				c.h.onMessage(p.idx, c.msgOp, c.msg, now)
				c.msg = nil
			}
		case !fin:
			c.msgOp, c.msg = op, append([]byte(nil), payload...)
		default:
			c.h.onMessage(p.idx, op, payload, now)
		}
	}
	c.partial = c.partial[:0]
	if cap(c.partial) > 64<<10 {
		c.partial = nil
	}
	return
short:
	c.partial = append(c.partial[:0], data...)
}

// write sends one masked frame; a socket too full to take it at once (a
// server that stopped reading) fails the connection.
func (p *poller) write(c *pollConn, op ws.OpCode, body []byte) {
	b := p.wbuf[:0]
	b = append(b, 0x80|byte(op))
	switch n := len(body); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n <= 0xffff:
		b = append(b, 0x80|126, byte(n>>8), byte(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	p.mask ^= p.mask << 13
	p.mask ^= p.mask >> 17
	p.mask ^= p.mask << 5
	var m [4]byte
	binary.LittleEndian.PutUint32(m[:], p.mask)
	b = append(b, m[:]...)
	off := len(b)
	b = append(b, body...)
	ws.Cipher(b[off:], m, 0)
	p.wbuf = b
	for len(b) > 0 {
		n, err := unix.Write(c.fd, b)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if op != ws.OpClose {
				p.fail(c, fmt.Errorf("bench: write: %w", err))
			}
			return
		}
		b = b[n:]
	}
}

// fail closes c early and keeps why (unless the run is stopping).
func (p *poller) fail(c *pollConn, err error) {
	if !c.open {
		return
	}
	c.open = false
	if !p.g.stopping.Load() {
		c.err = err
	}
	unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, c.fd, nil)
	unix.Close(c.fd)
	c.partial, c.msg = nil, nil
}
