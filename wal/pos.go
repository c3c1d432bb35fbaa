package wal

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/meshcast/meshcast/wal/owner"
)

// Pos is a change's place in the change stream: its transaction's commit
// LSN and its sequence in the transaction. Positions are totally ordered
// across the whole database and the same on every node.
type Pos struct {
	LSN LSN
	Seq uint32
}

// Pos returns the change's position.
func (c *Change) Pos() Pos { return Pos{LSN: c.LSN, Seq: c.Seq} }

// Before reports whether p comes before q.
func (p Pos) Before(q Pos) bool {
	return p.LSN < q.LSN || p.LSN == q.LSN && p.Seq < q.Seq
}

// IsZero reports whether p is the zero position, before every change.
func (p Pos) IsZero() bool { return p == Pos{} }

// String formats p as clients see it: the LSN as Postgres prints it, ':',
// and the sequence in decimal, e.g. "0/16B3748:3".
func (p Pos) String() string {
	return p.LSN.String() + ":" + strconv.FormatUint(uint64(p.Seq), 10)
}

// maxPosText bounds the text of a position (two 8-digit hex halves, a
// slash, a colon and a 10-digit sequence).
const maxPosText = 8 + 1 + 8 + 1 + 10

// ParsePos parses a position as String writes it, strictly: upper-case
// hex without leading zeros, each half at most 8 digits, a decimal
// sequence without leading zeros that fits 32 bits. The error quotes at
// most a short prefix of s.
func ParsePos(s string) (Pos, error) {
	bad := func() (Pos, error) {
		return Pos{}, fmt.Errorf("invalid change position %s (want e.g. \"0/16B3748:3\")", quotePrefix(s))
	}
	if len(s) > maxPosText {
		return bad()
	}
	lsnText, seqText, ok := strings.Cut(s, ":")
	if !ok {
		return bad()
	}
	hi, lo, ok := strings.Cut(lsnText, "/")
	if !ok {
		return bad()
	}
	h, okH := parseHex32(hi)
	l, okL := parseHex32(lo)
	q, okQ := parseDec32(seqText)
	if !okH || !okL || !okQ {
		return bad()
	}
	return Pos{LSN: LSN(uint64(h)<<32 | uint64(l)), Seq: q}, nil
}

// parseHex32 parses 1 to 8 upper-case hex digits without a leading zero
// (but "0").
func parseHex32(s string) (uint32, bool) {
	if len(s) == 0 || len(s) > 8 || len(s) > 1 && s[0] == '0' {
		return 0, false
	}
	var v uint32
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case '0' <= c && c <= '9':
			v = v<<4 | uint32(c-'0')
		case 'A' <= c && c <= 'F':
			v = v<<4 | uint32(c-'A'+10)
		default:
			return 0, false
		}
	}
	return v, true
}

// parseDec32 parses a decimal without a sign or a leading zero (but "0")
// that fits 32 bits.
func parseDec32(s string) (uint32, bool) {
	if len(s) == 0 || len(s) > 1 && s[0] == '0' {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	v, err := strconv.ParseUint(s, 10, 32)
	return uint32(v), err == nil
}

// quotePrefix quotes at most the first 32 bytes of s, for an error.
func quotePrefix(s string) string {
	const n = 32
	if len(s) > n {
		return strconv.Quote(s[:n]) + "…"
	}
	return strconv.Quote(s)
}

// wire is p as the owner core has it.
func (p Pos) wire() owner.Pos { return owner.Pos{LSN: uint64(p.LSN), Seq: p.Seq} }
