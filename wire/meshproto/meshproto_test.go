package meshproto

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"reflect"
	"runtime"
	"strings"
	"testing"
)

// frames holds one or more values of every type. Empty byte slices and
// lists are nil, which is what Decode returns for them.
var frames = []Frame{
	&Hello{NodeID: "node-a@17", Region: "eu-west", Incarnation: 1712345678901, Lane: LaneData, MAC: bytes.Repeat([]byte{0xab}, 32)},
	&Hello{},
	&Ping{Nanos: 1_700_000_000_123_456_789},
	&Ping{Nanos: -1},
	&Pong{Nanos: 42},
	&InterestAdd{Topics: []string{"realtime:room1", "realtime:ü", ""}},
	&InterestAdd{},
	&InterestRemove{Topics: []string{"realtime:room1"}},
	&InterestSnapshot{Topics: []string{"a", "b", "c"}},
	&InterestSnapshot{Topics: []string{"d"}, Part: 3, More: true},
	&InterestSnapshot{},
	&Broadcast{
		Topic: "realtime:room1", Event: "cursor", Payload: []byte(`{"x":1,"y":2}`),
		Meta: []byte(`{"id":"m1"}`), Enc: 2, Binary: true, Origin: "node-a@17",
		RelayTo: []string{"node-b@3", "node-c@9"},
	},
	&Broadcast{Topic: "t", Event: "e", Payload: []byte{0}},
	&Broadcast{Topic: "realtime:cursors", Event: "cursor", Payload: []byte(`{"x":3}`), Enc: 1, Binary: true, Unreliable: true, Origin: "node-a@17"},
	&Broadcast{Unreliable: true},
	&Broadcast{},
	&PresenceDelta{
		Topic: "realtime:lobby", Owner: "node-a@17", Seq: 1 << 40,
		Joins: []PresenceEntry{
			{Holder: 7, Key: "user-1", Ref: "F1", PrevRef: "F0", Meta: []byte(`{"status":"online"}`)},
			{Holder: 8, Key: "user-2", Ref: "F2"},
		},
		Leaves: []PresenceEntry{{Holder: 7, Key: "user-1", Ref: "F0", Meta: []byte(`{}`)}},
	},
	&PresenceDelta{Topic: "t", Owner: "o", Seq: 1},
	&PresenceSnapshot{
		Topic: "realtime:lobby", Owner: "node-a@17", Seq: 99,
		Entries: []PresenceEntry{{Holder: 1, Key: "k", Ref: "r"}, {}},
	},
	&PresenceSnapshot{Topic: "t", Owner: "o", Seq: 4, Part: 1 << 33, More: true},
	&PresenceSnapshot{},
	&PresenceSyncRequest{Topic: "realtime:lobby", Owner: "node-a@17"},
	&PresenceSyncRequest{Topic: "realtime:lobby"},
	&SubRegister{DB: "db1", Replace: true, Part: 2, More: true, Subs: []Sub{
		{ID: 1<<53 - 1, Schema: "public", Table: "todos", Event: "INSERT", Filters: []SubFilter{{Column: "id", Op: 1, Value: "1"}, {Column: "t", Op: 7, Value: "{a,\"b,c\"}", Negate: true}}, Columns: []string{"id", "title"}, Role: "authenticated", Claims: []byte(`{"sub":"u1"}`)},
		{},
	}},
	&SubRegister{DB: "db1"},
	&SubUnregister{DB: "db1", IDs: []uint64{1, 1 << 52, 3}},
	&SubUnregister{},
	&SubAck{DB: "db1", IDs: []uint64{7}, LSN: 0x16B374D848, Seq: 4, Err: "Unable to subscribe"},
	&SubAck{},
	&Changes{DB: "db1", LSN: 0x16B374D848, Seq: 1<<32 - 1, Record: []byte{1, 2, 3}, IDs: []uint64{5, 6}},
	&Changes{},
	&StreamHeads{Topic: "realtime:room", Ranges: []StreamRange{{Stream: 0x9f3c000000000001, Low: 3, Head: 42}, {Stream: 7, Low: 9, Head: 8}}},
	&StreamHeads{},
	&HistoryRequest{ID: 9, Topic: "private|realtime:r", Stream: 1 << 63, After: 41, Upto: 1000},
	&HistoryRequest{},
	&HistoryReply{ID: 9, Held: true, Msgs: []HistoryMsg{{Event: "e", Payload: []byte(`{"n":1}`), Meta: []byte(`{"pos":"01:42"}`)}, {Event: "b", Payload: []byte{0, 1}, Enc: 1, Binary: true}}},
	&HistoryReply{},
	&ChangesAck{DB: "db1", LSN: 99, Seq: 3},
	&ChangesAck{},
	&SubSync{DB: "db1"},
	&SubSync{},
	&ChangesRecover{DB: "db1", Call: 3, AfterLSN: 0x16B3748, AfterSeq: 3, HeadLSN: 1 << 40, HeadSeq: 1<<32 - 1, Subs: []Sub{
		{ID: 9, Schema: "public", Table: "todos", Event: "*", Filters: []SubFilter{{Column: "id", Op: 1, Value: "1"}}, Role: "authenticated", Claims: []byte(`{"sub":"u1"}`)}}},
	&ChangesRecover{},
	&ChangesRecovered{DB: "db1", Call: 3, ThroughLSN: 0x16B3748, ThroughSeq: 7, Records: []RecoveredRecord{{Record: []byte{1, 2}, IDs: []uint64{9, 1 << 52}}, {}}, Part: 1, More: true},
	&ChangesRecovered{DB: "db1", Call: 4, Err: "the position is older than the recovery window"},
	&ChangesRecovered{},
}

