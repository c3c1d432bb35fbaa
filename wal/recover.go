package wal

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/meshcast/meshcast/wal/owner"
	"github.com/meshcast/meshcast/wire/meshproto"
)

// RecoverResult is what Recover found: the changes after the position
// asked for that the subscriptions match and may see, in commit order, and
// the position through which that list is complete.
type RecoverResult struct {
	Changes []Recovered
	// Through is the position the list is complete through: every change
	// after the position asked for and at or before Through that the
	// subscriptions match and may see is in Changes; later ones reach
	// Deliver live. It is at least Head() as it was when Recover was
	// called.
	Through Pos
}

// Recovered is a recovered change and the IDs of the subscriptions (among
// those Recover was given) it reaches.
type Recovered struct {
	Change *Change
	IDs    []uint64
}

// RecoveryError says why changes cannot be recovered: Reason is what the
// client is told after "recovery failed: ". Recover fails with one
// (errors.As) whenever it cannot prove the list complete.
type RecoveryError struct{ Reason string }

func (e *RecoveryError) Error() string { return "recovery failed: " + e.Reason }

// Reasons of RecoveryError.
const (
	ReasonOff      = owner.ReasonOff
	ReasonWindow   = owner.ReasonWindow
	ReasonEvicted  = owner.ReasonEvicted
	ReasonCatalog  = owner.ReasonCatalog
	ReasonNoAnswer = owner.ReasonNoAnswer
	ReasonUnknown  = owner.ReasonUnknown
	// ReasonUnchecked: row-level security could not be decided for some
	// of the changes (a query failed): hiding them would be a silent gap.
	ReasonUnchecked = "row-level security could not be checked"
)

// headPos is the Service's Head: the last change handed to Deliver, or
// the owner's head when this node's subscriptions were last acknowledged,
// whichever is later.
type headPos struct {
	mu  sync.Mutex
	pos Pos
}

// raise moves the head to p if p is later.
func (h *headPos) raise(p Pos) {
	h.mu.Lock()
	if h.pos.Before(p) {
		h.pos = p
	}
	h.mu.Unlock()
}

func (h *headPos) get() Pos {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.pos
}

// Head returns a position such that every change after it that a
// subscription registered on this node (Subscribe returned nil) matches
// is still to be handed to Deliver. It only grows. The Service moves it
// forward before it calls Deliver with a change, so a caller that reads
// Head and then attaches a client under the lock Deliver's callee takes
// misses nothing after Head (and may see the change at Head once: drop
// live changes at or before the seam). It is at least the owner's head
// when the node's last subscription was acknowledged (SubAck carries it),
// so a node that never delivered anything still has a useful Head.
func (s *Service) Head() Pos { return s.head.get() }

// Recover returns the changes after `after` that subs (registered on this
// node) match and whose roles may see them (row-level security decided on
// each change's own values, as for live changes), in commit order, each
// with the IDs among subs it reaches, complete through res.Through: every
// such change with after < pos <= Through is in res.Changes, and Through
// >= Head() as it was when Recover was called. Changes after Through reach
// Deliver live. When it cannot prove that list complete it fails with a
// *RecoveryError (errors.As) saying why: the position is older than the
// recovery window or than the owner's history (evicted, or the slot's lag
// bound), privileges, policies or the publication changed after it, the
// owner did not answer in time, or the position is unknown (after the
// owner's head).
//
// The owner answers from its history once that reaches this node's Head
// (a new owner reads the window again first), within RegisterTimeout.
func (s *Service) Recover(ctx context.Context, subs []*Subscription, after Pos) (RecoverResult, error) {
	if s.cfg.RecoveryWindow <= 0 {
		return RecoverResult{}, &RecoveryError{Reason: ReasonOff}
	}
	head := s.Head()
	req := &meshproto.ChangesRecover{DB: s.cfg.DB, Call: s.calls.Add(1), AfterLSN: uint64(after.LSN), AfterSeq: after.Seq,
		HeadLSN: uint64(head.LSN), HeadSeq: head.Seq}
	for _, sub := range subs {
		req.Subs = append(req.Subs, wireSub(sub))
	}
	w := s.answers.open(req.Call)
	defer s.answers.close(req.Call)
	s.mail.push(recoverReq{req})
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RegisterTimeout+time.Second)
	defer cancel()
	var recs []meshproto.RecoveredRecord
	for part := uint64(0); ; part++ {
		f, err := w.next(ctx)
		switch {
		case err != nil:
			s.recoveryFailed(ReasonNoAnswer)
			return RecoverResult{}, &RecoveryError{Reason: ReasonNoAnswer}
		case f.Err != "":
			s.recoveryFailed(f.Err)
			return RecoverResult{}, &RecoveryError{Reason: f.Err}
		case f.Part != part:
			s.recoveryFailed(ReasonNoAnswer)
			return RecoverResult{}, &RecoveryError{Reason: ReasonNoAnswer}
		}
		recs = append(recs, f.Records...)
		if !f.More {
			return s.recovered(f, recs, head)
		}
	}
}

