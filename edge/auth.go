package edge

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// claims are the parts of a verified JWT the edge uses.
type claims struct {
	Role string
	Sub  string
	Exp  time.Time // zero when the node runs open
	Raw  []byte    // the whole claims object as JSON (request.jwt.claims)
}

// authError is a refused token. Code is the Supabase join-reply prefix
// ("InvalidJWTToken"), Msg the human text shared by all reply forms.
type authError struct {
	Code string
	Msg  string
}

func (e *authError) Error() string { return e.Msg }

// joinReason is the reason of a refused phx_join: "Code: Msg".
func (e *authError) joinReason() string { return e.Code + ": " + e.Msg }

// authenticator verifies apikeys and access tokens. Without a secret it
// accepts everything (the node runs open).
type authenticator struct {
	secret []byte
	leeway time.Duration // allowed clock skew for nbf and iat
	now    func() time.Time
	parser *jwt.Parser
}

func newAuthenticator(secret []byte, leeway time.Duration) *authenticator {
	return &authenticator{
		secret: secret,
		leeway: leeway,
		now:    time.Now,
		// Expiry is checked below, to report how long ago a token expired.
		parser: jwt.NewParser(jwt.WithValidMethods([]string{"HS256", "HS384", "HS512"}), jwt.WithoutClaimsValidation()),
	}
}

func (a *authenticator) open() bool { return len(a.secret) == 0 }

var openClaims = &claims{Role: "anon"}

// socket checks the apikey of a connection. The error text is the body of
// the 401 answer.
func (a *authenticator) socket(apikey string) (*claims, error) {
	if a.open() {
		return openClaims, nil
	}
	if apikey == "" {
		return nil, &authError{Msg: "API key is missing"}
	}
	c, err := a.verify(apikey)
	if err != nil {
		if strings.HasPrefix(err.Msg, "Token has expired") {
			return nil, &authError{Code: err.Code, Msg: "Token has expired"}
		}
		return nil, err
	}
	return c, nil
}

// verify checks a token's signature, role and exp.
func (a *authenticator) verify(token string) (*claims, *authError) {
	if a.open() {
		return openClaims, nil
	}
	mc := jwt.MapClaims{}
	_, err := a.parser.ParseWithClaims(token, mc, func(*jwt.Token) (any, error) { return a.secret, nil })
	switch {
	case err == nil:
	case errors.Is(err, jwt.ErrTokenMalformed):
		return nil, &authError{"MalformedJWT", "The token provided is not a valid JWT"}
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		return nil, &authError{"JwtSignatureError", "Failed to validate JWT signature"}
	default:
		return nil, &authError{"MalformedJWT", "The token provided is not a valid JWT"}
	}
	role, _ := mc["role"].(string)
	exp, err := mc.GetExpirationTime()
	if role == "" || err != nil || exp == nil {
		return nil, &authError{"InvalidJWTToken", "Fields `role` and `exp` are required in JWT"}
	}
	now := a.now()
	if !exp.After(now) {
		ago := int(now.Sub(exp.Time).Seconds())
		return nil, &authError{"InvalidJWTToken", fmt.Sprintf("Token has expired %d seconds ago", ago)}
	}
	// A token that is not valid yet (nbf), or claims to be issued in the
	// future (iat), is refused beyond a small allowance for clock skew.
	nbf, errNbf := mc.GetNotBefore()
	iat, errIat := mc.GetIssuedAt()
	if errNbf != nil || errIat != nil {
		return nil, &authError{"InvalidJWTToken", "Fields `nbf` and `iat` must be numeric dates"}
	}
	if nbf != nil && nbf.After(now.Add(a.leeway)) {
		return nil, &authError{"InvalidJWTToken", fmt.Sprintf("Token is not valid yet: nbf is %d seconds in the future", int(nbf.Sub(now).Seconds()))}
	}
	if iat != nil && iat.After(now.Add(a.leeway)) {
		return nil, &authError{"InvalidJWTToken", fmt.Sprintf("Token is not valid yet: iat is %d seconds in the future", int(iat.Sub(now).Seconds()))}
	}
	sub, _ := mc["sub"].(string)
	raw, _ := json.Marshal(mc) // decoded from JSON, so it encodes
	return &claims{Role: role, Sub: sub, Exp: exp.Time, Raw: raw}, nil
}

// channelToken picks the token a join or refresh uses: its own, unless it
// is missing or an sb_ key, which both mean the socket's apikey.
func channelToken(token, apikey string) string {
	if token == "" || strings.HasPrefix(token, "sb_") {
		return apikey
	}
	return token
}