func TestRoundTrip(t *testing.T) {
	for _, want := range frames {
		b := Append([]byte("prefix"), want)
		if string(b[:6]) != "prefix" {
			t.Fatalf("%T: Append overwrote dst", want)
		}
		b = b[6:]
		if got := binary.BigEndian.Uint32(b); int(got) != len(b)-4 {
			t.Fatalf("%T: length field %d, frame has %d bytes after it", want, got, len(b)-4)
		}
		if b[4] != byte(want.Type()) || b[5] != Version {
			t.Fatalf("%T: header % x", want, b[:6])
		}
		got, n, err := Decode(b, 0)
		if err != nil || n != len(b) {
			t.Fatalf("%T: Decode = %d, %v; want %d, nil", want, n, err, len(b))
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%v: decoded %+v, want %+v", want.Type(), got, want)
		}
		if bc, ok := want.(*Broadcast); ok {
			if fast := AppendBroadcast(nil, bc); !bytes.Equal(fast, b) {
				t.Fatalf("AppendBroadcast = % x, Append = % x", fast, b)
			}
		}
	}
}

func TestEmptyIsNil(t *testing.T) {
	a := Append(nil, &Broadcast{Payload: []byte{}, Meta: nil, RelayTo: []string{}})
	b := Append(nil, &Broadcast{})
	if !bytes.Equal(a, b) {
		t.Fatalf("empty and nil encode differently: % x vs % x", a, b)
	}
}

// TestDecodedSlicesCapped checks that appending to a decoded byte slice
// cannot overwrite the rest of the input.
func TestDecodedSlicesCapped(t *testing.T) {
	b := Append(nil, &Broadcast{Payload: []byte("p"), Meta: []byte("m"), Origin: "o"})
	f, _, err := Decode(b, 0)
	if err != nil {
		t.Fatal(err)
	}
	bc := f.(*Broadcast)
	if cap(bc.Payload) != len(bc.Payload) {
		t.Fatalf("payload cap %d > len %d", cap(bc.Payload), len(bc.Payload))
	}
	_ = append(bc.Payload, 'X')
	if g, _, _ := Decode(b, 0); string(g.(*Broadcast).Meta) != "m" {
		t.Fatalf("append to payload changed meta")
	}
}

