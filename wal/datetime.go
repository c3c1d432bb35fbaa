package wal

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

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
