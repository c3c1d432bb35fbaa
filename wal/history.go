package wal

import (
	"math"
	"slices"
	"sort"
	"sync"

	"github.com/meshcast/meshcast/wal/owner"
)

// changeStore holds the owner's history of the recovery window: every
// change of the publications the router saw (matched or not), in commit
// order. The router appends each chunk before matching it; the driver
// evicts as the core says (owner.Evict); recoveries read it. Without a
// recovery window it keeps nothing but its head.
//
// Beside the changes it remembers, per table, the last position evicted
// from it, so that a recovery from before the history's start can still
// be proven complete for subscriptions of tables with nothing evicted
// since (a quiet table's subscriber keeps an old position), and the last
// transaction that changed the catalog (CatalogChanged's).
type changeStore struct {
	keep bool

	mu      sync.Mutex
	changes []*Change // from index start
	start   int
	bytes   int64
	head    Pos
	// floor is the position every change before the reader's session
	// began is at or before (caughtUp of the WAL position then), raised
	// to the end of every transaction the reader handed over (read): the
	// head a subscription's acknowledgement carries is at least it.
	floor Pos
	// readFrom is where the owner's reader started: nothing before it is
	// known. started is false until the reader says.
	readFrom LSN
	started  bool
	evicted  map[tableKey]evictMark
	all      evictMark // the last eviction of any table
	catalog  LSN       // the last catalog change seen (0: none)
}

type tableKey struct{ schema, table string }

// evictMark is the last change evicted from a table, and why.
type evictMark struct {
	pos   Pos
	bytes bool
}

func newChangeStore(keep bool) *changeStore {
	return &changeStore{keep: keep, evicted: map[tableKey]evictMark{}}
}

// append adds the changes after the store's head (a reader that starts
// over reads some again) and returns the bytes added and the head.
func (h *changeStore) append(cs []*Change) (int64, Pos) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var n int64
	for _, c := range cs {
		p := c.Pos()
		if !h.head.Before(p) {
			continue
		}
		h.head = p
		if h.keep {
			cp := *c // the router's Authorize may reduce its OldRecord
			h.changes = append(h.changes, &cp)
			size := c.memSize()
			h.bytes += size
			n += size
		}
	}
	return n, h.head
}

// noteCatalog records a transaction that changed the catalog, before the
// authorization caches change for it.
func (h *changeStore) noteCatalog(lsn LSN) {
	h.mu.Lock()
	h.catalog = max(h.catalog, lsn)
	h.mu.Unlock()
}

// startAt records where a reader run streams from. The first run of an
// ownership starts the history afresh: what a run of an earlier one
// appended while it stopped is dropped (it would make the new run's
// changes look like repeats). A run that starts past the store's head
// (the slot moved on: the reader's lag bound) leaves a gap: nothing
// before it is known any more.
func (h *changeStore) startAt(from, walAt LSN) {
	h.mu.Lock()
	if f := caughtUp(walAt); h.floor.Before(f) {
		h.floor = f
	}
	switch {
	case !h.started:
		clear(h.changes)
		h.changes, h.start, h.bytes, h.head = h.changes[:0], 0, 0, Pos{}
		h.started, h.readFrom = true, from
	case from > h.head.LSN && from > h.readFrom:
		h.readFrom = from
	}
	h.mu.Unlock()
}

// evict drops the changes at or before e.Through; one through the end of
// positions resets the store.
func (h *changeStore) evict(e owner.Evict) {
	through := Pos{LSN(e.Through.LSN), e.Through.Seq}
	h.mu.Lock()
	defer h.mu.Unlock()
	if e.Through.LSN == owner.NoHold {
		clear(h.changes)
		h.changes, h.start, h.bytes, h.head, h.floor = h.changes[:0], 0, 0, Pos{}, Pos{}
		h.readFrom, h.started, h.all, h.catalog = 0, false, evictMark{}, 0
		clear(h.evicted)
		return
	}
	i := h.start
	for ; i < len(h.changes) && !through.Before(h.changes[i].Pos()); i++ {
		c := h.changes[i]
		mark := evictMark{pos: c.Pos(), bytes: e.Bytes}
		h.evicted[tableKey{c.Schema, c.Table}] = mark
		h.all = mark
		h.bytes -= c.memSize()
		h.changes[i] = nil
	}
	h.start = i
	if h.start > len(h.changes)/2 {
		h.changes = append(h.changes[:0], h.changes[h.start:]...)
		h.start = 0
	}
}

// snapshot returns the changes after `after` through `through`, or why
// the store cannot prove it holds every one of them that subs (their
// tables) may match.
func (h *changeStore) snapshot(after, through Pos, subs []*Subscription) ([]*Change, string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if reason := h.gapLocked(after, subs); reason != "" {
		return nil, reason
	}
	// The changes are in position order: a recovery costs the range it
	// asks for, not the history.
	held := h.changes[h.start:]
	i := sort.Search(len(held), func(i int) bool { return after.Before(held[i].Pos()) })
	j := sort.Search(len(held), func(j int) bool { return through.Before(held[j].Pos()) })
	if i >= j {
		return nil, ""
	}
	return slices.Clone(held[i:j]), ""
}

// gapLocked says why changes after `after` may be missing for subs, or
// "".
func (h *changeStore) gapLocked(after Pos, subs []*Subscription) string {
	switch {
	case !h.started:
		return owner.ReasonNoAnswer
	case after.Before(caughtUp(h.readFrom)):
		// The reader streams every transaction that ended after
		// readFrom, none before: a position within one at or before it
		// may have missed the rest of it.
		return owner.ReasonWindow
	case h.catalog > after.LSN:
		return owner.ReasonCatalog
	}
	for _, s := range subs {
		mark := h.all
		if s.Schema != "*" && s.Table != "" && s.Table != "*" {
			mark = h.evicted[tableKey{s.Schema, s.Table}]
		}
		if after.Before(mark.pos) {
			if mark.bytes {
				return owner.ReasonEvicted
			}
			return owner.ReasonWindow
		}
	}
	return ""
}

// catalogAfter reports whether a catalog change after lsn was seen.
func (h *changeStore) catalogAfter(lsn LSN) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.catalog > lsn
}

// stats returns the history's bytes and changes, for the metrics.
func (h *changeStore) stats() (int64, int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.bytes, len(h.changes) - h.start
}

// read raises the floor to the end of a transaction the reader handed
// over.
func (h *changeStore) read(lsn LSN) {
	h.mu.Lock()
	if f := caughtUp(lsn); h.floor.Before(f) {
		h.floor = f
	}
	h.mu.Unlock()
}

// ackHead is the head a subscription's acknowledgement carries: the
// history's, or the floor if later. Every change matched before the
// subscription was added is at or before the head (the router appends
// before it matches); the floor only adds changes committed before the
// reader's session began, or read before the subscription was added.
func (h *changeStore) ackHead() Pos {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.head.Before(h.floor) {
		return h.floor
	}
	return h.head
}

// advance raises the head to p (the reader handed over every change
// before it: a marking transaction) and returns the head.
func (h *changeStore) advance(p Pos) Pos {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.head.Before(p) {
		h.head = p
	}
	return h.head
}

// caughtUp is the position of "every change of a transaction that ended
// at or before lsn" (a transaction's LSN is the end of its commit
// record; the server's WAL position and a keepalive's are ends too).
func caughtUp(lsn LSN) Pos {
	if lsn == 0 {
		return Pos{}
	}
	return Pos{LSN: lsn, Seq: math.MaxUint32}
}
