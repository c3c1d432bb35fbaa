package phx

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

// Realistic text frames (protocol.md), sent through both decoders.
var textSeeds = []string{
	`[null,"9","phoenix","heartbeat",{}]`,
	`["6","6","realtime:room1","phx_join",{"config":{"broadcast":{"self":true,"ack":true},"presence":{"key":"k1","enabled":true},"postgres_changes":[{"event":"INSERT","schema":"public","table":"todos"},{"event":"*","schema":"public","table":"todos","filter":"id=eq.1"}],"private":false},"access_token":"<jwt>","version":"realtime-js/2.119.1"}]`,
	`["6","8","realtime:room1","broadcast",{"type":"broadcast","event":"e","payload":{"a":1}}]`,
	`["6","8","realtime:room1","presence",{"type":"presence","event":"track","payload":{"online_at":"now"}}]`,
	`["6","7","realtime:room1","access_token",{"access_token":"<jwt>"}]`,
	`["6","10","realtime:room1","phx_leave",{}]`,
	`[6,7,"realtime:r\u00e9","e",null]`,
	`[null,null,"realtime:room1","broadcast",{"type":"broadcast","event":"cursor","payload":{"x":42}}]`,
	`{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"9"}`,
	`{"topic":"realtime:room1","event":"phx_join","payload":{"config":{}},"ref":"1","join_ref":"1"}`,
	`{"topic":"realtime:room1","event":"broadcast","payload":{"type":"broadcast","event":"e","payload":{"a":1}},"ref":2}`,
	`{"topic":"t","event":"e"}`,
	`[null,"9",null,"heartbeat",{}]`,
	`[1.5e3,"\ud800","a\"b","\\",[]]`,
	`garbage`,
}

func FuzzDecodeText(f *testing.F) {
	for _, s := range textSeeds {
		f.Add(true, []byte(s))
		f.Add(false, []byte(s))
	}
	f.Fuzz(func(t *testing.T, v2 bool, data []byte) {
		v, other := V1, V2
		if v2 {
			v, other = V2, V1
		}
		m, err := DecodeText(v, data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("DecodeText(%v, %q): error %v is not ErrMalformed", v, data, err)
			}
			return
		}
		if m.Binary || m.UserEvent != "" || m.Meta != nil || m.Enc != 0 {
			t.Fatalf("text frame decoded with binary fields: %+v", m)
		}
		if !json.Valid(m.Payload) {
			t.Fatalf("DecodeText(%v, %q): payload %q is not valid JSON", v, data, m.Payload)
		}
		for _, s := range []string{m.JoinRef, m.Ref, m.Topic, m.Event} {
			if !utf8.ValidString(s) {
				t.Fatalf("DecodeText(%v, %q): field %q is not valid UTF-8", v, data, s)
			}
		}
		// Re-encoding in either version reads back as the same message.
		for _, w := range []Version{v, other} {
			frame := AppendFrame(nil, w, m.JoinRef, m.Ref, m.Topic, m.Event, m.Payload)
			if !json.Valid(frame) {
				t.Fatalf("AppendFrame(%v, %+v) = %q is not valid JSON", w, m, frame)
			}
			m2, err := DecodeText(w, frame)
			if err != nil {
				t.Fatalf("DecodeText(%v, %q) of a re-encoded frame: %v", w, frame, err)
			}
			if !equalMessage(m, m2) {
				t.Fatalf("round trip through %v changed the message:\n in %+v\nout %+v\nframe %q", w, m, m2, frame)
			}
		}
	})
}

