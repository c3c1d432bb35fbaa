package phx

import (
	"errors"
	"testing"
)

func TestDecodeJoin(t *testing.T) {
	type flags struct{ self, ack, presence, private bool }
	tests := []struct {
		name     string
		in       string
		flags    flags
		key      string
		token    string
		bindings int
	}{
		{name: "nil payload", in: ``},
		{name: "null payload", in: `null`},
		{name: "whitespace payload", in: " \n "},
		{name: "empty object", in: `{}`},
		{
			name:     "capture",
			in:       `{"config":{"broadcast":{"self":true,"ack":true},"presence":{"key":"k1","enabled":true},"postgres_changes":[{"event":"INSERT","schema":"public","table":"todos"},{"event":"*","schema":"public","table":"todos","filter":"id=eq.1"}],"private":false},"access_token":"<jwt>","version":"realtime-js/2.119.1"}`,
			flags:    flags{self: true, ack: true, presence: true},
			key:      "k1",
			token:    "<jwt>",
			bindings: 2,
		},
		{
			name: "fresh client first join has no access_token",
			in:   `{"config":{"broadcast":{"self":false,"ack":false},"presence":{"key":"","enabled":false},"postgres_changes":[],"private":false},"version":"realtime-js/2.119.1"}`,
		},
		{
			name:  "string booleans",
			in:    `{"config":{"broadcast":{"self":"true","ack":"false"},"presence":{"enabled":"true"},"private":"true"}}`,
			flags: flags{self: true, presence: true, private: true},
		},
		{
			name:  "upper-case string booleans",
			in:    `{"config":{"broadcast":{"self":"TRUE","ack":"True"}}}`,
			flags: flags{self: true, ack: true},
		},
		{
			name: "null and empty-string booleans are false",
			in:   `{"config":{"broadcast":{"self":null,"ack":""},"presence":{"enabled":null},"private":null}}`,
		},
		{
			name:  "partial sub-objects default the missing fields",
			in:    `{"config":{"broadcast":{"ack":true}}}`,
			flags: flags{ack: true},
		},
		{
			name: "null sub-objects",
			in:   `{"config":{"broadcast":null,"presence":null,"postgres_changes":null}}`,
		},
		{name: "null config", in: `{"config":null}`},
		{name: "numeric presence key", in: `{"config":{"presence":{"key":42}}}`, key: "42"},
		{name: "fractional presence key", in: `{"config":{"presence":{"key":1.5e2}}}`, key: "1.5e2"},
		{name: "escaped presence key", in: `{"config":{"presence":{"key":"k\"\u00e9"}}}`, key: `k"é`},
		{name: "null presence key", in: `{"config":{"presence":{"key":null}}}`},
		{name: "empty presence key", in: `{"config":{"presence":{"key":""}}}`},
		{name: "user_token alias", in: `{"user_token":"legacy"}`, token: "legacy"},
		{name: "null access_token falls back to user_token", in: `{"access_token":null,"user_token":"legacy"}`, token: "legacy"},
		// Supabase logs an invalid join payload and joins with the valid
		// fields, the others at their defaults (protocol.md §2.1).
		{
			name:  "non-boolean flag values default to false",
			in:    `{"config":{"broadcast":{"self":"yes","ack":true},"presence":{"enabled":1},"private":[true]}}`,
			flags: flags{ack: true},
		},
		{
			name:  "wrongly typed sub-object keeps its siblings",
			in:    `{"config":{"broadcast":[],"presence":{"key":"k1","enabled":true},"postgres_changes":{},"private":true},"access_token":"t"}`,
			flags: flags{presence: true, private: true},
			key:   "k1",
			token: "t",
		},
		{
			name:  "wrongly typed config keeps the token",
			in:    `{"config":"x","access_token":"t"}`,
			token: "t",
		},
		{
			name:  "unknown keys are ignored",
			in:    `{"config":{"broadcast":{"self":true,"replay":{"since":1,"limit":10},"replication_ready":true},"postgres_changes_options":{"wait":true},"extra":[1]},"version":"x","other":{"a":null}}`,
			flags: flags{self: true},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := DecodeJoin([]byte(tt.in))
			if err != nil {
				t.Fatalf("DecodeJoin(%s): %v", tt.in, err)
			}
			c := p.Config
			got := flags{bool(c.Broadcast.Self), bool(c.Broadcast.Ack), bool(c.Presence.Enabled), bool(c.Private)}
			if got != tt.flags {
				t.Errorf("flags = %+v, want %+v", got, tt.flags)
			}
			if k := c.PresenceKey(); k != tt.key {
				t.Errorf("PresenceKey() = %q, want %q", k, tt.key)
			}
			if tok := p.Token(); tok != tt.token {
				t.Errorf("Token() = %q, want %q", tok, tt.token)
			}
			if n := len(c.PostgresChanges); n != tt.bindings {
				t.Errorf("len(PostgresChanges) = %d, want %d", n, tt.bindings)
			}
		})
	}
}

