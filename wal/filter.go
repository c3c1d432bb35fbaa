package wal

import (
	"errors"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Op is a filter operator.
type Op uint8

// Filter operators, as Supabase names them.
const (
	OpEq Op = 1 + iota
	OpNeq
	OpLt
	OpLte
	OpGt
	OpGte
	OpIn
	OpLike
	OpILike
	OpIs
	OpMatch
	OpIMatch
	OpIsDistinct
)

var opNames = [...]string{OpEq: "eq", OpNeq: "neq", OpLt: "lt", OpLte: "lte", OpGt: "gt", OpGte: "gte", OpIn: "in",
	OpLike: "like", OpILike: "ilike", OpIs: "is", OpMatch: "match", OpIMatch: "imatch", OpIsDistinct: "isdistinct"}

// String is the operator's name in the filter grammar.
func (o Op) String() string {
	if int(o) < len(opNames) && opNames[o] != "" {
		return opNames[o]
	}
	return "op" + strconv.Itoa(int(o))
}

// Filter is one condition of a binding's filter: Column Op Value, or its
// negation. Filters of a binding all hold (AND).
type Filter struct {
	Column string
	Op     Op
	// Value is the operand as text: unquoted, or for OpIn a Postgres
	// array literal, "{a,b}" for in.(a,b), as Supabase stores it. It is
	// compared after a cast to the column's type.
	Value  string
	Negate bool
}

// FilterError is a filter Supabase's grammar refuses. Its text is what
// Supabase tells the client.
type FilterError struct{ Reason string }

func (e *FilterError) Error() string { return "Error parsing `filter` params: " + e.Reason }

// ParseFilter parses a binding's filter, e.g. "id=eq.5", "name=not.in.(a,\"b,c\")"
// or "id=gt.0,id=lt.100", exactly as Supabase's parse_subscription_params
// does: commas outside double quotes and parentheses separate filters (AND);
// a value may be double-quoted, with \ escaping the next byte; an empty
// filter is no filter. Unlike Supabase, a filter of only (Unicode)
// whitespace is refused rather than taken as none. Errors are *FilterError,
// quoting at most a short prefix of s. ParseFilter checks the
// grammar only: whether the column exists and the value casts to its type is
// for the Validator (or the Matcher) to say.
func ParseFilter(s string) ([]Filter, error) {
	if s == "" {
		return nil, nil
	}
	if s = strings.TrimSpace(s); s == "" {
		// Supabase takes a blank filter as no filter; a filter that is
		// only whitespace is more likely a bug than a wish for every row.
		return nil, &FilterError{"filter must not be blank (send no filter to receive every row)"}
	}
	var filters []Filter
	for _, seg := range splitTopLevel(s) {
		f, err := parseSegment(seg)
		if err != nil {
			return nil, err
		}
		filters = append(filters, f)
	}
	return filters, nil
}

// splitTopLevel splits at commas outside quotes and parentheses. A quote
// opens only after '.', '(' or ','; inside quotes a backslash keeps the next
// byte.
func splitTopLevel(s string) []string {
	var out []string
	depth, quoted, prev, start := 0, false, byte(0), 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quoted && c == '\\' && i+1 < len(s):
			i++
			prev = s[i]
		case quoted && c == '"':
			quoted, prev = false, c
		case quoted:
			prev = c
		case c == '"' && (prev == '.' || prev == '(' || prev == ','):
			quoted, prev = true, c
		case c == '(':
			depth, prev = depth+1, c
		case c == ')':
			depth, prev = max(0, depth-1), c
		case c == ',' && depth == 0:
			out = append(out, s[start:i])
			start, prev = i+1, 0
		default:
			prev = c
		}
	}
	return append(out, s[start:])
}

func parseSegment(seg string) (Filter, error) {
	seg = strings.TrimSpace(seg)
	if seg == "" {
		return Filter{}, &FilterError{"filter must not contain empty segments (check for extra commas)"}
	}
	col, rest, ok := strings.Cut(seg, "=")
	if !ok {
		return Filter{}, &FilterError{inspectList(seg)}
	}
	f := Filter{Column: col}
	if v, ok := strings.CutPrefix(rest, "not."); ok {
		f.Negate, rest = true, v
	}
	name, value, ok := strings.Cut(rest, ".")
	if !ok {
		return Filter{}, &FilterError{inspectList(rest)}
	}
	for op, n := range opNames {
		if n == name && n != "" {
			f.Op = Op(op)
		}
	}
	if f.Op == 0 {
		return Filter{}, &FilterError{inspectList(name, value)}
	}
	if f.Op == OpIn {
		if len(value) < 2 || value[0] != '(' || value[len(value)-1] != ')' {
			return Filter{}, &FilterError{"`in` filter value must be wrapped by parentheses"}
		}
		f.Value = "{" + value[1:len(value)-1] + "}"
		return f, nil
	}
	f.Value = unquote(value)
	return f, nil
}

