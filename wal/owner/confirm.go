package owner

import (
	"slices"
	"time"
)

// owning is what the owner keeps while it owns the database: whom it
// still waits for before reading, the changes sent to each node and not
// acknowledged yet, and the transactions awaiting confirmation.
type owning struct {
	expect   map[string]bool // members whose whole set has not arrived yet
	takeOver bool            // the previous owner is gone: take the slot from a lingering consumer
	// streaming is set once the reader streams: the slot exists, so a
	// subscription held from then on sees every later commit. Until then
	// the acknowledgements of registrations wait in held.
	streaming bool
	held      map[string][]uint64

	outbox  map[string]*outbox // sent, not acknowledged: resent on a resync
	backlog map[string][]Item  // routed, waiting for room in the window
	acked   map[string]Pos
	txq     []*txState     // routed, not yet acknowledged by every node, in order
	cur     map[string]Pos // the transaction being routed: the last change for each node
	// routeWait is set while the router waits for RouteMore.
	routeWait bool
	// heldAck is the last transaction every node acknowledged, not yet
	// confirmed (a member is absent); confirmed, the last confirmed (or
	// forced).
	heldAck, confirmed uint64
}

// outbox is the changes sent to one node and not acknowledged.
type outbox struct {
	frames []sent
	bytes  int
}

type sent struct {
	pos   Pos
	frame []byte
	size  int
}

// txState is a routed transaction: the last change each node got of it.
type txState struct {
	lsn     uint64
	pending map[string]Pos
}

func newOwning(takeOver bool) *owning {
	return &owning{
		expect: map[string]bool{}, takeOver: takeOver, held: map[string][]uint64{},
		outbox: map[string]*outbox{}, backlog: map[string][]Item{}, acked: map[string]Pos{},
	}
}

// forget drops what the owner keeps of a node that is gone.
func (o *owning) forget(node string) {
	delete(o.expect, node)
	delete(o.outbox, node)
	delete(o.backlog, node)
	delete(o.acked, node)
	delete(o.held, node)
	delete(o.cur, node)
	for _, tx := range o.txq {
		delete(tx.pending, node)
	}
}

// dropRun forgets what the reader's run had routed and not confirmed: the
// next run reads it again from the confirmed position. What was sent stays
// in the outboxes until it is acknowledged.
func (o *owning) dropRun() {
	clear(o.txq)
	o.txq, o.cur, o.heldAck, o.routeWait = o.txq[:0], nil, 0, false
	clear(o.backlog)
}

// routed takes a chunk from the router: each change is queued for its
// node and goes out as its window allows; each transaction waits for the
// acknowledgement of its last change on every node it reached.
func (c *Core) routed(ev Routed) {
	o := c.own
	if o == nil || !c.reader.current(ev.Gen) {
		return // a stopped run's
	}
	for _, it := range ev.Items {
		if it.Node == "" {
			o.txq = append(o.txq, &txState{lsn: it.Commit, pending: o.cur})
			o.cur = nil
			continue
		}
		if c.regs[it.Node] == nil {
			continue // the node went meanwhile
		}
		if o.cur == nil {
			o.cur = map[string]Pos{}
		}
		o.cur[it.Node] = it.Pos
		o.backlog[it.Node] = append(o.backlog[it.Node], it)
	}
	for _, node := range sortedKeys(o.backlog) {
		c.pump(node)
	}
	c.advance()
	o.routeWait = true
	c.checkRouteMore()
}

// pump sends node what waits for it while its window has room; this
// node's own changes go to its subscribers at once.
func (c *Core) pump(node string) {
	o := c.own
	q := o.backlog[node]
	if len(q) == 0 {
		return
	}
	ob := o.outbox[node]
	if ob == nil {
		ob = &outbox{}
		o.outbox[node] = ob
	}
	self := node == c.cfg.Self
	k := 0
	for ; k < len(q) && (self || c.cfg.Window <= 0 || ob.bytes < c.cfg.Window); k++ {
		it := q[k]
		ob.frames = append(ob.frames, sent{pos: it.Pos, frame: it.Frame, size: it.Size})
		ob.bytes += it.Size
		if self {
			c.receiveChange(node, it.Pos, nil, it.Local)
		} else {
			c.emit(Send{To: node, Lane: LaneChanges, Raw: it.Frame})
		}
	}
	clear(q[:k])
	if q = q[k:]; len(q) == 0 {
		delete(o.backlog, node)
	} else {
		o.backlog[node] = q
	}
}

