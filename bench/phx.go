package bench

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
)

// Phoenix v2 / Supabase Realtime frames the benchmark needs (protocol.md §1,
// §3). They are written by hand so the publisher's hot path does not allocate.

// Binary broadcast kinds of realtime-js (protocol.md §1).
const (
	KindUserBroadcastPush = 3 // client → server
	KindUserBroadcast     = 4 // server → client
)

// Payload encodings of kind 3/4 frames.
const (
	EncBytes = 0
	EncJSON  = 1
)

// phxJoinConfig is the join payload realtime-js sends for a broadcast-only
// channel without self-delivery or acks.
const phxJoinConfig = `{"config":{"broadcast":{"self":false,"ack":false},"presence":{"key":"","enabled":false},"postgres_changes":[],"private":false}}`

// phxJoinConfigUnreliable is phxJoinConfig with meshcast's datagram opt-in.
const phxJoinConfigUnreliable = `{"config":{"broadcast":{"self":false,"ack":false,"unreliable":true},"presence":{"key":"","enabled":false},"postgres_changes":[],"private":false}}`

// AppendPhxJoin appends a v2 phx_join text frame for topic with join_ref = ref.
func AppendPhxJoin(dst []byte, ref, topic string) []byte {
	return AppendPhxJoinConfig(dst, ref, topic, phxJoinConfig)
}

// AppendPhxJoinConfig is AppendPhxJoin with another join payload.
func AppendPhxJoinConfig(dst []byte, ref, topic, payload string) []byte {
	dst = append(dst, '[')
	dst = strconv.AppendQuote(dst, ref)
	dst = append(dst, ',')
	dst = strconv.AppendQuote(dst, ref)
	dst = append(dst, ',')
	dst = strconv.AppendQuote(dst, topic)
	dst = append(dst, `,"phx_join",`...)
	dst = append(dst, payload...)
	return append(dst, ']')
}

// AppendPhxHeartbeat appends `[null,"<ref>","phoenix","heartbeat",{}]`.
func AppendPhxHeartbeat(dst []byte, ref uint64) []byte {
	dst = append(dst, `[null,"`...)
	dst = strconv.AppendUint(dst, ref, 10)
	return append(dst, `","phoenix","heartbeat",{}]`...)
}

// AppendPhxBroadcast appends a v2 text broadcast push:
// [joinRef, ref, topic, "broadcast", {"type":"broadcast","event":event,"payload":payload}].
// topic and event are written verbatim inside quotes and must not need JSON
// escaping; payload must be a JSON object.
func AppendPhxBroadcast(dst []byte, joinRef string, ref uint64, topic, event string, payload []byte) []byte {
	dst = append(dst, `["`...)
	dst = append(dst, joinRef...)
	dst = append(dst, `","`...)
	dst = strconv.AppendUint(dst, ref, 10)
	dst = append(dst, `","`...)
	dst = append(dst, topic...)
	dst = append(dst, `","broadcast",{"type":"broadcast","event":"`...)
	dst = append(dst, event...)
	dst = append(dst, `","payload":`...)
	dst = append(dst, payload...)
	return append(dst, `}]`...)
}

// ErrFieldTooLong means a kind-3 string field exceeds 255 bytes.
var ErrFieldTooLong = errors.New("bench: binary frame field longer than 255 bytes")

// AppendKind3 appends a realtime-js user broadcast push (kind 3):
//
//	u8 3, u8 len join_ref, u8 len ref, u8 len topic, u8 len event, u8 len meta, u8 enc,
//	join_ref, ref, topic, event, meta, payload
//
// ref is written as a decimal string.
func AppendKind3(dst []byte, joinRef string, ref uint64, topic, event, meta string, enc byte, payload []byte) ([]byte, error) {
	var refBuf [20]byte
	r := strconv.AppendUint(refBuf[:0], ref, 10)
	if len(joinRef) > 255 || len(topic) > 255 || len(event) > 255 || len(meta) > 255 {
		return dst, ErrFieldTooLong
	}
	dst = append(dst, KindUserBroadcastPush, byte(len(joinRef)), byte(len(r)), byte(len(topic)),
		byte(len(event)), byte(len(meta)), enc)
	dst = append(dst, joinRef...)
	dst = append(dst, r...)
	dst = append(dst, topic...)
	dst = append(dst, event...)
	dst = append(dst, meta...)
	return append(dst, payload...), nil
}

// AppendDatagram appends a meshcast datagram: a kind-3 frame with an empty
// ref and meta and a JSON payload. Fields must be at most 255 bytes
// (Config validation keeps the topic within that).
func AppendDatagram(dst []byte, joinRef, topic, event string, payload []byte) []byte {
	dst = append(dst, KindUserBroadcastPush, byte(len(joinRef)), 0, byte(len(topic)), byte(len(event)), 0, EncJSON)
	dst = append(dst, joinRef...)
	dst = append(dst, topic...)
	dst = append(dst, event...)
	return append(dst, payload...)
}

// Kind4 is a decoded server → client user broadcast (kind 4). Its slices alias
// the frame it was parsed from.
type Kind4 struct {
	Topic, Event, Meta []byte
	Enc                byte
	Payload            []byte
}

// ErrShortFrame means a binary frame ends before its declared fields.
var ErrShortFrame = errors.New("bench: short binary frame")

// ParseKind4 decodes a kind-4 binary frame:
// u8 4, u8 len topic, u8 len event, u8 len meta, u8 enc, topic, event, meta, payload.
func ParseKind4(b []byte) (Kind4, error) {
	var k Kind4
	if len(b) < 5 {
		return k, ErrShortFrame
	}
	if b[0] != KindUserBroadcast {
		return k, fmt.Errorf("bench: binary frame kind %d, want %d", b[0], KindUserBroadcast)
	}
	lt, le, lm := int(b[1]), int(b[2]), int(b[3])
	k.Enc = b[4]
	rest := b[5:]
	if len(rest) < lt+le+lm {
		return k, ErrShortFrame
	}
	k.Topic, rest = rest[:lt], rest[lt:]
	k.Event, rest = rest[:le], rest[le:]
	k.Meta, rest = rest[:lm], rest[lm:]
	k.Payload = rest
	return k, nil
}

// phxReply is the part of a Phoenix v2 reply the handshake checks.
type phxReply struct {
	Ref    *string
	Topic  string
	Event  string
	Status string
	Raw    json.RawMessage
}

// parsePhxFrame decodes a v2 text frame [join_ref, ref, topic, event, payload].
// It is used only off the hot path (handshakes).
func parsePhxFrame(b []byte) (phxReply, error) {
	var arr []json.RawMessage
	var r phxReply
	if err := json.Unmarshal(b, &arr); err != nil {
		return r, fmt.Errorf("bench: bad phoenix frame %.200q: %w", b, err)
	}
	if len(arr) != 5 {
		return r, fmt.Errorf("bench: phoenix frame with %d elements: %.200q", len(arr), b)
	}
	_ = json.Unmarshal(arr[1], &r.Ref)
	if err := json.Unmarshal(arr[2], &r.Topic); err != nil {
		return r, fmt.Errorf("bench: bad topic in %.200q", b)
	}
	if err := json.Unmarshal(arr[3], &r.Event); err != nil {
		return r, fmt.Errorf("bench: bad event in %.200q", b)
	}
	var p struct {
		Status string `json:"status"`
	}
	_ = json.Unmarshal(arr[4], &p)
	r.Status = p.Status
	r.Raw = arr[4]
	return r, nil
}