// unquote removes the quotes of a value that is wholly one quoted string,
// with \ keeping the next byte; anything else is kept as it is.
func unquote(v string) string {
	if len(v) == 0 || v[0] != '"' {
		return v
	}
	var b strings.Builder
	for i := 1; i < len(v); i++ {
		c := v[i]
		switch {
		case c == '"':
			if i == len(v)-1 {
				return b.String()
			}
			return v
		case c == '\\' && i+1 < len(v):
			i++
			c = v[i]
		}
		b.WriteByte(c)
	}
	return v // no closing quote
}

// Error texts quote what a client sent only in part, so that an error is
// never much larger than a short prefix of its input, as Elixir's inspect
// limits what it prints (its printable_limit and limit, 4096 and 50 by
// default; ours are smaller).
const (
	quoteBytes  = 100 // a quoted string: its first bytes, cut at a character
	quoteBinary = 20  // a string printed as <<bytes>>: its first bytes
	quoteItems  = 10  // a quoted list: its first items
)

// inspectList formats strings as Elixir's inspect formats a list of
// binaries, for Supabase's error texts: ["foo", "hey"]; after quoteItems
// items, "...".
func inspectList(items ...string) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, s := range items {
		if i > 0 {
			b.WriteString(", ")
		}
		if i == quoteItems {
			b.WriteString("...")
			break
		}
		b.WriteString(inspectString(s))
	}
	b.WriteByte(']')
	return b.String()
}

// inspectString is Elixir's inspect of a binary: a quoted, escaped string
// when printable, else <<1, 2, 3>>; a longer one is cut as Elixir cuts
// one past its limits: "abc" <> ... and <<1, 2, ...>>.
func inspectString(s string) string {
	head := clipBytes(s, quoteBytes)
	if !elixirPrintable(head) {
		var b strings.Builder
		b.WriteString("<<")
		for i := 0; i < len(s); i++ {
			if i > 0 {
				b.WriteString(", ")
			}
			if i == quoteBinary {
				b.WriteString("...")
				break
			}
			b.WriteString(strconv.Itoa(int(s[i])))
		}
		b.WriteString(">>")
		return b.String()
	}
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(head); i++ {
		switch c := head[i]; c {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		case '\v':
			b.WriteString(`\v`)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		case 0x1b:
			b.WriteString(`\e`)
		case '\a':
			b.WriteString(`\a`)
		case '#':
			if i+1 < len(head) && head[i+1] == '{' {
				b.WriteString(`\#`)
			} else {
				b.WriteByte(c)
			}
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	if len(head) < len(s) {
		b.WriteString(" <> ...")
	}
	return b.String()
}

// clipBytes is s's first n bytes or fewer, cut before a character that
// would not fit whole.
func clipBytes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// quote is how error texts quote a client's string when not in Elixir's
// form: at most quoteBytes of it, valid UTF-8 (bad bytes become U+FFFD),
// with "..." after a string cut short.
func quote(s string) string { return clipText(s, quoteBytes) }

// clipText is quote with a bound of n bytes.
func clipText(s string, n int) string {
	head := clipBytes(s, n)
	q := strings.ToValidUTF8(head, "\uFFFD")
	if len(head) < len(s) {
		q += "..."
	}
	return q
}

// elixirPrintable is String.printable?/1.
func elixirPrintable(s string) bool {
	for i, r := range s {
		switch {
		case r == utf8.RuneError:
			if _, size := utf8.DecodeRuneInString(s[i:]); size == 1 {
				return false
			}
		case r >= 0x20 && r <= 0x7e, r >= 0xa0 && r <= 0xd7ff, r >= 0xe000 && r <= 0xfffd, r >= 0x10000 && r <= 0x10ffff:
		case strings.ContainsRune("\n\r\t\v\b\f\x1b\a", r):
		default:
			return false
		}
	}
	return true
}

var errInLimit = errors.New("too many values for `in` filter. Maximum 100")
