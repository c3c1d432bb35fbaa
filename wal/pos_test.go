package wal

import (
	"errors"
	"strings"
	"testing"
)

func TestPosString(t *testing.T) {
	for _, tc := range []struct {
		p    Pos
		text string
	}{
		{Pos{}, "0/0:0"},
		{Pos{LSN: 0x16B3748, Seq: 3}, "0/16B3748:3"},
		{Pos{LSN: 0x16_B374D848, Seq: 4294967295}, "16/B374D848:4294967295"},
		{Pos{LSN: 1<<64 - 1}, "FFFFFFFF/FFFFFFFF:0"},
	} {
		if got := tc.p.String(); got != tc.text {
			t.Errorf("%#v.String() = %q, want %q", tc.p, got, tc.text)
		}
		got, err := ParsePos(tc.text)
		if err != nil || got != tc.p {
			t.Errorf("ParsePos(%q) = %v, %v; want %v", tc.text, got, err, tc.p)
		}
	}
}

func TestParsePosStrict(t *testing.T) {
	for _, s := range []string{"", "0/16B3748", "0/16b3748:3", "00/16B3748:3", "0/016B3748:3", "0/16B3748:03",
		"0/16B3748:+3", "0/16B3748:-3", "0/16B3748:4294967296", "123456789/0:0", "/0:0", "0/:0", "0/0:",
		"0/0:1:2", " 0/0:0", "0/0:0 ", "0x1/0:0", strings.Repeat("9", 100)} {
		if p, err := ParsePos(s); err == nil {
			t.Errorf("ParsePos(%q) = %v, want an error", s, p)
		} else if len(err.Error()) > 100 {
			t.Errorf("ParsePos(%q)'s error quotes too much: %q", s, err)
		}
	}
}

func TestPosBefore(t *testing.T) {
	a, b, c := Pos{LSN: 1, Seq: 5}, Pos{LSN: 2, Seq: 0}, Pos{LSN: 2, Seq: 1}
	if !a.Before(b) || !b.Before(c) || c.Before(a) || a.Before(a) {
		t.Error("Before does not order by LSN, then Seq")
	}
	if (&Change{LSN: 2, Seq: 1}).Pos() != c {
		t.Error("Change.Pos")
	}
}

func FuzzParsePos(f *testing.F) {
	for _, s := range []string{"0/16B3748:3", "16/B374D848:4294967295", "0/0:0", "0/16b3748:3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePos(s)
		if err != nil {
			return
		}
		if p.String() != s {
			t.Fatalf("ParsePos(%q) = %v, whose String is %q", s, p, p.String())
		}
	})
}

func TestRecoveryErrorText(t *testing.T) {
	var err error = &RecoveryError{Reason: ReasonWindow}
	var re *RecoveryError
	if !errors.As(err, &re) || err.Error() != "recovery failed: "+ReasonWindow {
		t.Errorf("RecoveryError = %q", err)
	}
}