func TestDecodeJoinBindingsVerbatim(t *testing.T) {
	// Bindings are echoed back verbatim (protocol.md §2.2), so the decoder
	// must keep each one's bytes.
	in := `{"config":{"postgres_changes":[{"event":"INSERT","schema":"public","table":"todos"},{"event":"*","schema":"public","table":"todos","filter":"id=eq.1"}]}}`
	p, err := DecodeJoin([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		`{"event":"INSERT","schema":"public","table":"todos"}`,
		`{"event":"*","schema":"public","table":"todos","filter":"id=eq.1"}`,
	}
	if len(p.Config.PostgresChanges) != len(want) {
		t.Fatalf("got %d bindings, want %d", len(p.Config.PostgresChanges), len(want))
	}
	for i, w := range want {
		if got := string(p.Config.PostgresChanges[i]); got != w {
			t.Errorf("binding %d = %s, want %s", i, got, w)
		}
	}
}

func TestDecodeJoinMalformed(t *testing.T) {
	tests := []struct{ name, in string }{
		{"array", `[]`},
		{"string", `"config"`},
		{"number", `42`},
		{"boolean", `true`},
		{"truncated object", `{"config":`},
		{"garbage", `config`},
		{"trailing garbage", `{} x`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := DecodeJoin([]byte(tt.in)); !errors.Is(err, ErrMalformed) {
				t.Errorf("DecodeJoin(%s): err = %v, want ErrMalformed", tt.in, err)
			}
		})
	}
}

func TestDecodeBroadcast(t *testing.T) {
	tests := []struct {
		in                string
		typ, event, inner string
	}{
		{in: `{"type":"broadcast","event":"e","payload":{"a":1}}`, typ: "broadcast", event: "e", inner: `{"a":1}`},
		{in: `{"type":"broadcast","event":"e"}`, typ: "broadcast", event: "e", inner: `{}`},
		{in: `{"type":"broadcast","event":"e","payload":[1]}`, typ: "broadcast", event: "e", inner: `[1]`},
		{in: `{"event":"e","payload":"s","extra":1}`, event: "e", inner: `"s"`},
	}
	for _, tt := range tests {
		b, err := DecodeBroadcast([]byte(tt.in))
		if err != nil {
			t.Errorf("DecodeBroadcast(%s): %v", tt.in, err)
			continue
		}
		if b.Type != tt.typ || b.Event != tt.event || string(b.Payload) != tt.inner {
			t.Errorf("DecodeBroadcast(%s) = {%q %q %s}, want {%q %q %s}", tt.in, b.Type, b.Event, b.Payload, tt.typ, tt.event, tt.inner)
		}
	}
	for _, in := range []string{``, `[]`, `{"event":1}`, `{`} {
		if _, err := DecodeBroadcast([]byte(in)); !errors.Is(err, ErrMalformed) {
			t.Errorf("DecodeBroadcast(%s): err = %v, want ErrMalformed", in, err)
		}
	}
}

func TestDecodePresence(t *testing.T) {
	p, err := DecodePresence([]byte(`{"type":"presence","event":"track","payload":{"online_at":"now"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if p.Type != "presence" || p.Event != "track" || string(p.Payload) != `{"online_at":"now"}` {
		t.Errorf("track = %+v", p)
	}
	p, err = DecodePresence([]byte(`{"type":"presence","event":"untrack"}`))
	if err != nil {
		t.Fatal(err)
	}
	if p.Event != "untrack" || p.Payload != nil {
		t.Errorf("untrack = %+v, want event untrack and no payload", p)
	}
	for _, in := range []string{``, `[]`, `{"event":[]}`} {
		if _, err := DecodePresence([]byte(in)); !errors.Is(err, ErrMalformed) {
			t.Errorf("DecodePresence(%s): err = %v, want ErrMalformed", in, err)
		}
	}
}

func TestIsObject(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{`{}`, true},
		{" \n{\"a\":1}", true},
		{``, false},
		{`  `, false},
		{`null`, false},
		{`[{}]`, false},
		{`"{"`, false},
		{`1`, false},
	}
	for _, tt := range tests {
		if got := IsObject([]byte(tt.in)); got != tt.want {
			t.Errorf("IsObject(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestDecodeJoinUnreliable(t *testing.T) {
	for in, want := range map[string]bool{
		`{"config":{"broadcast":{"unreliable":true}}}`:               true,
		`{"config":{"broadcast":{"unreliable":"true","self":true}}}`: true,
		`{"config":{"broadcast":{"unreliable":1}}}`:                  false,
		`{"config":{"broadcast":{"self":true}}}`:                     false,
		`{}`:                                                         false,
	} {
		p, err := DecodeJoin([]byte(in))
		if err != nil {
			t.Fatalf("DecodeJoin(%s): %v", in, err)
		}
		if got := bool(p.Config.Broadcast.Unreliable); got != want {
			t.Errorf("%s: unreliable = %v, want %v", in, got, want)
		}
	}
}
