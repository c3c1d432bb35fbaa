package edge

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

func TestRESTBatchBroadcast(t *testing.T) {
	ts := startServer(t, nil)
	sub := ts.connect(t)
	sub.write(joinFrame("1", "realtime:room1", `{}`))
	if f := sub.next(); jsonField(f.Payload, "status") != `"ok"` {
		t.Fatalf("join: %s", f)
	}

	for _, path := range []string{"/api/broadcast", "/realtime/v1/api/broadcast"} {
		// realtime-js keeps the socket query string on REST calls.
		r, err := ts.do("POST", path+"?apikey=k&vsn=2.0.0", "application/json",
			`{"messages":[{"topic":"room1","event":"e","payload":{"z":1}},{"topic":"other","event":"e","payload":{}},{"topic":"room1","event":"f","payload":{"n":2},"id":"m-2"}]}`)
		if err != nil {
			t.Fatalf("POST %s: %v", path, err)
		}
		if r.status != http.StatusAccepted {
			t.Errorf("POST %s = %d %s, want 202", path, r.status, r.body)
		}
		if got := r.header.Get("Access-Control-Allow-Origin"); got != "*" {
			t.Errorf("POST %s: Access-Control-Allow-Origin %q", path, got)
		}
		if f := sub.next(); !jsonEq(f.Raw, `[null,null,"realtime:room1","broadcast",{"type":"broadcast","event":"e","payload":{"z":1}}]`) {
			t.Errorf("POST %s delivered %s", path, f)
		}
		if f := sub.next(); !jsonEq(f.Payload, `{"type":"broadcast","event":"f","payload":{"n":2},"meta":{"id":"m-2"}}`) {
			t.Errorf("POST %s delivered %s second, want the message with meta.id", path, f)
		}
	}

	for _, body := range []string{
		`{"messages":[{"topic":"room1","event":"e","payload":[1]}]}`,
		`{"messages":[{"event":"e","payload":{}}]}`,
		`{"nope":1}`,
		`not json`,
	} {
		r, err := ts.do("POST", "/api/broadcast", "application/json", body)
		if err != nil || r.status != http.StatusUnprocessableEntity {
			t.Errorf("POST %s = %d %s %v, want 422", body, r.status, r.body, err)
		}
	}
}

func TestRESTBatchLimits(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.MaxBatchMessages = 2; c.MaxPayloadBytes = 50 })
	r, err := ts.do("POST", "/api/broadcast", "application/json",
		`{"messages":[{"topic":"a","event":"e","payload":{}},{"topic":"a","event":"e","payload":{}},{"topic":"a","event":"e","payload":{}}]}`)
	if err != nil || r.status != http.StatusTooManyRequests || !jsonEq([]byte(r.body), `{"message":"Too many messages to broadcast, please reduce the batch size"}`) {
		t.Errorf("batch over the limit = %d %s %v", r.status, r.body, err)
	}
	r, err = ts.do("POST", "/api/broadcast", "application/json",
		`{"messages":[{"topic":"a","event":"e","payload":{"pad":"`+strings.Repeat("x", 100)+`"}}]}`)
	if err != nil || r.status != http.StatusUnprocessableEntity || !strings.Contains(r.body, "Payload size exceeds tenant limit") {
		t.Errorf("oversized payload = %d %s %v", r.status, r.body, err)
	}
}

func TestRESTSingleBroadcast(t *testing.T) {
	ts := startServer(t, nil)
	v2 := ts.connect(t)
	v1 := ts.connectQuery(t, "apikey=k&vsn=1.0.0")
	v2.write(joinFrame("1", "realtime:room1", `{}`))
	if f := v2.next(); jsonField(f.Payload, "status") != `"ok"` {
		t.Fatalf("join: %s", f)
	}
	v1.write(`{"topic":"realtime:room1","event":"phx_join","payload":{"config":{}},"ref":"1","join_ref":"1"}`)
	if f := v1.next(); jsonField(f.Payload, "status") != `"ok"` {
		t.Fatalf("v1 join: %s", f)
	}

	r, err := ts.do("POST", "/realtime/v1/api/broadcast/room1/events/evt?apikey=k&vsn=2.0.0", "application/json", `{"a": 1}`)
	if err != nil || r.status != http.StatusAccepted {
		t.Fatalf("JSON POST = %d %s %v, want 202", r.status, r.body, err)
	}
	f := v2.next()
	if f.Op != ws.OpBinary || f.Kind != 4 || f.Topic != "realtime:room1" || f.UserEvent != "evt" || f.Enc != 1 || !jsonEq(f.Data, `{"a":1}`) {
		t.Errorf("v2 subscriber got %s, want kind 4 enc 1 evt {\"a\":1}", f)
	}
	if f := v1.next(); !jsonEq(f.Raw, `{"topic":"realtime:room1","event":"broadcast","payload":{"type":"broadcast","event":"evt","payload":{"a":1}},"ref":null}`) {
		t.Errorf("v1 subscriber got %s", f)
	}

	raw := []byte{0, 1, 2, 0xfe, 0xff}
	r, err = ts.do("POST", "/api/broadcast/room1/events/bin", "application/octet-stream", string(raw))
	if err != nil || r.status != http.StatusAccepted {
		t.Fatalf("octet-stream POST = %d %s %v, want 202", r.status, r.body, err)
	}
	f = v2.next()
	if f.Op != ws.OpBinary || f.Kind != 4 || f.UserEvent != "bin" || f.Enc != 0 || !bytes.Equal(f.Data, raw) {
		t.Errorf("v2 subscriber got %s, want kind 4 enc 0 with the raw body", f)
	}
	// v1 never sees raw bytes: the next JSON message is what it gets.
	if r, err := ts.do("POST", "/api/broadcast/room1/events/after", "application/json", `{}`); err != nil || r.status != http.StatusAccepted {
		t.Fatalf("JSON POST = %d %s %v", r.status, r.body, err)
	}
	if f := v1.next(); jsonField(f.Payload, "event") != `"after"` {
		t.Errorf("v1 subscriber got %s, want only the JSON message", f)
	}

	r, err = ts.do("POST", "/api/broadcast/room1/events/evt", "text/plain", "hello")
	if err != nil || r.status != http.StatusUnsupportedMediaType {
		t.Errorf("text/plain POST = %d %s %v, want 415", r.status, r.body, err)
	}
	r, err = ts.do("POST", "/api/broadcast/room1/events/evt", "application/json", `{"a":`)
	if err != nil || r.status != http.StatusUnprocessableEntity {
		t.Errorf("invalid JSON POST = %d %s %v, want 422", r.status, r.body, err)
	}
}

