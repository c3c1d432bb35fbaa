package edge

import (
	"encoding/binary"

	"github.com/gobwas/ws"

	"github.com/meshcast/meshcast/wire/phx"
)

// frameBuilder encodes one outgoing message into a complete frame of a
// transport in a single buffer: the payload is appended after room reserved
// for the longest header, and the header is written right-aligned in front
// of it. The frame is then shared, byte for byte, by every subscriber's
// queue.
type frameBuilder struct{ buf []byte }

func newFrameBuilder(sizeHint int) frameBuilder {
	b := make([]byte, maxFrameHeader, maxFrameHeader+sizeHint)
	return frameBuilder{buf: b}
}

// finish writes the header of format ff for opcode op (text, binary or
// close; the numbers are the same on both transports) and returns the
// frame.
func (f *frameBuilder) finish(ff frameFormat, op ws.OpCode) []byte {
	n := len(f.buf) - maxFrameHeader
	if ff == formatWTv2 {
		start := maxFrameHeader - wtHeader
		binary.BigEndian.PutUint32(f.buf[start:], uint32(1+n))
		f.buf[start+4] = byte(op)
		return f.buf[start:]
	}
	var hdr [maxWSHeader]byte
	hdr[0] = 0x80 | byte(op) // FIN
	h := 2
	switch {
	case n < 126:
		hdr[1] = byte(n)
	case n <= 0xFFFF:
		hdr[1] = 126
		hdr[2], hdr[3] = byte(n>>8), byte(n)
		h = 4
	default:
		hdr[1] = 127
		for i := 0; i < 8; i++ {
			hdr[2+i] = byte(uint64(n) >> (56 - 8*i))
		}
		h = 10
	}
	start := maxFrameHeader - h
	copy(f.buf[start:], hdr[:h])
	return f.buf[start:]
}

// textFrame encodes a Phoenix text frame in format ff.
func textFrame(ff frameFormat, joinRef, ref, topic, event string, payload []byte) []byte {
	f := newFrameBuilder(64 + len(topic) + len(event) + len(payload))
	f.buf = phx.AppendFrame(f.buf, ff.version(), joinRef, ref, topic, event, payload)
	return f.finish(ff, ws.OpText)
}

// outMsg is one broadcast on its way to many subscribers. Frames are built
// lazily, at most once per frame format, by the single goroutine fanning it
// out.
type outMsg struct {
	topic  string
	event  string // the user event
	meta   []byte
	enc    byte
	data   []byte // the user payload: JSON, or raw bytes when enc is EncBytes
	binary bool   // send kind-4 frames to v2 clients
	// unreliable: a datagram broadcast, sent as a datagram to the
	// WebTransport subscribers that opted in (deliver).
	unreliable bool
	// stream and offset are the message's position (offset 0: none).
	stream, offset uint64

	frames [numFormats][]byte
	built  [numFormats]bool
}

// frame returns the frame for a format, or nil when the message cannot be
// expressed in it (raw bytes to a v1 client).
func (m *outMsg) frame(ff frameFormat) []byte {
	if !m.built[ff] {
		m.built[ff] = true
		m.frames[ff] = m.build(ff)
	}
	return m.frames[ff]
}

func (m *outMsg) build(ff frameFormat) []byte {
	v := ff.version()
	f := newFrameBuilder(96 + len(m.topic) + len(m.event) + len(m.meta) + len(m.data))
	if v == phx.V2 && (m.enc == phx.EncBytes || m.binary) && phx.CanBinary(m.topic, m.event, m.meta) {
		f.buf = phx.AppendUserBroadcast(f.buf, m.topic, m.event, m.meta, m.enc, m.data)
		return f.finish(ff, ws.OpBinary)
	}
	if m.enc != phx.EncJSON {
		return nil
	}
	f.buf = phx.AppendBroadcast(f.buf, v, m.topic, m.event, m.data, m.meta)
	return f.finish(ff, ws.OpText)
}
