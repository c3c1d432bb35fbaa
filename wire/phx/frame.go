package phx

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"
)

// Version is the serializer a socket chose with the vsn query parameter.
type Version uint8

const (
	// V1 is vsn=1.0.0: frames are JSON objects.
	V1 Version = 1
	// V2 is vsn=2.0.0: frames are JSON arrays, plus binary broadcast frames.
	V2 Version = 2
)

// ParseVersion maps the vsn query value to a Version. A missing vsn means
// 1.0.0, as in Phoenix; anything unknown is an error.
func ParseVersion(vsn string) (Version, error) {
	switch vsn {
	case "", "1.0.0":
		return V1, nil
	case "2.0.0":
		return V2, nil
	}
	return 0, fmt.Errorf("phx: unsupported vsn %q", vsn)
}

// Encoding of a binary broadcast payload.
const (
	EncBytes byte = 0
	EncJSON  byte = 1
)

// Binary frame kinds (realtime-js serializer).
const (
	KindUserBroadcastPush byte = 3 // client → server
	KindUserBroadcast     byte = 4 // server → client
)

// Message is one decoded client frame. Null refs decode to "".
type Message struct {
	JoinRef string
	Ref     string
	Topic   string
	Event   string
	// Payload is the JSON payload for text frames. For a binary kind-3
	// frame it is the user payload only (JSON when Enc is EncJSON, raw bytes
	// otherwise), and UserEvent and Meta carry the rest.
	Payload json.RawMessage

	Binary    bool
	UserEvent string
	Meta      []byte
	Enc       byte
}

// Errors returned by the decoders.
var (
	ErrMalformed   = errors.New("phx: malformed frame")
	ErrUnknownKind = errors.New("phx: unknown binary frame kind")
)

// DecodeText decodes a text frame in the given serializer version.
func DecodeText(v Version, data []byte) (Message, error) {
	if v == V2 {
		return decodeV2(data)
	}
	return decodeV1(data)
}

func decodeV2(data []byte) (Message, error) {
	var parts []json.RawMessage
	if err := json.Unmarshal(data, &parts); err != nil {
		return Message{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if len(parts) != 5 {
		return Message{}, fmt.Errorf("%w: want 5 elements, got %d", ErrMalformed, len(parts))
	}
	var m Message
	var err error
	if m.JoinRef, err = decodeRef(parts[0]); err != nil {
		return Message{}, err
	}
	if m.Ref, err = decodeRef(parts[1]); err != nil {
		return Message{}, err
	}
	if m.Topic, err = decodeString(parts[2], "topic"); err != nil {
		return Message{}, err
	}
	if m.Event, err = decodeString(parts[3], "event"); err != nil {
		return Message{}, err
	}
	m.Payload = parts[4]
	return m, nil
}

// decodeString decodes a JSON string. json.Unmarshal would turn null into ""
// silently; a null topic or event is malformed, as it is for v1 frames.
func decodeString(raw json.RawMessage, field string) (string, error) {
	if len(raw) == 0 || raw[0] != '"' {
		return "", fmt.Errorf("%w: %s must be a string", ErrMalformed, field)
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", fmt.Errorf("%w: %s: %v", ErrMalformed, field, err)
	}
	return s, nil
}

func decodeV1(data []byte) (Message, error) {
	var f struct {
		Topic   *string         `json:"topic"`
		Event   *string         `json:"event"`
		Payload json.RawMessage `json:"payload"`
		Ref     json.RawMessage `json:"ref"`
		JoinRef json.RawMessage `json:"join_ref"`
	}
	if err := json.Unmarshal(data, &f); err != nil {
		return Message{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if f.Topic == nil || f.Event == nil {
		return Message{}, fmt.Errorf("%w: topic and event are required", ErrMalformed)
	}
	m := Message{Topic: *f.Topic, Event: *f.Event, Payload: f.Payload}
	var err error
	if m.Ref, err = decodeRef(f.Ref); err != nil {
		return Message{}, err
	}
	if m.JoinRef, err = decodeRef(f.JoinRef); err != nil {
		return Message{}, err
	}
	if len(m.Payload) == 0 {
		m.Payload = json.RawMessage("null")
	}
	return m, nil
}

// decodeRef accepts a JSON string, null, or a number (some clients send
// integer refs) and returns it as a string.
func decodeRef(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", fmt.Errorf("%w: ref: %v", ErrMalformed, err)
		}
		return s, nil
	}
	var n json.Number
	if err := json.Unmarshal(raw, &n); err != nil {
		return "", fmt.Errorf("%w: ref must be a string, number or null", ErrMalformed)
	}
	return n.String(), nil
}

// DecodeBinary decodes a binary client frame. Only kind 3 (user broadcast
// push) is defined for the client-to-server direction.
func DecodeBinary(data []byte) (Message, error) {
	if len(data) == 0 {
		return Message{}, fmt.Errorf("%w: empty binary frame", ErrMalformed)
	}
	if data[0] != KindUserBroadcastPush {
		return Message{}, fmt.Errorf("%w: %d", ErrUnknownKind, data[0])
	}
	const hdr = 7
	if len(data) < hdr {
		return Message{}, fmt.Errorf("%w: short binary header", ErrMalformed)
	}
	lens := [5]int{int(data[1]), int(data[2]), int(data[3]), int(data[4]), int(data[5])}
	enc := data[6]
	if enc != EncBytes && enc != EncJSON {
		return Message{}, fmt.Errorf("%w: unknown payload encoding %d", ErrMalformed, enc)
	}
	off := hdr
	var fields [5][]byte
	for i, n := range lens {
		if len(data)-off < n {
			return Message{}, fmt.Errorf("%w: binary field %d overruns frame", ErrMalformed, i)
		}
		fields[i] = data[off : off+n]
		off += n
	}
	m := Message{
		JoinRef:   string(fields[0]),
		Ref:       string(fields[1]),
		Topic:     string(fields[2]),
		Event:     "broadcast",
		UserEvent: string(fields[3]),
		Binary:    true,
		Enc:       enc,
		Payload:   data[off:],
	}
	if len(fields[4]) > 0 {
		m.Meta = fields[4]
	}
	// Everything but a raw-bytes payload may end up in a text frame (to
	// v1 clients, in replies), so it must be UTF-8.
	for i, f := range fields {
		if !utf8.Valid(f) {
			return Message{}, fmt.Errorf("%w: binary field %d is not valid UTF-8", ErrMalformed, i)
		}
	}
	if enc == EncJSON && !utf8.Valid(m.Payload) {
		return Message{}, fmt.Errorf("%w: binary JSON payload is not valid UTF-8", ErrMalformed)
	}
	if enc == EncJSON && !json.Valid(m.Payload) {
		return Message{}, fmt.Errorf("%w: binary JSON payload is not valid JSON", ErrMalformed)
	}
	if m.Meta != nil && !json.Valid(m.Meta) {
		return Message{}, fmt.Errorf("%w: binary meta is not valid JSON", ErrMalformed)
	}
	return m, nil
}
