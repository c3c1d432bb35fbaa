package wal

import (
	"fmt"
	"regexp/syntax"
)

// Limits bound what one binding may ask of the matcher, so that what one
// client subscribes to costs the others little: the memory of its
// subscriptions, and per change a time linear in the values its filters
// test, with a small factor. A zero field is no limit.
type Limits struct {
	// FilterBytes bounds a binding's filter as sent, and the column names
	// of its select together.
	FilterBytes int
	// PatternBytes bounds the value of a like, ilike, match or imatch
	// filter. A like or ilike costs one pass over the value, with
	// ⌈characters of the pattern/64⌉ word operations per character.
	PatternBytes int
	// RegexInsts bounds the RE2 program a match or imatch pattern compiles
	// to (x{n} counts n times). Go's RE2 is linear in the value, but its
	// cost per byte grows with the program: up to some 30 ns per
	// instruction per byte.
	RegexInsts int
}

// Check refuses a binding over l, with a Supabase-style text that quotes
// at most a short prefix of what the client sent. It also refuses a filter
// that does not parse, as Authorizer.Check would.
func (l Limits) Check(b Binding) error {
	if l.FilterBytes > 0 && len(b.Filter) > l.FilterBytes {
		return &FilterError{fmt.Sprintf("filter is longer than %d bytes: %s", l.FilterBytes, inspectString(b.Filter))}
	}
	if l.FilterBytes > 0 {
		n := 0
		for _, c := range b.Select {
			n += len(c)
		}
		if n > l.FilterBytes {
			return refusal(fmt.Sprintf("Error parsing `select` params: column names longer than %d bytes together: %s", l.FilterBytes, inspectList(b.Select...)))
		}
	}
	filters, err := ParseFilter(b.Filter)
	if err != nil {
		return err
	}
	for _, f := range filters {
		switch f.Op {
		case OpLike, OpILike, OpMatch, OpIMatch:
		default:
			continue
		}
		if l.PatternBytes > 0 && len(f.Value) > l.PatternBytes {
			return &FilterError{fmt.Sprintf("%s pattern is longer than %d bytes: %s", f.Op, l.PatternBytes, inspectString(f.Value))}
		}
		if (f.Op == OpMatch || f.Op == OpIMatch) && l.RegexInsts > 0 {
			if n := regexInsts(f); n > l.RegexInsts {
				return &FilterError{fmt.Sprintf("%s pattern is too complex (%d instructions once compiled, at most %d): %s",
					f.Op, n, l.RegexInsts, inspectString(f.Value))}
			}
		}
	}
	return nil
}

// regexInsts is the size of the RE2 program of a match or imatch filter
// as compileFilter compiles it; 0 if it does not compile (the join's
// check says why).
func regexInsts(f Filter) int {
	flags := syntax.Perl | syntax.DotNL
	if f.Op == OpIMatch {
		flags |= syntax.FoldCase
	}
	re, err := syntax.Parse(f.Value, flags)
	if err != nil {
		return 0
	}
	prog, err := syntax.Compile(re.Simplify())
	if err != nil {
		return 0
	}
	return len(prog.Inst)
}
