package wal

import (
	"context"
	"sync"
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
	ReasonNotBuilt      = "recovery is not built yet"
	ReasonOff           = "recovery is off"
	ReasonWindow        = "the position is older than the recovery window"
	ReasonEvicted       = "history evicted (byte budget)"
	ReasonCatalog       = "privileges, policies or the publication changed since the position"
	ReasonNoAnswer      = "the change stream's owner did not answer in time"
	ReasonUnknown       = "unknown position"
	ReasonNotRegistered = "the subscriptions are not registered on this node"
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
func (s *Service) Recover(ctx context.Context, subs []*Subscription, after Pos) (RecoverResult, error) {
	return RecoverResult{}, &RecoveryError{Reason: ReasonNotBuilt}
}
