package wal

import (
	"bytes"
	"errors"
	"slices"
	"unicode/utf16"
	"unicode/utf8"
)

// A json column holds its text as written; to_jsonb turns it into jsonb,
// which keeps the last of duplicate keys, orders keys by length and then
// bytes, prints ": " and ", " between members and elements, decodes
// string escapes, and prints numbers as numeric does (1e3 is 1000, 1.50
// stays 1.50, -0 is 0). appendJSONB does the same.
//
// Where to_jsonb would fail (a \u0000 or a lone surrogate in a string, a
// number beyond numeric's bounds, nesting deeper than jsonMaxDepth), and
// where the jsonb form would be much larger than the text (numbers like
// 1e100000), the value is sent as it is stored.

const (
	jsonMaxDepth = 10_000
	// The jsonb form may be at most twice the text and this many bytes
	// more: exponents cannot make a value balloon.
	jsonSlack = 4096
)

var errJSONB = errors.New("not convertible to jsonb")

// appendJSONB appends valid JSON text in jsonb's form, or as it is where
// jsonb's form is not to be had.
func appendJSONB(dst, text []byte) []byte {
	p := jsonbParser{s: text}
	p.skipSpace()
	root, err := p.value(0)
	p.skipSpace()
	if err == nil && p.i == len(p.s) {
		start := len(dst)
		p.budget = start + 2*len(text) + jsonSlack
		if out, err := p.emit(dst, root, 0); err == nil {
			return out
		}
		dst = dst[:start]
	}
	return append(dst, bytes.TrimSpace(text)...)
}

// jsonbParser reads JSON into nodes, then writes them in jsonb's order.
type jsonbParser struct {
	s      []byte
	i      int
	nodes  []jnode
	kids   []int32 // containers' children, contiguous per container
	stack  []int32 // children of the containers being read
	strs   []byte  // decoded strings
	budget int     // the output's largest length
}

type jnode struct {
	kind       byte // '{', '[', '"', '0' (number), 'l' (true, false, null)
	start, end int32
	// A string's decoded bytes are strs[start:end]; a number's or a
	// literal's text is s[start:end]; a container's children are
	// kids[start:end], for an object key and value in turn.
}

func (p *jsonbParser) skipSpace() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\t' || p.s[p.i] == '\n' || p.s[p.i] == '\r') {
		p.i++
	}
}

func (p *jsonbParser) add(n jnode) int32 {
	p.nodes = append(p.nodes, n)
	return int32(len(p.nodes) - 1)
}

func (p *jsonbParser) value(depth int) (int32, error) {
	if p.i >= len(p.s) || depth > jsonMaxDepth {
		return 0, errJSONB
	}
	switch c := p.s[p.i]; {
	case c == '{' || c == '[':
		return p.container(c, depth)
	case c == '"':
		return p.str()
	case c == '-' || isDigit(c):
		start := p.i
		for p.i < len(p.s) && bytes.IndexByte([]byte("+-.eE0123456789"), p.s[p.i]) >= 0 {
			p.i++
		}
		return p.add(jnode{kind: '0', start: int32(start), end: int32(p.i)}), nil
	default:
		start := p.i
		for p.i < len(p.s) && 'a' <= p.s[p.i] && p.s[p.i] <= 'z' {
			p.i++
		}
		return p.add(jnode{kind: 'l', start: int32(start), end: int32(p.i)}), nil
	}
}

func (p *jsonbParser) container(open byte, depth int) (int32, error) {
	closer := byte(']')
	if open == '{' {
		closer = '}'
	}
	p.i++
	base := len(p.stack)
	p.skipSpace()
	for n := 0; p.i < len(p.s) && p.s[p.i] != closer; n++ {
		if n > 0 {
			if p.s[p.i] != ',' {
				return 0, errJSONB
			}
			p.i++
			p.skipSpace()
		}
		if open == '{' {
			k, err := p.str()
			if err != nil {
				return 0, err
			}
			p.stack = append(p.stack, k)
			p.skipSpace()
			if p.i >= len(p.s) || p.s[p.i] != ':' {
				return 0, errJSONB
			}
			p.i++
			p.skipSpace()
		}
		v, err := p.value(depth + 1)
		if err != nil {
			return 0, err
		}
		p.stack = append(p.stack, v)
		p.skipSpace()
	}
	if p.i >= len(p.s) {
		return 0, errJSONB
	}
	p.i++
	start := len(p.kids)
	p.kids = append(p.kids, p.stack[base:]...)
	p.stack = p.stack[:base]
	return p.add(jnode{kind: open, start: int32(start), end: int32(len(p.kids))}), nil
}

