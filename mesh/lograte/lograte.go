// Package lograte keeps log storms readable: a slog.Handler that lets
// through at most a few records with the same message per interval and
// counts the rest, so that a thousand refused handshakes or slow consumers
// are a few lines saying how many were suppressed, not a thousand lines.
package lograte

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// maxKeys bounds the messages tracked; messages are constants of the code,
// so this is only a guard.
const maxKeys = 1024

type state struct {
	mu   sync.Mutex
	keys map[string]*window
	now  func() time.Time
}

type window struct {
	start      time.Time
	n          int // records let through in this window
	suppressed int // records dropped since the last one let through
}

// Handler wraps another handler; records are limited per message text.
type Handler struct {
	next  slog.Handler
	every time.Duration
	burst int
	s     *state
}

// New returns a handler passing at most burst records with the same
// message per interval to next. The first record let through after some
// were dropped carries a "suppressed" attribute with their count.
func New(next slog.Handler, every time.Duration, burst int) *Handler {
	return &Handler{next: next, every: every, burst: max(burst, 1), s: &state{keys: make(map[string]*window), now: time.Now}}
}

// Enabled implements slog.Handler.
func (h *Handler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

// Handle implements slog.Handler.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	ok, suppressed := h.s.allow(r.Message, h.every, h.burst)
	if !ok {
		return nil
	}
	if suppressed > 0 {
		r = r.Clone()
		r.AddAttrs(slog.Int("suppressed", suppressed))
	}
	return h.next.Handle(ctx, r)
}

// WithAttrs implements slog.Handler; the limit is shared with h.
func (h *Handler) WithAttrs(as []slog.Attr) slog.Handler {
	return &Handler{next: h.next.WithAttrs(as), every: h.every, burst: h.burst, s: h.s}
}

// WithGroup implements slog.Handler; the limit is shared with h.
func (h *Handler) WithGroup(name string) slog.Handler {
	return &Handler{next: h.next.WithGroup(name), every: h.every, burst: h.burst, s: h.s}
}

func (s *state) allow(msg string, every time.Duration, burst int) (bool, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	w := s.keys[msg]
	if w == nil {
		if len(s.keys) >= maxKeys {
			for k, old := range s.keys { // drop expired windows
				if now.Sub(old.start) >= every {
					delete(s.keys, k)
				}
			}
		}
		w = &window{start: now}
		s.keys[msg] = w
	}
	if now.Sub(w.start) >= every {
		w.start, w.n = now, 0
	}
	if w.n >= burst {
		w.suppressed++
		return false, 0
	}
	w.n++
	n := w.suppressed
	w.suppressed = 0
	return true, n
}

// Logger returns a logger over l's handler limited as New says.
func Logger(l *slog.Logger, every time.Duration, burst int) *slog.Logger {
	return slog.New(New(l.Handler(), every, burst))
}
