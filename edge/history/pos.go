package history

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
)

// Positions travel to clients as "<epoch>:<offset>" in a broadcast's
// meta.pos: the epoch as 16 lowercase hex digits, the offset in decimal.
// The origin writes pos as the first member of meta, so that the nodes
// that receive it find it without parsing the rest (other features add
// members of their own after it).

const posPrefix = `{"pos":"`

// AppendMeta appends meta with pos set to stream:offset as its first
// member. meta is empty or a JSON object (without a pos of its own).
func AppendMeta(dst, meta []byte, stream, offset uint64) []byte {
	dst = append(dst, posPrefix...)
	dst = AppendPos(dst, stream, offset)
	dst = append(dst, '"')
	meta = bytes.TrimSpace(meta)
	if len(meta) > 2 && meta[0] == '{' {
		if rest := bytes.TrimSpace(meta[1:]); len(rest) > 0 && rest[0] != '}' {
			dst = append(dst, ',')
			return append(dst, rest...)
		}
	}
	return append(dst, '}')
}

// AppendPos appends "<epoch>:<offset>" (without quotes).
func AppendPos(dst []byte, stream, offset uint64) []byte {
	const hex = "0123456789abcdef"
	for i := 60; i >= 0; i -= 4 {
		dst = append(dst, hex[stream>>uint(i)&0xf])
	}
	dst = append(dst, ':')
	return strconv.AppendUint(dst, offset, 10)
}

// HasPos reports whether meta starts with a pos member: a message that
// already has its position (another stream's, such as the database's
// "db:<LSN>:<seq>") is not numbered again.
func HasPos(meta []byte) bool { return bytes.HasPrefix(meta, []byte(posPrefix)) }

// MetaPos finds the position AppendMeta wrote at the front of meta.
func MetaPos(meta []byte) (stream, offset uint64, ok bool) {
	rest, found := bytes.CutPrefix(meta, []byte(posPrefix))
	if !found {
		return 0, 0, false
	}
	end := bytes.IndexByte(rest, '"')
	if end < 0 {
		return 0, 0, false
	}
	return ParsePos(string(rest[:end]))
}

// ParsePos parses "<epoch>:<offset>"; the epoch must be 16 hex digits and
// the offset positive.
func ParsePos(s string) (stream, offset uint64, ok bool) {
	if len(s) < 18 || s[16] != ':' {
		return 0, 0, false
	}
	stream, ok = parseEpoch(s[:16])
	if !ok {
		return 0, 0, false
	}
	offset, err := strconv.ParseUint(s[17:], 10, 64)
	if err != nil || offset == 0 || s[17] == '+' {
		return 0, 0, false
	}
	return stream, offset, true
}

func parseEpoch(s string) (uint64, bool) {
	if len(s) != 16 {
		return 0, false
	}
	var v uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case '0' <= c && c <= '9':
			v = v<<4 | uint64(c-'0')
		case 'a' <= c && c <= 'f':
			v = v<<4 | uint64(c-'a'+10)
		default:
			return 0, false
		}
	}
	return v, true
}

// MaxVector bounds the streams of a client's vector: a channel has one
// stream per node that originated messages on it within the window.
const MaxVector = 256

// ErrVector reports a recover.broadcast config that is not a vector.
var ErrVector = errors.New("recover.broadcast must map 16-hex-digit epochs to offsets")

// ParseVector decodes a join's config.recover.broadcast: an object from
// epochs (16 lowercase hex digits) to the last offset received. Keys that
// name no epoch of ours ("db", the database's stream, whose recovery is
// the Postgres side's) are skipped. A missing or null vector is nil: no
// recovery asked for.
func ParseVector(raw json.RawMessage) (map[uint64]uint64, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, ErrVector
	}
	if len(m) > MaxVector {
		return nil, fmt.Errorf("%w (at most %d streams)", ErrVector, MaxVector)
	}
	v := make(map[uint64]uint64, len(m))
	for k, off := range m {
		id, ok := parseEpoch(k)
		if !ok {
			continue
		}
		n, err := strconv.ParseUint(string(bytes.TrimSpace(off)), 10, 64)
		if err != nil {
			return nil, ErrVector
		}
		v[id] = n
	}
	return v, nil
}

// AppendVector appends a vector as the JSON object ParseVector reads,
// epochs in ascending order.
func AppendVector(dst []byte, v map[uint64]uint64) []byte {
	ids := make([]uint64, 0, len(v))
	for id := range v {
		ids = append(ids, id)
	}
	sortUint64(ids)
	dst = append(dst, '{')
	for i, id := range ids {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, '"')
		p := AppendPos(dst, id, 0)
		dst = append(p[:len(p)-2], '"', ':')
		dst = strconv.AppendUint(dst, v[id], 10)
	}
	return append(dst, '}')
}
