package phx

import (
	"fmt"
	"testing"

	"github.com/meshcast/meshcast/wire/fuzzcorpus"
)

// realtime-js frames of protocol.md, client to server and back, for the
// text decoder's corpus.
var protocolFrames = map[string]string{
	"heartbeat":          `[null,"9","phoenix","heartbeat",{}]`,
	"heartbeat-reply":    `[null,"9","phoenix","phx_reply",{"status":"ok","response":{}}]`,
	"join":               `["6","6","realtime:room1","phx_join",` + joinSeeds[0] + `]`,
	"join-reply":         `["6","6","realtime:room1","phx_reply",{"status":"ok","response":{"postgres_changes":[{"event":"INSERT","schema":"public","table":"todos","id":30636810},{"event":"*","schema":"public","table":"todos","filter":"id=eq.1","id":8475123}]}}]`,
	"join-refused":       `["6","6","realtime:room1","phx_reply",{"status":"error","response":{"reason":"Unauthorized: You do not have permissions to read from this Channel topic: room1"}}]`,
	"leave":              `["6","10","realtime:room1","phx_leave",{}]`,
	"close":              `["6","6","realtime:room1","phx_close",{}]`,
	"system":             `["6",null,"realtime:room1","system",{"extension":"postgres_changes","status":"ok","message":"Subscribed to PostgreSQL","channel":"room1"}]`,
	"broadcast":          `[null,null,"realtime:room1","broadcast",{"type":"broadcast","event":"cursor","payload":{"x":42}}]`,
	"broadcast-push":     `["6","8","realtime:room1","broadcast",{"type":"broadcast","event":"e","payload":{"a":1}}]`,
	"track":              `["6","8","realtime:room1","presence",{"type":"presence","event":"track","payload":{"online_at":"now"}}]`,
	"untrack":            `["6","9","realtime:room1","presence",{"type":"presence","event":"untrack"}]`,
	"presence-state":     `["6",null,"realtime:room1","presence_state",{"k1":{"metas":[{"phx_ref":"F2b1x","online_at":"now"}]}}]`,
	"presence-diff":      `["6",null,"realtime:room1","presence_diff",{"joins":{"k1":{"metas":[{"phx_ref":"G7","phx_ref_prev":"F2b1x","online_at":"later"}]}},"leaves":{"k1":{"metas":[{"phx_ref":"F2b1x","online_at":"now"}]}}}]`,
	"postgres-changes":   `[null,null,"realtime:room1","postgres_changes",{"ids":[30636810,8475123],"data":{"columns":[{"name":"id","type":"int8"},{"name":"title","type":"text"}],"commit_timestamp":"2024-05-01T10:00:00.123Z","errors":null,"record":{"id":1,"title":"a"},"schema":"public","table":"todos","type":"INSERT"}}]`,
	"access-token":       `["6","7","realtime:room1","access_token",{"access_token":"eyJhbGciOiJIUzI1NiJ9.e30.sig"}]`,
	"v1-heartbeat":       `{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"9"}`,
	"v1-join":            `{"topic":"realtime:room1","event":"phx_join","payload":{"config":{}},"ref":"1","join_ref":"1"}`,
	"v1-broadcast":       `{"topic":"realtime:room1","event":"broadcast","payload":{"type":"broadcast","event":"e","payload":{"a":1}},"ref":2}`,
	"numeric-refs":       `[6,7,"realtime:r\u00e9","e",null]`,
	"bad-surrogate-refs": `[1.5e3,"\ud800","a\"b","\\",[]]`,
}

func TestWriteCorpus(t *testing.T) {
	fuzzcorpus.Skip(t)
	for name, s := range protocolFrames {
		fuzzcorpus.Write(t, "FuzzDecodeText", name+"-v2", true, []byte(s))
		fuzzcorpus.Write(t, "FuzzDecodeText", name+"-v1", false, []byte(s))
		fuzzcorpus.Write(t, "FuzzScanV2", name, []byte(s))
	}
	bin := map[string][]byte{
		"supabase-js-kind3": captureKind3,
		"kind3-meta":        []byte("\x03\x01\x01\x0e\x06\x10\x01" + "6" + "7" + "realtime:room1" + "cursor" + `{"persist":true}` + `{"x":42}`),
		"kind3-bytes":       []byte("\x03\x01\x01\x01\x03\x00\x00" + "6" + "7" + "t" + "bin" + "\x00\xff\xfe"),
		"kind3-unicode":     []byte("\x03\x01\x01\x0c\x04\x00\x01" + "6" + "7" + "realtime:ré" + "😀" + `{}`),
		"kind4-relayed":     AppendUserBroadcast(nil, "realtime:room1", "cursor", nil, EncJSON, []byte(`{"x":42}`)),
		"kind3-empty":       {3, 0, 0, 0, 0, 0, 0},
	}
	for name, b := range bin {
		fuzzcorpus.Write(t, "FuzzDecodeBinary", name, b)
	}
	for name, b := range map[string][]byte{
		"kind4-relayed": AppendUserBroadcast(nil, "realtime:room1", "cursor", nil, EncJSON, []byte(`{"x":42}`)),
		"kind4-meta":    AppendUserBroadcast(nil, "realtime:room1", "m", []byte(`{"id":"m1"}`), EncBytes, []byte{0, 0xff}),
		"kind3":         captureKind3,
	} {
		fuzzcorpus.Write(t, "FuzzDecodeUserBroadcast", name, b)
	}
	for i, s := range []string{"realtime:room1", "Unauthorized: You do not have permissions to read from this Channel topic: room1", "é日本😀\u2028", "a\xe2\x82b\x00"} {
		fuzzcorpus.Write(t, "FuzzAppendString", fmt.Sprint(i), s)
	}
	for i, s := range joinSeeds {
		fuzzcorpus.Write(t, "FuzzDecodeJoin", fmt.Sprint(i), []byte(s))
	}
	for name, s := range map[string]string{
		"broadcast": `{"type":"broadcast","event":"cursor","payload":{"x":42}}`,
		"track":     `{"type":"presence","event":"track","payload":{"online_at":"now"}}`,
		"untrack":   `{"type":"presence","event":"untrack"}`,
	} {
		fuzzcorpus.Write(t, "FuzzDecodePush", name, name != "broadcast", []byte(s))
	}
	fuzzcorpus.Write(t, "FuzzAppendPresenceMeta", "track", []byte(`{"online_at":"now"}`), "F2b1x", "")
	fuzzcorpus.Write(t, "FuzzAppendPresenceMeta", "update", []byte(`{"online_at":"later","phx_ref":"forged"}`), "G7", "F2b1x")
	// Found by FuzzAppendPresenceMeta: braces around what is not JSON.
	fuzzcorpus.Write(t, "FuzzAppendPresenceMeta", "regress-not-json", []byte(`{]}`), "F2b1x", "")
}