// recovered decodes an owner's answer.
func (s *Service) recovered(last *meshproto.ChangesRecovered, recs []meshproto.RecoveredRecord, head Pos) (RecoverResult, error) {
	res := RecoverResult{Through: Pos{LSN(last.ThroughLSN), last.ThroughSeq}}
	if res.Through.Before(head) {
		// The owner answered for less than this node delivered: it cannot
		// be trusted to have it all (an owner that changed meanwhile).
		s.recoveryFailed(ReasonNoAnswer)
		return RecoverResult{}, &RecoveryError{Reason: ReasonNoAnswer}
	}
	for _, r := range recs {
		c, err := DecodeChange(r.Record)
		if err != nil {
			s.log.Error("undecodable recovered change from the owner", "err", err)
			s.recoveryFailed(ReasonNoAnswer)
			return RecoverResult{}, &RecoveryError{Reason: ReasonNoAnswer}
		}
		res.Changes = append(res.Changes, Recovered{Change: c, IDs: r.IDs})
	}
	s.recoveries.Inc()
	return res, nil
}

// recoveryFailed counts a failed recovery by its reason.
func (s *Service) recoveryFailed(reason string) {
	s.cfg.Metrics.GetOrCreateCounter(fmt.Sprintf(`meshcast_wal_recoveries_failed_total{reason=%q}`, reasonLabel(reason))).Inc()
}

// reasonLabel names a reason in a metric.
func reasonLabel(reason string) string {
	switch reason {
	case ReasonOff:
		return "off"
	case ReasonWindow:
		return "window"
	case ReasonEvicted:
		return "evicted"
	case ReasonCatalog:
		return "catalog"
	case ReasonNoAnswer:
		return "no_answer"
	case ReasonUnknown:
		return "unknown"
	case ReasonUnchecked:
		return "unchecked"
	}
	return "other"
}

// recoverReq is a Recover call's request, for the driver to send to the
// owner.
type recoverReq struct{ f *meshproto.ChangesRecover }

// answerBox routes the parts of owners' answers to the Recover calls
// waiting for them.
type answerBox struct {
	mu    sync.Mutex
	calls map[uint64]*answerWait
}

type answerWait struct {
	mu   sync.Mutex
	q    []*meshproto.ChangesRecovered
	wake chan struct{}
}

func (b *answerBox) open(call uint64) *answerWait {
	w := &answerWait{wake: make(chan struct{}, 1)}
	b.mu.Lock()
	if b.calls == nil {
		b.calls = map[uint64]*answerWait{}
	}
	b.calls[call] = w
	b.mu.Unlock()
	return w
}

func (b *answerBox) close(call uint64) {
	b.mu.Lock()
	delete(b.calls, call)
	b.mu.Unlock()
}

// deliver hands a part to its call, if it still waits; it never blocks.
func (b *answerBox) deliver(f *meshproto.ChangesRecovered) {
	b.mu.Lock()
	w := b.calls[f.Call]
	b.mu.Unlock()
	if w == nil {
		return
	}
	w.mu.Lock()
	w.q = append(w.q, f)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

var errNoAnswer = errors.New("no answer")

func (w *answerWait) next(ctx context.Context) (*meshproto.ChangesRecovered, error) {
	for {
		w.mu.Lock()
		if len(w.q) > 0 {
			f := w.q[0]
			w.q[0] = nil
			w.q = w.q[1:]
			w.mu.Unlock()
			return f, nil
		}
		w.mu.Unlock()
		select {
		case <-w.wake:
		case <-ctx.Done():
			return nil, errNoAnswer
		}
	}
}