// TestTruncated cuts every frame at every byte. Cut streams are ErrShort;
// cut bodies behind a corrected length are ErrMalformed, since every field
// is required.
func TestTruncated(t *testing.T) {
	for _, f := range frames {
		full := Append(nil, f)
		for i := range len(full) {
			if _, n, err := Decode(full[:i], 0); !errors.Is(err, ErrShort) || n != 0 {
				t.Fatalf("%v cut at %d/%d: n = %d, err = %v; want ErrShort", f.Type(), i, len(full), n, err)
			}
			if i < 4 {
				continue
			}
			body := bytes.Clone(full[:i])
			binary.BigEndian.PutUint32(body, uint32(i-4))
			if _, n, err := Decode(body, 0); !errors.Is(err, ErrMalformed) || n != i {
				t.Fatalf("%v body cut at %d/%d: n = %d, err = %v; want ErrMalformed", f.Type(), i, len(full), n, err)
			}
		}
	}
}

func TestBadFrames(t *testing.T) {
	frame := func(typ, version byte, body ...byte) []byte {
		b := binary.BigEndian.AppendUint32(nil, uint32(len(body)+2))
		return append(append(b, typ, version), body...)
	}
	huge := func(n uint64) []byte { return binary.AppendUvarint(nil, n) }
	tests := []struct {
		name string
		in   []byte
		max  int
		want error
	}{
		{"length over max", []byte{0, 0, 1, 0, 7, 1}, 255, ErrTooLarge},
		{"length 4GiB", []byte{0xff, 0xff, 0xff, 0xff}, 0, ErrTooLarge},
		{"length 0", []byte{0, 0, 0, 0}, 0, ErrMalformed},
		{"length 1", []byte{0, 0, 0, 1, 7}, 0, ErrMalformed},
		{"version 0", frame(byte(TypePing), 0, 0, 0, 0, 0, 0, 0, 0, 0), 0, ErrVersion},
		{"version 1", frame(byte(TypePing), 1, 0, 0, 0, 0, 0, 0, 0, 0), 0, ErrVersion},
		{"version 3", frame(byte(TypePing), 3), 0, ErrVersion},
		{"type 0", frame(0, Version), 0, ErrUnknownType},
		{"type 200", frame(200, Version, 1, 2, 3), 0, ErrUnknownType},
		{"trailing byte", frame(byte(TypePing), Version, 0, 0, 0, 0, 0, 0, 0, 0, 0), 0, ErrMalformed},
		{"string length past end", frame(byte(TypePresenceSyncRequest), Version, 5, 'a'), 0, ErrMalformed},
		{"string length 2^63", frame(byte(TypePresenceSyncRequest), Version, huge(1<<63)...), 0, ErrMalformed},
		{"varint overflow", frame(byte(TypeHello), Version, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0, 0), 0, ErrMalformed},
		{"topic count 2^62", frame(byte(TypeInterestAdd), Version, huge(1<<62)...), 0, ErrMalformed},
		{"topic count over bytes", frame(byte(TypeInterestSnapshot), Version, 3, 0, 0), 0, ErrMalformed},
		{"entry count over bytes", frame(byte(TypePresenceSnapshot), Version, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0), 0, ErrMalformed},
		{"replace flag 2", frame(byte(TypeSubRegister), Version, 0, 2, 0, 0, 0), 0, ErrMalformed},
		{"seq over 32 bits", frame(byte(TypeChangesAck), Version, 0, 0, 0x80, 0x80, 0x80, 0x80, 0x10), 0, ErrMalformed},
		{"sub count over bytes", frame(byte(TypeSubRegister), Version, 0, 0, 5, 0, 0, 0, 0, 0), 0, ErrMalformed},
		{"snapshot flag reserved", frame(byte(TypeInterestSnapshot), Version, 0, 0, 2), 0, ErrMalformed},
		{"snapshot without part", frame(byte(TypeInterestSnapshot), Version, 0), 0, ErrMalformed},
		{"broadcast flag reserved", frame(byte(TypeBroadcast), Version, 0, 0, 0, 0, 0, 4, 0, 0), 0, ErrMalformed},
	}
	for _, tt := range tests {
		f, _, err := Decode(tt.in, tt.max)
		if !errors.Is(err, tt.want) || f != nil {
			t.Errorf("%s: Decode = %v, %v; want %v", tt.name, f, err, tt.want)
		}
	}
}

