package phx

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
	"unicode/utf8"
)

func TestAppendPush(t *testing.T) {
	for _, tc := range []struct {
		joinRef string
		ref     uint64
		want    string
	}{
		{"1", 7, `["1","7","realtime:room1","broadcast",{"a":1}]`},
		{"", 9, `[null,"9","realtime:room1","broadcast",{"a":1}]`},
		{"1", 0, `["1",null,"realtime:room1","broadcast",{"a":1}]`},
	} {
		got := AppendPush(nil, tc.joinRef, tc.ref, "realtime:room1", "broadcast", []byte(`{"a":1}`))
		if string(got) != tc.want {
			t.Errorf("AppendPush(%q, %d) = %s, want %s", tc.joinRef, tc.ref, got, tc.want)
		}
		m, err := DecodeText(V2, got)
		if err != nil || m.JoinRef != tc.joinRef || m.Topic != "realtime:room1" || m.Event != "broadcast" || string(m.Payload) != `{"a":1}` {
			t.Errorf("the server reads %s as %+v, %v", got, m, err)
		}
	}
	// Names that need escaping stay one JSON string.
	m, err := DecodeText(V2, AppendPush(nil, "1", 2, `a"b`, "e\n", []byte(`{}`)))
	if err != nil || m.Topic != `a"b` || m.Event != "e\n" {
		t.Errorf("escaped names read back as %+v, %v", m, err)
	}
}

func TestAppendUserBroadcastPush(t *testing.T) {
	// supabase-js's own frame (protocol.md §1) comes out byte for byte.
	got := AppendUserBroadcastPush(nil, "6", 7, "realtime:room1", "cursor", nil, EncJSON, []byte(`{"x":42,"s":"é"}`))
	if !bytes.Equal(got, captureKind3) {
		t.Fatalf("kind 3:\n got %q\nwant %q", got, captureKind3)
	}
	got = AppendUserBroadcastPush([]byte{0xff}, "1", 1234, "realtime:bench", "m", []byte(`{"persist":true}`), EncBytes, []byte{0, 1})
	m, err := DecodeBinary(got[1:])
	if err != nil || m.JoinRef != "1" || m.Ref != "1234" || m.Topic != "realtime:bench" || m.UserEvent != "m" ||
		string(m.Meta) != `{"persist":true}` || m.Enc != EncBytes || !bytes.Equal(m.Payload, []byte{0, 1}) || got[0] != 0xff {
		t.Fatalf("the server reads %q as %+v, %v", got, m, err)
	}
	// A datagram: no ref.
	m, err = DecodeBinary(AppendUserBroadcastPush(nil, "1", 0, "realtime:bench", "m", nil, EncJSON, []byte(`{}`)))
	if err != nil || m.Ref != "" || m.Meta != nil {
		t.Fatalf("datagram read as %+v, %v", m, err)
	}
}

func TestDecodeUserBroadcast(t *testing.T) {
	frame := AppendUserBroadcast(nil, "realtime:bench", "m", []byte(`{}`), EncJSON, []byte(`{"t":1,"s":2}`))
	u, err := DecodeUserBroadcast(frame)
	if err != nil || string(u.Topic) != "realtime:bench" || string(u.Event) != "m" || string(u.Meta) != "{}" || u.Enc != EncJSON || string(u.Payload) != `{"t":1,"s":2}` {
		t.Fatalf("decoded %+v, %v", u, err)
	}
	for _, bad := range [][]byte{nil, {4, 1, 1}, {4, 14, 1, 0, 1, 'r'}, {4, 0, 0, 0, 9}} {
		if _, err := DecodeUserBroadcast(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("DecodeUserBroadcast(%q): %v, want ErrMalformed", bad, err)
		}
	}
	if _, err := DecodeUserBroadcast(captureKind3); !errors.Is(err, ErrUnknownKind) {
		t.Errorf("a kind-3 frame: %v, want ErrUnknownKind", err)
	}
}

func TestScanV2(t *testing.T) {
	f, err := ScanV2([]byte(` [ null , "9","phoenix" ,"phx_reply", {"status":"ok","response":{}} ] `))
	if err != nil || f.JoinRef != nil || string(f.Ref) != "9" || string(f.Topic) != "phoenix" || string(f.Event) != "phx_reply" ||
		string(f.Payload) != `{"status":"ok","response":{}}` {
		t.Fatalf("scanned %+v, %v", f, err)
	}
	f, err = ScanV2([]byte(`["1",null,"a\"b","e",[]]`))
	if err != nil || string(f.JoinRef) != "1" || f.Ref != nil || string(f.Topic) != `a\"b` || string(f.Payload) != "[]" {
		t.Fatalf("scanned %+v, %v", f, err)
	}
	for _, bad := range []string{``, `{}`, `[null,null,"t","e"]`, `[null,null,"t","e",]`, `[null,null,null,"e",{}]`, `[1,null,"t","e",{}]`,
		`[null,null,"t","e",{}`, `["a`, "[null,null,\"t\x01\",\"e\",{}]", `[null,null,"t","e"{}]`} {
		if _, err := ScanV2([]byte(bad)); !errors.Is(err, ErrMalformed) {
			t.Errorf("ScanV2(%q): %v, want ErrMalformed", bad, err)
		}
	}
}

