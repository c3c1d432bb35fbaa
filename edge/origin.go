package edge

import (
	"net/http"
	"strings"
)

// maxQuotedOrigin is how much of a refused Origin header the error reply
// quotes: enough to recognise it, no more than a short prefix of input.
const maxQuotedOrigin = 100

// checkOrigin applies Config.AllowedOrigins to a request opening a client
// connection, WebSocket or WebTransport alike: a page from an origin not
// allowed is answered 403 {"error":"Origin not allowed: …"} and counted
// (errors_total{reason="origin"}). A request without Origin (not from a
// browser) passes, as does every request while the list is empty.
func (s *Server) checkOrigin(w http.ResponseWriter, r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if s.originAllowed(origin) {
		return true
	}
	s.metrics.errorReason("origin")
	writeJSONError(w, http.StatusForbidden, "Origin not allowed: "+cutString(origin, maxQuotedOrigin))
	return false
}

// originAllowed applies Config.AllowedOrigins.
func (s *Server) originAllowed(origin string) bool {
	if origin == "" || len(s.cfg.AllowedOrigins) == 0 {
		return true
	}
	for _, o := range s.cfg.AllowedOrigins {
		if originMatches(o, origin) {
			return true
		}
	}
	return false
}

// originMatches matches an Origin header against one allowed entry:
// "*", an exact origin, or "scheme://*.domain" for any subdomain.
func originMatches(pattern, origin string) bool {
	pattern, origin = strings.ToLower(strings.TrimSuffix(pattern, "/")), strings.ToLower(origin)
	if pattern == "*" || pattern == origin {
		return true
	}
	scheme, rest, ok := strings.Cut(pattern, "://*.")
	if !ok {
		return false
	}
	oscheme, ohost, ok := strings.Cut(origin, "://")
	return ok && oscheme == scheme && strings.HasSuffix(ohost, "."+rest)
}
