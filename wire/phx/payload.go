package phx

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Flag is a boolean that also accepts the strings "true" and "false", as
// Supabase does for join config values. Any other value is false: Supabase
// logs an invalid join config and joins with the defaults.
type Flag bool

// UnmarshalJSON implements json.Unmarshaler.
func (f *Flag) UnmarshalJSON(b []byte) error {
	*f = strings.ToLower(string(bytes.Trim(bytes.TrimSpace(b), `"`))) == "true"
	return nil
}

// JoinPayload is the payload of phx_join. Unknown keys are ignored.
type JoinPayload struct {
	Config      JoinConfig `json:"config"`
	AccessToken *string    `json:"access_token"`
	UserToken   *string    `json:"user_token"`
}

// JoinConfig is the channel configuration a client asks for.
type JoinConfig struct {
	Broadcast struct {
		Self Flag `json:"self"`
		Ack  Flag `json:"ack"`
		// Unreliable (meshcast, not Supabase) opts the channel into
		// datagrams on WebTransport: the client may send broadcasts as
		// datagrams and receives others' datagrams as datagrams.
		Unreliable Flag `json:"unreliable"`
		// Replay asks for the topic's recent broadcasts from the database
		// ({"since": epoch ms, "limit": n}); nil when not asked.
		Replay json.RawMessage `json:"replay"`
		// Recover (meshcast) is Recover.Broadcast where realtime-js can
		// put it: it sends broadcast's object as the app gave it, and drops
		// config keys it does not know.
		Recover json.RawMessage `json:"recover"`
	} `json:"broadcast"`
	Presence struct {
		Key     json.RawMessage `json:"key"`
		Enabled Flag            `json:"enabled"`
	} `json:"presence"`
	PostgresChanges []json.RawMessage `json:"postgres_changes"`
	Private         Flag              `json:"private"`
	// Recover (meshcast, issue 18) carries the positions the channel
	// last saw, asking for what it missed since: broadcast is a vector
	// {epoch: offset}, postgres_changes a change position. The edge
	// decodes them.
	Recover struct {
		Broadcast       json.RawMessage `json:"broadcast"`
		PostgresChanges json.RawMessage `json:"postgres_changes"`
	} `json:"recover"`
	// PostgresChangesOptions is realtime-js's postgres_changes_options,
	// which it sends as the app gave it where it drops config keys it does
	// not know: its "recover" (meshcast) is Recover.PostgresChanges for
	// realtime-js apps.
	PostgresChangesOptions struct {
		Recover json.RawMessage `json:"recover"`
	} `json:"postgres_changes_options"`
}

// PresenceKey returns the configured presence key as a string ("" when
// absent). Numbers are accepted and kept as their text.
func (c *JoinConfig) PresenceKey() string {
	k := bytes.TrimSpace(c.Presence.Key)
	if len(k) == 0 || string(k) == "null" {
		return ""
	}
	var s string
	if json.Unmarshal(k, &s) == nil {
		return s
	}
	return string(k)
}

// Token returns the access token of the join, if any.
func (p *JoinPayload) Token() string {
	if p.AccessToken != nil {
		return *p.AccessToken
	}
	if p.UserToken != nil {
		return *p.UserToken
	}
	return ""
}

// DecodeJoin decodes a phx_join payload. A null or empty payload is a
// join with default config. Like Supabase, which never refuses a join for a
// bad config, it skips values of the wrong type (leaving their defaults);
// only a payload that is not a JSON object is an error.
func DecodeJoin(payload []byte) (JoinPayload, error) {
	var p JoinPayload
	payload = bytes.TrimSpace(payload)
	if len(payload) == 0 || string(payload) == "null" {
		return p, nil
	}
	if payload[0] != '{' {
		return p, fmt.Errorf("%w: join payload must be an object", ErrMalformed)
	}
	if err := json.Unmarshal(payload, &p); err != nil {
		// encoding/json skips mistyped values and fills in the rest.
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			return p, nil
		}
		return p, fmt.Errorf("%w: join payload: %v", ErrMalformed, err)
	}
	return p, nil
}

// BroadcastPayload is the text form of a client broadcast push:
// {"type":"broadcast","event":"e","payload":{...}}.
type BroadcastPayload struct {
	Type    string          `json:"type"`
	Event   string          `json:"event"`
	Payload json.RawMessage `json:"payload"`
}

// DecodeBroadcast decodes a text broadcast payload. A missing inner payload
// becomes {}.
func DecodeBroadcast(payload []byte) (BroadcastPayload, error) {
	var b BroadcastPayload
	if err := json.Unmarshal(payload, &b); err != nil {
		return b, fmt.Errorf("%w: broadcast payload: %v", ErrMalformed, err)
	}
	if len(b.Payload) == 0 {
		b.Payload = json.RawMessage("{}")
	}
	return b, nil
}

// PresencePayload is a client presence push:
// {"type":"presence","event":"track","payload":{...}}.
type PresencePayload struct {
	Type    string          `json:"type"`
	Event   string          `json:"event"`
	Payload json.RawMessage `json:"payload"`
}

// DecodePresence decodes a presence push payload.
func DecodePresence(payload []byte) (PresencePayload, error) {
	var p PresencePayload
	if err := json.Unmarshal(payload, &p); err != nil {
		return p, fmt.Errorf("%w: presence payload: %v", ErrMalformed, err)
	}
	return p, nil
}

// AccessTokenPayload is the payload of the access_token event.
type AccessTokenPayload struct {
	AccessToken *string `json:"access_token"`
}

// IsObject reports whether raw is a JSON object.
func IsObject(raw []byte) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) > 0 && raw[0] == '{'
}
