package edge

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/gobwas/ws"
)

// wsReader decodes a client's WebSocket frames from bytes in whatever
// pieces they arrive: a header split over two reads, a body over many. It
// does no I/O and reads no clock, so the same rules serve a connection read
// by a goroutine of its own and one read by the poller's workers, which
// hand it the bytes of one read and go on to other connections while a
// frame is unfinished. What it keeps between reads is at most a partial
// header (14 bytes), a control frame's body (125) and the message being
// reassembled (bounded by Config.MaxFrameBytes).
type wsReader struct {
	// max bounds one message (Config.MaxFrameBytes; 0: no bound).
	max int64

	hdr     [ws.MaxHeaderSize]byte // a header being received
	nhdr    uint8
	inFrame bool      // h is the current frame's header; its body follows
	h       ws.Header // the current frame
	left    int64     // bytes of the current frame's body still to come
	off     int       // bytes of the current frame's body received (the mask's offset)
	ctl     []byte    // the current control frame's body
	msg     message   // the data message being reassembled
	frames  uint64    // frames completed so far
	stopped bool      // an error was reported; nothing more is decoded
}

// wsEventKind says what a wsReader found.
type wsEventKind uint8

const (
	// wsNone: the bytes ended inside a frame; more are needed.
	wsNone wsEventKind = iota
	// wsFragment: a data frame ended that is not its message's last.
	wsFragment
	// wsMessage: a whole data message arrived (op, payload).
	wsMessage
	// wsControl: a ping, pong or close frame arrived (op, payload).
	wsControl
	// wsError: the input breaks the protocol; the connection is closed
	// with code and reason, counted under errors_total{reason=metric}.
	wsError
)

// wsEvent is what next found.
type wsEvent struct {
	kind    wsEventKind
	op      ws.OpCode
	payload []byte
	// frameBytes is the body length of the frame that ended (metrics).
	frameBytes int
	code       ws.StatusCode
	reason     string
	metric     string
}

// next decodes from p until it finds an event or p ends, and returns how
// many bytes it used. now is when the bytes arrived: a message's time
// limit runs from its first header. After a wsError it decodes nothing.
func (r *wsReader) next(p []byte, now time.Time) (int, wsEvent) {
	if r.stopped {
		return len(p), wsEvent{}
	}
	used := 0
	if !r.inFrame {
		n, ok := r.fillHeader(p)
		used += n
		if !ok {
			return used, wsEvent{}
		}
		if ev := r.begin(now); ev.kind == wsError {
			r.stopped = true
			return len(p), ev
		}
	}
	k := int(min(int64(len(p)-used), r.left))
	r.body(p[used:used+k], r.left)
	used += k
	r.left -= int64(k)
	if r.left > 0 {
		return used, wsEvent{}
	}
	return used, r.end()
}

// fillHeader copies header bytes from p until the header is whole; it
// reports how many it took and whether the header is complete.
func (r *wsReader) fillHeader(p []byte) (int, bool) {
	used := 0
	for {
		want := ws.MinHeaderSize
		if r.nhdr >= ws.MinHeaderSize {
			want = headerSize(r.hdr[1])
		}
		if int(r.nhdr) == want {
			return used, true
		}
		if used == len(p) {
			return used, false
		}
		k := copy(r.hdr[r.nhdr:want], p[used:])
		r.nhdr += uint8(k)
		used += k
	}
}

// headerSize is the length of a client frame header by its second byte.
func headerSize(b1 byte) int {
	n := ws.MinHeaderSize
	if b1&0x80 != 0 {
		n += 4 // mask
	}
	switch b1 & 0x7f {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	return n
}

// parseHeader decodes a whole header as gobwas/ws's ReadHeader does; false
// when a 64-bit length has its top bit set (ws.ErrHeaderLengthMSB).
func parseHeader(b []byte) (ws.Header, bool) {
	h := ws.Header{
		Fin:    b[0]&0x80 != 0,
		Rsv:    (b[0] & 0x70) >> 4,
		OpCode: ws.OpCode(b[0] & 0x0f),
		Masked: b[1]&0x80 != 0,
	}
	rest := b[2:]
	switch l := b[1] & 0x7f; l {
	case 126:
		h.Length, rest = int64(binary.BigEndian.Uint16(rest)), rest[2:]
	case 127:
		if rest[0]&0x80 != 0 {
			return h, false
		}
		h.Length, rest = int64(binary.BigEndian.Uint64(rest)), rest[8:]
	default:
		h.Length = int64(l)
	}
	if h.Masked {
		copy(h.Mask[:], rest)
	}
	return h, true
}

// begin checks the header just received and starts its frame (and its
// message, for the first data frame of one).
func (r *wsReader) begin(now time.Time) wsEvent {
	h, ok := parseHeader(r.hdr[:r.nhdr])
	r.nhdr = 0
	switch {
	case !ok:
		return wsEvent{kind: wsError, code: ws.StatusProtocolError, reason: "bad frame", metric: "read"}
	case r.max > 0 && !h.OpCode.IsControl() && h.Length > r.max-int64(len(r.msg.buf)):
		return wsEvent{kind: wsError, code: ws.StatusMessageTooBig, reason: fmt.Sprintf("message exceeds %d bytes", r.max), metric: "frame_too_large"}
	case h.Rsv != 0 || !knownOpCode(h.OpCode):
		return wsProtocolError("reserved bits or opcode")
	case !h.Masked:
		return wsProtocolError("client frames must be masked")
	case h.OpCode.IsControl():
		if !h.Fin || h.Length > 125 {
			return wsProtocolError("bad control frame")
		}
		r.ctl = make([]byte, 0, h.Length)
	case h.OpCode == ws.OpContinuation && !r.msg.started:
		return wsProtocolError("unexpected continuation frame")
	case h.OpCode != ws.OpContinuation && r.msg.started:
		return wsProtocolError("expected continuation frame")
	case !r.msg.started:
		r.msg.start = now
		r.msg.started, r.msg.op = true, h.OpCode
	}
	r.h, r.inFrame, r.left, r.off = h, true, h.Length, 0
	return wsEvent{}
}

func wsProtocolError(reason string) wsEvent {
	return wsEvent{kind: wsError, code: ws.StatusProtocolError, reason: reason, metric: "protocol"}
}

// body takes b, the next bytes of the current frame's body, of which rest
// (b included) are still to come, and unmasks them.
func (r *wsReader) body(b []byte, rest int64) {
	if len(b) == 0 {
		return
	}
	var dst []byte
	if r.h.OpCode.IsControl() {
		r.ctl = append(r.ctl, b...)
		dst = r.ctl[len(r.ctl)-len(b):]
	} else {
		r.msg.add(b, rest)
		dst = r.msg.buf[len(r.msg.buf)-len(b):]
	}
	ws.Cipher(dst, r.h.Mask, r.off)
	r.off += len(b)
}

// end finishes the current frame, whose body has all arrived.
func (r *wsReader) end() wsEvent {
	r.inFrame = false
	r.frames++
	ev := wsEvent{frameBytes: int(r.h.Length), op: r.h.OpCode}
	switch {
	case r.h.OpCode.IsControl():
		ev.kind, ev.payload, r.ctl = wsControl, r.ctl, nil
	case !r.h.Fin:
		ev.kind = wsFragment
	default:
		ev.kind = wsMessage
		ev.payload, ev.op = r.msg.finish()
	}
	return ev
}

// idle reports whether the reader is between frames with nothing of the
// next one received.
func (r *wsReader) idle() bool { return !r.inFrame && r.nhdr == 0 }
