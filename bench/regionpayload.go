package bench

import (
	"bytes"
	"fmt"
	"strconv"
)

// The payload of the region scenarios says when and where it was sent:
//
//	{"t":<send time, unix ns>,"s":<sequence>,"p":<publisher>,"o":"<origin region>","pad":"xxx…"}
//
// p is the publisher's index within its channel (sequences are per
// publisher), o its region. ParseRegionSample reads it back from a Phoenix
// text frame or a kind-4 payload.

// MinRegionPayloadSize is the smallest region payload with a region name of
// up to 16 bytes.
const MinRegionPayloadSize = len(`{"t":,"s":,"p":,"o":"","pad":""}`) + 19 + 20 + 10 + 16

// AppendRegionPayload appends a payload of exactly size bytes (at least
// MinRegionPayloadSize).
func AppendRegionPayload(dst []byte, size int, t int64, seq uint64, pub int, origin string) ([]byte, error) {
	if size < MinRegionPayloadSize || len(origin) > 16 || !plainJSONString(origin) {
		return dst, fmt.Errorf("bench: region payload of %d bytes for origin %q", size, origin)
	}
	start := len(dst)
	dst = append(dst, `{"t":`...)
	dst = strconv.AppendInt(dst, t, 10)
	dst = append(dst, `,"s":`...)
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, `,"p":`...)
	dst = strconv.AppendInt(dst, int64(pub), 10)
	dst = append(dst, `,"o":"`...)
	dst = append(dst, origin...)
	dst = append(dst, `","pad":"`...)
	for range size - (len(dst) - start) - len(`"}`) {
		dst = append(dst, 'x')
	}
	return append(dst, `"}`...), nil
}

// RegionSample is what a region payload carries. Origin aliases the frame.
type RegionSample struct {
	T      int64
	Seq    uint64
	Pub    int
	Origin []byte
}

var (
	regKeyS = []byte(`,"s":`)
	regKeyP = []byte(`,"p":`)
	regKeyO = []byte(`,"o":"`)
)

// ParseRegionSample finds a region payload in b (a whole frame or the
// payload itself): the first `{"t":` followed by s, p and o in that order.
func ParseRegionSample(b []byte) (RegionSample, bool) {
	var r RegionSample
	i := bytes.Index(b, fastPrefix)
	if i < 0 {
		return r, false
	}
	b = b[i+len(fastPrefix):]
	t, n := parseUint(b)
	if n == 0 || t > 1<<63-1 || !bytes.HasPrefix(b[n:], regKeyS) {
		return r, false
	}
	b = b[n+len(regKeyS):]
	s, n := parseUint(b)
	if n == 0 || !bytes.HasPrefix(b[n:], regKeyP) {
		return r, false
	}
	b = b[n+len(regKeyP):]
	p, n := parseUint(b)
	if n == 0 || p > 1<<30 || !bytes.HasPrefix(b[n:], regKeyO) {
		return r, false
	}
	b = b[n+len(regKeyO):]
	j := bytes.IndexByte(b, '"')
	if j < 0 {
		return r, false
	}
	r.T, r.Seq, r.Pub, r.Origin = int64(t), s, int(p), b[:j]
	return r, true
}
