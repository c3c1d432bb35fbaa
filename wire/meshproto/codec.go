package meshproto

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
)

// prefixLen is the length field; headerLen adds the type and version bytes.
const (
	prefixLen = 4
	headerLen = prefixLen + 2
)

// Append appends f as one frame to dst and returns the extended slice. It
// does not enforce a maximum size: a sender keeps its frames within what its
// peers accept (DefaultMaxFrame unless configured otherwise).
func Append(dst []byte, f Frame) []byte {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0, byte(f.Type()), Version)
	dst = f.appendBody(dst)
	binary.BigEndian.PutUint32(dst[start:], uint32(len(dst)-start-prefixLen))
	return dst
}

// AppendBroadcast is Append for the fanout path: it makes no allocation when
// dst has room for the frame.
func AppendBroadcast(dst []byte, b *Broadcast) []byte {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0, byte(TypeBroadcast), Version)
	dst = b.appendBody(dst)
	binary.BigEndian.PutUint32(dst[start:], uint32(len(dst)-start-prefixLen))
	return dst
}

// Decode decodes the frame at the front of b and returns it with the number
// of bytes it took. A frame's length may be at most maxFrame (DefaultMaxFrame
// when maxFrame <= 0).
//
// When b holds only part of a frame, Decode returns ErrShort and 0: read more
// and call again. ErrTooLarge also comes with 0, and the stream cannot go on.
// With ErrVersion, ErrUnknownType and ErrMalformed the frame was complete and
// n is its size, so a caller that wants to skip it can.
//
// Byte slices in the frame alias b.
func Decode(b []byte, maxFrame int) (f Frame, n int, err error) {
	if maxFrame <= 0 {
		maxFrame = DefaultMaxFrame
	}
	if len(b) < prefixLen {
		return nil, 0, ErrShort
	}
	size := binary.BigEndian.Uint32(b)
	if uint64(size) > uint64(maxFrame) {
		return nil, 0, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, size, maxFrame)
	}
	if uint64(len(b)-prefixLen) < uint64(size) {
		return nil, 0, ErrShort
	}
	n = prefixLen + int(size)
	if size < headerLen-prefixLen {
		return nil, n, fmt.Errorf("%w: %d-byte frame has no header", ErrMalformed, size)
	}
	t, v := Type(b[prefixLen]), b[prefixLen+1]
	if v != Version {
		return nil, n, fmt.Errorf("%w: %d in %v frame, want %d", ErrVersion, v, t, Version)
	}
	r := reader{b: b[headerLen:n]}
	if f = decodeBody(t, &r); f == nil {
		return nil, n, fmt.Errorf("%w: %d", ErrUnknownType, uint8(t))
	}
	if r.err == "" && len(r.b) > 0 {
		return nil, n, fmt.Errorf("%w: %v: %d trailing bytes", ErrMalformed, t, len(r.b))
	}
	if r.err != "" {
		return nil, n, fmt.Errorf("%w: %v: %s", ErrMalformed, t, r.err)
	}
	return f, n, nil
}

// decodeBody decodes the body of a frame of type t, or returns nil for a
// type it does not know. A switch, not a method of Frame, so that r stays on
// the stack.
func decodeBody(t Type, r *reader) Frame {
	switch t {
	case TypeHello:
		x := new(Hello)
		x.decode(r)
		return x
	case TypePing:
		x := new(Ping)
		x.decode(r)
		return x
	case TypePong:
		x := new(Pong)
		x.decode(r)
		return x
	case TypeInterestAdd:
		x := new(InterestAdd)
		x.decode(r)
		return x
	case TypeInterestRemove:
		x := new(InterestRemove)
		x.decode(r)
		return x
	case TypeInterestSnapshot:
		x := new(InterestSnapshot)
		x.decode(r)
		return x
	case TypeBroadcast:
		x := new(Broadcast)
		x.decode(r)
		return x
	case TypePresenceDelta:
		x := new(PresenceDelta)
		x.decode(r)
		return x
	case TypePresenceSnapshot:
		x := new(PresenceSnapshot)
		x.decode(r)
		return x
	case TypePresenceSyncRequest:
		x := new(PresenceSyncRequest)
		x.decode(r)
		return x
	case TypeSubRegister:
		x := new(SubRegister)
		x.decode(r)
		return x
	case TypeSubUnregister:
		x := new(SubUnregister)
		x.decode(r)
		return x
	case TypeSubAck:
		x := new(SubAck)
		x.decode(r)
		return x
	case TypeChanges:
		x := new(Changes)
		x.decode(r)
		return x
	case TypeChangesAck:
		x := new(ChangesAck)
		x.decode(r)
		return x
	case TypeSubSync:
		x := new(SubSync)
		x.decode(r)
		return x
	}
	return decodeHistory(t, r)
}

