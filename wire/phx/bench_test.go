package phx

import (
	"testing"
)

var (
	benchV2Broadcast = []byte(`["6","8","realtime:room1","broadcast",{"type":"broadcast","event":"cursor","payload":{"x":42,"y":17,"user":"4f1c2a","color":"#ff8800"}}]`)
	benchPayload     = []byte(`{"x":42,"y":17,"user":"4f1c2a","color":"#ff8800"}`)
)

func BenchmarkDecodeV2Broadcast(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(benchV2Broadcast)))
	for b.Loop() {
		if _, err := DecodeText(V2, benchV2Broadcast); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeBinaryKind3(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(captureKind3)))
	for b.Loop() {
		if _, err := DecodeBinary(captureKind3); err != nil {
			b.Fatal(err)
		}
	}
}

// A fan-out encodes into a buffer it reuses, so this must not allocate.
func BenchmarkAppendBroadcastV2(b *testing.B) {
	b.ReportAllocs()
	buf := make([]byte, 0, 256)
	for b.Loop() {
		buf = AppendBroadcast(buf[:0], V2, "realtime:room1", "cursor", benchPayload, nil)
	}
	b.SetBytes(int64(len(buf)))
}

func BenchmarkAppendUserBroadcast(b *testing.B) {
	b.ReportAllocs()
	buf := make([]byte, 0, 256)
	for b.Loop() {
		buf = AppendUserBroadcast(buf[:0], "realtime:room1", "cursor", nil, EncJSON, benchPayload)
	}
	b.SetBytes(int64(len(buf)))
}

func BenchmarkAppendString(b *testing.B) {
	for _, bc := range []struct{ name, s string }{
		{"ascii", "realtime:room1-with-a-somewhat-longer-topic-name"},
		{"escapes", "line one\nline \"two\"\ttab\\slash\x01"},
		{"unicode", "réunion 日本語 😀 \u2028 fin"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bc.s)))
			buf := make([]byte, 0, 256)
			for b.Loop() {
				buf = AppendString(buf[:0], bc.s)
			}
		})
	}
}

// The zero-allocation claims above are part of the contract; check them in
// the ordinary test run too.
func TestAppendDoesNotAllocate(t *testing.T) {
	buf := make([]byte, 0, 256)
	tests := map[string]func(){
		"AppendBroadcast v2": func() { buf = AppendBroadcast(buf[:0], V2, "realtime:room1", "cursor", benchPayload, nil) },
		"AppendBroadcast v1": func() {
			buf = AppendBroadcast(buf[:0], V1, "realtime:room1", "cursor", benchPayload, []byte(`{"id":"m1"}`))
		},
		"AppendUserBroadcast": func() {
			buf = AppendUserBroadcast(buf[:0], "realtime:room1", "cursor", nil, EncJSON, benchPayload)
		},
		"AppendFrame":  func() { buf = AppendFrame(buf[:0], V2, "6", "6", "realtime:room1", "phx_close", []byte(`{}`)) },
		"AppendString": func() { buf = AppendString(buf[:0], "réunion \"日本\"\n\u2028\xff") },
	}
	for name, f := range tests {
		if n := testing.AllocsPerRun(100, f); n != 0 {
			t.Errorf("%s: %v allocs per run, want 0", name, n)
		}
	}
}