func TestRESTPreflight(t *testing.T) {
	ts := startServer(t, nil)
	for _, path := range []string{"/api/broadcast", "/realtime/v1/api/broadcast", "/realtime/v1/api/broadcast/room1/events/evt"} {
		r, err := ts.do("OPTIONS", path, "", "",
			"Origin: https://app.example", "Access-Control-Request-Method: POST", "Access-Control-Request-Headers: apikey, authorization, content-type, x-client-info")
		if err != nil {
			t.Fatalf("OPTIONS %s: %v", path, err)
		}
		if r.status/100 != 2 {
			t.Errorf("OPTIONS %s = %d", path, r.status)
		}
		if got := r.header.Get("Access-Control-Allow-Origin"); got != "*" {
			t.Errorf("OPTIONS %s: Access-Control-Allow-Origin %q", path, got)
		}
		allowed := strings.ToLower(r.header.Get("Access-Control-Allow-Headers"))
		for _, h := range []string{"apikey", "authorization", "content-type", "x-client-info"} {
			if !strings.Contains(allowed, h) {
				t.Errorf("OPTIONS %s: Access-Control-Allow-Headers %q lacks %s", path, allowed, h)
			}
		}
		if !strings.Contains(r.header.Get("Access-Control-Allow-Methods"), "POST") {
			t.Errorf("OPTIONS %s: Access-Control-Allow-Methods %q", path, r.header.Get("Access-Control-Allow-Methods"))
		}
	}
}

func TestRESTAuth(t *testing.T) {
	ts := startAuthServer(t)
	authed := mintToken(t, "authenticated", time.Hour)
	anon := mintToken(t, "anon", time.Hour)

	sub := ts.connectQuery(t, "vsn=2.0.0&apikey="+anon)
	sub.write(`["1","1","realtime:secret","phx_join",{"config":{"private":true},"access_token":"` + authed + `"}]`)
	if f := sub.next(); jsonField(f.Payload, "status") != `"ok"` {
		t.Fatalf("private join: %s", f)
	}

	batch := `{"messages":[{"topic":"secret","event":"e","payload":{"from":"%s"},"private":true}]}`
	for _, h := range [][]string{
		nil,
		{"Authorization: Bearer garbage"},
		{"apikey: " + mintToken(t, "anon", -time.Minute)},
	} {
		r, err := ts.do("POST", "/api/broadcast", "application/json", strings.Replace(batch, "%s", "nobody", 1), h...)
		if err != nil || r.status != http.StatusUnauthorized || !jsonEq([]byte(r.body), `{"message":"Unauthorized"}`) {
			t.Errorf("batch with %v = %d %s %v, want 401 Unauthorized", h, r.status, r.body, err)
		}
		r, err = ts.do("POST", "/api/broadcast/secret/events/e", "application/json", `{}`, h...)
		if err != nil || r.status != http.StatusUnauthorized || !jsonEq([]byte(r.body), `{"message":"Unauthorized"}`) {
			t.Errorf("single with %v = %d %s %v, want 401 Unauthorized", h, r.status, r.body, err)
		}
	}

	// anon may not write private channels: accepted, and dropped.
	r, err := ts.do("POST", "/api/broadcast", "application/json", strings.Replace(batch, "%s", "anon", 1), "apikey: "+anon)
	if err != nil || r.status != http.StatusAccepted {
		t.Errorf("anon private batch = %d %s %v, want 202", r.status, r.body, err)
	}
	// The bearer token wins over the apikey header.
	r, err = ts.do("POST", "/api/broadcast", "application/json", strings.Replace(batch, "%s", "authenticated", 1), "apikey: "+anon, "Authorization: Bearer "+authed)
	if err != nil || r.status != http.StatusAccepted {
		t.Errorf("authenticated private batch = %d %s %v, want 202", r.status, r.body, err)
	}
	if f := sub.next(); jsonField(f.Payload, "payload.from") != `"authenticated"` {
		t.Errorf("private subscriber got %s, want only the authenticated message", f)
	}

	// The single endpoint refuses private sends from anon openly.
	r, err = ts.do("POST", "/api/broadcast/secret/events/e?private=true", "application/json", `{}`, "apikey: "+anon)
	if err != nil || r.status != http.StatusForbidden {
		t.Errorf("anon private single = %d %s %v, want 403", r.status, r.body, err)
	}
}