// ReadFrame reads one frame from r, in buf when it has the capacity, and
// returns it with buf, grown if it had to be. A frame's length may be at most
// maxFrame (DefaultMaxFrame when maxFrame <= 0); a larger one is refused
// before its body is read or any memory allocated for it.
//
// At the end of the stream between frames the error is io.EOF, inside a frame
// io.ErrUnexpectedEOF. After ErrVersion, ErrUnknownType or ErrMalformed the
// frame has been read, so the caller may go on with the next one.
//
// Byte slices in the frame alias buf: the next ReadFrame into the same buf
// overwrites them.
func ReadFrame(r *bufio.Reader, maxFrame int, buf []byte) (Frame, []byte, error) {
	if maxFrame <= 0 {
		maxFrame = DefaultMaxFrame
	}
	prefix, err := r.Peek(prefixLen)
	if err != nil {
		if err == io.EOF && len(prefix) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return nil, buf, err
	}
	size := binary.BigEndian.Uint32(prefix)
	if uint64(size) > uint64(maxFrame) {
		return nil, buf, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, size, maxFrame)
	}
	total := prefixLen + int(size)
	if cap(buf) < total {
		// Grow geometrically, within what a frame may need, so that a
		// stream of slowly growing frames does not allocate for each.
		buf = make([]byte, total, min(max(total, 2*cap(buf)), prefixLen+maxFrame))
	}
	buf = buf[:total]
	if _, err := io.ReadFull(r, buf); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, buf, err
	}
	f, _, err := Decode(buf, maxFrame)
	return f, buf, err
}

func appendUvarint(b []byte, v uint64) []byte { return binary.AppendUvarint(b, v) }

func appendUint64(b []byte, v uint64) []byte { return binary.BigEndian.AppendUint64(b, v) }

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendBytes(b, p []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(p)))
	return append(b, p...)
}

func appendStrings(b []byte, ss []string) []byte {
	b = binary.AppendUvarint(b, uint64(len(ss)))
	for _, s := range ss {
		b = appendString(b, s)
	}
	return b
}

// reader consumes a frame body. The first failure records the field that
// failed and turns every later read into a no-op returning zero values, so
// a decode reads its fields without checking each one.
type reader struct {
	b   []byte
	err string // the field that failed, "" while all is well
}

func (r *reader) fail(field string) {
	if r.err == "" {
		r.err = field
	}
	r.b = nil
}

func (r *reader) uvarint(field string) uint64 {
	if r.err != "" {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail(field)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) uint64(field string) uint64 {
	if r.err != "" || len(r.b) < 8 {
		r.fail(field)
		return 0
	}
	v := binary.BigEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

func (r *reader) byte(field string) byte {
	if r.err != "" || len(r.b) < 1 {
		r.fail(field)
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

// bytes returns a length-prefixed byte slice aliasing the input, capped so
// that appending to it cannot overwrite the rest of the input; nil if empty.
func (r *reader) bytes(field string) []byte {
	n := r.uvarint(field)
	if r.err != "" {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.fail(field)
		return nil
	}
	if n == 0 {
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) string(field string) string {
	return string(r.bytes(field))
}

// count reads a list length and checks that the bytes left can hold that
// many items of at least minSize bytes each, before the caller allocates.
func (r *reader) count(field string, minSize int) int {
	n := r.uvarint(field)
	if r.err != "" {
		return 0
	}
	if n > uint64(len(r.b)/minSize) {
		r.fail(field)
		return 0
	}
	return int(n)
}

func (r *reader) strings(field string) []string {
	n := r.count(field, 1)
	if n == 0 {
		return nil
	}
	ss := make([]string, n)
	for i := range ss {
		ss[i] = r.string(field)
	}
	if r.err != "" {
		return nil
	}
	return ss
}
