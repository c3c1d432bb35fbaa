package wal

import (
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParseFilter(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []Filter
		err  string
	}{
		// Supabase's own examples (subscriptions.ex doctests).
		{in: "subject=eq.hey", want: []Filter{{"subject", OpEq, "hey", false}}},
		{in: "subject=in.(hidee,ho)", want: []Filter{{"subject", OpIn, "{hidee,ho}", false}}},
		{in: "subject=not.like.hey%", want: []Filter{{"subject", OpLike, "hey%", true}}},
		{in: "id=gt.0,id=lt.100", want: []Filter{{"id", OpGt, "0", false}, {"id", OpLt, "100", false}}},
		{in: "", want: nil},
		// Supabase takes a blank filter as none; a filter of only
		// whitespace, Unicode's included, is refused.
		{in: "   ", err: "Error parsing `filter` params: filter must not be blank (send no filter to receive every row)"},
		{in: "\u00a0\u2003\t", err: "Error parsing `filter` params: filter must not be blank (send no filter to receive every row)"},
		{in: "subject=foo.hey", err: "Error parsing `filter` params: [\"foo\", \"hey\"]"},
		{in: "undefined", err: "Error parsing `filter` params: [\"undefined\"]"},
		// Quoting: commas inside quotes and parentheses do not split.
		{in: `name=eq."a,b"`, want: []Filter{{"name", OpEq, "a,b", false}}},
		{in: `name=eq."say \"hi\", \\ ok"`, want: []Filter{{"name", OpEq, `say "hi", \ ok`, false}}},
		{in: `name=in.(a,"b,c"),id=eq.1`, want: []Filter{{"name", OpIn, `{a,"b,c"}`, false}, {"id", OpEq, "1", false}}},
		{in: `name=eq."unterminated`, want: []Filter{{"name", OpEq, `"unterminated`, false}}},
		{in: `name=eq."a"b"`, want: []Filter{{"name", OpEq, `"a"b"`, false}}},
		{in: `name=eq.x"y,z"`, want: []Filter{{"name", OpEq, `x"y`, false}, {"z\"", 0, "", false}}, err: "Error parsing `filter` params: [\"z\\\"\"]"},
		{in: "name=eq.a.b", want: []Filter{{"name", OpEq, "a.b", false}}},
		{in: "name=eq.", want: []Filter{{"name", OpEq, "", false}}},
		{in: " id = eq.1 ", want: []Filter{{"id ", OpEq, "", false}}, err: "Error parsing `filter` params: [\" eq\", \"1\"]"},
		{in: "id=eq.1,,id=eq.2", err: "Error parsing `filter` params: filter must not contain empty segments (check for extra commas)"},
		{in: "id=eq.1,", err: "Error parsing `filter` params: filter must not contain empty segments (check for extra commas)"},
		{in: "id=eq", err: "Error parsing `filter` params: [\"eq\"]"},
		{in: "id=not.eq", err: "Error parsing `filter` params: [\"eq\"]"},
		{in: "id=in.1,2", err: "Error parsing `filter` params: `in` filter value must be wrapped by parentheses"},
		{in: "id=in.(1,2", err: "Error parsing `filter` params: `in` filter value must be wrapped by parentheses"},
		{in: "id=in.()", want: []Filter{{"id", OpIn, "{}", false}}},
		{in: "a=is.null,b=not.is.true", want: []Filter{{"a", OpIs, "null", false}, {"b", OpIs, "true", true}}},
		{in: "a=isdistinct.5,b=imatch.^x,c=match.y$,d=ilike.%Z,e=neq.1,f=lte.2,g=gte.3",
			want: []Filter{{"a", OpIsDistinct, "5", false}, {"b", OpIMatch, "^x", false}, {"c", OpMatch, "y$", false},
				{"d", OpILike, "%Z", false}, {"e", OpNeq, "1", false}, {"f", OpLte, "2", false}, {"g", OpGte, "3", false}}},
		{in: "a=EQ.1", err: "Error parsing `filter` params: [\"EQ\", \"1\"]"},
		{in: "a=not.not.eq.1", err: "Error parsing `filter` params: [\"not\", \"eq.1\"]"},
		{in: "=eq.1", want: []Filter{{"", OpEq, "1", false}}},
		{in: "a=eq.x=y", want: []Filter{{"a", OpEq, "x=y", false}}},
		// Elixir's inspect of odd bytes.
		{in: "a=f\x01o.x", err: "Error parsing `filter` params: [<<102, 1, 111>>, \"x\"]"},
		{in: "a=f#{o.x\n", err: "Error parsing `filter` params: [\"f\\#{o\", \"x\"]"},
		{in: `a=b\c.é`, err: `Error parsing ` + "`filter`" + ` params: ["b\\c", "é"]`},
		// Parentheses guard commas outside in too.
		{in: "a=eq.(1,2),b=eq.3", want: []Filter{{"a", OpEq, "(1,2)", false}, {"b", OpEq, "3", false}}},
	} {
		got, err := ParseFilter(tc.in)
		if tc.err != "" {
			if err == nil || err.Error() != tc.err {
				t.Errorf("ParseFilter(%q) error = %v, want %s", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseFilter(%q): %v", tc.in, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseFilter(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

func FuzzParseFilter(f *testing.F) {
	for _, s := range []string{"subject=eq.hey", `name=in.(a,"b,c"),id=eq.1`, `x=eq."a\"`, "a=not.is.null", "((,", `"\`, "a=in.()"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		filters, err := ParseFilter(s)
		if err != nil {
			if _, ok := err.(*FilterError); !ok {
				t.Fatalf("%q: error %T", s, err)
			}
			return
		}
		for _, f := range filters {
			if f.Op < OpEq || f.Op > OpIsDistinct {
				t.Fatalf("%q: op %d", s, f.Op)
			}
			if f.Op == OpIn {
				parseArrayLiteral(f.Value) // must not panic
			}
		}
	})
}

// An error quotes at most a short prefix of what the client sent, cut at
// a character, as Elixir's inspect cuts long terms: a 4.4 MB filter of
// U+0080 without "=" once came back as a 22 MB error.
func TestFilterErrorsQuoteAPrefix(t *testing.T) {
	for _, tc := range []struct {
		in, want string
	}{
		{strings.Repeat("\u0080", 2_200_000), "Error parsing `filter` params: [<<194, 128, 194, 128, 194, 128, 194, 128, 194, 128, 194, 128, 194, 128, 194, 128, 194, 128, 194, 128, ...>>]"},
		{strings.Repeat("é", 1000), "Error parsing `filter` params: [\"" + strings.Repeat("é", 50) + "\" <> ...]"},
		{"a=" + strings.Repeat("x", 99) + "😀.1", "Error parsing `filter` params: [\"" + strings.Repeat("x", 99) + "\" <> ..., \"1\"]"},
		{"a=b\x01" + strings.Repeat("y", 200) + ".1", "Error parsing `filter` params: [<<98, 1, 121, 121, 121, 121, 121, 121, 121, 121, 121, 121, 121, 121, 121, 121, 121, 121, 121, 121, ...>>, \"1\"]"},
	} {
		_, err := ParseFilter(tc.in)
		if err == nil || err.Error() != tc.want {
			t.Errorf("ParseFilter(%.40q…) error\n got %.300v\nwant %s", tc.in, err, tc.want)
		}
		if err != nil && (len(err.Error()) > 200 || !utf8.ValidString(err.Error())) {
			t.Errorf("error of %d bytes", len(err.Error()))
		}
	}
	if got := inspectList("a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l"); got != `["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", ...]` {
		t.Errorf("inspectList = %s", got)
	}
	if got := quote("ab\xffc" + strings.Repeat("é", 60)); got != "ab\uFFFDc"+strings.Repeat("é", 48)+"..." {
		t.Errorf("quote = %q", got)
	}
}
