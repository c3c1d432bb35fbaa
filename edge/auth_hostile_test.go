package edge

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// forgeJWT builds a token by hand: header and claims as given, signed
// with HMAC-SHA256 over the secret whatever alg the header names (the
// algorithm-confusion attack: an RS256 or ES256 header whose "public key"
// is taken to be the HMAC secret), or unsigned when sign is false.
func forgeJWT(header, claims string, sign bool) string {
	enc := base64.RawURLEncoding
	s := enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString([]byte(claims))
	if !sign {
		return s + "."
	}
	m := hmac.New(sha256.New, testSecret)
	m.Write([]byte(s))
	return s + "." + enc.EncodeToString(m.Sum(nil))
}

// hostileTokens are tokens an attacker may present, with the socket's
// 401 text and the join's refusal reason.
func hostileTokens(t *testing.T) []struct{ name, token, socket, join string } {
	exp := time.Now().Add(time.Hour).Unix()
	claims := `{"role":"authenticated","exp":` + strconv.FormatInt(exp, 10) + `}`
	signature := "Failed to validate JWT signature"
	return []struct{ name, token, socket, join string }{
		{"alg none", forgeJWT(`{"alg":"none","typ":"JWT"}`, claims, false), signature, "JwtSignatureError: " + signature},
		{"alg none, HMAC signed", forgeJWT(`{"alg":"none","typ":"JWT"}`, claims, true), signature, "JwtSignatureError: " + signature},
		{"RS256 header, HMAC secret", forgeJWT(`{"alg":"RS256","typ":"JWT"}`, claims, true), signature, "JwtSignatureError: " + signature},
		{"ES256 header, HMAC secret", forgeJWT(`{"alg":"ES256","typ":"JWT"}`, claims, true), signature, "JwtSignatureError: " + signature},
		{"HS256 with the header swapped to HS512", swapHeader(t, mintWith(t, testSecret, jwt.MapClaims{"role": "authenticated", "exp": exp}), `{"alg":"HS512","typ":"JWT"}`), signature, "JwtSignatureError: " + signature},
		{"wrong secret", mintWith(t, []byte("not-the-secret-not-the-secret-not-it"), jwt.MapClaims{"role": "authenticated", "exp": exp}), signature, "JwtSignatureError: " + signature},
		{"expired", mintWith(t, testSecret, jwt.MapClaims{"role": "authenticated", "exp": time.Now().Add(-time.Minute).Unix()}), "Token has expired", "InvalidJWTToken: Token has expired 60 seconds ago"},
		{"not valid yet", mintWith(t, testSecret, jwt.MapClaims{"role": "authenticated", "exp": exp, "nbf": time.Now().Add(time.Hour).Unix()}), "Token is not valid yet: nbf is 3600 seconds in the future", "InvalidJWTToken: Token is not valid yet: nbf is 3600 seconds in the future"},
		{"no role", mintWith(t, testSecret, jwt.MapClaims{"exp": exp}), "Fields `role` and `exp` are required in JWT", "InvalidJWTToken: Fields `role` and `exp` are required in JWT"},
		{"no exp", mintWith(t, testSecret, jwt.MapClaims{"role": "service_role"}), "Fields `role` and `exp` are required in JWT", "InvalidJWTToken: Fields `role` and `exp` are required in JWT"},
		{"garbage", "eyJ.not.a-jwt", "The token provided is not a valid JWT", "MalformedJWT: The token provided is not a valid JWT"},
	}
}

// swapHeader replaces a token's header, keeping claims and signature.
func swapHeader(t *testing.T, token, header string) string {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token %q", token)
	}
	parts[0] = base64.RawURLEncoding.EncodeToString([]byte(header))
	return strings.Join(parts, ".")
}

