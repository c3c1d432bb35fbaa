package wal

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"
)

// The reader's session settings that the text forms below depend on. They
// are sent as startup parameters, so a database's own defaults do not leak
// into the decoding.
var sessionParams = map[string]string{
	"TimeZone":           "UTC",
	"DateStyle":          "ISO, MDY",
	"IntervalStyle":      "postgres",
	"extra_float_digits": "1",
	"bytea_output":       "hex",
}

// errValue is returned for a value whose text is not what its type's output
// function prints.
var errValue = errors.New("malformed value")

// appendValue appends the JSON that to_jsonb gives for the value of type t
// whose text form (the type's output function, with sessionParams) is text.
func appendValue(dst []byte, t *typeInfo, text []byte) ([]byte, error) {
	switch t.class {
	case classInt:
		if !isJSONNumber(text) {
			return dst, fmt.Errorf("%w: %s %q", errValue, t.name, text)
		}
		return append(dst, text...), nil
	case classFloat, classFloat4, classNumeric:
		// to_jsonb quotes what is not a JSON number: NaN and the
		// infinities. It makes a float a numeric from its text: 1e+308 is
		// written out in digits (numeric_out's text already is).
		if !isJSONNumber(text) {
			return appendJSONString(dst, text), nil
		}
		if t.class != classNumeric && bytes.ContainsAny(text, "eE-") {
			if out, err := appendNumeric(dst, text); err == nil {
				return out, nil
			}
		}
		return append(dst, text...), nil
	case classBool:
		switch string(text) {
		case "t":
			return append(dst, "true"...), nil
		case "f":
			return append(dst, "false"...), nil
		}
		return dst, fmt.Errorf("%w: bool %q", errValue, text)
	case classJSON, classJSONB:
		// Postgres checked the JSON on the way in, but invalid JSON here
		// would break every client that receives it, so check again (a
		// SQL_ASCII database lets invalid UTF-8 through, for one).
		if !json.Valid(text) || !utf8.Valid(text) {
			return dst, fmt.Errorf("%w: %s is not valid JSON", errValue, t.name)
		}
		if t.class == classJSON {
			return appendJSONB(dst, text), nil // what to_jsonb makes of it
		}
		return append(dst, bytes.TrimSpace(text)...), nil // jsonb_out's already
	case classTimestamp, classTimestampTZ, classDate:
		return appendTimestamp(dst, t.class, text), nil
	case classArray:
		return appendArray(dst, t, text)
	case classComposite:
		return appendComposite(dst, t, text)
	}
	return appendJSONString(dst, text), nil
}

// isJSONNumber reports whether b is a number in JSON's grammar.
func isJSONNumber(b []byte) bool {
	i := 0
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	default:
		return false
	}
	if i < len(b) && b[i] == '.' {
		i++
		if i >= len(b) || !isDigit(b[i]) {
			return false
		}
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) || !isDigit(b[i]) {
			return false
		}
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	}
	return i == len(b)
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// appendTimestamp turns ISO text ("2024-05-01 10:00:00.5+00 BC") into the
// XSD form to_jsonb uses ("2024-05-01T10:00:00.5+00:00 BC"): a T between
// date and time and a zone with minutes. Infinities pass through.
func appendTimestamp(dst []byte, c class, text []byte) []byte {
	dst = append(dst, '"')
	if c == classDate || len(text) == 0 || text[0] < '0' || text[0] > '9' {
		dst = appendEscaped(dst, text)
		return append(dst, '"')
	}
	// The year has at least four digits and no sign (BC is a suffix).
	sp := bytes.IndexByte(text, ' ')
	if sp < 0 {
		dst = appendEscaped(dst, text)
		return append(dst, '"')
	}
	dst = appendEscaped(dst, text[:sp])
	dst = append(dst, 'T')
	rest := text[sp+1:]
	bc := bytes.HasSuffix(rest, []byte(" BC"))
	if bc {
		rest = rest[:len(rest)-3]
	}
	if c == classTimestampTZ {
		if z := bytes.LastIndexAny(rest, "+-"); z > 0 {
			dst = appendEscaped(dst, rest[:z])
			zone := rest[z:]
			dst = appendEscaped(dst, zone)
			if len(zone) == 3 { // "+05": add minutes
				dst = append(dst, ":00"...)
			}
			rest = nil
		}
	}
	dst = appendEscaped(dst, rest)
	if bc {
		dst = append(dst, " BC"...)
	}
	return append(dst, '"')
}

