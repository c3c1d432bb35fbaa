package bench

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/gobwas/ws"
)

// maxFrame bounds what a benchmark client accepts from a server.
const maxFrame = 1 << 20

// ErrClosed is returned by ReadFrame after the server closed the WebSocket.
var ErrClosed = errors.New("bench: websocket closed by server")

// wsConn is a minimal WebSocket client connection built for load generation:
// one goroutine reads (ReadFrame reuses one buffer), any goroutine may write
// (writes are serialized and reuse one buffer), control frames are handled
// inside ReadFrame.
type wsConn struct {
	nc net.Conn
	br *bufio.Reader

	hdr  [ws.MaxHeaderSize]byte
	rbuf []byte

	wmu  sync.Mutex
	wbuf []byte
	rng  *rand.PCG

	// The server's close frame, once ReadFrame returned ErrClosed.
	closeCode   int
	closeReason string
}

// dialWS opens a WebSocket to url. readBuf sizes the bufio.Reader.
func dialWS(ctx context.Context, url string, timeout time.Duration, readBuf int) (*wsConn, error) {
	d := ws.Dialer{Timeout: timeout, ReadBufferSize: readBuf}
	nc, br, _, err := d.Dial(ctx, url)
	if err != nil {
		return nil, err
	}
	if br == nil {
		br = bufio.NewReaderSize(nc, readBuf)
	}
	seed := uint64(time.Now().UnixNano())
	return &wsConn{
		nc:   nc,
		br:   br,
		rbuf: make([]byte, 0, 512),
		wbuf: make([]byte, 0, 256),
		rng:  rand.NewPCG(seed, seed^0x9e3779b97f4a7c15),
	}, nil
}

// Close closes the underlying TCP connection without a closing handshake.
func (c *wsConn) Close() error { return c.nc.Close() }

// CloseGracefully sends a close frame (best effort) and closes the socket.
func (c *wsConn) CloseGracefully() error {
	body := ws.NewCloseFrameBody(ws.StatusNormalClosure, "")
	_ = c.nc.SetWriteDeadline(time.Now().Add(time.Second))
	_ = c.WriteFrame(ws.OpClose, body)
	return c.nc.Close()
}

// WriteFrame writes one masked, final frame. It is safe for concurrent use.
func (c *wsConn) WriteFrame(op ws.OpCode, p []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	b := c.wbuf[:0]
	b = append(b, 0x80|byte(op))
	switch n := len(p); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n <= 0xffff:
		b = append(b, 0x80|126, byte(n>>8), byte(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	var mask [4]byte
	binary.LittleEndian.PutUint32(mask[:], uint32(c.rng.Uint64()))
	b = append(b, mask[:]...)
	off := len(b)
	b = append(b, p...)
	ws.Cipher(b[off:], mask, 0)
	c.wbuf = b
	_, err := c.nc.Write(b)
	return err
}

// ReadFrame returns the next data message (text or binary, reassembled if
// fragmented). The returned slice is valid until the next call. Pings are
// answered, pongs skipped, and a close frame is echoed and reported as
// ErrClosed.
func (c *wsConn) ReadFrame() (ws.OpCode, []byte, error) {
	msg := c.rbuf[:0]
	var op ws.OpCode
	for {
		h, err := ws.ReadHeaderBuffer(c.br, c.hdr[:])
		if err != nil {
			return 0, nil, err
		}
		if h.Length > maxFrame || int64(len(msg))+h.Length > maxFrame {
			return 0, nil, fmt.Errorf("bench: frame of %d bytes exceeds limit", h.Length)
		}
		if h.OpCode.IsControl() {
			var ctl [125]byte
			if h.Length > int64(len(ctl)) {
				return 0, nil, fmt.Errorf("bench: control frame of %d bytes", h.Length)
			}
			p := ctl[:h.Length]
			if _, err := io.ReadFull(c.br, p); err != nil {
				return 0, nil, err
			}
			if h.Masked {
				ws.Cipher(p, h.Mask, 0)
			}
			switch h.OpCode {
			case ws.OpPing:
				if err := c.WriteFrame(ws.OpPong, p); err != nil {
					return 0, nil, err
				}
			case ws.OpClose:
				_ = c.WriteFrame(ws.OpClose, p)
				code, reason := ws.ParseCloseFrameData(p)
				c.closeCode, c.closeReason = int(code), reason
				return 0, nil, fmt.Errorf("%w (code %d %q)", ErrClosed, code, reason)
			}
			continue
		}
		if h.OpCode != ws.OpContinuation {
			op = h.OpCode
		}
		n := len(msg)
		need := n + int(h.Length)
		if cap(msg) < need {
			grown := make([]byte, n, max(need, 2*cap(msg)))
			copy(grown, msg)
			msg = grown
		}
		msg = msg[:need]
		if _, err := io.ReadFull(c.br, msg[n:]); err != nil {
			return 0, nil, err
		}
		if h.Masked {
			ws.Cipher(msg[n:], h.Mask, 0)
		}
		if h.Fin {
			c.rbuf = msg
			return op, msg, nil
		}
	}
}