// TestAuthNegatives presents every hostile token as a WebSocket apikey, a
// WebTransport apikey, a join's access_token on both, and a REST key:
// each is refused with Supabase's text, and HS384 and HS512 tokens signed
// with the secret are accepted everywhere.
func TestAuthNegatives(t *testing.T) {
	ts := startWTServer(t, func(c *Config) { c.JWTSecret = testSecret })
	good := mintToken(t, "authenticated", time.Hour)
	wsc := ts.connectQuery(t, "apikey="+good+"&vsn=2.0.0")
	wt, err := ts.dialWT(t, "apikey="+good+"&vsn=2.0.0", nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, tc := range hostileTokens(t) {
		want := `{"error":` + jsonString(seconds(tc.socket)) + `}`
		_, err := ts.dial(t, "/realtime/v1/websocket", "apikey="+tc.token+"&vsn=2.0.0")
		var ref *upgradeRefused
		if !errors.As(err, &ref) || ref.status != 401 || !jsonEq([]byte(seconds(ref.body)), want) {
			t.Errorf("%s as a WebSocket apikey: %v, want 401 %s", tc.name, err, want)
		}
		_, err = ts.dialWT(t, "apikey="+tc.token+"&vsn=2.0.0", nil)
		if !errors.As(err, &ref) || ref.status != 401 || !jsonEq([]byte(seconds(ref.body)), want) {
			t.Errorf("%s as a WebTransport apikey: %v, want 401 %s", tc.name, err, want)
		}
		for name, c := range map[string]peer{"WebSocket": wsc, "WebTransport": wt} {
			jr := strconv.Itoa(i + 1)
			c.write(`["` + jr + `","` + jr + `","realtime:auth","phx_join",{"config":{"private":true},"access_token":"` + tc.token + `"}]`)
			f := c.next()
			if jsonField(f.Payload, "status") != `"error"` || seconds(jsonField(f.Payload, "response.reason")) != jsonString(seconds(tc.join)) {
				t.Errorf("%s as a %s access_token: %s, want %q", tc.name, name, f, tc.join)
			}
		}
		for _, h := range []string{"Authorization: Bearer " + tc.token, "apikey: " + tc.token} {
			r, err := ts.do("POST", "/api/broadcast", "application/json", `{"messages":[{"topic":"auth","event":"e","payload":{}}]}`, h)
			if err != nil || r.status != 401 || !jsonEq([]byte(r.body), `{"message":"Unauthorized"}`) {
				t.Errorf("%s as REST %s: %d %s %v, want 401", tc.name, h[:strings.Index(h, ":")], r.status, r.body, err)
			}
		}
	}
	// No key at all.
	if r, err := ts.do("POST", "/api/broadcast/auth/events/e", "application/json", `{}`); err != nil || r.status != 401 {
		t.Errorf("REST without a key: %d %v, want 401", r.status, err)
	}

	// HS384 and HS512 are accepted (README: HS256/384/512).
	for _, m := range []jwt.SigningMethod{jwt.SigningMethodHS384, jwt.SigningMethodHS512} {
		tok, _ := jwt.NewWithClaims(m, jwt.MapClaims{"role": "authenticated", "exp": time.Now().Add(time.Hour).Unix()}).SignedString(testSecret)
		if _, err := ts.dial(t, "/realtime/v1/websocket", "apikey="+tok+"&vsn=2.0.0"); err != nil {
			t.Errorf("%s WebSocket apikey: %v", m.Alg(), err)
		}
		if _, err := ts.dialWT(t, "apikey="+tok+"&vsn=2.0.0", nil); err != nil {
			t.Errorf("%s WebTransport apikey: %v", m.Alg(), err)
		}
		if r, err := ts.do("POST", "/api/broadcast", "application/json", `{"messages":[]}`, "Authorization: Bearer "+tok); err != nil || r.status != 202 {
			t.Errorf("%s REST: %d %s %v", m.Alg(), r.status, r.body, err)
		}
	}
}

// seconds blurs the counts of seconds in a refusal (a test's clock moves).
func seconds(s string) string { return secondsRE.ReplaceAllString(s, "N seconds") }

var secondsRE = regexp.MustCompile(`\d+ seconds`)

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// drainUntilHeartbeat sends a heartbeat and returns every frame that
// arrived before its reply: all the node had queued for the client.
func drainUntilHeartbeat(t *testing.T, c peer) []wsFrame {
	t.Helper()
	c.write(heartbeatFrame)
	var got []wsFrame
	for range 1000 {
		f := c.next()
		if isHeartbeatReply(f) {
			return got
		}
		got = append(got, f)
	}
	t.Fatal("no heartbeat reply in 1000 frames")
	return nil
}

// TestPrivateChannelIsolation: members of private channel a (over
// WebSocket and WebTransport) see each other's broadcasts and presence;
// a member of private channel b, a client on the public channel of the
// same name, and an anon client refused at the private join see none of
// it — neither from clients nor from REST — and REST to a private topic
// with an anon key reaches nobody.
func TestPrivateChannelIsolation(t *testing.T) {
	ts := startWTServer(t, func(c *Config) { c.JWTSecret = testSecret })
	authed := mintToken(t, "authenticated", time.Hour)
	anon := mintToken(t, "anon", time.Hour)
	q := "apikey=" + authed + "&vsn=2.0.0"
	alice := ts.connectQuery(t, q)
	carol, err := ts.dialWT(t, q, nil)
	if err != nil {
		t.Fatal(err)
	}
	bob := ts.connectQuery(t, q)
	bobWT, err := ts.dialWT(t, q, nil)
	if err != nil {
		t.Fatal(err)
	}
	eve := ts.connectQuery(t, "apikey="+anon+"&vsn=2.0.0")

	private := func(key string) string {
		return `{"private":true,"broadcast":{"self":false},"presence":{"key":"` + key + `","enabled":true}}`
	}
	for _, m := range []struct {
		c          peer
		topic, cfg string
	}{
		{alice, "realtime:a", private("alice")}, {carol, "realtime:a", private("carol")},
		{bob, "realtime:b", private("bob")}, {bobWT, "realtime:b", private("bobwt")},
		{eve, "realtime:a", `{"presence":{"key":"eve","enabled":true}}`},
	} {
		mustJoin(t, m.c, "1", m.topic, m.cfg)
		if f := m.c.next(); f.Event != "presence_state" {
			t.Fatalf("after the join of %s: %s", m.topic, f)
		}
	}
	// eve cannot join the private channel, with her key or an anon token.
	eve.write(`["2","2","realtime:a","phx_join",{"config":{"private":true}}]`)
	if f := eve.next(); jsonField(f.Payload, "status") != `"error"` || !strings.Contains(jsonField(f.Payload, "response.reason"), "Unauthorized") {
		t.Errorf("anon private join: %s", f)
	}

	// In channel a: a broadcast each way, a track, REST with a key that
	// may (and one that may not) write private topics.
	alice.write(trackFrame("1", "2", "realtime:a", `{"secret":"alice-presence"}`))
	alice.write(broadcastFrame("1", "3", "realtime:a", "secret", `{"from":"alice"}`))
	carol.write(broadcastFrame("1", "2", "realtime:a", "secret", `{"from":"carol"}`))
	for _, tok := range []string{authed, anon} {
		r, err := ts.do("POST", "/api/broadcast", "application/json",
			`{"messages":[{"topic":"a","event":"secret","payload":{"from":"rest-`+tok[len(tok)-4:]+`"},"private":true}]}`, "Authorization: Bearer "+tok)
		if err != nil || r.status != 202 {
			t.Fatalf("REST to private a: %d %s %v", r.status, r.body, err)
		}
	}
	if r, err := ts.do("POST", "/api/broadcast/a/events/secret?private=true", "application/json", `{"from":"rest-anon-single"}`, "Authorization: Bearer "+anon); err != nil || r.status != 403 {
		t.Errorf("REST single to private a with anon: %d %s %v, want 403", r.status, r.body, err)
	}
	// The members got what the channel carried: carol alice's presence
	// and broadcast and the authorized REST message, alice carol's.
	saw := func(fs []wsFrame, what string) bool {
		for _, f := range fs {
			if strings.Contains(string(f.Raw), what) {
				return true
			}
		}
		return false
	}
	waitSaw := func(c peer, what ...string) {
		t.Helper()
		var all []wsFrame
		if !waitFor(testWait, func() bool {
			all = append(all, drainUntilHeartbeat(t, c)...)
			for _, w := range what {
				if !saw(all, w) {
					return false
				}
			}
			return true
		}) {
			t.Errorf("a member of a is missing one of %q in %v", what, all)
		}
		if saw(all, "rest-"+anon[len(anon)-4:]) {
			t.Errorf("a member of a received the anon REST message")
		}
	}
	waitSaw(carol, "alice-presence", `"from":"alice"`, "rest-"+authed[len(authed)-4:])
	waitSaw(alice, `"from":"carol"`, "rest-"+authed[len(authed)-4:])

	// Everyone else got nothing of channel a: by now the node has queued
	// all of it (the members' barriers above came after).
	for name, c := range map[string]peer{"bob (private b)": bob, "bob (private b, WebTransport)": bobWT, "eve (public a)": eve} {
		for _, f := range drainUntilHeartbeat(t, c) {
			if strings.Contains(string(f.Raw), "secret") || strings.Contains(string(f.Raw), "alice") || strings.Contains(string(f.Raw), "carol") {
				t.Errorf("%s received %s", name, f)
			}
		}
	}
}
