package wal

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"regexp/syntax"
	"strings"
)

// cfilter is a Filter compiled against a table's columns.
type cfilter struct {
	col     int
	class   class
	op      Op
	negate  bool
	val     datum
	set     []datum  // OpIn
	setNull bool     // OpIn: the list has a NULL
	keys    []string // OpEq, OpIn: the equality index keys
	is      string   // OpIs: null, true, false, unknown
	like    *likePattern
	re      *regexp.Regexp
}

// Results of a filter on a value: SQL's three-valued logic. A binding sees
// a change only when every filter is true; null (a NULL compared) is not
// true, negated or not.
const (
	resFalse int8 = iota
	resTrue
	resNull
)

// compileFilter compiles f against columns, checking what Postgres would
// check when it casts the value: the column exists, the value is of its
// type, the operator applies to it.
func compileFilter(f Filter, columns []Column) (cfilter, error) {
	col := -1
	for i, c := range columns {
		if c.Name == f.Column {
			col = i
			break
		}
	}
	if col < 0 {
		return cfilter{}, fmt.Errorf("invalid column for filter %s", quote(f.Column))
	}
	c := columns[col].class
	cf := cfilter{col: col, class: c, op: f.Op, negate: f.Negate}
	typ := columns[col].Type
	switch f.Op {
	case OpIs:
		switch f.Value {
		case "null", "true", "false", "unknown":
		default:
			return cf, fmt.Errorf("invalid value for is filter: must be null, true, false, or unknown")
		}
		if f.Value != "null" && c != classBool {
			return cf, fmt.Errorf("is %s filter requires a boolean column, got %s", f.Value, typ)
		}
		cf.is = f.Value
		return cf, nil
	case OpLike, OpILike:
		if c != classText && c != classBpchar {
			return cf, fmt.Errorf("operator %s requires a text-compatible column type, got %s", f.Op, typ)
		}
		var err error
		cf.like, err = compileLike(f.Value, f.Op == OpILike)
		return cf, err
	case OpMatch, OpIMatch:
		if c != classText && c != classBpchar {
			return cf, fmt.Errorf("operator %s requires a text-compatible column type, got %s", f.Op, typ)
		}
		var err error
		cf.re, err = compileRegex(f)
		return cf, err
	case OpIn:
		elems, nulls, err := parseArrayLiteral(f.Value)
		if err != nil {
			return cf, err
		}
		if len(elems)+nulls > 100 {
			return cf, errInLimit
		}
		if err := orderable(c, f.Op, typ); err != nil {
			return cf, err
		}
		for _, e := range elems {
			d, err := parseDatum(c, e)
			if err != nil {
				return cf, fmt.Errorf("invalid input for type %s: \"%s\"", typ, quote(e))
			}
			cf.set = append(cf.set, d)
			cf.keys = append(cf.keys, d.key(c))
		}
		cf.setNull = nulls > 0
		return cf, nil
	case OpEq, OpNeq, OpLt, OpLte, OpGt, OpGte, OpIsDistinct:
		if err := orderable(c, f.Op, typ); err != nil {
			return cf, err
		}
		d, err := parseDatum(c, f.Value)
		if err != nil {
			return cf, fmt.Errorf("invalid input for type %s: \"%s\"", typ, quote(f.Value))
		}
		cf.val = d
		if f.Op == OpEq {
			cf.keys = []string{d.key(c)}
		}
		return cf, nil
	}
	return cf, fmt.Errorf("unsupported equality operator: %s", f.Op)
}

// orderable says whether op can compare values of class c. Ordering is
// implemented for numbers, text, booleans, uuids, bytea and times; enums,
// jsonb and other types have equality only, json and arrays nothing.
func orderable(c class, op Op, typ string) error {
	switch c {
	case classJSON, classArray, classComposite:
		return fmt.Errorf("operator %s is not supported on column type %s", op, typ)
	case classEnum, classJSONB, classOther:
		switch op {
		case OpEq, OpNeq, OpIn, OpIsDistinct:
			return nil
		}
		return fmt.Errorf("operator %s is not supported on column type %s", op, typ)
	}
	return nil
}

// eval applies f to one value (JSON; nil when the change does not carry it,
// which is not true). d is the value parsed, when the caller has it.
func (f *cfilter) eval(v json.RawMessage, d *datum, ok bool) int8 {
	if v == nil {
		return resFalse
	}
	null := string(v) == "null"
	switch f.op {
	case OpIs:
		var r bool
		switch f.is {
		case "null", "unknown":
			r = null
		case "true":
			r = !null && string(v) == "true"
		case "false":
			r = !null && string(v) == "false"
		}
		return boolRes(r != f.negate)
	case OpIsDistinct:
		if null {
			return boolRes(!f.negate)
		}
		if !ok {
			return resFalse
		}
		return boolRes((cmpDatum(f.class, *d, f.val) != 0) != f.negate)
	}
	if null {
		return resNull
	}
	var r bool
	switch f.op {
	case OpLike, OpILike, OpMatch, OpIMatch:
		text, _ := jsonText(v, nil)
		r = f.matchText(text)
	case OpIn:
		if !ok {
			return resFalse
		}
		for _, e := range f.set {
			if cmpDatum(f.class, *d, e) == 0 {
				r = true
				break
			}
		}
		if !r && f.setNull {
			return resNull
		}
	default:
		if !ok {
			return resFalse
		}
		x := cmpDatum(f.class, *d, f.val)
		switch f.op {
		case OpEq:
			r = x == 0
		case OpNeq:
			r = x != 0
		case OpLt:
			r = x < 0
		case OpLte:
			r = x <= 0
		case OpGt:
			r = x > 0
		case OpGte:
			r = x >= 0
		}
	}
	return boolRes(r != f.negate)
}

