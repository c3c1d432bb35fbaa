package wal

import (
	"bytes"
	"cmp"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// datum is a value parsed for comparison by its column's class.
type datum struct {
	null bool
	// special orders infinities: -1 for -infinity, 1 for infinity (dates,
	// timestamps, numeric), 2 for numeric NaN (above everything).
	special int8
	i       int64   // ints, bool, days, microseconds; interval: whole days
	j       int64   // timetz: zone seconds; interval: microseconds in the day
	f       float64 // floats
	s       string  // text, bytes, numeric digits, uuid bytes
	exp     int     // numeric: value is 0.s × 10^exp, s without leading or trailing zeros
	neg     bool    // numeric sign
}

const usPerDay = 86400 * 1000000

// parseDatum parses text as Postgres would cast it to a value of class c:
// the output form of every class, which is what a change carries and what
// the Validator normalizes filter values to, and the common input forms.
func parseDatum(c class, text string) (datum, error) {
	switch c {
	case classInt:
		n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(text), "+")), 10, 64)
		if err != nil {
			return datum{}, fmt.Errorf("invalid integer %q", text)
		}
		return datum{i: n}, nil
	case classFloat, classFloat4:
		return parseFloat(text, c == classFloat4)
	case classNumeric:
		return parseNumeric(text)
	case classBool:
		return parseBool(text)
	case classBpchar:
		return datum{s: strings.TrimRight(text, " ")}, nil
	case classUUID:
		return parseUUID(text)
	case classBytea:
		return parseBytea(text)
	case classDate:
		return parseTimestamp(text, c)
	case classTimestamp, classTimestampTZ:
		return parseTimestamp(text, c)
	case classTime, classTimeTZ:
		return parseTime(text, c == classTimeTZ)
	case classInterval:
		return parseInterval(text)
	case classJSON, classArray, classComposite:
		return datum{}, errors.New("values of this type cannot be compared")
	}
	return datum{s: text}, nil
}

// cmpDatum orders a and b of class c as Postgres's btree operators do.
func cmpDatum(c class, a, b datum) int {
	switch c {
	case classInt, classBool:
		return cmp.Compare(a.i, b.i)
	case classFloat, classFloat4:
		return cmpFloat(a.f, b.f)
	case classNumeric:
		return cmpNumeric(a, b)
	case classDate, classTimestamp, classTimestampTZ:
		if a.special != b.special {
			return cmp.Compare(int64(a.special), int64(b.special))
		}
		return cmp.Compare(a.i, b.i)
	case classTime:
		return cmp.Compare(a.i, b.i)
	case classTimeTZ:
		// timetz_cmp: the time in UTC, then the zone west of UTC (j is
		// east).
		if x := cmp.Compare(a.i-a.j*1000000, b.i-b.j*1000000); x != 0 {
			return x
		}
		return cmp.Compare(-a.j, -b.j)
	case classInterval:
		if x := cmp.Compare(a.i, b.i); x != 0 {
			return x
		}
		return cmp.Compare(a.j, b.j)
	}
	return strings.Compare(a.s, b.s)
}

// key is a string equal for exactly the datums cmpDatum calls equal: the
// equality index hashes it.
func (d datum) key(c class) string {
	switch c {
	case classInt, classBool, classTime:
		return strconv.FormatInt(d.i, 10)
	case classFloat, classFloat4:
		switch {
		case math.IsNaN(d.f):
			return "NaN"
		case d.f == 0:
			return "0"
		}
		return strconv.FormatFloat(d.f, 'g', -1, 64)
	case classNumeric:
		if d.special != 0 {
			return strconv.Itoa(int(d.special))
		}
		if d.s == "" {
			return "0"
		}
		sign := ""
		if d.neg {
			sign = "-"
		}
		return sign + d.s + "e" + strconv.Itoa(d.exp)
	case classDate, classTimestamp, classTimestampTZ:
		if d.special != 0 {
			return "inf" + strconv.Itoa(int(d.special))
		}
		return strconv.FormatInt(d.i, 10)
	case classTimeTZ, classInterval:
		return strconv.FormatInt(d.i, 10) + "/" + strconv.FormatInt(d.j, 10)
	case classUUID:
		return uuidText(d.s)
	}
	return d.s
}

