package wal

import (
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestLikeMatch(t *testing.T) {
	for _, tc := range []struct {
		pat, s string
		fold   bool
		want   bool
	}{
		{"", "", false, true},
		{"", "a", false, false},
		{"%", "", false, true},
		{"%", "anything", false, true},
		{"%%", "x", false, true},
		{"_", "", false, false},
		{"_", "é", false, true},
		{"_", "ab", false, false},
		{"a%", "a", false, true},
		{"a%", "ba", false, false},
		{"%a", "ba", false, true},
		{"%a", "ab", false, false},
		{"a%b", "ab", false, true},
		{"a%b", "axxxb", false, true},
		{"a%b", "axxxbx", false, false},
		{"a%b%c", "abc", false, true},
		{"a%b%c", "acb", false, false},
		{"%ab%", "xaab", false, true},
		{"%aab", "aaab", false, true},
		{"a_c", "abc", false, true},
		{"a_c", "ac", false, false},
		{"%a_c%", "xxabcxx", false, true},
		{"%_%_%", "ab", false, true},
		{"%_%_%", "a", false, false},
		{`a\%`, "a%", false, true},
		{`a\%`, "ab", false, false},
		{`a\_`, "a_", false, true},
		{`a\_`, "ab", false, false},
		{`\\`, `\`, false, true},
		{"é%😀", "éxx😀", false, true},
		{"BUY%", "buy milk", true, true},
		{"%MILK", "Buy milK", true, true},
		{"%É%", "xéx", true, true},
		{"%b", strings.Repeat("a", 70) + "b", false, true},
		{strings.Repeat("_", 65) + "b", strings.Repeat("a", 65) + "b", false, true},
		{"%" + strings.Repeat("a", 100) + "b%", strings.Repeat("a", 300) + "b", false, true},
		{"%" + strings.Repeat("a", 100) + "b%", strings.Repeat("a", 300), false, false},
		{"%" + strings.Repeat("a_", 70) + "%", strings.Repeat("ab", 100), false, true},
	} {
		p, err := compileLike(tc.pat, tc.fold)
		if err != nil {
			t.Fatalf("%q: %v", tc.pat, err)
		}
		if got := p.match([]byte(tc.s)); got != tc.want {
			t.Errorf("%q like %q (fold %v) = %v, want %v", tc.s, tc.pat, tc.fold, got, tc.want)
		}
	}
	if _, err := compileLike(`ab\`, false); err != errLikeEscape {
		t.Errorf("trailing escape: %v", err)
	}
}

// The bit-parallel matcher agrees with the backtracking one it replaced
// on random patterns and texts over a small alphabet (where wildcards
// overlap most), long enough to cross a word of state.
func TestLikeAgreesWithBacktracking(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	alpha := []string{"a", "b", "é", "%", "_", `\%`, `\_`}
	for range 20000 {
		var p strings.Builder
		for range r.IntN(90) {
			p.WriteString(alpha[r.IntN(len(alpha))])
		}
		var s strings.Builder
		for range r.IntN(120) {
			s.WriteString([]string{"a", "b", "é", "%", "_"}[r.IntN(5)])
		}
		lp, err := compileLike(p.String(), false)
		if err != nil {
			t.Fatal(err)
		}
		want := backtrackLike(tokensOf(p.String()), []byte(s.String()))
		if got := lp.match([]byte(s.String())); got != want {
			t.Fatalf("%q like %q = %v, want %v", s.String(), p.String(), got, want)
		}
	}
}

// BenchmarkLikeWorstCase is the attack: a pattern of 2000 a's and
// a b after a %, against a value of 100 KB of a's, which the backtracking
// matcher walks 2000 characters deep from each of its 100 000 positions.
func BenchmarkLikeWorstCase(b *testing.B) {
	value := []byte(strings.Repeat("a", 100_000))
	for _, pat := range []string{
		"%" + strings.Repeat("a", 2000) + "b",
		"%" + strings.Repeat("a", 2000) + "b%",
		"%" + strings.Repeat("a", 250) + "b%",
		"%" + strings.Repeat("a_", 125) + "b%",
		"%" + strings.Repeat("a", 60) + "b%",
		"%needle%",
	} {
		name := pat[:4] + "…" + pat[len(pat)-2:] + "/" + strconv.Itoa(utf8.RuneCountInString(pat))
		b.Run("backtracking/"+name, func(b *testing.B) {
			toks := tokensOf(pat)
			b.SetBytes(int64(len(value)))
			b.ReportAllocs()
			for b.Loop() {
				backtrackLike(toks, value)
			}
		})
		b.Run("linear/"+name, func(b *testing.B) {
			lp, _ := compileLike(pat, false)
			b.SetBytes(int64(len(value)))
			b.ReportAllocs()
			for b.Loop() {
				lp.match(value)
			}
		})
	}
}

// The matcher before: the classic wildcard walk, backtracking to the last
// %, kept to measure against and to check the new one by.

type likeToken struct {
	r    rune
	kind byte // 'l'iteral, '_', '%'
}

func tokensOf(p string) []likeToken {
	var toks []likeToken
	for i := 0; i < len(p); {
		r, size := utf8.DecodeRuneInString(p[i:])
		i += size
		switch r {
		case '%':
			if len(toks) > 0 && toks[len(toks)-1].kind == '%' {
				continue
			}
			toks = append(toks, likeToken{kind: '%'})
		case '_':
			toks = append(toks, likeToken{kind: '_'})
		case '\\':
			r, size = utf8.DecodeRuneInString(p[i:])
			i += size
			toks = append(toks, likeToken{kind: 'l', r: r})
		default:
			toks = append(toks, likeToken{kind: 'l', r: r})
		}
	}
	return toks
}

func backtrackLike(p []likeToken, s []byte) bool {
	pi, si := 0, 0
	starP, starS := -1, 0
	for si < len(s) {
		r, size := utf8.DecodeRune(s[si:])
		if pi < len(p) {
			switch t := p[pi]; t.kind {
			case '%':
				starP, starS = pi, si
				pi++
				continue
			case '_':
				pi++
				si += size
				continue
			default:
				if t.r == r {
					pi++
					si += size
					continue
				}
			}
		}
		if starP < 0 {
			return false
		}
		pi = starP + 1
		_, size = utf8.DecodeRune(s[starS:])
		starS += size
		si = starS
	}
	for pi < len(p) && p[pi].kind == '%' {
		pi++
	}
	return pi == len(p)
}

// BenchmarkMatchWorstCase is the costliest match pattern the default
// --max-regex-insts (64) lets through, against 100 KB: Go's RE2 keeps
// every one of the 60 positions alive at each byte.
func BenchmarkMatchWorstCase(b *testing.B) {
	value := []byte(strings.Repeat("a", 100_000))
	for _, pat := range []string{"x", ".{60}b", "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"} {
		f := Filter{Column: "title", Op: OpMatch, Value: pat}
		cf, err := compileFilter(f, todoColumns)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(strconv.Itoa(regexInsts(f))+"insts", func(b *testing.B) {
			b.SetBytes(int64(len(value)))
			for b.Loop() {
				cf.matchText(value)
			}
		})
	}
}