// appendJSONString appends s as a JSON string, escaped as Postgres escapes
// (escape_json): the short escapes, \u00XX for other control bytes, and
// everything else as is. Invalid UTF-8 becomes U+FFFD so the output stays
// valid JSON.
//
// wire/phx.AppendString escapes differently on purpose: it follows
// encoding/json (\b and \f as \u00XX, U+2028 and U+2029 escaped for
// JavaScript), for the frames meshcast composes itself, while a record's
// values must read byte for byte as Postgres's to_jsonb writes them (the
// tests compare with it), so this one follows escape_json.
func appendJSONString(dst, s []byte) []byte {
	dst = append(dst, '"')
	dst = appendEscaped(dst, s)
	return append(dst, '"')
}

const hexDigits = "0123456789abcdef"

func appendEscaped(dst, s []byte) []byte {
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x80 {
			r, size := utf8.DecodeRune(s[i:])
			if r == utf8.RuneError && size == 1 {
				dst = append(dst, s[start:i]...)
				dst = append(dst, "\ufffd"...)
				i++
				start = i
				continue
			}
			i += size
			continue
		}
		if c >= 0x20 && c != '"' && c != '\\' {
			i++
			continue
		}
		dst = append(dst, s[start:i]...)
		switch c {
		case '"':
			dst = append(dst, '\\', '"')
		case '\\':
			dst = append(dst, '\\', '\\')
		case '\b':
			dst = append(dst, '\\', 'b')
		case '\f':
			dst = append(dst, '\\', 'f')
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		i++
		start = i
	}
	return append(dst, s[start:]...)
}

// appendArray parses array_out's text ("{1,2}", "{{1,NULL},{3,4}}",
// "[0:1]={1,2}", "{\"a b\",c}") into a JSON array; dimension decorations
// are dropped, as to_jsonb drops them.
func appendArray(dst []byte, t *typeInfo, text []byte) ([]byte, error) {
	if t.delim == ' ' && (len(text) == 0 || text[0] != '{') {
		return appendVector(dst, t, text)
	}
	if len(text) > 0 && text[0] == '[' {
		eq := bytes.IndexByte(text, '=')
		if eq < 0 {
			return dst, fmt.Errorf("%w: array %q", errValue, text)
		}
		text = text[eq+1:]
	}
	p := arrayParser{t: t.elem, delim: t.delim, s: text}
	var err error
	dst, err = p.array(dst, 0)
	if err == nil && p.i != len(p.s) {
		err = fmt.Errorf("%w: array %q has trailing bytes", errValue, text)
	}
	return dst, err
}

func appendVector(dst []byte, t *typeInfo, text []byte) ([]byte, error) {
	dst = append(dst, '[')
	for i, f := range bytes.Fields(text) {
		if i > 0 {
			dst = append(dst, ", "...)
		}
		var err error
		if dst, err = appendValue(dst, t.elem, f); err != nil {
			return dst, err
		}
	}
	return append(dst, ']'), nil
}

type arrayParser struct {
	t     *typeInfo
	delim byte
	s     []byte
	i     int
	buf   []byte
}

