package bench

import (
	"net/url"
	"time"
)

// WithAPIKey returns the WebSocket URL u with its apikey replaced by an
// anon JWT signed with secret (a node started with --jwt-secret refuses
// any other), valid for validFor.
func WithAPIKey(u, secret string, validFor time.Duration) (string, error) {
	p, err := url.Parse(u)
	if err != nil {
		return "", err
	}
	key, err := anonKey(secret, validFor)
	if err != nil {
		return "", err
	}
	q := p.Query()
	q.Set("apikey", key)
	p.RawQuery = q.Encode()
	return p.String(), nil
}