// str decodes a string; jsonb refuses \u0000 and lone surrogates.
func (p *jsonbParser) str() (int32, error) {
	if p.i >= len(p.s) || p.s[p.i] != '"' {
		return 0, errJSONB
	}
	p.i++
	start := len(p.strs)
	for {
		if p.i >= len(p.s) {
			return 0, errJSONB
		}
		c := p.s[p.i]
		p.i++
		switch {
		case c == '"':
			return p.add(jnode{kind: '"', start: int32(start), end: int32(len(p.strs))}), nil
		case c != '\\':
			p.strs = append(p.strs, c)
			continue
		}
		if p.i >= len(p.s) {
			return 0, errJSONB
		}
		e := p.s[p.i]
		p.i++
		switch e {
		case 'b':
			p.strs = append(p.strs, '\b')
		case 'f':
			p.strs = append(p.strs, '\f')
		case 'n':
			p.strs = append(p.strs, '\n')
		case 'r':
			p.strs = append(p.strs, '\r')
		case 't':
			p.strs = append(p.strs, '\t')
		case 'u':
			r, ok := p.hex4()
			if !ok || r == 0 {
				return 0, errJSONB
			}
			if utf16.IsSurrogate(r) {
				if p.i+1 >= len(p.s) || p.s[p.i] != '\\' || p.s[p.i+1] != 'u' {
					return 0, errJSONB
				}
				p.i += 2
				lo, ok := p.hex4()
				if r = utf16.DecodeRune(r, lo); !ok || r == utf8.RuneError {
					return 0, errJSONB
				}
			}
			p.strs = utf8.AppendRune(p.strs, r)
		default: // " \ /
			p.strs = append(p.strs, e)
		}
	}
}

func (p *jsonbParser) hex4() (rune, bool) {
	if p.i+4 > len(p.s) {
		return 0, false
	}
	var r rune
	for _, c := range p.s[p.i : p.i+4] {
		switch {
		case isDigit(c):
			r = r<<4 | rune(c-'0')
		case 'a' <= c|0x20 && c|0x20 <= 'f':
			r = r<<4 | rune(c|0x20-'a'+10)
		default:
			return 0, false
		}
	}
	p.i += 4
	return r, true
}

func (p *jsonbParser) key(n int32) []byte {
	k := p.nodes[n]
	return p.strs[k.start:k.end]
}

// emit writes node n in jsonb's form.
func (p *jsonbParser) emit(dst []byte, n int32, depth int) ([]byte, error) {
	if len(dst) > p.budget {
		return dst, errJSONB
	}
	nd := p.nodes[n]
	switch nd.kind {
	case '"':
		return appendJSONString(dst, p.strs[nd.start:nd.end]), nil
	case '0':
		return appendNumeric(dst, p.s[nd.start:nd.end])
	case 'l':
		return append(dst, p.s[nd.start:nd.end]...), nil
	case '[':
		dst = append(dst, '[')
		for i, k := range p.kids[nd.start:nd.end] {
			if i > 0 {
				dst = append(dst, ", "...)
			}
			var err error
			if dst, err = p.emit(dst, k, depth+1); err != nil {
				return dst, err
			}
		}
		return append(dst, ']'), nil
	}
	// An object: members by key length, then bytes; of equal keys the
	// last.
	kids := p.kids[nd.start:nd.end]
	order := make([]int32, 0, len(kids)/2)
	for i := 0; i+1 < len(kids); i += 2 {
		order = append(order, int32(i))
	}
	slices.SortStableFunc(order, func(a, b int32) int {
		ka, kb := p.key(kids[a]), p.key(kids[b])
		if len(ka) != len(kb) {
			return len(ka) - len(kb)
		}
		return bytes.Compare(ka, kb)
	})
	dst = append(dst, '{')
	first := true
	for j, m := range order {
		if j+1 < len(order) && bytes.Equal(p.key(kids[m]), p.key(kids[order[j+1]])) {
			continue // a later duplicate wins
		}
		if !first {
			dst = append(dst, ", "...)
		}
		first = false
		dst = appendJSONString(dst, p.key(kids[m]))
		dst = append(dst, ": "...)
		var err error
		if dst, err = p.emit(dst, kids[m+1], depth+1); err != nil {
			return dst, err
		}
	}
	return append(dst, '}'), nil
}

// appendNumeric appends a JSON number as Postgres's numeric prints it:
// the digits of the value with as many decimals as the text had less the
// exponent (never negative), no exponent, no negative zero.
func appendNumeric(dst, num []byte) ([]byte, error) {
	if !isJSONNumber(num) {
		return dst, errJSONB
	}
	neg := num[0] == '-'
	if neg {
		num = num[1:]
	}
	mant, expText, _ := bytes.Cut(bytes.ToLower(num), []byte("e"))
	intPart, frac, _ := bytes.Cut(mant, []byte("."))
	exp := 0
	if len(expText) > 0 {
		sign := 1
		switch expText[0] {
		case '-':
			sign, expText = -1, expText[1:]
		case '+':
			expText = expText[1:]
		}
		for _, c := range expText {
			if exp = exp*10 + int(c-'0'); exp > 1<<24 {
				return dst, errJSONB
			}
		}
		exp *= sign
	}
	digits := append(slices.Clip(intPart), frac...)
	point := len(intPart) + exp // where the point goes in digits
	scale := max(0, len(frac)-exp)
	lead := 0 // leading zeros
	for lead < len(digits) && digits[lead] == '0' {
		lead++
	}
	zero := lead == len(digits)
	// numeric's bounds: 131072 digits before the point, 16383 after.
	if scale > 16383 || !zero && point-lead > 131072 {
		return dst, errJSONB
	}
	if neg && !zero {
		dst = append(dst, '-')
	}
	// The integer part, without leading zeros.
	if zero || point <= lead {
		dst = append(dst, '0')
	} else {
		dst = append(dst, digits[lead:min(point, len(digits))]...)
		for range point - len(digits) {
			dst = append(dst, '0')
		}
	}
	if scale > 0 {
		dst = append(dst, '.')
		for i := point; i < point+scale; i++ {
			c := byte('0')
			if i >= 0 && i < len(digits) {
				c = digits[i]
			}
			dst = append(dst, c)
		}
	}
	return dst, nil
}