// onChangesAck takes a node's acknowledgement: its window has room again,
// and transactions may be confirmed.
func (c *Core) onChangesAck(from string, pos Pos) {
	o := c.own
	if o == nil {
		return
	}
	if o.acked[from].Before(pos) {
		o.acked[from] = pos
	}
	if ob := o.outbox[from]; ob != nil {
		k := 0
		for k < len(ob.frames) && !pos.Before(ob.frames[k].pos) {
			ob.bytes -= ob.frames[k].size
			k++
		}
		clear(ob.frames[:k])
		ob.frames = ob.frames[k:]
	}
	c.pump(from)
	c.advance()
	c.checkRouteMore()
}

// advance confirms the transactions every node has acknowledged, in
// order, unless a member is absent.
func (c *Core) advance() {
	o := c.own
	if o == nil {
		return
	}
	n := 0
	for _, tx := range o.txq {
		if !o.done(tx) {
			break
		}
		o.heldAck = max(o.heldAck, tx.lsn)
		n++
	}
	if n > 0 {
		clear(o.txq[:n])
		o.txq = o.txq[n:]
	}
	if len(c.absent) == 0 && o.heldAck > o.confirmed {
		o.confirmed = o.heldAck
		c.emit(Confirm{LSN: o.confirmed})
	}
}

func (o *owning) done(tx *txState) bool {
	for node, pos := range tx.pending {
		if o.acked[node].Before(pos) {
			return false
		}
	}
	return true
}

// checkRouteMore lets the router go on once its last chunk is out.
func (c *Core) checkRouteMore() {
	o := c.own
	if o == nil || !o.routeWait || len(o.backlog) > 0 {
		return
	}
	if ob := o.outbox[c.cfg.Self]; ob != nil && len(ob.frames) > 0 {
		return // this node's subscribers have not taken theirs
	}
	o.routeWait = false
	c.emit(RouteMore{Gen: c.reader.gen})
}

// forced takes the reader's confirmation past its lag bound: what it
// covers is confirmed, whoever has acknowledged it.
func (c *Core) forced(lsn uint64) {
	o := c.own
	if o == nil {
		return
	}
	o.confirmed = max(o.confirmed, lsn)
	n := 0
	for n < len(o.txq) && o.txq[n].lsn <= lsn {
		n++
	}
	clear(o.txq[:n])
	o.txq = o.txq[n:]
	c.advance()
}

// reader is the state of the reader's runs: one at a time.
type reader struct {
	running  bool // a run was started and has not reported stopping
	stopping bool // it was asked to stop
	gen      int  // the current (or next) run's generation
	runGen   int  // the run under way's
	retryAt  time.Time
}

// current reports whether gen is the run under way and not stopping.
func (r *reader) current(gen int) bool { return r.running && !r.stopping && r.runGen == gen }

// maybeStartReader starts a run when this node owns the database, waits
// for nobody's subscriptions and no run is under way.
func (c *Core) maybeStartReader() {
	o := c.own
	if o == nil || len(o.expect) > 0 || c.reader.running || c.now.Before(c.reader.retryAt) {
		return
	}
	c.reader.running, c.reader.runGen = true, c.reader.gen
	c.emit(StartReader{Gen: c.reader.gen, TakeOver: o.takeOver})
}

// stopReader stops the run under way; what it routed and was not
// confirmed is dropped (the next run reads it again).
func (c *Core) stopReader() {
	r := &c.reader
	if r.running && !r.stopping {
		r.stopping = true
		c.emit(StopReader{Gen: r.runGen})
	}
	r.gen++
	if c.own != nil {
		c.own.dropRun()
	}
}

// restartReader makes the reader start over from the last confirmed
// position once the run under way has stopped.
func (c *Core) restartReader() {
	if c.reader.running && !c.reader.stopping {
		c.stopReader()
	}
}

// readerStopped takes the end of a run; one that failed on its own is
// started again after RetryWait.
func (c *Core) readerStopped(ev ReaderStopped) {
	r := &c.reader
	if !r.running || ev.Gen != r.runGen {
		return
	}
	asked := r.stopping
	r.running, r.stopping = false, false
	if !asked {
		r.gen++
		if c.own != nil {
			c.own.dropRun()
		}
	}
	if ev.Failed {
		r.retryAt = c.after(c.cfg.RetryWait, timer{kind: tRetry})
	}
}

// streaming acknowledges the registrations held while the reader was not
// streaming yet.
func (c *Core) streaming(gen int) {
	o := c.own
	if o == nil || !c.reader.current(gen) || o.streaming {
		return
	}
	o.streaming = true
	for _, node := range sortedKeys(o.held) {
		c.send(node, LaneControl, subAck(c.cfg.DB, slices.Clone(o.held[node])))
	}
	o.held = nil
}