// TestHugeCountsDoNotAllocate checks that lying counts are refused before
// allocating for them: each of these would ask for gigabytes.
func TestHugeCountsDoNotAllocate(t *testing.T) {
	for _, typ := range []Type{TypeInterestSnapshot, TypePresenceSnapshot} {
		b := binary.BigEndian.AppendUint32(nil, 0)
		b = append(b, byte(typ), Version)
		if typ == TypePresenceSnapshot {
			b = append(b, 0, 0, 0) // topic, owner, seq
		}
		b = binary.AppendUvarint(b, 1<<28)
		b = append(b, make([]byte, 64)...)
		binary.BigEndian.PutUint32(b, uint32(len(b)-4))
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, _, err := Decode(b, 0)
		runtime.ReadMemStats(&after)
		if !errors.Is(err, ErrMalformed) {
			t.Fatalf("%v: %v, want ErrMalformed", typ, err)
		}
		if n := after.TotalAlloc - before.TotalAlloc; n > 4<<10 {
			t.Fatalf("%v: allocated %d bytes rejecting a huge count", typ, n)
		}
	}
}

func TestReadFrame(t *testing.T) {
	var stream []byte
	for _, f := range frames {
		stream = Append(stream, f)
	}
	// A small bufio buffer makes frames span refills.
	r := bufio.NewReaderSize(bytes.NewReader(stream), 16)
	var buf []byte
	for i, want := range frames {
		var got Frame
		var err error
		got, buf, err = ReadFrame(r, 1<<10, buf)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("frame %d: %+v, want %+v", i, got, want)
		}
	}
	if _, _, err := ReadFrame(r, 0, buf); err != io.EOF {
		t.Fatalf("at end: %v, want io.EOF", err)
	}
}

func TestReadFrameReusesBuf(t *testing.T) {
	stream := Append(nil, &Ping{Nanos: 1})
	buf := make([]byte, 0, 64)
	_, got, err := ReadFrame(bufio.NewReader(bytes.NewReader(stream)), 0, buf)
	if err != nil {
		t.Fatal(err)
	}
	if &got[0] != &buf[:1][0] {
		t.Fatal("ReadFrame allocated although buf had room")
	}
}

func TestReadFrameErrors(t *testing.T) {
	good := Append(nil, &PresenceSyncRequest{Topic: "t"})
	unknown := []byte{0, 0, 0, 3, 99, Version, 0}
	tests := []struct {
		name   string
		stream []byte
		want   []error // per ReadFrame call
	}{
		{"cut prefix", good[:2], []error{io.ErrUnexpectedEOF}},
		{"cut body", good[:len(good)-1], []error{io.ErrUnexpectedEOF}},
		{"too large", []byte{0x7f, 0, 0, 0, 1, 1}, []error{ErrTooLarge}},
		{"skip unknown type", append(bytes.Clone(unknown), good...), []error{ErrUnknownType, nil, io.EOF}},
	}
	for _, tt := range tests {
		r := bufio.NewReader(bytes.NewReader(tt.stream))
		var buf []byte
		for i, want := range tt.want {
			var err error
			_, buf, err = ReadFrame(r, 1<<20, buf)
			if !errors.Is(err, want) {
				t.Errorf("%s: call %d: %v, want %v", tt.name, i, err, want)
			}
		}
	}
}

func TestTypeString(t *testing.T) {
	for _, f := range frames {
		if s := f.Type().String(); strings.HasPrefix(s, "Type(") || !strings.Contains(reflect.TypeOf(f).String(), s) {
			t.Errorf("%T: Type().String() = %q", f, s)
		}
	}
	if s := Type(77).String(); s != "Type(77)" {
		t.Errorf("Type(77) = %q", s)
	}
}