func TestDecodeReply(t *testing.T) {
	r, err := DecodeReply(ReplyPayload("ok", []byte(`{"postgres_changes":[]}`)))
	if err != nil || r.Status != "ok" || string(r.Response) != `{"postgres_changes":[]}` {
		t.Fatalf("%+v, %v", r, err)
	}
	if _, err := DecodeReply([]byte(`[`)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("bad reply: %v", err)
	}
}

// meshbench writes and reads these for every message of a run.
func TestClientCodecDoesNotAllocate(t *testing.T) {
	buf := make([]byte, 0, 256)
	frame := []byte(`[null,null,"realtime:room1","broadcast",{"type":"broadcast","event":"m","payload":{"t":1}}]`)
	kind4 := AppendUserBroadcast(nil, "realtime:room1", "m", nil, EncJSON, benchPayload)
	for name, f := range map[string]func(){
		"AppendPush": func() { buf = AppendPush(buf[:0], "1", 12345, "realtime:room1", "broadcast", benchPayload) },
		"AppendUserBroadcastPush": func() {
			buf = AppendUserBroadcastPush(buf[:0], "1", 12345, "realtime:room1", "m", nil, EncJSON, benchPayload)
		},
		"ScanV2":              func() { _, _ = ScanV2(frame) },
		"DecodeUserBroadcast": func() { _, _ = DecodeUserBroadcast(kind4) },
	} {
		if n := testing.AllocsPerRun(100, f); n != 0 {
			t.Errorf("%s: %v allocs per run, want 0", name, n)
		}
	}
}

func FuzzScanV2(f *testing.F) {
	for _, s := range textSeeds {
		f.Add([]byte(s))
	}
	f.Add([]byte(`[null,null,"a\\","\u00e9",{} ]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		raw, err := ScanV2(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("ScanV2(%q): error %v is not ErrMalformed", data, err)
			}
		} else if len(raw.Payload) == 0 || len(raw.Topic) > len(data) {
			t.Fatalf("ScanV2(%q) = %+v", data, raw)
		}
		// Where the server's decoder reads a frame with string or null
		// refs, ScanV2 reads the same envelope.
		m, derr := DecodeText(V2, data)
		if derr != nil || !refsAreStrings(data) {
			return
		}
		if err != nil {
			t.Fatalf("DecodeText reads %q, ScanV2 fails: %v", data, err)
		}
		for _, p := range []struct {
			raw  []byte
			want string
		}{{raw.JoinRef, m.JoinRef}, {raw.Ref, m.Ref}, {raw.Topic, m.Topic}, {raw.Event, m.Event}} {
			if !bytes.ContainsRune(p.raw, '\\') && utf8.Valid(p.raw) && string(p.raw) != p.want {
				t.Fatalf("ScanV2(%q) field %q, DecodeText %q", data, p.raw, p.want)
			}
		}
		if !bytes.Equal(bytes.TrimSpace(raw.Payload), bytes.TrimSpace(m.Payload)) {
			t.Fatalf("ScanV2(%q) payload %q, DecodeText %q", data, raw.Payload, m.Payload)
		}
	})
}

// refsAreStrings reports whether the refs of a v2 frame that decoded are
// strings or null (DecodeText also takes numbers; ScanV2 does not).
func refsAreStrings(data []byte) bool {
	var parts []json.RawMessage
	if json.Unmarshal(data, &parts) != nil || len(parts) != 5 {
		return false
	}
	for _, p := range parts[:2] {
		if p = bytes.TrimSpace(p); string(p) != "null" && (len(p) == 0 || p[0] != '"') {
			return false
		}
	}
	return true
}

func FuzzDecodeUserBroadcast(f *testing.F) {
	f.Add(AppendUserBroadcast(nil, "realtime:room1", "cursor", nil, EncJSON, []byte(`{"x":42}`)))
	f.Add(AppendUserBroadcast(nil, "t", "bin", []byte(`{"id":"m1"}`), EncBytes, []byte{0, 0xff}))
	f.Add(captureKind3)
	f.Add([]byte{4, 255, 255, 255, 1})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		u, err := DecodeUserBroadcast(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnknownKind) {
				t.Fatalf("DecodeUserBroadcast(%q): error %v", data, err)
			}
			return
		}
		// What the server's encoder writes from the fields is the frame.
		if re := AppendUserBroadcast(nil, string(u.Topic), string(u.Event), u.Meta, u.Enc, u.Payload); !bytes.Equal(re, data) {
			t.Fatalf("DecodeUserBroadcast(%q) = %+v, re-encoded %q", data, u, re)
		}
	})
}
