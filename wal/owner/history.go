package owner

import (
	"math"
	"time"

	"github.com/meshcast/meshcast/wire/meshproto"
)

// The owner's history of the recovery window (Config.RecoveryWindow > 0).
// The changes themselves are the driver's (a store the router appends to
// before it matches a chunk); the core keeps their account — from which
// position the history is complete, its head, its transactions' commit
// times and bytes — and the rules:
//
//   - Completeness: the history holds every change of a transaction whose
//     LSN is after From (the position the reader started from, raised by
//     every eviction) up to Head.
//   - Eviction: a transaction leaves once its commit is older than the
//     window (at a Tick), or, oldest first, while the history holds more
//     than Config.HistoryBytes (Evict). A transaction being routed that
//     alone exceeds the budget is dropped whole.
//   - Hold: the slot is confirmed only up to From while the history holds
//     a transaction, so that a new owner (after a crash) reads the window
//     again from the slot and rebuilds the same history; with nothing in
//     it, the reader may confirm as it would without history (Hold with
//     NoHold). The reader's lag bound (MaxSlotLag) still wins: that new
//     owner's history then starts later.
//   - Recovery: a node's ChangesRecover is served once the history's head
//     reaches the node's head and the position asked for (the node has
//     delivered what a new owner is still reading again), at most
//     Config.RecoverWait; then the answer fails (ReasonNoAnswer, or
//     ReasonUnknown for a position the history never reached). Matching,
//     row-level security and the completeness of the history for the
//     subscriptions' tables are the driver's (ServeRecovery).

// Reasons a recovery fails with, as clients are told them after
// "recovery failed: ".
const (
	ReasonOff      = "recovery is off"
	ReasonWindow   = "the position is older than the recovery window"
	ReasonEvicted  = "history evicted (byte budget)"
	ReasonCatalog  = "privileges, policies or the publication changed since the position"
	ReasonNoAnswer = "the change stream's owner did not answer in time"
	ReasonUnknown  = "unknown position"
)

// NoHold is Hold's LSN when the history needs nothing of the slot.
const NoHold = math.MaxUint64

// history is the core's account of the owner's history.
type history struct {
	started bool
	from    uint64 // complete for transactions after it
	head    Pos    // the last change in it
	txs     []histTx
	open    int64 // bytes of the transaction being routed (not in txs yet)
	dropped bool  // the transaction being routed was evicted whole
	bytes   int64 // txs' and open's
	hold    uint64
	held    bool // hold was emitted
	waits   []*recoverWait
}

type histTx struct {
	lsn   uint64
	at    time.Time
	bytes int64
}

// recoverWait is a ChangesRecover waiting for the history to reach it.
type recoverWait struct {
	from  string
	req   *meshproto.ChangesRecover
	until time.Time
}

func (c *Core) historyOn() bool { return c.cfg.RecoveryWindow > 0 }

// historyFrom takes the position a reader run streams from.
func (c *Core) historyFrom(ev HistoryFrom) {
	h := &c.hist
	if !c.historyOn() || c.own == nil || !c.reader.current(ev.Gen) {
		return
	}
	switch {
	case !h.started:
		h.started, h.from = true, ev.From
	case ev.From > h.head.LSN && ev.From > h.from:
		// The slot moved past what the history holds (the reader's lag
		// bound): what lies between is gone.
		c.evictAll(ev.From, Pos{LSN: ev.From, Seq: math.MaxUint32}, false)
	}
	c.checkWaits()
	c.emitHold()
}

// routedHistory takes a chunk's part in the history: its changes' bytes,
// its last change, and the transactions that end in it.
func (c *Core) routedHistory(ev Routed) {
	h := &c.hist
	if !c.historyOn() || c.own == nil || !h.started {
		return
	}
	if h.head.Before(ev.Head) {
		h.head = ev.Head
	}
	h.open += ev.Bytes
	h.bytes += ev.Bytes
	for _, it := range ev.Items {
		if it.Node != "" {
			continue
		}
		last := h.from
		if n := len(h.txs); n > 0 {
			last = h.txs[n-1].lsn
		}
		switch {
		case h.dropped:
			// The rest of a transaction evicted while it was read.
			h.from = max(h.from, it.Commit)
			h.dropped = false
			h.bytes -= h.open
			c.emit(Evict{Through: Pos{LSN: it.Commit, Seq: math.MaxUint32}, Bytes: true})
		case it.Commit > last:
			h.txs = append(h.txs, histTx{lsn: it.Commit, at: it.Time, bytes: h.open})
			if len(h.txs) == 1 {
				c.after(it.Time.Add(c.cfg.RecoveryWindow).Sub(c.now), timer{kind: tExpire})
			}
		default:
			h.bytes -= h.open // read again: the store kept the first
		}
		h.open = 0
	}
	c.evictBytes()
	c.checkWaits()
	c.emitHold()
}