// matchText applies a like, ilike, match or imatch filter, not negated,
// to a value's text.
func (f *cfilter) matchText(text []byte) bool {
	if f.like != nil {
		return f.like.match(text)
	}
	return f.re.Match(text)
}

// needsDatum says whether eval compares a parsed value.
func (f *cfilter) needsDatum() bool {
	switch f.op {
	case OpIs, OpLike, OpILike, OpMatch, OpIMatch:
		return false
	}
	return true
}

func boolRes(b bool) int8 {
	if b {
		return resTrue
	}
	return resFalse
}

// valueDatum parses a change's JSON value of class c.
func valueDatum(c class, v json.RawMessage) (datum, bool) {
	var scratch [64]byte
	text, ok := jsonText(v, scratch[:0])
	if !ok {
		return datum{null: true}, false
	}
	if c == classJSONB {
		return datum{s: string(v)}, true
	}
	d, err := parseDatum(c, string(text))
	return d, err == nil
}

// valueKey is the equality index key of a change's value: valueDatum's key,
// without parsing for the classes whose output text is already canonical.
// The key may alias v or *scratch, which it may grow.
func valueKey(c class, v json.RawMessage, scratch *[]byte) ([]byte, bool) {
	switch c {
	case classInt, classJSONB:
		return v, string(v) != "null"
	case classText, classEnum, classOther, classUUID, classBpchar:
		t, ok := jsonText(v, (*scratch)[:0])
		if cap(t) > cap(*scratch) && len(v) > 0 && v[0] == '"' && len(t) != len(v)-2 {
			*scratch = t[:0] // unescaped into a grown scratch
		}
		if c == classBpchar {
			for len(t) > 0 && t[len(t)-1] == ' ' {
				t = t[:len(t)-1]
			}
		}
		return t, ok
	}
	d, ok := valueDatum(c, v)
	if !ok {
		return nil, false
	}
	*scratch = append((*scratch)[:0], d.key(c)...)
	return *scratch, true
}

// uuidText is the canonical text of a uuid's bytes.
func uuidText(b string) string {
	h := hex.EncodeToString([]byte(b))
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// parseArrayLiteral reads a one-dimensional Postgres array literal, as the
// in operator's value is: {a,"b,c",NULL}. Unquoted elements are trimmed and
// NULL (any case) is a null.
func parseArrayLiteral(s string) (elems []string, nulls int, err error) {
	bad := errMalformedArray{s}
	s = strings.TrimSpace(s)
	if len(s) < 2 || s[0] != '{' || s[len(s)-1] != '}' {
		return nil, 0, bad
	}
	body := s[1 : len(s)-1]
	if strings.TrimSpace(body) == "" {
		return nil, 0, nil
	}
	i := 0
	for {
		for i < len(body) && isSpace(body[i]) {
			i++
		}
		var b strings.Builder
		quoted := false
		if i < len(body) && body[i] == '"' {
			quoted = true
			i++
			for {
				if i >= len(body) {
					return nil, 0, bad
				}
				c := body[i]
				i++
				if c == '"' {
					break
				}
				if c == '\\' {
					if i >= len(body) {
						return nil, 0, bad
					}
					c = body[i]
					i++
				}
				b.WriteByte(c)
			}
			for i < len(body) && isSpace(body[i]) {
				i++
			}
		} else {
			for i < len(body) && body[i] != ',' {
				c := body[i]
				switch c {
				case '{', '}', '"':
					return nil, 0, bad
				case '\\':
					i++
					if i >= len(body) {
						return nil, 0, bad
					}
					c = body[i]
				}
				b.WriteByte(c)
				i++
			}
		}
		e := b.String()
		if !quoted {
			e = strings.TrimRight(e, " \t\n\r\v\f")
			if e == "" {
				return nil, 0, bad
			}
		}
		if !quoted && strings.EqualFold(e, "NULL") {
			nulls++
		} else {
			elems = append(elems, e)
		}
		if i >= len(body) {
			return elems, nulls, nil
		}
		if body[i] != ',' {
			return nil, 0, bad
		}
		i++
	}
}

type errMalformedArray struct{ literal string }

func (e errMalformedArray) Error() string {
	return "malformed array literal: \"" + quote(e.literal) + "\""
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'
}

// compileRegex compiles a match or imatch filter's pattern.
func compileRegex(f Filter) (*regexp.Regexp, error) {
	// Postgres's regular expressions let . match a newline; RE2 does with
	// (?s).
	flags := "(?s)"
	if f.Op == OpIMatch {
		flags = "(?si)"
	}
	re, err := regexp.Compile(flags + f.Value)
	if err != nil {
		var se *syntax.Error
		if errors.As(err, &se) {
			err = errors.New(string(se.Code)) // its Expr may be the whole pattern
		}
		return nil, fmt.Errorf("invalid regular expression for %s filter: %v", f.Op, err)
	}
	return re, nil
}
