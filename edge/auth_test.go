package edge

import (
	"encoding/json"
	"errors"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

var testSecret = []byte("super-secret-jwt-token-with-at-least-32-characters")

// mint signs claims with key as an HS256 JWT.
func mintWith(t *testing.T, key []byte, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(key)
	if err != nil {
		t.Fatalf("signing: %v", err)
	}
	return s
}

// token mints a token for role that expires after ttl.
func mintToken(t *testing.T, role string, ttl time.Duration) string {
	t.Helper()
	return mintWith(t, testSecret, jwt.MapClaims{"role": role, "exp": time.Now().Add(ttl).Unix(), "sub": "user-1"})
}

func startAuthServer(t *testing.T) *testServer {
	return startServer(t, func(c *Config) { c.JWTSecret = testSecret })
}

func TestSocketAuth(t *testing.T) {
	ts := startAuthServer(t)
	cases := []struct {
		name   string
		query  string
		status int
		body   string // the {"error":…} text; "" = don't check
	}{
		{"missing apikey", "vsn=2.0.0", 401, "API key is missing"},
		{"bad signature", "vsn=2.0.0&apikey=" + mintWith(t, []byte("another-secret-another-secret-another"), jwt.MapClaims{"role": "anon", "exp": time.Now().Add(time.Hour).Unix()}), 401, "Failed to validate JWT signature"},
		{"not a JWT", "vsn=2.0.0&apikey=garbage", 401, "The token provided is not a valid JWT"},
		{"expired", "vsn=2.0.0&apikey=" + mintToken(t, "anon", -time.Minute), 401, "Token has expired"},
		{"no role", "vsn=2.0.0&apikey=" + mintWith(t, testSecret, jwt.MapClaims{"exp": time.Now().Add(time.Hour).Unix()}), 401, "Fields `role` and `exp` are required in JWT"},
	}
	for _, tc := range cases {
		_, err := ts.dial(t, "/realtime/v1/websocket", tc.query)
		var refused *upgradeRefused
		if !errors.As(err, &refused) {
			t.Errorf("%s: dial error %v, want a refused upgrade", tc.name, err)
			continue
		}
		want, _ := json.Marshal(map[string]string{"error": tc.body})
		if refused.status != tc.status || !jsonEq([]byte(refused.body), string(want)) {
			t.Errorf("%s: %d %s, want %d {\"error\":%q}", tc.name, refused.status, refused.body, tc.status, tc.body)
		}
	}

	c := ts.connectQuery(t, "vsn=2.0.0&apikey="+mintToken(t, "anon", time.Hour))
	c.write(joinFrame("1", "realtime:room1", `{}`))
	if f := c.next(); !jsonEq(f.Payload, `{"status":"ok","response":{"postgres_changes":[]}}`) {
		t.Errorf("join with a valid apikey: %s", f)
	}

	// Supabase also takes the key from the x-api-key header.
	h := http.Header{"X-Api-Key": {mintToken(t, "anon", time.Hour)}}
	hc, err := ts.dialHeader(t, "/realtime/v1/websocket", "vsn=2.0.0", h)
	if err != nil {
		t.Fatalf("dial with x-api-key: %v", err)
	}
	hc.write(joinFrame("1", "realtime:room1", `{}`))
	if f := hc.next(); jsonField(f.Payload, "status") != `"ok"` {
		t.Errorf("join on an x-api-key socket: %s", f)
	}
}

func TestJoinTokenChecks(t *testing.T) {
	ts := startAuthServer(t)
	c := ts.connectQuery(t, "vsn=2.0.0&apikey="+mintToken(t, "anon", time.Hour))

	join := func(jr, topic, config, accessToken string) wsFrame {
		t.Helper()
		c.write(`["` + jr + `","` + jr + `","` + topic + `","phx_join",{"config":` + config + `,"access_token":"` + accessToken + `"}]`)
		return c.next()
	}
	reason := func(f wsFrame) string { return strings.Trim(jsonField(f.Payload, "response.reason"), `"`) }

	f := join("1", "realtime:a", `{}`, mintToken(t, "anon", -3*time.Second))
	if jsonField(f.Payload, "status") != `"error"` || !regexp.MustCompile(`^InvalidJWTToken: Token has expired \d+ seconds ago$`).MatchString(reason(f)) {
		t.Errorf("expired access_token: %s", f)
	}
	f = join("2", "realtime:a", `{}`, mintWith(t, testSecret, jwt.MapClaims{"exp": time.Now().Add(time.Hour).Unix()}))
	if reason(f) != "InvalidJWTToken: Fields `role` and `exp` are required in JWT" {
		t.Errorf("token without role: %s", f)
	}
	f = join("3", "realtime:a", `{}`, mintWith(t, testSecret, jwt.MapClaims{"role": "anon"}))
	if reason(f) != "InvalidJWTToken: Fields `role` and `exp` are required in JWT" {
		t.Errorf("token without exp: %s", f)
	}
	f = join("4", "realtime:a", `{}`, "garbage")
	if reason(f) != "MalformedJWT: The token provided is not a valid JWT" {
		t.Errorf("garbage token: %s", f)
	}
	f = join("5", "realtime:a", `{}`, mintWith(t, []byte("another-secret-another-secret-another"), jwt.MapClaims{"role": "anon", "exp": time.Now().Add(time.Hour).Unix()}))
	if reason(f) != "JwtSignatureError: Failed to validate JWT signature" {
		t.Errorf("token with a bad signature: %s", f)
	}

	// Private channels need a role other than anon.
	f = join("6", "realtime:x", `{"private":true}`, mintToken(t, "anon", time.Hour))
	if !jsonEq(f.Payload, `{"status":"error","response":{"reason":"Unauthorized: You do not have permissions to read from this Channel topic: x"}}`) {
		t.Errorf("private join as anon: %s", f)
	}
	// Without an access_token the socket's apikey (anon) is used.
	c.write(`["7","7","realtime:x","phx_join",{"config":{"private":true}}]`)
	if f := c.next(); reason(f) != "Unauthorized: You do not have permissions to read from this Channel topic: x" {
		t.Errorf("private join with the anon apikey: %s", f)
	}
	f = join("8", "realtime:x", `{"private":true}`, mintToken(t, "authenticated", time.Hour))
	if !jsonEq(f.Raw, `["8","8","realtime:x","phx_reply",{"status":"ok","response":{"postgres_changes":[]}}]`) {
		t.Errorf("private join as authenticated: %s", f)
	}
	// user_token is the legacy name of access_token.
	c.write(`["10","10","realtime:y","phx_join",{"config":{"private":true},"user_token":"` + mintToken(t, "authenticated", time.Hour) + `"}]`)
	if f := c.next(); jsonField(f.Payload, "status") != `"ok"` {
		t.Errorf("private join with user_token: %s", f)
	}
	// sb_ keys mean the apikey.
	f = join("9", "realtime:pub", `{}`, "sb_publishable_abc")
	if jsonField(f.Payload, "status") != `"ok"` {
		t.Errorf("join with an sb_ access_token: %s", f)
	}
}

func TestChannelTokenExpiry(t *testing.T) {
	ts := startAuthServer(t)
	c := ts.connectQuery(t, "vsn=2.0.0&apikey="+mintToken(t, "anon", time.Hour))
	exp := time.Now().Add(2 * time.Second)
	short := mintWith(t, testSecret, jwt.MapClaims{"role": "authenticated", "exp": exp.Unix()})
	c.write(`["1","1","realtime:x","phx_join",{"config":{},"access_token":"` + short + `"}]`)
	if f := c.next(); jsonField(f.Payload, "status") != `"ok"` {
		t.Fatalf("join: %s", f)
	}

	data, op, err := c.read(10 * time.Second)
	if err != nil {
		t.Fatalf("no message before the token expired: %v", err)
	}
	f, err := decodeFrame(data, op, false)
	if err != nil {
		t.Fatalf("decoding %s: %v", data, err)
	}
	if now := time.Now(); now.Before(time.Unix(exp.Unix(), 0)) {
		t.Errorf("channel closed at %v, before the token's exp %v", now, time.Unix(exp.Unix(), 0))
	}
	if f.Event != "system" || refOf(f.JoinRef) != "1" || f.Ref != nil {
		t.Fatalf("got %s, want a system message with join_ref 1", f)
	}
	msg := jsonField(f.Payload, "message")
	if !regexp.MustCompile(`^"Token has expired \d+ seconds ago"$`).MatchString(msg) {
		t.Errorf("system message %s", msg)
	}
	if !jsonEq(f.Payload, `{"extension":"system","status":"error","message":`+msg+`,"channel":"x"}`) {
		t.Errorf("system payload %s", f.Payload)
	}
	if f := c.next(); !jsonEq(f.Raw, `["1","1","realtime:x","phx_close",{}]`) {
		t.Errorf("after the expiry: %s, want phx_close", f)
	}
	// The socket itself stays.
	c.write(heartbeatFrame)
	if f := c.next(); !isHeartbeatReply(f) {
		t.Errorf("got %s, want the heartbeat reply", f)
	}
}

func TestAccessTokenRefresh(t *testing.T) {
	ts := startAuthServer(t)
	c := ts.connectQuery(t, "vsn=2.0.0&apikey="+mintToken(t, "anon", time.Hour))
	c.write(`["1","1","realtime:x","phx_join",{"config":{"private":true},"access_token":"` + mintToken(t, "authenticated", time.Hour) + `"}]`)
	if f := c.next(); jsonField(f.Payload, "status") != `"ok"` {
		t.Fatalf("join: %s", f)
	}

	// A valid token, null, and an sb_ key are taken without a reply.
	c.write(`["1","2","realtime:x","access_token",{"access_token":"` + mintToken(t, "authenticated", 2*time.Hour) + `"}]`)
	c.write(`["1","3","realtime:x","access_token",{"access_token":null}]`)
	c.write(`["1","4","realtime:x","access_token",{"access_token":"sb_publishable_abc"}]`)
	c.write(heartbeatFrame)
	if f := c.next(); !isHeartbeatReply(f) {
		t.Errorf("a good access_token was answered: %s", f)
	}

	c.write(`["1","5","realtime:x","access_token",{"access_token":"garbage"}]`)
	f := c.next()
	if !jsonEq(f.Raw, `["1",null,"realtime:x","system",{"extension":"system","status":"error","message":"The token provided is not a valid JWT","channel":"x"}]`) {
		t.Errorf("garbage access_token: %s", f)
	}
	if f := c.next(); !jsonEq(f.Raw, `["1","1","realtime:x","phx_close",{}]`) {
		t.Errorf("after the system error: %s, want phx_close", f)
	}

	// Losing private access on refresh closes the channel too.
	c.write(`["6","6","realtime:x","phx_join",{"config":{"private":true},"access_token":"` + mintToken(t, "authenticated", time.Hour) + `"}]`)
	if f := c.next(); jsonField(f.Payload, "status") != `"ok"` {
		t.Fatalf("rejoin: %s", f)
	}
	c.write(`["6","7","realtime:x","access_token",{"access_token":"` + mintToken(t, "anon", time.Hour) + `"}]`)
	if f := c.next(); f.Event != "system" || jsonField(f.Payload, "message") != `"You no longer have permission to read from this Channel topic: x"` {
		t.Errorf("anon refresh on a private channel: %s", f)
	}
	if f := c.next(); !jsonEq(f.Raw, `["6","6","realtime:x","phx_close",{}]`) {
		t.Errorf("after the system error: %s, want phx_close", f)
	}
}

// Tokens not valid yet (nbf) or issued in the future (iat) are refused,
// beyond the leeway for clock skew, at the socket and at a join.
func TestFutureTokensRefused(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.JWTSecret, c.JWTLeeway = testSecret, 10*time.Second })
	exp := time.Now().Add(time.Hour).Unix()
	future := time.Now().Add(time.Hour).Unix()
	skewed := time.Now().Add(5 * time.Second).Unix() // within the leeway
	nbf := mintWith(t, testSecret, jwt.MapClaims{"role": "anon", "exp": exp, "nbf": future})
	iat := mintWith(t, testSecret, jwt.MapClaims{"role": "anon", "exp": exp, "iat": future})
	for name, tok := range map[string]string{"nbf": nbf, "iat": iat} {
		_, err := ts.dial(t, "/realtime/v1/websocket", "vsn=2.0.0&apikey="+tok)
		var refused *upgradeRefused
		if !errors.As(err, &refused) || refused.status != 401 || !strings.Contains(refused.body, "Token is not valid yet") {
			t.Errorf("apikey with %s in the future: %v", name, err)
		}
	}
	c := ts.connectQuery(t, "vsn=2.0.0&apikey="+mintWith(t, testSecret, jwt.MapClaims{"role": "anon", "exp": exp, "nbf": skewed, "iat": skewed}))
	c.write(`["1","1","realtime:a","phx_join",{"config":{},"access_token":"` + nbf + `"}]`)
	if f := c.next(); !strings.HasPrefix(jsonField(f.Payload, "response.reason"), `"InvalidJWTToken: Token is not valid yet`) {
		t.Errorf("join with nbf in the future: %s", f)
	}
	r, err := ts.do("POST", "/api/broadcast", "application/json", `{"messages":[]}`, "Authorization: Bearer "+iat)
	if err != nil || r.status != 401 {
		t.Errorf("REST with iat in the future: %d %v", r.status, err)
	}
}