// cmpFloat is float8_cmp: NaN equals NaN and sorts above everything.
func cmpFloat(a, b float64) int {
	an, bn := math.IsNaN(a), math.IsNaN(b)
	switch {
	case an && bn:
		return 0
	case an:
		return 1
	case bn:
		return -1
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func parseFloat(text string, float4 bool) (datum, error) {
	s := strings.TrimSpace(text)
	switch strings.ToLower(strings.TrimPrefix(s, "+")) {
	case "nan":
		return datum{f: math.NaN()}, nil
	case "infinity", "inf":
		return datum{f: math.Inf(1)}, nil
	case "-infinity", "-inf":
		return datum{f: math.Inf(-1)}, nil
	}
	// Go also reads hex floats, underscores and spelled-out infinities,
	// which Postgres does not.
	if s == "" || strings.ContainsAny(s, "xX_pPiInN") {
		return datum{}, fmt.Errorf("invalid float %q", text)
	}
	bits := 64
	if float4 {
		bits = 32
	}
	f, err := strconv.ParseFloat(s, bits)
	if err != nil {
		return datum{}, fmt.Errorf("invalid float %q", text)
	}
	return datum{f: f}, nil
}

func parseBool(text string) (datum, error) {
	s := strings.ToLower(strings.TrimSpace(text))
	prefixOf := func(word string, min int) bool { return len(s) >= min && strings.HasPrefix(word, s) }
	switch {
	case s == "1", prefixOf("true", 1), prefixOf("yes", 1), s == "on":
		return datum{i: 1}, nil
	case s == "0", prefixOf("false", 1), prefixOf("no", 1), prefixOf("off", 2):
		return datum{i: 0}, nil
	}
	return datum{}, fmt.Errorf("invalid boolean %q", text)
}

// parseNumeric reads [sign] digits [. digits] [e [sign] digits], NaN and the
// infinities, into a normalized digit string and exponent.
func parseNumeric(text string) (datum, error) {
	s := strings.TrimSpace(text)
	switch strings.ToLower(s) {
	case "nan":
		return datum{special: 2}, nil
	case "infinity", "+infinity", "inf", "+inf":
		return datum{special: 1}, nil
	case "-infinity", "-inf":
		return datum{special: -1}, nil
	}
	d := datum{}
	if s != "" && (s[0] == '+' || s[0] == '-') {
		d.neg = s[0] == '-'
		s = s[1:]
	}
	mant, expPart, hasExp := strings.Cut(strings.ToLower(s), "e")
	intPart, frac, _ := strings.Cut(mant, ".")
	if intPart == "" && frac == "" || !allDigits(intPart) || !allDigits(frac) {
		return datum{}, fmt.Errorf("invalid numeric %q", text)
	}
	exp := 0
	if hasExp {
		e, err := strconv.Atoi(expPart)
		if err != nil || e > 100000 || e < -100000 {
			return datum{}, fmt.Errorf("invalid numeric %q", text)
		}
		exp = e
	}
	digits := strings.TrimLeft(intPart+frac, "0")
	exp += len(intPart) - (len(intPart+frac) - len(digits)) // position of the point
	digits = strings.TrimRight(digits, "0")
	if digits == "" {
		return datum{}, nil // zero, whatever its sign
	}
	d.s, d.exp = digits, exp
	return d, nil
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return false
		}
	}
	return true
}

// cmpNumeric orders numerics: -Infinity < numbers < Infinity < NaN.
func cmpNumeric(a, b datum) int {
	if a.special != 0 || b.special != 0 {
		rank := func(d datum) int64 {
			if d.special == 0 {
				return 0
			}
			return int64(d.special)
		}
		return cmp.Compare(rank(a), rank(b))
	}
	sign := func(d datum) int {
		switch {
		case d.s == "":
			return 0
		case d.neg:
			return -1
		}
		return 1
	}
	sa, sb := sign(a), sign(b)
	if sa != sb || sa == 0 {
		return cmp.Compare(int64(sa), int64(sb))
	}
	// Same sign: compare magnitudes, then flip for negatives.
	m := 0
	switch {
	case a.exp != b.exp:
		m = cmp.Compare(int64(a.exp), int64(b.exp))
	default:
		m = strings.Compare(a.s, b.s)
	}
	return m * sa
}

