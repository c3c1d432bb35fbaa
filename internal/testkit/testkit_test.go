package testkit

import (
	"strings"
	"testing"
	"time"
)

func TestMetrics(t *testing.T) {
	text := "# HELP x\nx_total 3\ny{reason=\"a b\"} 1.5\nbroken\nz notanumber\n"
	if got := Metric(text, "x_total"); got != "3" {
		t.Errorf("Metric x_total = %q", got)
	}
	if got := Metric(text, "x"); got != "" {
		t.Errorf("Metric x = %q, want none (a prefix is not a series)", got)
	}
	m, err := ParseMetrics(strings.NewReader(text))
	if err != nil || len(m) != 2 || m["x_total"] != 3 || m[`y{reason="a b"}`] != 1.5 {
		t.Errorf("ParseMetrics = %v, %v", m, err)
	}
}

func TestWaitFor(t *testing.T) {
	n := 0
	if !WaitFor(time.Second, func() bool { n++; return n == 3 }) || n != 3 {
		t.Errorf("WaitFor stopped after %d calls", n)
	}
	if WaitFor(30*time.Millisecond, func() bool { return false }) {
		t.Error("WaitFor reported a condition that never held")
	}
}

func TestFrames(t *testing.T) {
	if got := JoinFrame("1", "realtime:r", `{}`); got != `["1","1","realtime:r","phx_join",{"config":{}}]` {
		t.Errorf("JoinFrame = %s", got)
	}
	if got := string(Kind3("1", "2", "t", "e", 0, []byte("p"))); got != "\x03\x01\x01\x01\x01\x00\x0012tep" {
		t.Errorf("Kind3 = %q", got)
	}
}
