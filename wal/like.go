package wal

import (
	"errors"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// likePattern is an SQL LIKE pattern compiled for bit-parallel matching
// (shift-and with gaps): one pass over the value, a few word operations
// per character whatever the pattern, and no backtracking, so a match
// costs O(len(value) × ⌈tokens/64⌉) however the pattern and the value are
// built.
//
// The pattern's tokens are its characters and _ (% excluded). Bit i of the
// state says that tokens 0..i match a text ending at the character just
// read; a % after token i keeps bit i set from then on, and a % in front
// lets a match begin at any character.
type likePattern struct {
	n     int      // tokens
	lead  bool     // starts with %
	any   []uint64 // tokens that are _
	keep  []uint64 // tokens followed by %
	fold  bool     // ilike: characters compare lower-cased
	ascii [128]uint8
	// masks holds, per character of the pattern, the tokens that are it:
	// ASCII characters at ascii[c]-1, others at len(ascii masks)+their
	// index in runes, words() words each.
	masks  []uint64
	runes  []rune // the pattern's non-ASCII characters, sorted
	nASCII int
}

var errLikeEscape = errors.New("LIKE pattern must not end with escape character")

// compileLike compiles an SQL LIKE pattern with Postgres's default escape,
// the backslash; fold makes it ILIKE (lower-casing both sides, with Go's
// Unicode rules).
func compileLike(p string, fold bool) (*likePattern, error) {
	if fold {
		p = strings.ToLower(p)
	}
	type tok struct {
		r   rune
		any bool
	}
	var toks []tok
	var pct []int // indexes of tokens followed by %
	lp := &likePattern{fold: fold}
	for i := 0; i < len(p); {
		r, size := utf8.DecodeRuneInString(p[i:])
		i += size
		switch r {
		case '%':
			if len(toks) == 0 {
				lp.lead = true
			} else if len(pct) == 0 || pct[len(pct)-1] != len(toks)-1 {
				pct = append(pct, len(toks)-1)
			}
			continue
		case '_':
			toks = append(toks, tok{any: true})
			continue
		case '\\':
			if i >= len(p) {
				return nil, errLikeEscape
			}
			r, size = utf8.DecodeRuneInString(p[i:])
			i += size
		}
		toks = append(toks, tok{r: r})
	}
	lp.n = len(toks)
	w := lp.words()
	lp.any, lp.keep = make([]uint64, w), make([]uint64, w)
	for _, t := range pct {
		lp.keep[t/64] |= 1 << (t % 64)
	}
	var ascii []rune
	for i, t := range toks {
		switch {
		case t.any:
			lp.any[i/64] |= 1 << (i % 64)
		case t.r < utf8.RuneSelf:
			if lp.ascii[t.r] == 0 {
				ascii = append(ascii, t.r)
				lp.ascii[t.r] = uint8(len(ascii))
			}
		default:
			if !slices.Contains(lp.runes, t.r) {
				lp.runes = append(lp.runes, t.r)
			}
		}
	}
	slices.Sort(lp.runes)
	lp.nASCII = len(ascii)
	lp.masks = make([]uint64, (len(ascii)+len(lp.runes))*w)
	for i, t := range toks {
		if t.any {
			continue
		}
		m := lp.mask(t.r)
		m[i/64] |= 1 << (i % 64)
	}
	return lp, nil
}

func (p *likePattern) words() int { return max(1, (p.n+63)/64) }

// mask is the tokens that are r, nil if none.
func (p *likePattern) mask(r rune) []uint64 {
	w := p.words()
	k := p.maskIndex(r)
	if k < 0 {
		return nil
	}
	return p.masks[k*w : (k+1)*w]
}

// maskIndex is the index of r's mask in masks, -1 if r is in no token.
func (p *likePattern) maskIndex(r rune) int {
	if r < utf8.RuneSelf {
		return int(p.ascii[r]) - 1
	}
	if j, ok := slices.BinarySearch(p.runes, r); ok {
		return p.nASCII + j
	}
	return -1
}

// match reports whether s matches the pattern as a whole.
func (p *likePattern) match(s []byte) bool {
	if p.n == 0 {
		return p.lead || len(s) == 0
	}
	if p.n <= 64 {
		return p.match1(s)
	}
	var buf [8]uint64
	var d, scratch []uint64 // the state, and a mask's scratch
	if w := p.words(); w <= 4 {
		d, scratch = buf[:w], buf[4:4+w]
	} else {
		d, scratch = make([]uint64, w), make([]uint64, w)
	}
	lastWord, lastBit := (p.n-1)/64, uint64(1)<<((p.n-1)%64)
	trail := p.keep[lastWord]&lastBit != 0
	for i := 0; i < len(s); {
		r, size := rune(s[i]), 1
		if r >= utf8.RuneSelf {
			r, size = utf8.DecodeRune(s[i:])
		}
		start := uint64(0)
		if i == 0 || p.lead {
			start = 1
		}
		i += size
		if p.fold {
			if 'A' <= r && r <= 'Z' {
				r += 'a' - 'A'
			} else if r >= utf8.RuneSelf {
				r = unicode.ToLower(r)
			}
		}
		accept := p.any
		if k := p.maskIndex(r); k >= 0 {
			m := p.masks[k*len(d) : (k+1)*len(d)]
			for j := range scratch {
				scratch[j] = m[j] | accept[j]
			}
			accept = scratch
		}
		carry, live := start, uint64(0)
		for k := range d {
			old := d[k]
			d[k] = (old<<1|carry)&accept[k] | old&p.keep[k]
			carry = old >> 63
			live |= d[k]
		}
		switch {
		case trail && d[lastWord]&lastBit != 0:
			return true // the rest of s goes to the final %
		case live == 0 && !p.lead:
			return false // nothing can match from here on
		}
	}
	return d[lastWord]&lastBit != 0
}

// match1 is match for patterns of at most 64 tokens: a state of one word.
func (p *likePattern) match1(s []byte) bool {
	last := uint64(1) << (p.n - 1)
	anyM, keep := p.any[0], p.keep[0]
	trail := keep&last != 0
	var d uint64
	for i := 0; i < len(s); {
		r, size := rune(s[i]), 1
		if r >= utf8.RuneSelf {
			r, size = utf8.DecodeRune(s[i:])
		}
		start := uint64(0)
		if i == 0 || p.lead {
			start = 1
		}
		i += size
		accept := anyM
		switch {
		case r < utf8.RuneSelf:
			if p.fold && 'A' <= r && r <= 'Z' {
				r += 'a' - 'A'
			}
			if k := p.ascii[r]; k != 0 {
				accept |= p.masks[k-1]
			}
		default:
			if p.fold {
				r = unicode.ToLower(r)
			}
			if k := p.maskIndex(r); k >= 0 {
				accept |= p.masks[k]
			}
		}
		d = (d<<1|start)&accept | d&keep
		switch {
		case trail && d&last != 0:
			return true
		case d == 0 && !p.lead:
			return false
		}
	}
	return d&last != 0
}