func FuzzDecodeBinary(f *testing.F) {
	f.Add(captureKind3)
	f.Add([]byte("\x03\x01\x01\x0e\x06\x10\x01" + "6" + "7" + "realtime:room1" + "cursor" + `{"persist":true}` + `{"x":42}`))
	f.Add([]byte("\x03\x01\x01\x01\x03\x00\x00" + "6" + "7" + "t" + "bin" + "\x00\xff\xfe"))
	f.Add([]byte("\x03\x00\x00\x01\x00\x00\x01" + "t" + `"hi"`))
	f.Add([]byte("\x03\x01\x01\x0c\x04\x00\x01" + "6" + "7" + "realtime:ré" + "😀" + `{}`))
	f.Add([]byte("\x04\x0e\x06\x00\x01" + "realtime:room1" + "cursor" + `{"x":42}`))
	f.Add([]byte{3, 0, 0, 0, 0, 0})
	f.Add([]byte{3, 255, 255, 255, 255, 255, 1})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := DecodeBinary(data)
		if err != nil {
			wantUnknown := len(data) > 0 && data[0] != KindUserBroadcastPush
			if errors.Is(err, ErrUnknownKind) != wantUnknown || (!wantUnknown && !errors.Is(err, ErrMalformed)) {
				t.Fatalf("DecodeBinary(%q): unexpected error %v", data, err)
			}
			return
		}
		if len(data) < 7 || data[0] != KindUserBroadcastPush {
			t.Fatalf("DecodeBinary(%q) accepted a short or non-kind-3 frame", data)
		}
		lens := []int{len(m.JoinRef), len(m.Ref), len(m.Topic), len(m.UserEvent), len(m.Meta)}
		hdr := 7
		for i, n := range lens {
			if n != int(data[1+i]) {
				t.Fatalf("DecodeBinary(%q): field %d has %d bytes, header says %d", data, i, n, data[1+i])
			}
			hdr += n
		}
		if hdr+len(m.Payload) != len(data) {
			t.Fatalf("DecodeBinary(%q): fields and payload take %d bytes of %d", data, hdr+len(m.Payload), len(data))
		}
		if !m.Binary || m.Event != "broadcast" || m.Enc != data[6] || (m.Enc != EncJSON && m.Enc != EncBytes) {
			t.Fatalf("DecodeBinary(%q) = %+v", data, m)
		}
		if (m.Meta == nil) != (data[5] == 0) {
			t.Fatalf("DecodeBinary(%q): meta %q with length byte %d", data, m.Meta, data[5])
		}
		if m.Meta != nil && !json.Valid(m.Meta) {
			t.Fatalf("DecodeBinary(%q): meta %q is not valid JSON", data, m.Meta)
		}
		if m.Enc == EncJSON && !json.Valid(m.Payload) {
			t.Fatalf("DecodeBinary(%q): JSON payload %q is not valid JSON", data, m.Payload)
		}

		// Re-encoding as realtime-js does gives back the input.
		re := []byte{KindUserBroadcastPush, byte(len(m.JoinRef)), byte(len(m.Ref)), byte(len(m.Topic)), byte(len(m.UserEvent)), byte(len(m.Meta)), m.Enc}
		re = append(re, m.JoinRef...)
		re = append(re, m.Ref...)
		re = append(re, m.Topic...)
		re = append(re, m.UserEvent...)
		re = append(re, m.Meta...)
		re = append(re, m.Payload...)
		if !bytes.Equal(re, data) {
			t.Fatalf("re-encoded %q as %q", data, re)
		}

		// Relayed as kind 4, realtime-js reads the same broadcast (it
		// decodes names as UTF-8, so only valid names compare equal).
		if !utf8.ValidString(m.Topic) || !utf8.ValidString(m.UserEvent) {
			return
		}
		out := AppendUserBroadcast(nil, m.Topic, m.UserEvent, m.Meta, m.Enc, m.Payload)
		js, ok := jsDecodeUserBroadcast(out)
		if !ok {
			t.Fatalf("realtime-js decoder rejects relayed frame %q", out)
		}
		if js.topic != m.Topic || js.event != m.UserEvent || !bytes.Equal(js.meta, m.Meta) || js.enc != m.Enc || !bytes.Equal(js.payload, m.Payload) {
			t.Fatalf("relayed %+v, realtime-js reads %+v", m, js)
		}
	})
}

func FuzzAppendString(f *testing.F) {
	for _, s := range []string{
		"", "realtime:room1", "phx_reply", `a"b\c`, "\x00\x1f\x7f", "\n\r\t\b\f",
		"é日本😀", "\u2028\u2029", "\uFFFD", "\xff", "a\xe2\x82b", "\xed\xa0\x80", "<>&",
		"Unauthorized: You do not have permissions to read from this Channel topic: room1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := AppendString(nil, s)
		if !json.Valid(out) {
			t.Fatalf("AppendString(%q) = %q is not valid JSON", s, out)
		}
		if !utf8.Valid(out) {
			t.Fatalf("AppendString(%q) = %q is not valid UTF-8", s, out)
		}
		// Nothing JavaScript chokes on is left raw.
		if i := bytes.IndexFunc(out, func(r rune) bool { return r < 0x20 || r == '\u2028' || r == '\u2029' }); i >= 0 {
			t.Fatalf("AppendString(%q) = %q has a raw control or line separator at %d", s, out, i)
		}
		var got string
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("json.Unmarshal(%q): %v", out, err)
		}
		if utf8.ValidString(s) && got != s {
			t.Fatalf("AppendString(%q) decodes to %q", s, got)
		}
		if want := string([]rune(s)); got != want {
			t.Fatalf("AppendString(%q) decodes to %q, want %q", s, got, want)
		}
		if p := AppendString([]byte("pre"), s); !strings.HasPrefix(string(p), "pre") || string(p[3:]) != string(out) {
			t.Fatalf("AppendString with a prefix = %q, want %q", p, "pre"+string(out))
		}
	})
}
