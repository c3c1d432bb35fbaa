package phx

import (
	"unicode/utf8"
)

// AppendFrame appends one text frame. Empty refs are written as null.
// payload must be valid JSON (it is embedded as is).
func AppendFrame(dst []byte, v Version, joinRef, ref, topic, event string, payload []byte) []byte {
	if v == V2 {
		dst = append(dst, '[')
		dst = appendRef(dst, joinRef)
		dst = append(dst, ',')
		dst = appendRef(dst, ref)
		dst = append(dst, ',')
		dst = AppendString(dst, topic)
		dst = append(dst, ',')
		dst = AppendString(dst, event)
		dst = append(dst, ',')
		dst = append(dst, payload...)
		return append(dst, ']')
	}
	// Supabase's v1 output omits join_ref; realtime-js v1 reads it when set.
	dst = append(dst, `{"topic":`...)
	dst = AppendString(dst, topic)
	dst = append(dst, `,"event":`...)
	dst = AppendString(dst, event)
	dst = append(dst, `,"payload":`...)
	dst = append(dst, payload...)
	dst = append(dst, `,"ref":`...)
	dst = appendRef(dst, ref)
	if joinRef != "" {
		dst = append(dst, `,"join_ref":`...)
		dst = AppendString(dst, joinRef)
	}
	return append(dst, '}')
}

// AppendReply appends a phx_reply frame with {"status":status,"response":response}.
func AppendReply(dst []byte, v Version, joinRef, ref, topic, status string, response []byte) []byte {
	return AppendFrame(dst, v, joinRef, ref, topic, "phx_reply", ReplyPayload(status, response))
}

// ReplyPayload returns {"status":status,"response":response}.
func ReplyPayload(status string, response []byte) []byte {
	p := make([]byte, 0, 32+len(status)+len(response))
	p = append(p, `{"status":`...)
	p = AppendString(p, status)
	p = append(p, `,"response":`...)
	p = append(p, response...)
	return append(p, '}')
}

// ReasonPayload returns {"reason":reason}, the response of a refused join.
func ReasonPayload(reason string) []byte {
	p := make([]byte, 0, 16+len(reason))
	p = append(p, `{"reason":`...)
	p = AppendString(p, reason)
	return append(p, '}')
}

// AppendBroadcastPayload appends the broadcast payload object
// {"type":"broadcast","event":event,"payload":payload[,"meta":meta]}.
// payload and meta must be valid JSON; meta may be empty.
func AppendBroadcastPayload(dst []byte, event string, payload, meta []byte) []byte {
	dst = append(dst, `{"type":"broadcast","event":`...)
	dst = AppendString(dst, event)
	dst = append(dst, `,"payload":`...)
	dst = append(dst, payload...)
	if len(meta) > 0 {
		dst = append(dst, `,"meta":`...)
		dst = append(dst, meta...)
	}
	return append(dst, '}')
}

// AppendBroadcast appends a fan-out broadcast text frame (both refs null).
func AppendBroadcast(dst []byte, v Version, topic, event string, payload, meta []byte) []byte {
	if v == V2 {
		dst = append(dst, `[null,null,`...)
		dst = AppendString(dst, topic)
		dst = append(dst, `,"broadcast",`...)
		dst = AppendBroadcastPayload(dst, event, payload, meta)
		return append(dst, ']')
	}
	dst = append(dst, `{"topic":`...)
	dst = AppendString(dst, topic)
	dst = append(dst, `,"event":"broadcast","payload":`...)
	dst = AppendBroadcastPayload(dst, event, payload, meta)
	return append(dst, `,"ref":null}`...)
}

// CanBinary reports whether a kind-4 frame can carry these fields (each
// string is limited to 255 bytes by the one-byte length prefixes).
func CanBinary(topic, event string, meta []byte) bool {
	return len(topic) <= 255 && len(event) <= 255 && len(meta) <= 255
}

// AppendUserBroadcast appends a binary kind-4 frame. The caller checks
// CanBinary first; oversized fields are truncated to keep the frame
// decodable rather than corrupting it.
func AppendUserBroadcast(dst []byte, topic, event string, meta []byte, enc byte, payload []byte) []byte {
	topic, event, meta = clip(topic), clip(event), clipBytes(meta)
	dst = append(dst, KindUserBroadcast, byte(len(topic)), byte(len(event)), byte(len(meta)), enc)
	dst = append(dst, topic...)
	dst = append(dst, event...)
	dst = append(dst, meta...)
	return append(dst, payload...)
}

func clip(s string) string {
	if len(s) > 255 {
		return s[:255]
	}
	return s
}

func clipBytes(b []byte) []byte {
	if len(b) > 255 {
		return nil
	}
	return b
}

func appendRef(dst []byte, ref string) []byte {
	if ref == "" {
		return append(dst, "null"...)
	}
	return AppendString(dst, ref)
}

const hexDigits = "0123456789abcdef"

// AppendString appends s as a JSON string, escaped as encoding/json does
// (the short escapes \n \r \t \" \\, \u00XX for other control bytes,
// U+2028 and U+2029 escaped). Invalid UTF-8 becomes U+FFFD. wal has an
// escaper of its own (appendJSONString) that follows Postgres's
// escape_json instead, so that a change's values read as to_jsonb writes
// them; the two differ only in \b, \f, U+2028 and U+2029.
func AppendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		// U+2028 and U+2029 are valid JSON but break JavaScript eval; escape
		// them as encoding/json does.
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
