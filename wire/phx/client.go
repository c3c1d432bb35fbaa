package phx

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
)

// The client's side of the protocol: the frames a Go client sends (the
// server decodes them with DecodeText and DecodeBinary) and a cheap read of
// the frames it receives. meshbench is that client: it reads and writes at
// the server's rate, so these are allocation-free like the server's
// encoders.

// AppendPush appends a v2 client push [joinRef, ref, topic, event, payload]
// with the ref written as a decimal string, as realtime-js numbers its
// pushes. An empty joinRef and ref 0 are written as null. payload must be
// valid JSON.
func AppendPush(dst []byte, joinRef string, ref uint64, topic, event string, payload []byte) []byte {
	dst = append(dst, '[')
	dst = appendRef(dst, joinRef)
	if ref == 0 {
		dst = append(dst, ",null,"...)
	} else {
		dst = append(dst, `,"`...)
		dst = strconv.AppendUint(dst, ref, 10)
		dst = append(dst, `",`...)
	}
	dst = AppendString(dst, topic)
	dst = append(dst, ',')
	dst = AppendString(dst, event)
	dst = append(dst, ',')
	dst = append(dst, payload...)
	return append(dst, ']')
}

// AppendUserBroadcastPush appends a binary kind-3 frame, the client's
// broadcast push:
//
//	u8 3, u8 len join_ref, u8 len ref, u8 len topic, u8 len event, u8 len meta, u8 enc,
//	join_ref, ref, topic, event, meta, payload
//
// with ref as a decimal string, empty when 0 (a datagram carries none).
// As with AppendUserBroadcast, the caller checks the lengths (CanBinary,
// and joinRef within 255 bytes); oversized fields are clipped rather than
// corrupting the frame.
func AppendUserBroadcastPush(dst []byte, joinRef string, ref uint64, topic, event string, meta []byte, enc byte, payload []byte) []byte {
	var refBuf [20]byte
	r := refBuf[:0]
	if ref != 0 {
		r = strconv.AppendUint(r, ref, 10)
	}
	joinRef, topic, event, meta = clip(joinRef), clip(topic), clip(event), clipBytes(meta)
	dst = append(dst, KindUserBroadcastPush, byte(len(joinRef)), byte(len(r)), byte(len(topic)), byte(len(event)), byte(len(meta)), enc)
	dst = append(dst, joinRef...)
	dst = append(dst, r...)
	dst = append(dst, topic...)
	dst = append(dst, event...)
	dst = append(dst, meta...)
	return append(dst, payload...)
}

// UserBroadcast is a decoded kind-4 frame. Its slices alias the frame.
type UserBroadcast struct {
	Topic, Event, Meta []byte
	Enc                byte
	Payload            []byte
}

// DecodeUserBroadcast decodes a binary kind-4 frame (server to client,
// what AppendUserBroadcast writes) without copying it.
func DecodeUserBroadcast(data []byte) (UserBroadcast, error) {
	var u UserBroadcast
	if len(data) == 0 {
		return u, fmt.Errorf("%w: empty binary frame", ErrMalformed)
	}
	if data[0] != KindUserBroadcast {
		return u, fmt.Errorf("%w: %d", ErrUnknownKind, data[0])
	}
	if len(data) < 5 {
		return u, fmt.Errorf("%w: short binary header", ErrMalformed)
	}
	lt, le, lm := int(data[1]), int(data[2]), int(data[3])
	u.Enc = data[4]
	if u.Enc != EncBytes && u.Enc != EncJSON {
		return u, fmt.Errorf("%w: unknown payload encoding %d", ErrMalformed, u.Enc)
	}
	rest := data[5:]
	if len(rest) < lt+le+lm {
		return u, fmt.Errorf("%w: binary fields overrun frame", ErrMalformed)
	}
	u.Topic, rest = rest[:lt], rest[lt:]
	u.Event, rest = rest[:le], rest[le:]
	u.Meta, u.Payload = rest[:lm], rest[lm:]
	return u, nil
}

// RawFrame is the envelope of a v2 text frame as it stands in the frame:
// the contents of its JSON strings with escapes left undecoded (nil for a
// null ref), and the payload's JSON text. Its slices alias the frame.
type RawFrame struct {
	JoinRef, Ref, Topic, Event []byte
	Payload                    []byte
}

// ScanV2 splits a v2 text frame into its envelope without decoding or
// copying: for a client that reads frames at the server's rate and looks
// at the event first. It checks the envelope's shape (refs are strings or
// null, topic and event strings), not the payload's JSON, which DecodeText
// does.
func ScanV2(frame []byte) (RawFrame, error) {
	var f RawFrame
	b := skipSpace(frame)
	if len(b) == 0 || b[0] != '[' {
		return f, fmt.Errorf("%w: not a JSON array", ErrMalformed)
	}
	b = b[1:]
	var err error
	for i, field := range []*[]byte{&f.JoinRef, &f.Ref, &f.Topic, &f.Event} {
		if b = skipSpace(b); i < 2 && bytes.HasPrefix(b, []byte("null")) {
			b = b[len("null"):]
		} else if *field, b, err = scanString(b); err != nil {
			return f, err
		}
		if b = skipSpace(b); len(b) == 0 || b[0] != ',' {
			return f, fmt.Errorf("%w: want 5 elements", ErrMalformed)
		}
		b = b[1:]
	}
	b = trimSpaceRight(skipSpace(b))
	if len(b) < 2 || b[len(b)-1] != ']' {
		return f, fmt.Errorf("%w: unterminated array", ErrMalformed)
	}
	f.Payload = trimSpaceRight(b[:len(b)-1])
	if len(f.Payload) == 0 {
		return f, fmt.Errorf("%w: no payload", ErrMalformed)
	}
	return f, nil
}

// scanString returns the contents of the JSON string b starts with, and
// what follows it.
func scanString(b []byte) (s, rest []byte, err error) {
	if len(b) == 0 || b[0] != '"' {
		return nil, nil, fmt.Errorf("%w: want a string", ErrMalformed)
	}
	for i := 1; i < len(b); i++ {
		switch c := b[i]; {
		case c == '\\':
			i++
		case c == '"':
			return b[1:i], b[i+1:], nil
		case c < 0x20:
			return nil, nil, fmt.Errorf("%w: control byte in a string", ErrMalformed)
		}
	}
	return nil, nil, fmt.Errorf("%w: unterminated string", ErrMalformed)
}

func skipSpace(b []byte) []byte {
	for len(b) > 0 && isSpace(b[0]) {
		b = b[1:]
	}
	return b
}

func trimSpaceRight(b []byte) []byte {
	for len(b) > 0 && isSpace(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	return b
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

// Reply is the payload of a phx_reply: {"status":…,"response":…}.
type Reply struct {
	Status   string          `json:"status"`
	Response json.RawMessage `json:"response"`
}

// DecodeReply decodes the payload of a phx_reply (ReplyPayload's output).
func DecodeReply(payload []byte) (Reply, error) {
	var r Reply
	if err := json.Unmarshal(payload, &r); err != nil {
		return r, fmt.Errorf("%w: reply payload: %v", ErrMalformed, err)
	}
	return r, nil
}
