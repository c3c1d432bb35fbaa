package lograte

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestStormIsSummarised(t *testing.T) {
	var buf bytes.Buffer
	h := New(slog.NewTextHandler(&buf, nil), time.Minute, 3)
	clock := time.Unix(1000, 0)
	h.s.now = func() time.Time { return clock }
	log := slog.New(h).With("component", "mesh")
	for i := 0; i < 1000; i++ {
		log.Warn("mesh peer refused", "i", i)
	}
	log.Info("another message")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 4 {
		t.Fatalf("%d lines for 1000 identical warnings and one other, want 3+1:\n%s", len(lines), buf.String())
	}
	if !strings.Contains(lines[3], "another message") {
		t.Errorf("a different message was limited too: %s", lines[3])
	}
	clock = clock.Add(time.Minute)
	buf.Reset()
	log.Warn("mesh peer refused", "i", 1000)
	if !strings.Contains(buf.String(), "suppressed=997") {
		t.Errorf("next window's first line does not count the suppressed ones: %s", buf.String())
	}
}
