package phx

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// captureKind3 is the kind-3 frame supabase-js 2.119.1 sends for
// channel.send({type:"broadcast",event:"cursor",payload:{x:42,s:"é"}})
// (protocol.md §1).
var captureKind3 = []byte("\x03\x01\x01\x0e\x06\x00\x01" + "6" + "7" + "realtime:room1" + "cursor" + "" + `{"x":42,"s":"é"}`)

func TestParseVersion(t *testing.T) {
	tests := []struct {
		vsn     string
		want    Version
		wantErr bool
	}{
		{vsn: "", want: V1},
		{vsn: "1.0.0", want: V1},
		{vsn: "2.0.0", want: V2},
		{vsn: "2.0", wantErr: true},
		{vsn: "3.0.0", wantErr: true},
		{vsn: "1.0", wantErr: true},
		{vsn: " 2.0.0", wantErr: true},
		{vsn: "2.0.0 ", wantErr: true},
		{vsn: "v2", wantErr: true},
		{vsn: "2", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseVersion(tt.vsn)
		if tt.wantErr {
			if err == nil {
				t.Errorf("ParseVersion(%q) = %v, want error", tt.vsn, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseVersion(%q) = %v, %v; want %v", tt.vsn, got, err, tt.want)
		}
	}
}

func TestDecodeTextV2(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Message
	}{
		{
			name: "heartbeat",
			in:   `[null,"9","phoenix","heartbeat",{}]`,
			want: Message{Ref: "9", Topic: "phoenix", Event: "heartbeat", Payload: json.RawMessage(`{}`)},
		},
		{
			name: "join capture",
			in:   `["6","6","realtime:room1","phx_join",{"config":{"broadcast":{"self":true,"ack":true},"private":false},"version":"realtime-js/2.119.1"}]`,
			want: Message{JoinRef: "6", Ref: "6", Topic: "realtime:room1", Event: "phx_join",
				Payload: json.RawMessage(`{"config":{"broadcast":{"self":true,"ack":true},"private":false},"version":"realtime-js/2.119.1"}`)},
		},
		{
			name: "text broadcast",
			in:   `["6","8","realtime:room1","broadcast",{"type":"broadcast","event":"e","payload":{"a":1}}]`,
			want: Message{JoinRef: "6", Ref: "8", Topic: "realtime:room1", Event: "broadcast",
				Payload: json.RawMessage(`{"type":"broadcast","event":"e","payload":{"a":1}}`)},
		},
		{
			name: "both refs null",
			in:   `[null,null,"realtime:room1","access_token",{"access_token":"x"}]`,
			want: Message{Topic: "realtime:room1", Event: "access_token", Payload: json.RawMessage(`{"access_token":"x"}`)},
		},
		{
			name: "numeric refs",
			in:   `[6,7,"realtime:room1","phx_leave",{}]`,
			want: Message{JoinRef: "6", Ref: "7", Topic: "realtime:room1", Event: "phx_leave", Payload: json.RawMessage(`{}`)},
		},
		{
			name: "non-integer and negative numeric refs keep their text",
			in:   `[1.5,-2e3,"t","e",{}]`,
			want: Message{JoinRef: "1.5", Ref: "-2e3", Topic: "t", Event: "e", Payload: json.RawMessage(`{}`)},
		},
		{
			name: "empty string refs",
			in:   `["","","t","e",{}]`,
			want: Message{Topic: "t", Event: "e", Payload: json.RawMessage(`{}`)},
		},
		{
			name: "whitespace between elements",
			in:   " [ null ,\n\"1\" ,\t\"t\" , \"e\" , { } ] ",
			want: Message{Ref: "1", Topic: "t", Event: "e", Payload: json.RawMessage(`{ }`)},
		},
		{
			name: "escaped strings",
			in:   `["a\"b","\u0031","realtime:r\u00e9\ud83d\ude00","ev\\ent",{}]`,
			want: Message{JoinRef: `a"b`, Ref: "1", Topic: "realtime:ré😀", Event: `ev\ent`, Payload: json.RawMessage(`{}`)},
		},
		{
			name: "null payload",
			in:   `[null,null,"t","e",null]`,
			want: Message{Topic: "t", Event: "e", Payload: json.RawMessage(`null`)},
		},
		{
			name: "non-object payload is kept for the caller to judge",
			in:   `[null,"1","t","e",[1,"x"]]`,
			want: Message{Ref: "1", Topic: "t", Event: "e", Payload: json.RawMessage(`[1,"x"]`)},
		},
		{
			name: "empty topic and event strings",
			in:   `[null,null,"","",{}]`,
			want: Message{Payload: json.RawMessage(`{}`)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeText(V2, []byte(tt.in))
			if err != nil {
				t.Fatalf("DecodeText(V2, %s): %v", tt.in, err)
			}
			if !equalMessage(got, tt.want) {
				t.Errorf("DecodeText(V2, %s)\n got %+v\nwant %+v", tt.in, got, tt.want)
			}
		})
	}
}

func TestDecodeTextV2Malformed(t *testing.T) {
	tests := []struct{ name, in string }{
		{"empty input", ``},
		{"whitespace only", `   `},
		{"garbage", `hello`},
		{"truncated", `[null,"9","phoenix"`},
		{"trailing garbage", `[null,"9","phoenix","heartbeat",{}]x`},
		{"two frames", `[null,"9","phoenix","heartbeat",{}][null,"9","phoenix","heartbeat",{}]`},
		{"top-level null", `null`},
		{"top-level string", `"phoenix"`},
		{"v1 object", `{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"9"}`},
		{"no elements", `[]`},
		{"four elements", `[null,"9","phoenix","heartbeat"]`},
		{"six elements", `[null,"9","phoenix","heartbeat",{},{}]`},
		{"numeric topic", `[null,"9",42,"heartbeat",{}]`},
		{"null topic", `[null,"9",null,"heartbeat",{}]`},
		{"object topic", `[null,"9",{"t":1},"heartbeat",{}]`},
		{"array topic", `[null,"9",["phoenix"],"heartbeat",{}]`},
		{"boolean event", `[null,"9","phoenix",true,{}]`},
		{"null event", `[null,"9","phoenix",null,{}]`},
		{"numeric event", `[null,"9","phoenix",1,{}]`},
		{"boolean join_ref", `[true,"9","phoenix","heartbeat",{}]`},
		{"object ref", `[null,{},"phoenix","heartbeat",{}]`},
		{"array ref", `[null,["9"],"phoenix","heartbeat",{}]`},
		{"invalid escape in topic", `[null,"9","pho\xnix","heartbeat",{}]`},
		{"invalid escape in ref", `[null,"\q","phoenix","heartbeat",{}]`},
		{"unquoted key in payload", `[null,"9","phoenix","heartbeat",{a:1}]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeText(V2, []byte(tt.in))
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("DecodeText(V2, %q) = %+v, %v; want ErrMalformed", tt.in, got, err)
			}
			if !equalMessage(got, Message{}) {
				t.Errorf("DecodeText(V2, %q) returned a non-zero Message with an error: %+v", tt.in, got)
			}
		})
	}
}

func TestDecodeTextV1(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Message
	}{
		{
			name: "heartbeat",
			in:   `{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"9"}`,
			want: Message{Ref: "9", Topic: "phoenix", Event: "heartbeat", Payload: json.RawMessage(`{}`)},
		},
		{
			name: "join with join_ref",
			in:   `{"topic":"realtime:room1","event":"phx_join","payload":{"config":{}},"ref":"6","join_ref":"6"}`,
			want: Message{JoinRef: "6", Ref: "6", Topic: "realtime:room1", Event: "phx_join", Payload: json.RawMessage(`{"config":{}}`)},
		},
		{
			name: "key order does not matter",
			in:   `{"join_ref":"3","payload":{"a":[1,2]},"ref":"4","event":"broadcast","topic":"realtime:x"}`,
			want: Message{JoinRef: "3", Ref: "4", Topic: "realtime:x", Event: "broadcast", Payload: json.RawMessage(`{"a":[1,2]}`)},
		},
		{
			name: "numeric refs",
			in:   `{"topic":"t","event":"e","payload":{},"ref":7,"join_ref":6}`,
			want: Message{JoinRef: "6", Ref: "7", Topic: "t", Event: "e", Payload: json.RawMessage(`{}`)},
		},
		{
			name: "null refs",
			in:   `{"topic":"t","event":"e","payload":{},"ref":null,"join_ref":null}`,
			want: Message{Topic: "t", Event: "e", Payload: json.RawMessage(`{}`)},
		},
		{
			name: "missing refs",
			in:   `{"topic":"t","event":"e","payload":{}}`,
			want: Message{Topic: "t", Event: "e", Payload: json.RawMessage(`{}`)},
		},
		{
			name: "missing payload becomes null",
			in:   `{"topic":"t","event":"e","ref":"1"}`,
			want: Message{Ref: "1", Topic: "t", Event: "e", Payload: json.RawMessage(`null`)},
		},
		{
			name: "null payload",
			in:   `{"topic":"t","event":"e","payload":null,"ref":"1"}`,
			want: Message{Ref: "1", Topic: "t", Event: "e", Payload: json.RawMessage(`null`)},
		},
		{
			name: "unknown keys are ignored",
			in:   `{"topic":"t","event":"e","payload":{},"ref":"1","extra":{"deep":[1,{"x":null}]},"n":1}`,
			want: Message{Ref: "1", Topic: "t", Event: "e", Payload: json.RawMessage(`{}`)},
		},
		{
			name: "escaped strings",
			in:   `{"topic":"realtime:r\u00e9","event":"a\"b","payload":{},"ref":"\u0039"}`,
			want: Message{Ref: "9", Topic: "realtime:ré", Event: `a"b`, Payload: json.RawMessage(`{}`)},
		},
		{
			name: "whitespace",
			in:   "\n{ \"topic\" : \"t\" , \"event\" : \"e\" , \"payload\" : [ 1 ] }\n",
			want: Message{Topic: "t", Event: "e", Payload: json.RawMessage(`[ 1 ]`)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeText(V1, []byte(tt.in))
			if err != nil {
				t.Fatalf("DecodeText(V1, %s): %v", tt.in, err)
			}
			if !equalMessage(got, tt.want) {
				t.Errorf("DecodeText(V1, %s)\n got %+v\nwant %+v", tt.in, got, tt.want)
			}
		})
	}
}

func TestDecodeTextV1Malformed(t *testing.T) {
	tests := []struct{ name, in string }{
		{"empty input", ``},
		{"garbage", `hello`},
		{"truncated", `{"topic":"phoenix","event":"heartbeat"`},
		{"trailing garbage", `{"topic":"t","event":"e"} x`},
		{"top-level null", `null`},
		{"v2 array", `[null,"9","phoenix","heartbeat",{}]`},
		{"missing topic", `{"event":"heartbeat","payload":{},"ref":"9"}`},
		{"missing event", `{"topic":"phoenix","payload":{},"ref":"9"}`},
		{"empty object", `{}`},
		{"null topic", `{"topic":null,"event":"e"}`},
		{"null event", `{"topic":"t","event":null}`},
		{"numeric topic", `{"topic":1,"event":"e"}`},
		{"object event", `{"topic":"t","event":{}}`},
		{"boolean ref", `{"topic":"t","event":"e","ref":false}`},
		{"object join_ref", `{"topic":"t","event":"e","join_ref":{"a":1}}`},
		{"array ref", `{"topic":"t","event":"e","ref":[1]}`},
		{"invalid payload", `{"topic":"t","event":"e","payload":{a}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeText(V1, []byte(tt.in))
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("DecodeText(V1, %q) = %+v, %v; want ErrMalformed", tt.in, got, err)
			}
			if !equalMessage(got, Message{}) {
				t.Errorf("DecodeText(V1, %q) returned a non-zero Message with an error: %+v", tt.in, got)
			}
		})
	}
}

func TestDecodeBinary(t *testing.T) {
	long := strings.Repeat("x", 255)
	tests := []struct {
		name string
		in   []byte
		want Message
	}{
		{
			name: "capture",
			in:   captureKind3,
			want: Message{JoinRef: "6", Ref: "7", Topic: "realtime:room1", Event: "broadcast", UserEvent: "cursor",
				Binary: true, Enc: EncJSON, Payload: json.RawMessage(`{"x":42,"s":"é"}`)},
		},
		{
			// realtime-js 2.119.1 keeps only the whitelisted persist key in meta.
			name: "realtime-js persist meta",
			in:   []byte("\x03\x01\x01\x0e\x06\x10\x01" + "6" + "7" + "realtime:room1" + "cursor" + `{"persist":true}` + `{"x":42}`),
			want: Message{JoinRef: "6", Ref: "7", Topic: "realtime:room1", Event: "broadcast", UserEvent: "cursor",
				Meta: []byte(`{"persist":true}`), Binary: true, Enc: EncJSON, Payload: json.RawMessage(`{"x":42}`)},
		},
		{
			name: "persist meta",
			in:   []byte("\x03\x01\x02\x01\x01\x10\x01" + "6" + "12" + "t" + "e" + `{"persist":true}` + `[1,2]`),
			want: Message{JoinRef: "6", Ref: "12", Topic: "t", Event: "broadcast", UserEvent: "e",
				Meta: []byte(`{"persist":true}`), Binary: true, Enc: EncJSON, Payload: json.RawMessage(`[1,2]`)},
		},
		{
			name: "raw bytes payload is not validated",
			in:   []byte("\x03\x01\x01\x01\x03\x00\x00" + "6" + "7" + "t" + "bin" + "\x00\xff\xfe{"),
			want: Message{JoinRef: "6", Ref: "7", Topic: "t", Event: "broadcast", UserEvent: "bin",
				Binary: true, Enc: EncBytes, Payload: json.RawMessage("\x00\xff\xfe{")},
		},
		{
			name: "empty raw bytes payload",
			in:   []byte("\x03\x01\x01\x01\x01\x00\x00" + "6" + "7" + "t" + "e"),
			want: Message{JoinRef: "6", Ref: "7", Topic: "t", Event: "broadcast", UserEvent: "e",
				Binary: true, Enc: EncBytes, Payload: json.RawMessage{}},
		},
		{
			name: "empty refs and user event",
			in:   []byte("\x03\x00\x00\x01\x00\x00\x01" + "t" + `"hi"`),
			want: Message{Topic: "t", Event: "broadcast", Binary: true, Enc: EncJSON, Payload: json.RawMessage(`"hi"`)},
		},
		{
			name: "multi-byte topic and event",
			in:   []byte("\x03\x01\x01\x0c\x04\x00\x01" + "6" + "7" + "realtime:ré" + "😀" + `{}`),
			want: Message{JoinRef: "6", Ref: "7", Topic: "realtime:ré", Event: "broadcast", UserEvent: "😀",
				Binary: true, Enc: EncJSON, Payload: json.RawMessage(`{}`)},
		},
		{
			name: "255-byte fields",
			in:   []byte("\x03\xff\xff\xff\xff\x00\x01" + long + long + long + long + `{}`),
			want: Message{JoinRef: long, Ref: long, Topic: long, Event: "broadcast", UserEvent: long,
				Binary: true, Enc: EncJSON, Payload: json.RawMessage(`{}`)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeBinary(tt.in)
			if err != nil {
				t.Fatalf("DecodeBinary(%q): %v", tt.in, err)
			}
			if !equalMessage(got, tt.want) {
				t.Errorf("DecodeBinary(%q)\n got %+v\nwant %+v", tt.in, got, tt.want)
			}
		})
	}
}

func TestDecodeBinaryMalformed(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrMalformed},
		{"kind 4 from a client", []byte("\x04\x01\x06\x00\x01" + "t" + "cursor" + `{}`), ErrUnknownKind},
		{"kind 0", []byte{0, 0, 0, 0, 0, 0, 1}, ErrUnknownKind},
		{"kind 2", []byte{2}, ErrUnknownKind},
		{"kind 255", []byte{255, 0, 0, 0, 0, 0, 1, '{', '}'}, ErrUnknownKind},
		{"kind only", []byte{3}, ErrMalformed},
		{"header one byte short", []byte{3, 0, 0, 0, 0, 0}, ErrMalformed},
		{"enc 2", []byte("\x03\x00\x00\x01\x00\x00\x02" + "t" + "{}"), ErrMalformed},
		{"enc 255", []byte("\x03\x00\x00\x01\x00\x00\xff" + "t" + "{}"), ErrMalformed},
		{"join_ref overruns", []byte("\x03\x05\x00\x00\x00\x00\x00" + "abc"), ErrMalformed},
		{"topic overruns", []byte("\x03\x01\x01\xff\x06\x00\x01" + "6" + "7" + "realtime:room1" + "cursor" + `{}`), ErrMalformed},
		{"meta overruns", []byte("\x03\x00\x00\x01\x01\x10\x01" + "t" + "e" + `{"a":1}`), ErrMalformed},
		{"invalid JSON payload", []byte("\x03\x01\x01\x01\x01\x00\x01" + "6" + "7" + "t" + "e" + `{"x":`), ErrMalformed},
		{"empty JSON payload", []byte("\x03\x01\x01\x01\x01\x00\x01" + "6" + "7" + "t" + "e"), ErrMalformed},
		{"two JSON values", []byte("\x03\x00\x00\x01\x01\x00\x01" + "t" + "e" + `{}{}`), ErrMalformed},
		{"invalid JSON meta", []byte("\x03\x00\x00\x01\x01\x09\x01" + "t" + "e" + `{persist}` + `{}`), ErrMalformed},
		{"invalid JSON meta with bytes payload", []byte("\x03\x00\x00\x01\x01\x01\x00" + "t" + "e" + `{` + "\xff"), ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeBinary(tt.in)
			if !errors.Is(err, tt.want) {
				t.Fatalf("DecodeBinary(%q) = %+v, %v; want %v", tt.in, got, err, tt.want)
			}
		})
	}
}

// Every strict prefix of the captured frame is malformed: either a field
// overruns the frame or the JSON payload is cut short.
func TestDecodeBinaryTruncatedCapture(t *testing.T) {
	for n := 1; n < len(captureKind3); n++ {
		if _, err := DecodeBinary(captureKind3[:n]); !errors.Is(err, ErrMalformed) {
			t.Errorf("DecodeBinary(capture[:%d] = %q): err = %v, want ErrMalformed", n, captureKind3[:n], err)
		}
	}
}

// Growing any one length byte of the capture by one makes the fields shift
// and the frame must fail to decode rather than yield shifted garbage that
// happens to parse.
func TestDecodeBinaryCaptureLengthOffByOne(t *testing.T) {
	for i := 1; i <= 5; i++ {
		in := bytes.Clone(captureKind3)
		in[i]++
		if m, err := DecodeBinary(in); err == nil {
			t.Errorf("length byte %d + 1: decoded %+v, want error", i, m)
		}
	}
}

// equalMessage compares every field of two Messages; nil and empty byte
// slices are equal.
func equalMessage(a, b Message) bool {
	return a.JoinRef == b.JoinRef && a.Ref == b.Ref && a.Topic == b.Topic && a.Event == b.Event &&
		bytes.Equal(a.Payload, b.Payload) && a.Binary == b.Binary && a.UserEvent == b.UserEvent &&
		bytes.Equal(a.Meta, b.Meta) && (a.Meta == nil) == (b.Meta == nil) && a.Enc == b.Enc
}
