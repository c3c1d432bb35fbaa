package edge

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"hash"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// fuzzNow is the clock of the token fuzzer: fixed, so that a corpus entry
// means the same on every run.
var fuzzNow = time.Unix(1_750_000_000, 0)

// tokenSeeds are tokens of every shape verify sorts out, signed with
// testSecret at fuzzNow.
func tokenSeeds(t testing.TB) map[string]string {
	now := fuzzNow.Unix()
	sign := func(m jwt.SigningMethod, c jwt.MapClaims) string {
		s, err := jwt.NewWithClaims(m, c).SignedString(testSecret)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	unsigned, _ := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"role": "service_role", "exp": now + 3600}).SignedString(jwt.UnsafeAllowNoneSignatureType)
	valid := sign(jwt.SigningMethodHS256, jwt.MapClaims{"role": "authenticated", "sub": "user-1", "exp": now + 3600, "iat": now, "aud": "authenticated"})
	parts := strings.Split(valid, ".")
	return map[string]string{
		"anon":          sign(jwt.SigningMethodHS256, jwt.MapClaims{"role": "anon", "exp": now + 3600, "iss": "supabase"}),
		"authenticated": valid,
		"hs384":         sign(jwt.SigningMethodHS384, jwt.MapClaims{"role": "authenticated", "exp": now + 60}),
		"hs512":         sign(jwt.SigningMethodHS512, jwt.MapClaims{"role": "authenticated", "exp": float64(now) + 0.5}),
		"expired":       sign(jwt.SigningMethodHS256, jwt.MapClaims{"role": "anon", "exp": now - 90}),
		"no-role":       sign(jwt.SigningMethodHS256, jwt.MapClaims{"exp": now + 3600}),
		"role-number":   sign(jwt.SigningMethodHS256, jwt.MapClaims{"role": 5, "exp": now + 3600}),
		"exp-string":    sign(jwt.SigningMethodHS256, jwt.MapClaims{"role": "anon", "exp": "9999999999"}),
		"nbf-future":    sign(jwt.SigningMethodHS256, jwt.MapClaims{"role": "anon", "exp": now + 3600, "nbf": now + 600}),
		"iat-future":    sign(jwt.SigningMethodHS256, jwt.MapClaims{"role": "anon", "exp": now + 3600, "iat": now + 600}),
		"nbf-string":    sign(jwt.SigningMethodHS256, jwt.MapClaims{"role": "anon", "exp": now + 3600, "nbf": "soon"}),
		"alg-none":      unsigned,
		"alg-rs256":     base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"RS256","typ":"JWT"}`)) + "." + parts[1] + "." + parts[2],
		"bad-signature": parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(make([]byte, 32)),
		"padded":        parts[0] + "." + parts[1] + "=." + parts[2],
		"two-parts":     parts[0] + "." + parts[1],
		"sb-key":        "sb_publishable_abc",
		"garbage":       "garbage",
		"empty":         "",
	}
}

// FuzzVerifyToken: verify accepts only an HS256/384/512 token whose MAC
// checks out under the secret (computed here independently), with a
// string role and an exp still ahead; whatever it refuses gets one of
// Supabase's reasons. claims, when set, is signed as the payload of a
// fresh HS256 token, so the fuzzer reaches the claims checks behind the
// signature.
func FuzzVerifyToken(f *testing.F) {
	for _, tok := range tokenSeeds(f) {
		f.Add(tok, []byte(nil))
	}
	now := fuzzNow.Unix()
	for _, c := range []string{`{"role":"anon","exp":1750003600}`, `{"role":"x","exp":1e300}`, `{"role":"x","exp":-1}`,
		`{"role":"","exp":1750003600}`, `{"role":"x","exp":1750003600,"nbf":1750000005,"iat":1749999999}`, `{"role":"x","exp":1750003600.999}`, `[]`, `{`} {
		f.Add("", []byte(c))
	}
	_ = now
	a := newAuthenticator(testSecret, 10*time.Second)
	a.now = func() time.Time { return fuzzNow }
	f.Fuzz(func(t *testing.T, token string, claims []byte) {
		if len(claims) > 0 {
			token = signHS256(base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + base64.RawURLEncoding.EncodeToString(claims))
		}
		cl, aerr := a.verify(token)
		if aerr != nil {
			switch aerr.Code {
			case "MalformedJWT", "JwtSignatureError", "InvalidJWTToken":
			default:
				t.Fatalf("verify(%q): code %q", token, aerr.Code)
			}
			if aerr.Msg == "" {
				t.Fatalf("verify(%q): empty message", token)
			}
			return
		}
		if !validMAC(token) {
			t.Fatalf("verify(%q) accepted a token whose MAC does not check out", token)
		}
		if cl.Role == "" || !cl.Exp.After(fuzzNow) {
			t.Fatalf("verify(%q) = role %q, exp %v", token, cl.Role, cl.Exp)
		}
		var raw map[string]any
		if err := json.Unmarshal(cl.Raw, &raw); err != nil || raw["role"] != cl.Role {
			t.Fatalf("verify(%q): claims %s (%v)", token, cl.Raw, err)
		}
	})
}

func signHS256(signing string) string {
	m := hmac.New(sha256.New, testSecret)
	m.Write([]byte(signing))
	return signing + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// validMAC checks a token's HMAC under testSecret without the jwt package.
func validMAC(token string) bool {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return false
	}
	hb, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return false
	}
	var h struct {
		Alg string `json:"alg"`
	}
	if json.Unmarshal(hb, &h) != nil {
		return false
	}
	var fn func() hash.Hash
	switch h.Alg {
	case "HS256":
		fn = sha256.New
	case "HS384":
		fn = sha512.New384
	case "HS512":
		fn = sha512.New
	default:
		return false
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return false
	}
	m := hmac.New(fn, testSecret)
	m.Write([]byte(parts[0] + "." + parts[1]))
	return hmac.Equal(sig, m.Sum(nil))
}
