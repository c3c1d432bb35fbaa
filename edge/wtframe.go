package edge

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/gobwas/ws"
)

// meshcast's WebTransport stream framing (README, "WebTransport"): every
// frame, both ways, is
//
//	u32 big-endian N | u8 opcode | N-1 bytes of body
//
// opcode 1 is a text frame (a Phoenix v2 JSON array), 2 a binary frame (a
// Phoenix binary frame), 8 a close frame (u16 big-endian code + UTF-8
// reason, WebSocket close codes). N counts the opcode and the body, so N is
// at least 1.

// wtFrameError is a framing violation by the client: it is closed with
// code and reason.
type wtFrameError struct {
	code   ws.StatusCode
	reason string
}

func (e *wtFrameError) Error() string { return fmt.Sprintf("%d %s", e.code, e.reason) }

// maxControlBody is the longest close frame body, as for WebSocket.
const maxControlBody = 125

// wtFrameReader reads client frames from a WebTransport stream. Like the
// WebSocket reader it never trusts a length: the body buffer grows only
// with the bytes that arrive (message.read), and a length over max is
// refused before anything is read.
type wtFrameReader struct {
	r   *bufio.Reader
	max int // largest body (MaxFrameBytes; 0 = none)

	n   int // body length of the frame whose header was read
	msg message
}

// header reads a frame's length prefix and opcode. Once it returns nil a
// frame has begun (msg.started, msg.start) and body must follow. io.EOF
// means the stream ended cleanly between frames; a *wtFrameError a
// framing violation.
func (f *wtFrameReader) header() error {
	var p [4]byte
	if _, err := io.ReadFull(f.r, p[:]); err != nil {
		return err
	}
	n := binary.BigEndian.Uint32(p[:])
	if n == 0 {
		return &wtFrameError{ws.StatusProtocolError, "frame length 0: a frame holds at least its opcode"}
	}
	if f.max > 0 && uint64(n-1) > uint64(f.max) {
		return &wtFrameError{ws.StatusMessageTooBig, fmt.Sprintf("message exceeds %d bytes", f.max)}
	}
	op, err := f.r.ReadByte()
	if err != nil {
		return unexpectedEOF(err)
	}
	switch op {
	case wtOpText, wtOpBinary:
	case wtOpClose:
		if n-1 > maxControlBody {
			return &wtFrameError{ws.StatusProtocolError, fmt.Sprintf("close frame body of %d bytes (at most %d)", n-1, maxControlBody)}
		}
	default:
		return &wtFrameError{ws.StatusProtocolError, fmt.Sprintf("unknown frame opcode %d", op)}
	}
	f.n = int(n - 1)
	f.msg.begin(ws.OpCode(op))
	return nil
}

// body reads the body of the frame header began and returns it with its
// opcode.
func (f *wtFrameReader) body() ([]byte, byte, error) {
	if err := f.msg.read(f.r, f.n); err != nil {
		return nil, 0, err
	}
	b, op := f.msg.finish()
	return b, byte(op), nil
}

// next reads one whole frame.
func (f *wtFrameReader) next() ([]byte, byte, error) {
	if err := f.header(); err != nil {
		return nil, 0, err
	}
	return f.body()
}

func unexpectedEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
