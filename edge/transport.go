package edge

import (
	"encoding/binary"
	"unicode/utf8"

	"github.com/gobwas/ws"

	"github.com/meshcast/meshcast/wire/phx"
)

// transport is what a conn needs from the carrier of its frames: a
// WebSocket's socket or a WebTransport session's stream. Everything above
// it — channels, presence, auth, limits, the outbound queue, the frames
// shared between subscribers — is one code path for both; a transport only
// moves complete frames (built for its frameFormat) and knows how to end.
//
// A transport may also offer the write pool's non-blocking fast path: the
// code that makes the conn sets conn.raw (a WebSocket's file descriptor).
type transport interface {
	// kind names the transport in metrics.
	kind() transportKind
	// writeFrames writes complete frames in order. It may block, at most
	// about Config.WriteTimeout. Only the conn's writer calls it.
	writeFrames(frames [][]byte) error
	// shut ends the transport after its close frame was written (or a
	// write failed), so that the reader stops too. The writer calls it
	// once; it may wait a moment for the peer to close first.
	shut()
	// kill cuts the transport at once, from any goroutine (Shutdown past
	// its deadline). A writeFrames or shut blocked in it returns.
	kill()
	// writeError is the errors_total reason of a failed write, "" when
	// the write failed because the client had ended the connection
	// normally: that is no error.
	writeError(err error) string
}

// transportKind is the transport label of the metrics.
type transportKind uint8

const (
	kindWebSocket transportKind = iota
	kindWebTransport
	numKinds
)

func (k transportKind) String() string {
	if k == kindWebTransport {
		return "webtransport"
	}
	return "websocket"
}

// deliveries counts frames queued by a fan-out, by transport.
type deliveries [numKinds]int

func (d deliveries) total() int {
	n := 0
	for _, k := range d {
		n += k
	}
	return n
}

// frameFormat is how a connection's frames look on its transport: the
// Phoenix serializer and the transport's framing. An outgoing message is
// encoded at most once per format and those bytes are shared by every
// subscriber speaking it.
type frameFormat uint8

const (
	// formatWSv1: WebSocket frames, vsn 1.0.0 (JSON objects).
	formatWSv1 frameFormat = iota
	// formatWSv2: WebSocket frames, vsn 2.0.0 (JSON arrays, binary kind 4).
	formatWSv2
	// formatWTv2: meshcast's WebTransport stream framing (u32 big-endian N,
	// u8 opcode, body; N counts opcode and body), vsn 2.0.0.
	formatWTv2
	numFormats
)

// wsFormat is the WebSocket format of a serializer version.
func wsFormat(v phx.Version) frameFormat {
	if v == phx.V1 {
		return formatWSv1
	}
	return formatWSv2
}

// version is the Phoenix serializer of the format.
func (f frameFormat) version() phx.Version {
	if f == formatWSv1 {
		return phx.V1
	}
	return phx.V2
}

// Frame headers. Both are written right-aligned into the room a
// frameBuilder reserves, so one reservation fits either.
const (
	// maxWSHeader is the longest header of an unmasked server WebSocket
	// frame.
	maxWSHeader = 10
	// wtHeader is the WebTransport stream frame header: u32 N + u8 opcode.
	wtHeader = 5
	// maxFrameHeader is the room a frameBuilder reserves.
	maxFrameHeader = maxWSHeader
)

// The WebTransport stream opcodes. They are the WebSocket opcode numbers
// of the same frames, so a frame's op needs no translation.
const (
	wtOpText   = byte(ws.OpText)   // 1
	wtOpBinary = byte(ws.OpBinary) // 2
	wtOpClose  = byte(ws.OpClose)  // 8
)

// maxCloseReason is the longest close reason: what a WebSocket control
// frame has room for, used for WebTransport too so a reason reads the same
// on both.
const maxCloseReason = 123

// closeFrame is a complete close frame in format f.
func closeFrame(f frameFormat, code ws.StatusCode, reason string) []byte {
	reason = cutReason(reason)
	if f != formatWTv2 {
		return ws.MustCompileFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(code, reason)))
	}
	b := make([]byte, wtHeader+2+len(reason))
	binary.BigEndian.PutUint32(b, uint32(1+2+len(reason)))
	b[4] = wtOpClose
	binary.BigEndian.PutUint16(b[5:], uint16(code))
	copy(b[7:], reason)
	return b
}

// cutReason cuts a close reason to maxCloseReason bytes, at a rune
// boundary.
func cutReason(reason string) string { return cutString(reason, maxCloseReason) }

// cutString cuts s to at most n bytes, at a rune boundary.
func cutString(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// slowConsumerCloses are the close frames of a connection whose queue
// overflowed, by format; one copy serves every connection.
var slowConsumerCloses = func() (f [numFormats][]byte) {
	for i := range f {
		f[i] = closeFrame(frameFormat(i), ws.StatusPolicyViolation, "slow consumer: outbound queue full")
	}
	return f
}()