func (p *arrayParser) array(dst []byte, depth int) ([]byte, error) {
	if depth > 6 || p.i >= len(p.s) || p.s[p.i] != '{' {
		return dst, fmt.Errorf("%w: array %q", errValue, p.s)
	}
	p.i++
	dst = append(dst, '[')
	if p.i < len(p.s) && p.s[p.i] == '}' {
		p.i++
		return append(dst, ']'), nil
	}
	for n := 0; ; n++ {
		if n > 0 {
			dst = append(dst, ", "...)
		}
		var err error
		if p.i < len(p.s) && p.s[p.i] == '{' {
			dst, err = p.array(dst, depth+1)
		} else {
			dst, err = p.element(dst)
		}
		if err != nil {
			return dst, err
		}
		if p.i >= len(p.s) {
			return dst, fmt.Errorf("%w: array %q ends early", errValue, p.s)
		}
		switch p.s[p.i] {
		case '}':
			p.i++
			return append(dst, ']'), nil
		case p.delim:
			p.i++
		default:
			return dst, fmt.Errorf("%w: array %q", errValue, p.s)
		}
	}
}

func (p *arrayParser) element(dst []byte) ([]byte, error) {
	p.buf = p.buf[:0]
	if p.i < len(p.s) && p.s[p.i] == '"' {
		p.i++
		for {
			if p.i >= len(p.s) {
				return dst, fmt.Errorf("%w: array %q has an open quote", errValue, p.s)
			}
			c := p.s[p.i]
			p.i++
			if c == '"' {
				break
			}
			if c == '\\' && p.i < len(p.s) {
				c = p.s[p.i]
				p.i++
			}
			p.buf = append(p.buf, c)
		}
		return appendValue(dst, p.t, p.buf)
	}
	start := p.i
	for p.i < len(p.s) && p.s[p.i] != p.delim && p.s[p.i] != '}' {
		p.i++
	}
	el := p.s[start:p.i]
	if string(el) == "NULL" {
		return append(dst, "null"...), nil
	}
	if len(el) == 0 {
		return dst, fmt.Errorf("%w: array %q has an empty element", errValue, p.s)
	}
	return appendValue(dst, p.t, el)
}

// appendComposite parses record_out's text ("(1,\"a b\",)") into a JSON
// object of the type's fields; an empty field is NULL.
func appendComposite(dst []byte, t *typeInfo, text []byte) ([]byte, error) {
	if len(text) < 2 || text[0] != '(' || text[len(text)-1] != ')' {
		return dst, fmt.Errorf("%w: record %q", errValue, text)
	}
	s := text[1 : len(text)-1]
	dst = append(dst, '{')
	var buf []byte
	i := 0
	for n, f := range t.fields {
		if n > 0 {
			if i >= len(s) || s[i] != ',' {
				return dst, fmt.Errorf("%w: record %q has too few fields", errValue, text)
			}
			i++
			dst = append(dst, ", "...)
		}
		dst = appendJSONString(dst, []byte(f.name))
		dst = append(dst, ": "...)
		buf = buf[:0]
		quoted := false
		for i < len(s) && s[i] != ',' {
			c := s[i]
			i++
			if c != '"' {
				buf = append(buf, c)
				continue
			}
			quoted = true
			for {
				if i >= len(s) {
					return dst, fmt.Errorf("%w: record %q has an open quote", errValue, text)
				}
				c = s[i]
				i++
				if c == '"' {
					if i < len(s) && s[i] == '"' { // "" is a quote
						buf = append(buf, '"')
						i++
						continue
					}
					break
				}
				if c == '\\' && i < len(s) {
					c = s[i]
					i++
				}
				buf = append(buf, c)
			}
		}
		if len(buf) == 0 && !quoted {
			dst = append(dst, "null"...)
			continue
		}
		var err error
		if dst, err = appendValue(dst, f.typ, buf); err != nil {
			return dst, err
		}
	}
	if i != len(s) {
		return dst, fmt.Errorf("%w: record %q has too many fields", errValue, text)
	}
	return append(dst, '}'), nil
}
