package meshproto

import (
	"bytes"
	"testing"
)

var benchBroadcast = &Broadcast{
	Topic:   "realtime:room-42",
	Event:   "cursor",
	Payload: bytes.Repeat([]byte(`{"x":123,"y":456}`), 8),
	Origin:  "node-a@1712345678",
	RelayTo: []string{"node-b@1712345679", "node-c@1712345680"},
}

var benchDelta = &PresenceDelta{
	Topic: "realtime:lobby",
	Owner: "node-a@1712345678",
	Seq:   12345,
	Joins: []PresenceEntry{
		{Holder: 17, Key: "user-1", Ref: "F7a1", PrevRef: "F7a0", Meta: []byte(`{"status":"online"}`)},
		{Holder: 18, Key: "user-2", Ref: "F7a2", Meta: []byte(`{"status":"away"}`)},
	},
	Leaves: []PresenceEntry{{Holder: 17, Key: "user-1", Ref: "F7a0", Meta: []byte(`{"status":"busy"}`)}},
}

func BenchmarkAppendBroadcast(b *testing.B) {
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	b.SetBytes(int64(len(AppendBroadcast(nil, benchBroadcast))))
	for b.Loop() {
		buf = AppendBroadcast(buf[:0], benchBroadcast)
	}
}

func BenchmarkDecodeBroadcast(b *testing.B) {
	benchDecode(b, benchBroadcast)
}

func BenchmarkAppendPresenceDelta(b *testing.B) {
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		buf = Append(buf[:0], benchDelta)
	}
}

func BenchmarkDecodePresenceDelta(b *testing.B) {
	benchDecode(b, benchDelta)
}

func benchDecode(b *testing.B, f Frame) {
	in := Append(nil, f)
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		if _, _, err := Decode(in, 0); err != nil {
			b.Fatal(err)
		}
	}
}
