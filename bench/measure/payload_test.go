package measure

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/meshcast/meshcast/wire/phx"
)

func TestAppendPayloadExactSizeAndJSON(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC).UnixNano()
	for _, size := range []int{MinPayloadSize, 100, 101, 1000} {
		for _, seq := range []uint64{0, 1, 99999, 1<<64 - 1} {
			b, err := AppendPayload([]byte("prefix"), size, now, seq)
			if err != nil {
				t.Fatal(err)
			}
			p := b[len("prefix"):]
			if len(p) != size {
				t.Fatalf("size %d seq %d: got %d bytes: %s", size, seq, len(p), p)
			}
			var v struct {
				T   int64  `json:"t"`
				S   uint64 `json:"s"`
				Pad string `json:"pad"`
			}
			if err := json.Unmarshal(p, &v); err != nil {
				t.Fatalf("not JSON: %s: %v", p, err)
			}
			if v.T != now || v.S != seq {
				t.Fatalf("decoded t=%d s=%d, want %d %d", v.T, v.S, now, seq)
			}
		}
	}
}

func TestAppendPayloadRejects(t *testing.T) {
	if _, err := AppendPayload(nil, MinPayloadSize-1, 1, 1); err == nil {
		t.Error("payload below minimum accepted")
	}
	if _, err := AppendPayload(nil, 100, -1, 1); err == nil {
		t.Error("negative timestamp accepted")
	}
}

func TestParseSampleEnvelopes(t *testing.T) {
	const ts, seq = int64(1764000000123456789), uint64(42)
	p, _ := AppendPayload(nil, 100, ts, seq)
	k4 := phx.AppendUserBroadcast(nil, "realtime:bench", "m", nil, phx.EncJSON, p)
	cases := map[string][]byte{
		"payload":   p,
		"phx text":  fmt.Appendf(nil, `[null,null,"realtime:bench","broadcast",{"type":"broadcast","event":"m","payload":%s}]`, p),
		"cent push": fmt.Appendf(nil, `{"push":{"channel":"bench:room","pub":{"data":%s,"offset":7}}}`, p),
		"kind4":     k4,
		"reordered": fmt.Appendf(nil, `{"payload":{"pad":"xx","s":%d,"t":%d}}`, seq, ts),
		"spaces":    fmt.Appendf(nil, `{"data": {"t": %d, "s": %d}}`, ts, seq),
		// "t": inside an envelope before the payload must not be picked up.
		"envelope t": fmt.Appendf(nil, `{"x":0,"t":1,"s":2,"payload":%s}`, p),
	}
	for name, b := range cases {
		gotT, gotS, err := ParseSample(b)
		if err != nil || gotT != ts || gotS != seq {
			t.Errorf("%s: got %d %d %v, want %d %d", name, gotT, gotS, err, ts, seq)
		}
	}
	for name, b := range map[string][]byte{
		"no t":     []byte(`{"s":1}`),
		"no s":     []byte(`{"t":1}`),
		"t string": []byte(`{"t":"1","s":1}`),
		"overflow": []byte(`{"t":99999999999999999999,"s":1}`),
		"t>int64":  []byte(`{"t":9300000000000000000,"s":1}`),
		"empty":    nil,
	} {
		if _, _, err := ParseSample(b); err == nil {
			t.Errorf("%s: parsed %q", name, b)
		}
	}
}

func BenchmarkParseSamplePhxText(b *testing.B) {
	p, _ := AppendPayload(nil, 100, time.Now().UnixNano(), 12345)
	frame := fmt.Appendf(nil, `[null,null,"realtime:bench","broadcast",{"type":"broadcast","event":"m","payload":%s}]`, p)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := ParseSample(frame); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendPayload(b *testing.B) {
	buf := make([]byte, 0, 128)
	b.ReportAllocs()
	for i := range b.N {
		buf, _ = AppendPayload(buf[:0], 100, int64(i), uint64(i))
	}
}

func TestRegionPayload(t *testing.T) {
	for _, size := range []int{MinRegionPayloadSize, 120, 1000} {
		p, err := AppendRegionPayload(nil, size, 1_700_000_000_123_456_789, 42, 3, "sin")
		if err != nil {
			t.Fatal(err)
		}
		if len(p) != size || !json.Valid(p) {
			t.Fatalf("size %d: got %d bytes %q", size, len(p), p)
		}
		frame := phx.AppendPush(nil, "1", 7, "realtime:x", "broadcast", phx.AppendBroadcastPayload(nil, "m", p, nil))
		s, ok := ParseRegionSample(frame)
		if !ok || s.T != 1_700_000_000_123_456_789 || s.Seq != 42 || s.Pub != 3 || string(s.Origin) != "sin" {
			t.Fatalf("parsed %+v %v from %s", s, ok, frame)
		}
	}
	if _, err := AppendRegionPayload(nil, 10, 1, 1, 0, "iad"); err == nil {
		t.Error("tiny payload accepted")
	}
	for _, bad := range []string{`{"t":1,"s":2}`, `{"t":1,"s":2,"p":3,"o":"iad`, `nothing`} {
		if _, ok := ParseRegionSample([]byte(bad)); ok {
			t.Errorf("parsed %s", bad)
		}
	}
}