// evictBytes evicts the oldest transactions while the history is over
// its budget.
func (c *Core) evictBytes() {
	h := &c.hist
	budget := c.cfg.HistoryBytes
	if budget <= 0 || h.bytes <= budget {
		return
	}
	n := 0
	var freed int64
	for n < len(h.txs) && h.bytes-freed > budget {
		freed += h.txs[n].bytes
		n++
	}
	if n > 0 {
		c.evictTxs(n, true)
	}
	if h.bytes > budget && h.open > 0 {
		// The transaction being routed alone is over the budget.
		h.bytes -= h.open
		h.open, h.dropped = 0, true
		c.emit(Evict{Through: h.head, Bytes: true})
	}
}

// expire evicts the transactions whose commit left the window.
func (c *Core) expire() {
	h := &c.hist
	if !c.historyOn() || c.own == nil {
		return
	}
	n := 0
	for n < len(h.txs) && !h.txs[n].at.Add(c.cfg.RecoveryWindow).After(c.now) {
		n++
	}
	if n > 0 {
		c.evictTxs(n, false)
		c.emitHold()
	}
	if len(h.txs) > 0 {
		c.after(h.txs[0].at.Add(c.cfg.RecoveryWindow).Sub(c.now), timer{kind: tExpire})
	}
}

// evictTxs evicts the n oldest transactions.
func (c *Core) evictTxs(n int, bytes bool) {
	h := &c.hist
	for _, tx := range h.txs[:n] {
		h.bytes -= tx.bytes
	}
	h.from = max(h.from, h.txs[n-1].lsn)
	h.txs = append(h.txs[:0], h.txs[n:]...)
	c.emit(Evict{Through: Pos{LSN: h.from, Seq: math.MaxUint32}, Bytes: bytes})
}

// evictAll empties the history: it is complete after from.
func (c *Core) evictAll(from uint64, through Pos, bytes bool) {
	h := &c.hist
	h.txs, h.open, h.bytes, h.dropped = h.txs[:0], 0, 0, false
	h.from = max(h.from, from)
	if h.head.Before(through) {
		h.head = through
	}
	c.emit(Evict{Through: through, Bytes: bytes})
}

// emitHold tells the reader how far the history lets it confirm, when
// that changed.
func (c *Core) emitHold() {
	h := &c.hist
	hold := uint64(NoHold)
	if !h.started || len(h.txs) > 0 || h.open > 0 {
		hold = h.from
	}
	if !h.held || hold != h.hold {
		h.hold, h.held = hold, true
		c.emit(Hold{LSN: hold})
	}
}

// resetHistory begins the account of a new owner (or a new run): empty
// until the reader reports where it streams from.
func (c *Core) resetHistory() {
	h := &c.hist
	for _, w := range h.waits {
		c.answer(w.from, w.req, ReasonNoAnswer)
	}
	*h = history{}
	if c.historyOn() {
		c.emit(Evict{Through: Pos{LSN: math.MaxUint64, Seq: math.MaxUint32}})
	}
	if c.historyOn() && c.own != nil {
		c.emitHold()
	}
}

// onRecover takes a node's request for the changes it missed.
func (c *Core) onRecover(from string, f *meshproto.ChangesRecover) {
	switch {
	case !c.historyOn():
		c.answer(from, f, ReasonOff)
	case c.own == nil:
		c.answer(from, f, ReasonNoAnswer)
	default:
		w := &recoverWait{from: from, req: f, until: c.now.Add(c.cfg.RecoverWait)}
		if !c.serveIfReady(w) {
			c.hist.waits = append(c.hist.waits, w)
			c.after(c.cfg.RecoverWait, timer{kind: tRecover})
		}
	}
}

// serveIfReady serves w once the history has reached it; false while it
// must wait.
func (c *Core) serveIfReady(w *recoverWait) bool {
	h := &c.hist
	after := Pos{w.req.AfterLSN, w.req.AfterSeq}
	head := Pos{w.req.HeadLSN, w.req.HeadSeq}
	if h.started && !h.head.Before(after) && !h.head.Before(head) {
		c.emit(ServeRecovery{To: w.from, Req: w.req, Through: h.head})
		return true
	}
	if !c.now.Before(w.until) {
		reason := ReasonNoAnswer
		if h.started && h.head.Before(after) && !h.head.Before(head) {
			reason = ReasonUnknown
		}
		c.answer(w.from, w.req, reason)
		return true
	}
	return false
}

// checkWaits serves the requests the history has reached, and fails
// those that waited too long.
func (c *Core) checkWaits() {
	h := &c.hist
	k := 0
	for _, w := range h.waits {
		if !c.serveIfReady(w) {
			h.waits[k] = w
			k++
		}
	}
	clear(h.waits[k:])
	h.waits = h.waits[:k]
}

// answer fails a request with reason.
func (c *Core) answer(to string, f *meshproto.ChangesRecover, reason string) {
	c.emit(Answer{To: to, Frame: &meshproto.ChangesRecovered{DB: c.cfg.DB, Call: f.Call, Err: reason}})
}
