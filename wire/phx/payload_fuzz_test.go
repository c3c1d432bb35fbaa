package phx

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
)

// Join payloads as realtime-js and supabase-js send them (protocol.md),
// and the odd shapes Supabase tolerates.
var joinSeeds = []string{
	`{"config":{"broadcast":{"self":true,"ack":true},"presence":{"key":"k1","enabled":true},"postgres_changes":[{"event":"INSERT","schema":"public","table":"todos"},{"event":"*","schema":"public","table":"todos","filter":"id=eq.1"}],"private":false},"access_token":"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJyb2xlIjoiYW5vbiJ9.sig","version":"realtime-js/2.119.1"}`,
	`{"config":{"broadcast":{"ack":false,"self":false},"presence":{"key":"","enabled":false},"postgres_changes":[],"private":true}}`,
	`{"config":{"broadcast":{"self":"true","unreliable":"TRUE"},"presence":{"key":42},"private":"false"},"user_token":"t"}`,
	`{"config":{"postgres_changes":[{"event":"UPDATE","schema":"public","table":"todos","filter":"title=in.(a,\"b,c\")","select":["id","title"]}]}}`,
	`{"config":{"broadcast":[],"presence":"x","postgres_changes":{},"private":1},"access_token":7}`,
	`{"config":null,"access_token":null}`,
	`{}`, ``, `null`, ` {"config":{}} `, `[]`, `"s"`, `{"config":{"presence":{"key":{"nested":[1,2]}}}}`, `{"a":`,
}

// FuzzDecodeJoin: a phx_join payload decodes unless it is not a JSON
// object; what decodes has raw bindings that are valid JSON and a presence
// key and token that read without panicking.
func FuzzDecodeJoin(f *testing.F) {
	for _, s := range joinSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		p, err := DecodeJoin(payload)
		trimmed := bytes.TrimSpace(payload)
		empty := len(trimmed) == 0 || string(trimmed) == "null"
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("DecodeJoin(%q): error %v is not ErrMalformed", payload, err)
			}
			if empty || (trimmed[0] == '{' && json.Valid(trimmed)) {
				t.Fatalf("DecodeJoin(%q) refused a JSON object: %v", payload, err)
			}
			return
		}
		if !empty && (trimmed[0] != '{' || !json.Valid(trimmed)) {
			t.Fatalf("DecodeJoin(%q) accepted what is not a JSON object", payload)
		}
		for i, b := range p.Config.PostgresChanges {
			if !json.Valid(b) {
				t.Fatalf("DecodeJoin(%q): binding %d %q is not JSON", payload, i, b)
			}
		}
		_ = p.Config.PresenceKey()
		_ = p.Token()
	})
}

// FuzzDecodePush: the broadcast and presence push payloads decode to
// inner payloads that are valid JSON, or fail with ErrMalformed.
func FuzzDecodePush(f *testing.F) {
	for _, s := range []string{
		`{"type":"broadcast","event":"cursor","payload":{"x":42}}`,
		`{"type":"broadcast","event":"e"}`,
		`{"type":"presence","event":"track","payload":{"online_at":"now"}}`,
		`{"type":"presence","event":"untrack"}`,
		`{"type":1,"event":null,"payload":[1,2]}`,
		`[]`, `{"payload":"\ud800"}`, `{`,
	} {
		f.Add(false, []byte(s))
		f.Add(true, []byte(s))
	}
	f.Fuzz(func(t *testing.T, presence bool, payload []byte) {
		var inner []byte
		var err error
		if presence {
			var p PresencePayload
			p, err = DecodePresence(payload)
			inner = p.Payload
		} else {
			var b BroadcastPayload
			b, err = DecodeBroadcast(payload)
			inner = b.Payload
			if err == nil && len(inner) == 0 {
				t.Fatalf("DecodeBroadcast(%q): empty inner payload", payload)
			}
		}
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("%q: error %v is not ErrMalformed", payload, err)
			}
			return
		}
		if len(inner) > 0 && !json.Valid(inner) {
			t.Fatalf("%q: inner payload %q is not JSON", payload, inner)
		}
	})
}

// FuzzAppendPresenceMeta: whatever meta a client tracked or a peer sent,
// the meta that goes into presence_state and presence_diff is a valid JSON
// object that ends with the refs, and keeps the fields of a valid meta.
func FuzzAppendPresenceMeta(f *testing.F) {
	for _, m := range []string{
		`{"online_at":"now"}`, `{"user":"a","phx_ref":"forged"}`, `{}`, ` { "a" : [1, {"b":2}] } `,
		`{]}`, `{"a":1,}`, `{,"a":1}`, `[1]`, `"x"`, `null`, ``, `{`, `}`, `{"a":"\u2028"}`,
	} {
		f.Add([]byte(m), "F2b1x", "")
		f.Add([]byte(m), "G7", "F2b1x")
	}
	f.Fuzz(func(t *testing.T, meta []byte, ref, prevRef string) {
		out := AppendPresenceMeta([]byte("pre"), meta, ref, prevRef)
		if !bytes.HasPrefix(out, []byte("pre")) {
			t.Fatalf("prefix lost: %q", out)
		}
		out = out[3:]
		var got map[string]any
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("AppendPresenceMeta(%q, %q, %q) = %q: %v", meta, ref, prevRef, out, err)
		}
		// JSON.parse keeps the last of duplicate keys, as encoding/json does.
		if r, _ := got["phx_ref"].(string); r != string([]rune(ref)) {
			t.Fatalf("AppendPresenceMeta(%q, %q, %q) = %q: phx_ref %q", meta, ref, prevRef, out, r)
		}
		if pr, _ := got["phx_ref_prev"].(string); prevRef != "" && pr != string([]rune(prevRef)) {
			t.Fatalf("AppendPresenceMeta(%q, %q, %q) = %q: phx_ref_prev %q", meta, ref, prevRef, out, pr)
		}
		var user map[string]any
		if json.Unmarshal(meta, &user) != nil || user == nil {
			return
		}
		for k, v := range user {
			if k == "phx_ref" || k == "phx_ref_prev" {
				continue
			}
			if gv, ok := got[k]; !ok || !jsonEqual(gv, v) {
				t.Fatalf("AppendPresenceMeta(%q) = %q: field %q is %v, want %v", meta, out, k, gv, v)
			}
		}
	})
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}
