package client

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/gobwas/ws"
)

// WebSocket frames (RFC 6455 §5) as a client reads them from a byte stream
// that arrives in pieces, in place, and writes them. The blocking WS and
// the epoll poller share this.

// frame is one frame; payload aliases what it was parsed from.
type frame struct {
	fin     bool
	op      ws.OpCode
	payload []byte
}

// parseFrame parses the frame at the start of b, unmasking its payload in
// place; n is 0 when b holds less than the whole frame.
func parseFrame(b []byte) (f frame, n int, err error) {
	if len(b) < 2 {
		return f, 0, nil
	}
	f.fin, f.op = b[0]&0x80 != 0, ws.OpCode(b[0]&0x0f)
	masked, l, hdr := b[1]&0x80 != 0, uint64(b[1]&0x7f), 2
	switch l {
	case 126:
		if len(b) < 4 {
			return f, 0, nil
		}
		l, hdr = uint64(binary.BigEndian.Uint16(b[2:])), 4
	case 127:
		if len(b) < 10 {
			return f, 0, nil
		}
		l, hdr = binary.BigEndian.Uint64(b[2:]), 10
	}
	if l > maxFrame {
		return f, 0, fmt.Errorf("client: frame of %d bytes exceeds limit", l)
	}
	if masked {
		hdr += 4
	}
	if uint64(len(b)) < uint64(hdr)+l {
		return f, 0, nil
	}
	f.payload = b[hdr : hdr+int(l)]
	if masked {
		ws.Cipher(f.payload, [4]byte(b[hdr-4:hdr]), 0)
	}
	return f, hdr + int(l), nil
}

// message joins the fragments of a data message and answers control
// frames.
type message struct {
	op   ws.OpCode
	buf  []byte
	open bool // a fragmented message is being joined
}

// add takes the next frame. done is set with a whole data message (valid
// until the next add). A ping is answered with reply(OpPong, its payload);
// a close frame is echoed and returned as a *CloseError.
func (m *message) add(f frame, reply func(op ws.OpCode, p []byte) error) (op ws.OpCode, msg []byte, done bool, err error) {
	switch {
	case f.op.IsControl():
		if len(f.payload) > 125 || !f.fin {
			return 0, nil, false, errors.New("client: bad control frame")
		}
		switch f.op {
		case ws.OpPing:
			return 0, nil, false, reply(ws.OpPong, f.payload)
		case ws.OpClose:
			_ = reply(ws.OpClose, f.payload)
			code, reason := ws.ParseCloseFrameData(f.payload)
			return 0, nil, false, &CloseError{Code: int(code), Reason: reason}
		}
		return 0, nil, false, nil
	case f.op == ws.OpContinuation:
		if !m.open || len(m.buf)+len(f.payload) > maxFrame {
			return 0, nil, false, errors.New("client: bad continuation frame")
		}
		m.buf = append(m.buf, f.payload...)
		m.open = !f.fin
		return m.op, m.buf, f.fin, nil
	case !f.fin:
		m.op, m.open, m.buf = f.op, true, append(m.buf[:0], f.payload...)
		return 0, nil, false, nil
	}
	return f.op, f.payload, true, nil
}

// appendFrame appends a final client frame, masked with mask as a client's
// must be.
func appendFrame(dst []byte, op ws.OpCode, p []byte, mask uint32) []byte {
	dst = append(dst, 0x80|byte(op))
	switch n := len(p); {
	case n < 126:
		dst = append(dst, 0x80|byte(n))
	case n <= 0xffff:
		dst = append(dst, 0x80|126, byte(n>>8), byte(n))
	default:
		dst = append(dst, 0x80|127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	var m [4]byte
	binary.LittleEndian.PutUint32(m[:], mask)
	dst = append(dst, m[:]...)
	off := len(dst)
	dst = append(dst, p...)
	ws.Cipher(dst[off:], m, 0)
	return dst
}

// nextMask steps a xorshift state (never 0). Masks need to vary, not to be
// secret: the server is the one under test.
func nextMask(s *uint32) uint32 {
	*s ^= *s << 13
	*s ^= *s >> 17
	*s ^= *s << 5
	return *s
}
