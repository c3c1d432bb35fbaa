package phx

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestAppendFrame(t *testing.T) {
	tests := []struct {
		name                       string
		v                          Version
		joinRef, ref, topic, event string
		payload                    string
		want                       string
	}{
		{
			name: "v2 heartbeat reply", v: V2, ref: "9", topic: "phoenix", event: "phx_reply",
			payload: `{"status":"ok","response":{}}`,
			want:    `[null,"9","phoenix","phx_reply",{"status":"ok","response":{}}]`,
		},
		{
			name: "v2 join reply", v: V2, joinRef: "6", ref: "6", topic: "realtime:room1", event: "phx_reply",
			payload: `{"status":"ok","response":{"postgres_changes":[]}}`,
			want:    `["6","6","realtime:room1","phx_reply",{"status":"ok","response":{"postgres_changes":[]}}]`,
		},
		{
			name: "v2 presence_state has join_ref and null ref", v: V2, joinRef: "6", topic: "realtime:room1", event: "presence_state",
			payload: `{"k1":{"metas":[{"phx_ref":"F2b1x","online_at":"now"}]}}`,
			want:    `["6",null,"realtime:room1","presence_state",{"k1":{"metas":[{"phx_ref":"F2b1x","online_at":"now"}]}}]`,
		},
		{
			name: "v2 fan-out has null refs", v: V2, topic: "realtime:room1", event: "postgres_changes",
			payload: `{"ids":[1]}`,
			want:    `[null,null,"realtime:room1","postgres_changes",{"ids":[1]}]`,
		},
		{
			name: "v2 strings are escaped", v: V2, joinRef: `j"1`, ref: `r\1`, topic: "realtime:a\"b\n", event: "é\u2028",
			payload: `{}`,
			want:    `["j\"1","r\\1","realtime:a\"b\n","é\u2028",{}]`,
		},
		{
			name: "v1 heartbeat reply", v: V1, ref: "9", topic: "phoenix", event: "phx_reply",
			payload: `{"status":"ok","response":{}}`,
			want:    `{"topic":"phoenix","event":"phx_reply","payload":{"status":"ok","response":{}},"ref":"9"}`,
		},
		{
			name: "v1 with join_ref", v: V1, joinRef: "6", ref: "6", topic: "realtime:room1", event: "phx_close",
			payload: `{}`,
			want:    `{"topic":"realtime:room1","event":"phx_close","payload":{},"ref":"6","join_ref":"6"}`,
		},
		{
			name: "v1 null ref", v: V1, topic: "realtime:room1", event: "system",
			payload: `{"status":"ok"}`,
			want:    `{"topic":"realtime:room1","event":"system","payload":{"status":"ok"},"ref":null}`,
		},
		{
			name: "v1 join_ref without ref", v: V1, joinRef: "6", topic: "t", event: "presence_diff",
			payload: `{"joins":{},"leaves":{}}`,
			want:    `{"topic":"t","event":"presence_diff","payload":{"joins":{},"leaves":{}},"ref":null,"join_ref":"6"}`,
		},
		{
			name: "v1 strings are escaped", v: V1, ref: "\x01", topic: "a\\b", event: "\t",
			payload: `null`,
			want:    `{"topic":"a\\b","event":"\t","payload":null,"ref":"\u0001"}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := AppendFrame(nil, tt.v, tt.joinRef, tt.ref, tt.topic, tt.event, []byte(tt.payload))
			if string(got) != tt.want {
				t.Fatalf("AppendFrame\n got %s\nwant %s", got, tt.want)
			}
			// The frame must read back as what was written.
			m, err := DecodeText(tt.v, got)
			if err != nil {
				t.Fatalf("DecodeText(%s): %v", got, err)
			}
			want := Message{JoinRef: tt.joinRef, Ref: tt.ref, Topic: tt.topic, Event: tt.event, Payload: json.RawMessage(tt.payload)}
			if !equalMessage(m, want) {
				t.Errorf("DecodeText(%s)\n got %+v\nwant %+v", got, m, want)
			}
		})
	}
}

func TestAppendFrameKeepsPrefix(t *testing.T) {
	dst := []byte("prefix")
	got := AppendFrame(dst, V2, "", "9", "phoenix", "phx_reply", []byte(`{}`))
	if want := `prefix[null,"9","phoenix","phx_reply",{}]`; string(got) != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

func TestAppendReply(t *testing.T) {
	tests := []struct {
		name string
		got  []byte
		want string
	}{
		{
			name: "v2 heartbeat",
			got:  AppendReply(nil, V2, "", "9", "phoenix", "ok", []byte(`{}`)),
			want: `[null,"9","phoenix","phx_reply",{"status":"ok","response":{}}]`,
		},
		{
			name: "v1 heartbeat",
			got:  AppendReply(nil, V1, "", "9", "phoenix", "ok", []byte(`{}`)),
			want: `{"topic":"phoenix","event":"phx_reply","payload":{"status":"ok","response":{}},"ref":"9"}`,
		},
		{
			name: "v2 refused join",
			got: AppendReply(nil, V2, "6", "6", "realtime:room1", "error",
				ReasonPayload("Unauthorized: You do not have permissions to read from this Channel topic: room1")),
			want: `["6","6","realtime:room1","phx_reply",{"status":"error","response":{"reason":"Unauthorized: You do not have permissions to read from this Channel topic: room1"}}]`,
		},
		{
			name: "v2 oversized broadcast ack",
			got:  AppendReply(nil, V2, "6", "8", "realtime:room1", "error", []byte(`"payload_size_exceeded"`)),
			want: `["6","8","realtime:room1","phx_reply",{"status":"error","response":"payload_size_exceeded"}]`,
		},
	}
	for _, tt := range tests {
		if string(tt.got) != tt.want {
			t.Errorf("%s:\n got %s\nwant %s", tt.name, tt.got, tt.want)
		}
	}
	if got, want := string(ReplyPayload(`o"k`, []byte(`[]`))), `{"status":"o\"k","response":[]}`; got != want {
		t.Errorf("ReplyPayload = %s, want %s", got, want)
	}
	if got, want := string(ReasonPayload("unmatched topic")), `{"reason":"unmatched topic"}`; got != want {
		t.Errorf("ReasonPayload = %s, want %s", got, want)
	}
	if got, want := string(ReasonPayload("a\"\n")), `{"reason":"a\"\n"}`; got != want {
		t.Errorf("ReasonPayload = %s, want %s", got, want)
	}
}

func TestAppendBroadcast(t *testing.T) {
	tests := []struct {
		name          string
		v             Version
		topic, event  string
		payload, meta string
		want          string
	}{
		{
			name: "v2", v: V2, topic: "realtime:room1", event: "cursor", payload: `{"x":42}`,
			want: `[null,null,"realtime:room1","broadcast",{"type":"broadcast","event":"cursor","payload":{"x":42}}]`,
		},
		{
			name: "v2 with meta", v: V2, topic: "realtime:room1", event: "cursor", payload: `{"x":42}`, meta: `{"replayed":true,"id":"m1"}`,
			want: `[null,null,"realtime:room1","broadcast",{"type":"broadcast","event":"cursor","payload":{"x":42},"meta":{"replayed":true,"id":"m1"}}]`,
		},
		{
			name: "v1", v: V1, topic: "realtime:room1", event: "cursor", payload: `{"x":42}`,
			want: `{"topic":"realtime:room1","event":"broadcast","payload":{"type":"broadcast","event":"cursor","payload":{"x":42}},"ref":null}`,
		},
		{
			name: "v1 with meta", v: V1, topic: "realtime:room1", event: "e", payload: `[1]`, meta: `{"id":"m1"}`,
			want: `{"topic":"realtime:room1","event":"broadcast","payload":{"type":"broadcast","event":"e","payload":[1],"meta":{"id":"m1"}},"ref":null}`,
		},
		{
			name: "escaped names", v: V2, topic: "realtime:\"q\"", event: "a\\b\u2029", payload: `"s"`,
			want: `[null,null,"realtime:\"q\"","broadcast",{"type":"broadcast","event":"a\\b\u2029","payload":"s"}]`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := AppendBroadcast(nil, tt.v, tt.topic, tt.event, []byte(tt.payload), []byte(tt.meta))
			if string(got) != tt.want {
				t.Fatalf("AppendBroadcast\n got %s\nwant %s", got, tt.want)
			}
			m, err := DecodeText(tt.v, got)
			if err != nil {
				t.Fatalf("DecodeText(%s): %v", got, err)
			}
			if m.JoinRef != "" || m.Ref != "" || m.Topic != tt.topic || m.Event != "broadcast" {
				t.Errorf("DecodeText = %+v", m)
			}
			b, err := DecodeBroadcast(m.Payload)
			if err != nil {
				t.Fatal(err)
			}
			if b.Type != "broadcast" || b.Event != tt.event || string(b.Payload) != tt.payload {
				t.Errorf("DecodeBroadcast = %+v", b)
			}
			// The standalone payload is the same object.
			if p := AppendBroadcastPayload(nil, tt.event, []byte(tt.payload), []byte(tt.meta)); !bytes.Equal(p, m.Payload) {
				t.Errorf("AppendBroadcastPayload = %s, frame carries %s", p, m.Payload)
			}
		})
	}
}

func TestAppendUserBroadcast(t *testing.T) {
	tests := []struct {
		name         string
		topic, event string
		meta         string
		enc          byte
		payload      string
		want         string
	}{
		{
			name: "json", topic: "realtime:room1", event: "cursor", enc: EncJSON, payload: `{"x":42}`,
			want: "\x04\x0e\x06\x00\x01" + "realtime:room1" + "cursor" + `{"x":42}`,
		},
		{
			name: "json with meta", topic: "t", event: "e", meta: `{"id":"m1"}`, enc: EncJSON, payload: `[]`,
			want: "\x04\x01\x01\x0b\x01" + "t" + "e" + `{"id":"m1"}` + `[]`,
		},
		{
			name: "bytes", topic: "t", event: "bin", enc: EncBytes, payload: "\x00\xff",
			want: "\x04\x01\x03\x00\x00" + "t" + "bin" + "\x00\xff",
		},
		{
			name: "empty payload", topic: "t", event: "", enc: EncBytes,
			want: "\x04\x01\x00\x00\x00" + "t",
		},
		{
			name: "multi-byte names count bytes", topic: "realtime:ré", event: "😀", enc: EncJSON, payload: `1`,
			want: "\x04\x0c\x04\x00\x01" + "realtime:ré" + "😀" + `1`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := AppendUserBroadcast(nil, tt.topic, tt.event, []byte(tt.meta), tt.enc, []byte(tt.payload))
			if string(got) != tt.want {
				t.Fatalf("AppendUserBroadcast\n got %q\nwant %q", got, tt.want)
			}
			f, ok := jsDecodeUserBroadcast(got)
			if !ok {
				t.Fatalf("realtime-js decoder rejects %q", got)
			}
			if f.topic != tt.topic || f.event != tt.event || string(f.meta) != tt.meta || f.enc != tt.enc || string(f.payload) != tt.payload {
				t.Errorf("realtime-js decoder reads %+v", f)
			}
		})
	}
}

// A kind-3 push relayed as kind 4 keeps topic, event, meta and payload.
func TestRelayKind3AsKind4(t *testing.T) {
	m, err := DecodeBinary(captureKind3)
	if err != nil {
		t.Fatal(err)
	}
	got := AppendUserBroadcast(nil, m.Topic, m.UserEvent, m.Meta, m.Enc, m.Payload)
	want := "\x04\x0e\x06\x00\x01" + "realtime:room1" + "cursor" + `{"x":42,"s":"é"}`
	if string(got) != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestAppendUserBroadcastLimits(t *testing.T) {
	s255 := strings.Repeat("a", 255)
	s256 := strings.Repeat("b", 256)
	meta255 := `{"id":"` + strings.Repeat("m", 255-9) + `"}`
	meta256 := `{"id":"` + strings.Repeat("m", 256-9) + `"}`

	tests := []struct {
		name                 string
		topic, event, meta   string
		canBinary            bool
		wantTopic, wantEvent string
		wantMeta             string
	}{
		{name: "at the limit", topic: s255, event: s255, meta: meta255, canBinary: true,
			wantTopic: s255, wantEvent: s255, wantMeta: meta255},
		{name: "long topic is clipped", topic: s256, event: "e", canBinary: false,
			wantTopic: s256[:255], wantEvent: "e"},
		{name: "long event is clipped", topic: "t", event: s256, canBinary: false,
			wantTopic: "t", wantEvent: s256[:255]},
		{name: "long meta is dropped, not cut", topic: "t", event: "e", meta: meta256, canBinary: false,
			wantTopic: "t", wantEvent: "e"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := CanBinary(tt.topic, tt.event, []byte(tt.meta)); got != tt.canBinary {
				t.Errorf("CanBinary = %v, want %v", got, tt.canBinary)
			}
			frame := AppendUserBroadcast(nil, tt.topic, tt.event, []byte(tt.meta), EncJSON, []byte(`{"p":1}`))
			f, ok := jsDecodeUserBroadcast(frame)
			if !ok {
				t.Fatalf("realtime-js decoder rejects the frame")
			}
			if f.topic != tt.wantTopic || f.event != tt.wantEvent || string(f.meta) != tt.wantMeta || string(f.payload) != `{"p":1}` {
				t.Errorf("realtime-js decoder reads topic %d bytes, event %d bytes, meta %q, payload %q",
					len(f.topic), len(f.event), f.meta, f.payload)
			}
		})
	}
}

func TestAppendUserBroadcastKeepsPrefix(t *testing.T) {
	got := AppendUserBroadcast([]byte{0xAA}, "t", "e", nil, EncJSON, []byte(`{}`))
	if want := "\xaa\x04\x01\x01\x00\x01te{}"; string(got) != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// jsFrame is what realtime-js 2.119.1's Serializer._decodeUserBroadcast
// extracts from a kind-4 frame.
type jsFrame struct {
	topic, event string
	meta         []byte
	enc          byte
	payload      []byte
}

// jsDecodeUserBroadcast follows Serializer._decodeUserBroadcast: u8 4,
// u8 topic len, u8 event len, u8 meta len, u8 enc, then topic, event, meta
// and the payload as the rest. It is stricter than the JavaScript (which
// clamps out-of-range slices): any overrun, a non-UTF-8 name, invalid JSON
// where realtime-js calls JSON.parse, or an unknown kind fails.
func jsDecodeUserBroadcast(buf []byte) (jsFrame, bool) {
	if len(buf) < 5 || buf[0] != KindUserBroadcast {
		return jsFrame{}, false
	}
	topicSize, eventSize, metaSize := int(buf[1]), int(buf[2]), int(buf[3])
	f := jsFrame{enc: buf[4]}
	off := 5
	if len(buf)-off < topicSize+eventSize+metaSize {
		return jsFrame{}, false
	}
	topic := buf[off : off+topicSize]
	off += topicSize
	event := buf[off : off+eventSize]
	off += eventSize
	meta := buf[off : off+metaSize]
	off += metaSize
	if !utf8.Valid(topic) || !utf8.Valid(event) {
		return jsFrame{}, false
	}
	f.topic, f.event, f.payload = string(topic), string(event), buf[off:]
	if f.enc == EncJSON && !json.Valid(f.payload) {
		return jsFrame{}, false
	}
	if metaSize > 0 {
		if !json.Valid(meta) {
			return jsFrame{}, false
		}
		f.meta = meta
	}
	return f, true
}

func TestAppendStringExact(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", `""`},
		{"abc", `"abc"`},
		{`a"b\c`, `"a\"b\\c"`},
		{"\n\r\t", `"\n\r\t"`},
		{"\x00\x01\x1f", `"\u0000\u0001\u001f"`},
		{"\b\f", `"\u0008\u000c"`},
		{"\x7f", "\"\x7f\""},
		{"/<>&'", `"/<>&'"`},
		{"é日本😀", `"é日本😀"`},
		{"\u2028\u2029", `"\u2028\u2029"`},
		{"a\u2028b", `"a\u2028b"`},
		{"\u2027\u202a", "\"\u2027\u202a\""},
		{"\uFFFD", "\"\uFFFD\""},
		{"\xff", `"\ufffd"`},
		{"a\xffb", `"a\ufffdb"`},
		{"\xe2\x82", `"\ufffd\ufffd"`},
		{"\xed\xa0\x80", `"\ufffd\ufffd\ufffd"`},
		{"\xc0\xaf", `"\ufffd\ufffd"`},
		{"\xf4\x90\x80\x80", `"\ufffd\ufffd\ufffd\ufffd"`},
		{"ok\xe2\x82\xacend", `"ok€end"`},
	}
	for _, tt := range tests {
		if got := string(AppendString(nil, tt.in)); got != tt.want {
			t.Errorf("AppendString(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

// AppendString must agree with encoding/json on what every string means:
// the output is valid JSON, decodes to the input with each invalid UTF-8
// byte replaced by U+FFFD, and decodes to what json.Marshal's output
// decodes to.
func TestAppendStringMatchesEncodingJSON(t *testing.T) {
	inputs := []string{
		"", " ", "phoenix", "realtime:room1", "realtime:a:b:c", "phx_reply",
		`"`, `\`, `\"`, `"\`, `\\u0000`, `\u2028`, "/",
		"<script>alert(1)</script>", "a&b", "'", "`",
		"\u007f", "\u0080", "\u00ff", "\u07ff", "\u0800", "\ud7ff", "\ue000", "\uffff", "\U00010000", "\U0010ffff",
		"\u2028", "\u2029", "x\u2028y\u2029z", "\u200b\ufeff",
		"\xff", "\xfe\xff", "\x80", "\xbf", "\xc2", "\xc2\x7f", "\xe0\x80\x80", "\xed\xbf\xbf",
		"\xf0\x9f\x98", "\xf0\x9f\x98\x80", "\xf8\x88\x80\x80\x80", "a\xc3", "\xc3(", "é\xffé",
	}
	for c := 0; c < 0x80; c++ {
		inputs = append(inputs, string(rune(c)), "a"+string(rune(c))+"b")
	}
	for _, s := range inputs {
		out := AppendString(nil, s)
		if !json.Valid(out) {
			t.Errorf("AppendString(%q) = %s is not valid JSON", s, out)
			continue
		}
		if !utf8.Valid(out) {
			t.Errorf("AppendString(%q) = %q is not valid UTF-8", s, out)
		}
		var got string
		if err := json.Unmarshal(out, &got); err != nil {
			t.Errorf("json.Unmarshal(AppendString(%q)): %v", s, err)
			continue
		}
		if want := string([]rune(s)); got != want {
			t.Errorf("AppendString(%q) decodes to %q, want %q", s, got, want)
		}
		std, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		var viaStd string
		if err := json.Unmarshal(std, &viaStd); err != nil {
			t.Fatal(err)
		}
		if got != viaStd {
			t.Errorf("AppendString(%q) decodes to %q, encoding/json's to %q", s, got, viaStd)
		}
	}
}
