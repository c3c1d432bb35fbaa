package edge

import (
	"github.com/gobwas/ws"

	"github.com/meshcast/meshcast/wire/phx"
)

// maxWSHeader is the longest header of an unmasked server frame.
const maxWSHeader = 10

// frameBuilder encodes one outgoing message into a complete WebSocket frame
// in a single buffer: the payload is appended after room reserved for the
// header, and the header is written right-aligned in front of it. The frame
// is then shared, byte for byte, by every subscriber's queue.
type frameBuilder struct{ buf []byte }

func newFrameBuilder(sizeHint int) frameBuilder {
	b := make([]byte, maxWSHeader, maxWSHeader+sizeHint)
	return frameBuilder{buf: b}
}

func (f *frameBuilder) finish(op ws.OpCode) []byte {
	n := len(f.buf) - maxWSHeader
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
	start := maxWSHeader - h
	copy(f.buf[start:], hdr[:h])
	return f.buf[start:]
}

// textFrame encodes a Phoenix text frame as a WebSocket frame.
func textFrame(v phx.Version, joinRef, ref, topic, event string, payload []byte) []byte {
	f := newFrameBuilder(64 + len(topic) + len(event) + len(payload))
	f.buf = phx.AppendFrame(f.buf, v, joinRef, ref, topic, event, payload)
	return f.finish(ws.OpText)
}

// outMsg is one broadcast on its way to many subscribers. Frames are built
// lazily, at most once per serializer, by the single goroutine fanning it
// out.
type outMsg struct {
	topic  string
	event  string // the user event
	meta   []byte
	enc    byte
	data   []byte // the user payload: JSON, or raw bytes when enc is EncBytes
	binary bool   // send kind-4 frames to v2 clients

	v1, v2 []byte
}

// frame returns the frame for a serializer version, or nil when the message
// cannot be expressed in it (raw bytes to a v1 client).
func (m *outMsg) frame(v phx.Version) []byte {
	if v == phx.V2 {
		if m.v2 == nil {
			m.v2 = m.build(v)
		}
		return m.v2
	}
	if m.v1 == nil && m.enc == phx.EncJSON {
		m.v1 = m.build(v)
	}
	return m.v1
}

func (m *outMsg) build(v phx.Version) []byte {
	f := newFrameBuilder(96 + len(m.topic) + len(m.event) + len(m.meta) + len(m.data))
	if v == phx.V2 && (m.enc == phx.EncBytes || m.binary) && phx.CanBinary(m.topic, m.event, m.meta) {
		f.buf = phx.AppendUserBroadcast(f.buf, m.topic, m.event, m.meta, m.enc, m.data)
		return f.finish(ws.OpBinary)
	}
	if m.enc != phx.EncJSON {
		return nil
	}
	f.buf = phx.AppendBroadcast(f.buf, v, m.topic, m.event, m.data, m.meta)
	return f.finish(ws.OpText)
}
