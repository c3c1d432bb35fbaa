package client

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"github.com/gobwas/ws"
)

// Options are how a WebSocket is dialled. Zero values take the defaults
// noted.
type Options struct {
	Timeout    time.Duration // dial and upgrade; if zero, 10 s
	ReadBuffer int           // bytes read at once (the buffer grows for a larger frame); if zero, 4096
	Header     http.Header   // more upgrade headers (fly.io: Fly-Prefer-Region)
	// RcvBuf, if set, is the socket's SO_RCVBUF, set before it connects (a
	// slow reader's small window).
	RcvBuf int
	// Reader, if set, is what frames are read through (a throttle around
	// the connection).
	Reader func(net.Conn) io.Reader
}

// WS is a WebSocket client connection built for load generation: frames
// are parsed in place from one read buffer and written from another; one
// goroutine reads, any may write.
type WS struct {
	nc   net.Conn
	rd   io.Reader
	buf  []byte
	r, w int // buf[r:w] is read and not parsed yet
	msg  message

	wmu  sync.Mutex
	wbuf []byte
	mask uint32
}

// DialWS opens a WebSocket to url.
func DialWS(ctx context.Context, url string, o Options) (*WS, error) {
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Second
	}
	if o.ReadBuffer == 0 {
		o.ReadBuffer = 4096
	}
	d := ws.Dialer{Timeout: o.Timeout, ReadBufferSize: o.ReadBuffer}
	if o.Header != nil {
		d.Header = ws.HandshakeHeaderHTTP(o.Header)
	}
	if o.RcvBuf > 0 {
		nd := net.Dialer{Timeout: o.Timeout, Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, o.RcvBuf)
			})
			return errors.Join(err, serr)
		}}
		d.NetDial = nd.DialContext
	}
	nc, br, _, err := d.Dial(ctx, url)
	if err != nil {
		return nil, err
	}
	c := &WS{nc: nc, rd: nc, buf: make([]byte, o.ReadBuffer), wbuf: make([]byte, 0, 256), mask: uint32(time.Now().UnixNano()) | 1}
	if br != nil { // the server wrote right after the upgrade
		b, _ := br.Peek(br.Buffered())
		c.buf = append(c.buf[:0], b...)[:max(len(b), o.ReadBuffer)]
		c.w = len(b)
		ws.PutReader(br)
	}
	if o.Reader != nil {
		c.rd = o.Reader(nc)
	}
	return c, nil
}

// ReadFrame returns the next data message (text or binary, joined if
// fragmented), valid until the next call. Pings are answered, pongs
// skipped; a close frame is echoed and returned as a *CloseError.
func (c *WS) ReadFrame() (ws.OpCode, []byte, error) {
	for {
		for c.r < c.w {
			f, n, err := parseFrame(c.buf[c.r:c.w])
			if err != nil || n == 0 {
				if err != nil {
					return 0, nil, err
				}
				break
			}
			c.r += n
			if op, msg, done, err := c.msg.add(f, c.WriteFrame); done || err != nil {
				return op, msg, err
			}
		}
		if err := c.fill(); err != nil {
			return 0, nil, err
		}
	}
}

// fill reads more: the unparsed rest moves to the front, and the buffer
// doubles when a frame does not fit.
func (c *WS) fill() error {
	if c.r > 0 {
		c.w = copy(c.buf, c.buf[c.r:c.w])
		c.r = 0
	}
	if c.w == len(c.buf) {
		c.buf = append(c.buf, make([]byte, len(c.buf))...)
	}
	n, err := c.rd.Read(c.buf[c.w:])
	c.w += n
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// WriteFrame writes one masked, final frame.
func (c *WS) WriteFrame(op ws.OpCode, p []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf = appendFrame(c.wbuf[:0], op, p, nextMask(&c.mask))
	_, err := c.nc.Write(c.wbuf)
	return err
}

func (c *WS) SetDeadline(t time.Time) error      { return c.nc.SetDeadline(t) }
func (c *WS) SetWriteDeadline(t time.Time) error { return c.nc.SetWriteDeadline(t) }

// Close closes the socket without a closing handshake.
func (c *WS) Close() error { return c.nc.Close() }

// CloseGracefully sends a close frame (best effort, 1 s) and closes the
// socket.
func (c *WS) CloseGracefully() error {
	_ = c.nc.SetWriteDeadline(time.Now().Add(time.Second))
	_ = c.WriteFrame(ws.OpClose, ws.NewCloseFrameBody(ws.StatusNormalClosure, ""))
	return c.nc.Close()
}
