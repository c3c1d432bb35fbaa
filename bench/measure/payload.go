package measure

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// The benchmark payload is a JSON object of an exact byte size:
//
//	{"t":<send time, unix nanos>,"s":<sequence>,"pad":"xxxx…"}
//
// and in the region scenarios, which have several publishers in several
// regions, it also says which publisher (its index in its channel, since
// sequences are per publisher) and which region sent it:
//
//	{"t":…,"s":…,"p":<publisher>,"o":"<origin region>","pad":"xxxx…"}
//
// The publisher stamps t just before writing the frame; a subscriber reads it
// back from whatever envelope the server wraps around the payload and
// subtracts it from its receive time. Both run in one process, so clocks agree.

// MinPayloadSize is the smallest payload AppendPayload can produce: t and s at
// their maximum widths and an empty pad.
const MinPayloadSize = len(`{"t":,"s":,"pad":""}`) + 19 + 20

// MinRegionPayloadSize is the smallest region payload with a region name of
// up to 16 bytes.
const MinRegionPayloadSize = len(`{"t":,"s":,"p":,"o":"","pad":""}`) + 19 + 20 + 10 + 16

var (
	keyT       = []byte(`"t":`)
	keyS       = []byte(`"s":`)
	fastPrefix = []byte(`{"t":`)
	fastMid    = []byte(`,"s":`)
	keyPub     = []byte(`,"p":`)
	keyOrigin  = []byte(`,"o":"`)
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
	return appendPayload(dst, size, t, seq, -1, "")
}

// AppendRegionPayload appends a region payload of exactly size bytes (at
// least MinRegionPayloadSize) from publisher pub of region origin.
func AppendRegionPayload(dst []byte, size int, t int64, seq uint64, pub int, origin string) ([]byte, error) {
	if size < MinRegionPayloadSize || len(origin) > 16 || pub < 0 || strings.ContainsFunc(origin, notPlain) {
		return dst, fmt.Errorf("bench: region payload of %d bytes for origin %q", size, origin)
	}
	return appendPayload(dst, size, t, seq, pub, origin)
}

// notPlain is true of what a JSON string cannot hold unescaped.
func notPlain(r rune) bool { return r < 0x20 || r == '"' || r == '\\' }

func appendPayload(dst []byte, size int, t int64, seq uint64, pub int, origin string) ([]byte, error) {
	if t < 0 {
		return dst, fmt.Errorf("bench: negative timestamp %d", t)
	}
	start := len(dst)
	dst = append(dst, fastPrefix...)
	dst = strconv.AppendInt(dst, t, 10)
	dst = append(dst, fastMid...)
	dst = strconv.AppendUint(dst, seq, 10)
	if pub >= 0 {
		dst = append(dst, keyPub...)
		dst = strconv.AppendInt(dst, int64(pub), 10)
		dst = append(dst, keyOrigin...)
		dst = append(dst, origin...)
		dst = append(dst, '"')
	}
	dst = append(dst, `,"pad":"`...)
	for range size - (len(dst) - start) - len(`"}`) {
		dst = append(dst, 'x')
	}
	return append(dst, `"}`...), nil
}

// ParseSample finds the benchmark timestamp and sequence number in b, which
// may be the payload itself or a whole frame around it (Phoenix text array,
// Centrifugo push, kind-4 binary frame). The fast path finds the payload as
// AppendPayload wrote it (`{"t":…,"s":…`); otherwise it searches after a
// "payload" or "data" key if there is one, so that envelope keys cannot be
// mistaken for ours, and key order inside the payload does not matter.
func ParseSample(b []byte) (t int64, seq uint64, err error) {
	if t, seq, _, ok := parseTS(b); ok {
		return t, seq, nil
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
	if !ok || tv > 1<<63-1 {
		return 0, 0, ErrNoTimestamp
	}
	return int64(tv), sv, nil
}

// parseTS reads the payload as AppendPayload wrote it, at the first
// `{"t":` of b (one SIMD search): t, s and what follows them.
func parseTS(b []byte) (t int64, seq uint64, rest []byte, ok bool) {
	i := bytes.Index(b, fastPrefix)
	if i < 0 {
		return 0, 0, nil, false
	}
	b = b[i+len(fastPrefix):]
	tv, n := parseUint(b)
	if n == 0 || tv > 1<<63-1 || !bytes.HasPrefix(b[n:], fastMid) {
		return 0, 0, nil, false
	}
	b = b[n+len(fastMid):]
	sv, m := parseUint(b)
	return int64(tv), sv, b[m:], m > 0
}

// Sample is what a region payload carries. Origin aliases the frame.
type Sample struct {
	T      int64
	Seq    uint64
	Pub    int
	Origin []byte
}

// ParseRegionSample finds a region payload in b (a whole frame or the
// payload itself): the first `{"t":` followed by s, p and o in that order.
func ParseRegionSample(b []byte) (Sample, bool) {
	t, seq, b, ok := parseTS(b)
	if !ok || !bytes.HasPrefix(b, keyPub) {
		return Sample{}, false
	}
	b = b[len(keyPub):]
	p, n := parseUint(b)
	if n == 0 || p > 1<<30 || !bytes.HasPrefix(b[n:], keyOrigin) {
		return Sample{}, false
	}
	b = b[n+len(keyOrigin):]
	j := bytes.IndexByte(b, '"')
	if j < 0 {
		return Sample{}, false
	}
	return Sample{T: t, Seq: seq, Pub: int(p), Origin: b[:j]}, true
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
