package edge

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
)

// Extensions is a set of the extensions of a channel that authorization
// distinguishes, as realtime.messages' extension column names them.
type Extensions uint8

// The extensions a ChannelPolicy decides.
const (
	ExtBroadcast Extensions = 1 << iota
	ExtPresence

	allExtensions = ExtBroadcast | ExtPresence
)

// Has reports whether x holds every extension of y.
func (x Extensions) Has(y Extensions) bool { return x&y == y }

// String names the set as realtime.messages.extension values, comma
// separated.
func (x Extensions) String() string {
	var names []string
	if x.Has(ExtBroadcast) {
		names = append(names, "broadcast")
	}
	if x.Has(ExtPresence) {
		names = append(names, "presence")
	}
	return strings.Join(names, ",")
}

// Identity is who a policy decides for: the verified JWT of a channel or
// a REST request, and the request's headers.
type Identity struct {
	Role string // the JWT's role
	Sub  string // the JWT's sub ("" when it has none)
	// Claims is the JWT's claims object as JSON (request.jwt.claims).
	Claims []byte
	// Headers is a JSON object of request headers (request.headers): the
	// x- headers of a WebSocket upgrade, every header of a REST request;
	// {} when there are none (a WebTransport session).
	Headers []byte
}

// ChannelPolicy decides private channels: which extensions of a topic an
// identity may read (receive) and write (send broadcasts, track presence).
// It is the one place they are decided; edge asks it at join (read), at
// the first send and the first track of a channel (write), again on a new
// access_token (read), and for every private REST broadcast (write).
// Public channels, and a node without a JWT secret, never ask.
//
// Topic is the channel's name without "realtime:". Both methods answer
// the subset of want that is allowed. An error is no decision: edge fails
// closed (refuses, and logs it); errors that wrap ErrPolicyUnavailable or
// ErrMissingPartition are told to the client as Supabase tells them. A
// policy may block (edge lets the connection's other work go on), and
// must give up when ctx ends.
type ChannelPolicy interface {
	CanRead(ctx context.Context, id *Identity, topic string, want Extensions) (Extensions, error)
	CanWrite(ctx context.Context, id *Identity, topic string, want Extensions) (Extensions, error)
}

var (
	// ErrPolicyUnavailable is a policy that could not be asked: its
	// database is unreachable, or too busy to answer in time.
	ErrPolicyUnavailable = errors.New("channel policy: database unavailable")
	// ErrMissingPartition is a policy check that could not insert its probe
	// rows: realtime.messages has no partition for today.
	ErrMissingPartition = errors.New("channel policy: realtime.messages has no partition for today")
)

// claimsRule is the ChannelPolicy of a node without a database: any
// verified role but anon may read and write every private channel.
type claimsRule struct{}

func (claimsRule) CanRead(_ context.Context, id *Identity, _ string, want Extensions) (Extensions, error) {
	return claimsAllow(id, want), nil
}

func (claimsRule) CanWrite(_ context.Context, id *Identity, _ string, want Extensions) (Extensions, error) {
	return claimsAllow(id, want), nil
}

func claimsAllow(id *Identity, want Extensions) Extensions {
	if id.Role == "" || id.Role == "anon" {
		return 0
	}
	return want
}

// identity is the Identity of a channel's (or a REST request's) claims.
func identity(cl *claims, headers []byte) *Identity {
	if len(headers) == 0 {
		headers = emptyObject
	}
	id := &Identity{Headers: headers}
	if cl != nil {
		id.Role, id.Sub, id.Claims = cl.Role, cl.Sub, cl.Raw
	}
	return id
}

// headersJSON encodes the headers of a request whose names have prefix
// (all when ""), lower case, as a JSON object, or nil when there are none;
// a repeated header keeps its last value, as Supabase's map of them does.
func headersJSON(h http.Header, prefix string) []byte {
	var m map[string]string
	for k, vs := range h {
		if len(vs) > 0 && len(k) >= len(prefix) && strings.EqualFold(k[:len(prefix)], prefix) {
			if m == nil {
				m = make(map[string]string)
			}
			m[strings.ToLower(k)] = vs[len(vs)-1]
		}
	}
	if m == nil {
		return nil
	}
	b, _ := json.Marshal(m) // strings always encode
	return b
}