func parseUUID(text string) (datum, error) {
	s := strings.TrimSpace(text)
	if strings.HasPrefix(s, "{") && strings.HasSuffix(s, "}") {
		s = s[1 : len(s)-1]
	}
	// Postgres allows a hyphen after any group of four hex digits.
	var h []byte
	for i := 0; i < len(s); i++ {
		if s[i] == '-' && len(h) > 0 && len(h)%4 == 0 && i+1 < len(s) && s[i+1] != '-' {
			continue
		}
		h = append(h, s[i])
	}
	var b [16]byte
	if len(h) != 32 {
		return datum{}, fmt.Errorf("invalid uuid %q", text)
	}
	if _, err := hex.Decode(b[:], h); err != nil {
		return datum{}, fmt.Errorf("invalid uuid %q", text)
	}
	return datum{s: string(b[:])}, nil
}

// parseBytea reads the hex form \x0102 or the escape form (\\ and \ooo).
func parseBytea(text string) (datum, error) {
	if strings.HasPrefix(text, `\x`) {
		h := strings.Map(func(r rune) rune {
			if r == ' ' || r == '\t' || r == '\n' || r == '\r' {
				return -1
			}
			return r
		}, text[2:])
		b, err := hex.DecodeString(h)
		if err != nil {
			return datum{}, fmt.Errorf("invalid bytea %q", text)
		}
		return datum{s: string(b)}, nil
	}
	var b []byte
	for i := 0; i < len(text); i++ {
		c := text[i]
		if c != '\\' {
			b = append(b, c)
			continue
		}
		switch {
		case i+1 < len(text) && text[i+1] == '\\':
			b = append(b, '\\')
			i++
		case i+3 < len(text)+0 && isOctal(text[i+1]) && text[i+1] <= '3' && isOctal(text[i+2]) && isOctal(text[i+3]):
			b = append(b, (text[i+1]-'0')<<6|(text[i+2]-'0')<<3|(text[i+3]-'0'))
			i += 3
		default:
			return datum{}, fmt.Errorf("invalid bytea %q", text)
		}
	}
	return datum{s: string(b)}, nil
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }

// jsonText gives the text a change's JSON value has for comparison, as
// Supabase takes it (value #>> '{}'): a string unquoted, anything else as
// it is, and ok false for null.
func jsonText(v []byte, scratch []byte) (text []byte, ok bool) {
	if len(v) == 0 || string(v) == "null" {
		return nil, false
	}
	if v[0] != '"' {
		return v, true
	}
	inner := v[1 : len(v)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		return inner, true
	}
	out := scratch[:0]
	for i := 0; i < len(inner); i++ {
		c := inner[i]
		if c != '\\' || i+1 >= len(inner) {
			out = append(out, c)
			continue
		}
		i++
		switch inner[i] {
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			if i+4 < len(inner) {
				r, err := strconv.ParseUint(string(inner[i+1:i+5]), 16, 32)
				if err == nil {
					i += 4
					if r >= 0xd800 && r < 0xdc00 && i+6 < len(inner) && inner[i+1] == '\\' && inner[i+2] == 'u' {
						if lo, err := strconv.ParseUint(string(inner[i+3:i+7]), 16, 32); err == nil && lo >= 0xdc00 && lo < 0xe000 {
							r = 0x10000 + (r-0xd800)<<10 + (lo - 0xdc00)
							i += 6
						}
					}
					out = appendRune(out, rune(r))
					continue
				}
			}
			out = append(out, 'u')
		default:
			out = append(out, inner[i])
		}
	}
	return out, true
}

func appendRune(b []byte, r rune) []byte {
	return append(b, string(r)...)
}
