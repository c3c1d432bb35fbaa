package bench

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
)

// The benchmark payload is a JSON object of an exact byte size:
//
//	{"t":<send time, unix nanos>,"s":<sequence>,"pad":"xxxx…"}
//
// The publisher stamps t just before writing the frame; a subscriber reads it
// back from whatever envelope the server wraps around the payload and
// subtracts it from its receive time. Both run in one process, so clocks agree.

// MinPayloadSize is the smallest payload AppendPayload can produce: t and s at
// their maximum widths and an empty pad.
const MinPayloadSize = len(`{"t":,"s":,"pad":""}`) + 19 + 20

var (
	keyT       = []byte(`"t":`)
	keyS       = []byte(`"s":`)
	fastPrefix = []byte(`{"t":`)
	fastMid    = []byte(`,"s":`)
)

// ErrNoTimestamp means a frame carried no benchmark payload.
var ErrNoTimestamp = errors.New("bench: no timestamp in payload")

// AppendPayload appends a payload of exactly size bytes stamped with t and seq
// to dst and returns the extended slice. It returns an error if size is below
// MinPayloadSize or t is negative.
func AppendPayload(dst []byte, size int, t int64, seq uint64) ([]byte, error) {
	if size < MinPayloadSize {
		return dst, fmt.Errorf("bench: payload size %d below minimum %d", size, MinPayloadSize)
	}
	if t < 0 {
		return dst, fmt.Errorf("bench: negative timestamp %d", t)
	}
	start := len(dst)
	dst = append(dst, `{"t":`...)
	dst = strconv.AppendInt(dst, t, 10)
	dst = append(dst, `,"s":`...)
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, `,"pad":"`...)
	pad := size - (len(dst) - start) - len(`"}`)
	for range pad {
		dst = append(dst, 'x')
	}
	dst = append(dst, `"}`...)
	return dst, nil
}

// ParseSample finds the benchmark timestamp and sequence number in b, which
// may be the payload itself or a whole frame around it (Phoenix text array,
// Centrifugo push, kind-4 binary frame). The fast path finds the payload as
// AppendPayload wrote it (`{"t":…,"s":…`); otherwise it searches after a
// "payload" or "data" key if there is one, so that envelope keys cannot be
// mistaken for ours, and key order inside the payload does not matter.
func ParseSample(b []byte) (t int64, seq uint64, err error) {
	// Fast path: the payload exactly as AppendPayload wrote it (one SIMD search).
	if i := bytes.Index(b, fastPrefix); i >= 0 {
		rest := b[i+len(fastPrefix):]
		tv, n := parseUint(rest)
		if n > 0 && tv <= 1<<63-1 && bytes.HasPrefix(rest[n:], fastMid) {
			sv, m := parseUint(rest[n+len(fastMid):])
			if m > 0 {
				return int64(tv), sv, nil
			}
		}
	}
	body := b
	if i := bytes.Index(body, []byte(`"payload":`)); i >= 0 {
		body = body[i:]
	} else if i := bytes.Index(body, []byte(`"data":`)); i >= 0 {
		body = body[i:]
	}
	tv, ok := uintAfter(body, keyT)
	if !ok {
		return 0, 0, ErrNoTimestamp
	}
	sv, ok := uintAfter(body, keyS)
	if !ok {
		return 0, 0, ErrNoTimestamp
	}
	if tv > 1<<63-1 {
		return 0, 0, ErrNoTimestamp
	}
	return int64(tv), sv, nil
}

// uintAfter parses the unsigned decimal that follows the first occurrence of
// key in b (allowing spaces after the colon).
func uintAfter(b, key []byte) (uint64, bool) {
	i := bytes.Index(b, key)
	if i < 0 {
		return 0, false
	}
	b = b[i+len(key):]
	for len(b) > 0 && b[0] == ' ' {
		b = b[1:]
	}
	v, n := parseUint(b)
	return v, n > 0
}

// parseUint parses the decimal digits at the start of b. It returns the value
// and the number of digits consumed, 0 if there are none or on overflow.
func parseUint(b []byte) (uint64, int) {
	var v uint64
	n := 0
	for n < len(b) && b[n] >= '0' && b[n] <= '9' {
		d := uint64(b[n] - '0')
		if v > (1<<64-1-d)/10 {
			return 0, 0
		}
		v = v*10 + d
		n++
	}
	return v, n
}
