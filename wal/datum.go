package wal

import (
	"bytes"
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
		return cmpInt(a.i, b.i)
	case classFloat, classFloat4:
		return cmpFloat(a.f, b.f)
	case classNumeric:
		return cmpNumeric(a, b)
	case classDate, classTimestamp, classTimestampTZ:
		if a.special != b.special {
			return cmpInt(int64(a.special), int64(b.special))
		}
		return cmpInt(a.i, b.i)
	case classTime:
		return cmpInt(a.i, b.i)
	case classTimeTZ:
		// timetz_cmp: the time in UTC, then the zone west of UTC (j is
		// east).
		if x := cmpInt(a.i-a.j*1000000, b.i-b.j*1000000); x != 0 {
			return x
		}
		return cmpInt(-a.j, -b.j)
	case classInterval:
		if x := cmpInt(a.i, b.i); x != 0 {
			return x
		}
		return cmpInt(a.j, b.j)
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

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
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
		return cmpInt(rank(a), rank(b))
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
		return cmpInt(int64(sa), int64(sb))
	}
	// Same sign: compare magnitudes, then flip for negatives.
	m := 0
	switch {
	case a.exp != b.exp:
		m = cmpInt(int64(a.exp), int64(b.exp))
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

// daysFromCivil counts days from 1970-01-01 to y-m-d in the proleptic
// Gregorian calendar, y astronomical (1 BC is 0).
func daysFromCivil(y, m, d int64) int64 {
	if m <= 2 {
		y--
	}
	era := y / 400
	if y < 0 && y%400 != 0 {
		era = (y - 399) / 400
	}
	yoe := y - era*400
	mp := (m + 9) % 12
	doy := (153*mp+2)/5 + d - 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	return era*146097 + doe - 719468
}

// parseTimestamp reads dates and timestamps as Postgres prints them (ISO,
// or to_jsonb's with a T), an optional zone for timestamptz (without one the
// time is UTC, the reader's TimeZone), a BC suffix, infinity, -infinity and
// epoch.
func parseTimestamp(text string, c class) (datum, error) {
	s := strings.TrimSpace(text)
	switch strings.ToLower(s) {
	case "infinity", "+infinity":
		return datum{special: 1}, nil
	case "-infinity":
		return datum{special: -1}, nil
	case "epoch":
		return datum{}, nil
	}
	bad := fmt.Errorf("invalid %s %q", map[class]string{classDate: "date", classTimestamp: "timestamp", classTimestampTZ: "timestamptz"}[c], text)
	bc := false
	if rest, ok := strings.CutSuffix(s, " BC"); ok {
		bc, s = true, rest
	}
	// Date: digits-digits-digits.
	dash1 := strings.IndexByte(s, '-')
	if dash1 < 4 {
		return datum{}, bad
	}
	rest := s[dash1+1:]
	dash2 := strings.IndexByte(rest, '-')
	if dash2 != 2 || len(rest) < 5 {
		return datum{}, bad
	}
	y, err1 := strconv.ParseInt(s[:dash1], 10, 64)
	mo, err2 := strconv.ParseInt(rest[:2], 10, 64)
	day, err3 := strconv.ParseInt(rest[3:5], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || !allDigits(s[:dash1]) || mo < 1 || mo > 12 || day < 1 || day > daysIn(y, mo, bc) {
		return datum{}, bad
	}
	if bc {
		y = 1 - y
	}
	days := daysFromCivil(y, mo, day)
	rest = rest[5:]
	if c == classDate {
		// A time after the date is allowed and ignored.
		if rest != "" && rest[0] != ' ' && rest[0] != 'T' {
			return datum{}, bad
		}
		return datum{i: days}, nil
	}
	us := days * usPerDay
	if rest == "" {
		return datum{i: us}, nil
	}
	if rest[0] != ' ' && rest[0] != 'T' && rest[0] != 't' {
		return datum{}, bad
	}
	t, err := parseTime(rest[1:], true)
	if err != nil {
		return datum{}, bad
	}
	if c == classTimestamp {
		return datum{i: us + t.i}, nil // a zone is ignored, as Postgres ignores it
	}
	// parseTime gives the local time and the zone east of UTC.
	return datum{i: us + t.i - t.j*1000000}, nil
}

func daysIn(y, m int64, bc bool) int64 {
	switch m {
	case 4, 6, 9, 11:
		return 30
	case 2:
		if bc {
			y = 1 - y
		}
		if y%4 == 0 && (y%100 != 0 || y%400 == 0) {
			return 29
		}
		return 28
	}
	return 31
}

// parseTime reads HH:MM[:SS[.frac]] and, with zone, an optional
// Z/+HH/+HH:MM/+HHMM/+HH:MM:SS. It returns the microseconds since midnight
// in i and the zone's seconds east of UTC in j.
func parseTime(text string, zone bool) (datum, error) {
	s := strings.TrimSpace(text)
	bad := fmt.Errorf("invalid time %q", text)
	var z int64
	if zone {
		if i := strings.LastIndexAny(s, "+-Zz"); i > 0 {
			zs := s[i:]
			s = strings.TrimSpace(s[:i])
			if zs != "Z" && zs != "z" {
				var err error
				if z, err = parseZone(zs); err != nil {
					return datum{}, bad
				}
			}
		}
	}
	us, ok := parseClock(s)
	if !ok || us > usPerDay {
		return datum{}, bad
	}
	return datum{i: us, j: z}, nil
}

// parseClock reads H:MM[:SS[.frac]] into microseconds, rounding the
// fraction; the hours are not limited (intervals have more than 24).
func parseClock(s string) (int64, bool) {
	parts := strings.Split(s, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return 0, false
	}
	h, err1 := strconv.ParseInt(parts[0], 10, 64)
	m, err2 := strconv.ParseInt(parts[1], 10, 64)
	if err1 != nil || err2 != nil || !allDigits(parts[0]) || !allDigits(parts[1]) || m > 59 || h > 1<<31 {
		return 0, false
	}
	var us int64
	if len(parts) == 3 {
		sec, frac, _ := strings.Cut(parts[2], ".")
		sv, err := strconv.ParseInt(sec, 10, 64)
		if err != nil || !allDigits(sec) || !allDigits(frac) || sv > 60 {
			return 0, false
		}
		us = sv * 1000000
		// Round to microseconds.
		f := frac + "0000000"
		fv, _ := strconv.ParseInt(f[:6], 10, 64)
		if f[6] >= '5' {
			fv++
		}
		us += fv
	}
	return us + (h*60+m)*60*1000000, true
}

func parseZone(zs string) (int64, error) {
	sign := int64(1)
	if zs[0] == '-' {
		sign = -1
	}
	zs = zs[1:]
	var h, m, sec string
	switch {
	case strings.Contains(zs, ":"):
		p := strings.Split(zs, ":")
		if len(p) > 3 {
			return 0, errors.New("zone")
		}
		h, m = p[0], p[1]
		if len(p) == 3 {
			sec = p[2]
		}
	case len(zs) == 4:
		h, m = zs[:2], zs[2:]
	default:
		h = zs
	}
	var v [3]int64
	for i, p := range []string{h, m, sec} {
		if p == "" {
			continue
		}
		n, err := strconv.ParseInt(p, 10, 64)
		if err != nil || !allDigits(p) || n > 59 && i > 0 || n > 15 && i == 0 {
			return 0, errors.New("zone")
		}
		v[i] = n
	}
	return sign * (v[0]*3600 + v[1]*60 + v[2]), nil
}

// parseInterval reads Postgres's interval output ("1 year 2 mons -3 days
// +04:05:06.7") and the unit words of its input. It normalizes as
// interval_cmp_value does: a month is 30 days, a day 24 hours.
func parseInterval(text string) (datum, error) {
	s := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(text), "@"))
	bad := fmt.Errorf("invalid interval %q", text)
	ago := false
	if rest, ok := strings.CutSuffix(s, " ago"); ok {
		ago, s = true, rest
	}
	var months, days, us int64
	fields := strings.Fields(s)
	if len(fields) == 0 {
		return datum{}, bad
	}
	for i := 0; i < len(fields); i++ {
		f := fields[i]
		if strings.Contains(f, ":") {
			t, ok := parseClock(strings.TrimLeft(f, "+-"))
			if !ok {
				return datum{}, bad
			}
			if strings.HasPrefix(f, "-") {
				t = -t
			}
			us += t
			continue
		}
		if i+1 >= len(fields) {
			return datum{}, bad
		}
		n, err := strconv.ParseFloat(f, 64)
		if err != nil || strings.ContainsAny(f, "xXnNiI_") {
			return datum{}, bad
		}
		i++
		unit := strings.TrimSuffix(strings.ToLower(fields[i]), "s")
		switch unit {
		case "millennium", "millennia":
			months += int64(n * 12000)
		case "centurie", "century":
			months += int64(n * 1200)
		case "decade":
			months += int64(n * 120)
		case "year", "yr", "y":
			months += int64(math.Round(n * 12))
		case "mon", "month":
			months += int64(n)
			days += int64(math.Round((n - math.Trunc(n)) * 30))
		case "week", "w":
			days += int64(n * 7)
		case "day", "d":
			days += int64(n)
			us += int64(math.Round((n - math.Trunc(n)) * usPerDay))
		case "hour", "hr", "h":
			us += int64(math.Round(n * 3600e6))
		case "minute", "min", "m":
			us += int64(math.Round(n * 60e6))
		case "second", "sec", "":
			us += int64(math.Round(n * 1e6))
		case "millisecond", "msec":
			us += int64(math.Round(n * 1e3))
		case "microsecond", "usec":
			us += int64(math.Round(n))
		default:
			return datum{}, bad
		}
	}
	if ago {
		months, days, us = -months, -days, -us
	}
	totalDays := months*30 + days + us/usPerDay
	rem := us % usPerDay
	if rem < 0 {
		rem += usPerDay
		totalDays--
	}
	return datum{i: totalDays, j: rem}, nil
}

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
