package wal

import (
	"context"
	"errors"
	"time"

	"github.com/meshcast/meshcast/mesh"
	"github.com/meshcast/meshcast/wire/meshproto"
)

// ownerState is what the owner of the database keeps while it owns it:
// whom it still waits for before reading, and the changes sent to each
// node that are not acknowledged yet. Guarded by Service.mu.
type ownerState struct {
	s        *Service
	expect   map[string]bool // members whose whole set has not arrived yet
	takeover *time.Timer     // ends the wait for expect
	takeOver bool            // the previous owner is gone: take the slot from a lingering consumer
	cancel   context.CancelFunc
	// streaming is set once the reader streams: the slot exists, so a
	// subscription held from then on sees every later commit. Until then
	// the acknowledgements of registrations wait in held.
	streaming bool
	held      map[string][]uint64

	outbox   map[string]*outbox
	acked    map[string]position
	txq      []*txState    // delivered, not yet acknowledged by every node, in order
	progress chan struct{} // closed and replaced whenever acknowledgements free room
	// heldAck is the last transaction every live node acknowledged while
	// a member is absent: confirmed once none is.
	heldAck LSN
	// gen counts the reader's restarts to read again for a member that
	// came back: a transaction of an earlier reader is not queued.
	gen int
}

// outbox is the changes sent to one node and not acknowledged: resent in
// order if the node's changes lane resyncs.
type outbox struct {
	frames []sentChange
	bytes  int
}

type sentChange struct {
	pos   position
	frame []byte
}

// txState is a delivered transaction: the last change each node got of it.
type txState struct {
	lsn     LSN
	pending map[string]position
}

// startOwningLocked makes this node the owner: it asks every other member
// for its subscriptions and reads once all have answered, or after
// TakeoverWait.
func (s *Service) startOwningLocked(prev string, prevAlive bool) []out {
	o := &ownerState{
		s:        s,
		expect:   map[string]bool{},
		takeOver: prev != "" && !prevAlive,
		outbox:   map[string]*outbox{},
		acked:    map[string]position{},
		progress: make(chan struct{}),
		held:     map[string][]uint64{},
	}
	s.own = o
	var outs []out
	for _, m := range s.members {
		// Only members that take part in the database run a Service,
		// and only they can hold subscriptions of it.
		if m.ID != s.cfg.Self && m.DB == s.cfg.DB {
			o.expect[m.ID] = true
			outs = append(outs, out{to: m.ID, lane: mesh.LaneControl, frame: &meshproto.SubSync{DB: s.cfg.DB}})
		}
	}
	// This node registers its own subscriptions with itself, as any
	// member does with a new owner (which also answers its waiters).
	outs = append(outs, s.replaceLocked(s.cfg.Self)...)
	if len(o.expect) > 0 {
		o.takeover = time.AfterFunc(s.cfg.TakeoverWait, func() {
			s.mu.Lock()
			if s.own == o && len(o.expect) > 0 {
				s.log.Warn("starting to read without every member's subscriptions", "missing", len(o.expect))
				o.expect = map[string]bool{}
			}
			s.mu.Unlock()
			s.poke()
		})
	}
	s.log.Info("this node owns the database's change stream", "waiting_for", len(o.expect))
	return outs
}

// stopOwningLocked gives ownership up: the reader stops; what was not
// acknowledged is the next owner's to send again.
func (s *Service) stopOwningLocked() {
	o := s.own
	if o == nil {
		return
	}
	s.own = nil
	if o.takeover != nil {
		o.takeover.Stop()
	}
	if o.cancel != nil {
		o.cancel()
	}
	close(o.progress)
	s.log.Info("this node no longer owns the database's change stream")
}

// membersChangedLocked drops members that left from what the owner waits
// for, and takes in the members it sees for the first time. Such a member
// may hold subscriptions an earlier owner acknowledged (this node saw it
// late: it had just restarted, say), and the owner may have read past
// changes they match already: it asks the member for its subscriptions
// and, until they arrive, holds it absent, confirming nothing; when they
// do, the reader reads the unconfirmed tail again for it (backLocked), as
// for a member back from a partition.
func (o *ownerState) membersChangedLocked(s *Service, before []Member, live map[string]bool) []out {
	for id := range o.expect {
		if !live[id] {
			delete(o.expect, id)
		}
	}
	known := map[string]bool{}
	for _, m := range before {
		known[m.ID] = true
	}
	var outs []out
	for _, m := range s.members {
		if known[m.ID] || m.ID == s.cfg.Self || m.DB != s.cfg.DB || o.expect[m.ID] {
			continue
		}
		if _, absent := s.absent[m.ID]; !absent {
			s.absent[m.ID] = absence{name: m.Name, since: time.Now()}
			s.log.Info("a member appeared after this node began owning the database; confirming nothing until it registers",
				"member", m.ID, "for_at_most", s.cfg.AbsentWait)
		}
		outs = append(outs, out{to: m.ID, lane: mesh.LaneControl, frame: &meshproto.SubSync{DB: s.cfg.DB}})
	}
	return outs
}

func (s *Service) addRegLocked(node string, sub *Subscription) {
	m := s.regs[node]
	if m == nil {
		m = map[uint64]*Subscription{}
		s.regs[node] = m
	}
	if old := m[sub.ID]; old != nil {
		s.matcher.Remove(sub.ID)
	}
	m[sub.ID] = sub
	s.matcher.Add(sub)
}

// onRegister takes subscriptions from a node (this one included).
func (s *Service) onRegister(from string, f *meshproto.SubRegister) []out {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f.Replace {
		if f.Part > 0 || f.More {
			acc := s.parts[from]
			switch {
			case f.Part == 0:
				acc = &meshproto.SubRegister{DB: f.DB, Replace: true}
			case acc == nil || f.Part != acc.Part+1:
				delete(s.parts, from) // a part was lost; the resync sends it all again
				return nil
			}
			acc.Part = f.Part
			acc.Subs = append(acc.Subs, f.Subs...)
			if f.More {
				s.parts[from] = acc
				return nil
			}
			delete(s.parts, from)
			f = acc
		}
		keep := map[uint64]bool{}
		for i := range f.Subs {
			keep[f.Subs[i].ID] = true
		}
		for id := range s.regs[from] {
			if !keep[id] {
				delete(s.regs[from], id)
				s.matcher.Remove(id)
			}
		}
	}
	var ids []uint64
	var refused []uint64
	if f.Replace {
		defer s.backLocked(from, len(f.Subs) > 0) // once its subscriptions are in the matcher
	}
	for i := range f.Subs {
		sub, err := subOf(from, &f.Subs[i])
		if err != nil {
			s.log.Warn("refusing a subscription", "from", from, "err", err)
			refused = append(refused, f.Subs[i].ID)
			continue
		}
		s.addRegLocked(from, sub)
		ids = append(ids, sub.ID)
	}
	var outs []out
	if len(refused) > 0 {
		outs = append(outs, out{to: from, lane: mesh.LaneControl, frame: &meshproto.SubAck{DB: s.cfg.DB, IDs: refused, Err: "Unable to subscribe to changes with given parameters"}})
	}
	o := s.own
	if o == nil {
		// Kept, but not acknowledged: only the owner can promise that the
		// subscriptions see every later commit.
		return outs
	}
	if f.Replace && o.expect[from] {
		delete(o.expect, from)
		if len(o.expect) == 0 {
			defer s.poke()
		}
	}
	if !o.streaming {
		o.held[from] = append(o.held[from], ids...)
		return outs
	}
	return append(outs, out{to: from, lane: mesh.LaneControl, frame: &meshproto.SubAck{DB: s.cfg.DB, IDs: ids}})
}

// onStreaming acknowledges the registrations held while the reader was
// not streaming yet.
func (o *ownerState) onStreaming() {
	s := o.s
	s.mu.Lock()
	if s.own != o {
		s.mu.Unlock()
		return
	}
	var outs []out
	if !o.streaming {
		o.streaming = true
		for node, ids := range o.held {
			outs = append(outs, out{to: node, lane: mesh.LaneControl, frame: &meshproto.SubAck{DB: s.cfg.DB, IDs: ids}})
		}
		o.held = nil
	}
	s.mu.Unlock()
	s.flush(outs)
}

func (s *Service) onUnregister(from string, ids []uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		if _, ok := s.regs[from][id]; ok {
			delete(s.regs[from], id)
			s.matcher.Remove(id)
		}
	}
}

// dropNodeLocked forgets a member that is gone: its subscriptions, and
// the acknowledgements the owner waited for from it.
func (s *Service) dropNodeLocked(node string) []out {
	for id := range s.regs[node] {
		s.matcher.Remove(id)
	}
	delete(s.regs, node)
	delete(s.parts, node)
	if o := s.own; o != nil {
		delete(o.expect, node)
		delete(o.outbox, node)
		delete(o.acked, node)
		for _, tx := range o.txq {
			delete(tx.pending, node)
		}
		o.advanceLocked()
	}
	return nil
}

// advanceLocked confirms the transactions every node has acknowledged,
// in order, and wakes a reader waiting for room.
func (o *ownerState) advanceLocked() {
	hold := o.s.holdingLocked()
	n := 0
	for _, tx := range o.txq {
		done := true
		for node, pos := range tx.pending {
			if o.acked[node].before(pos) {
				done = false
				break
			}
		}
		if !done {
			break
		}
		o.heldAck = max(o.heldAck, tx.lsn)
		n++
	}
	if !hold && o.heldAck > 0 {
		o.s.cfg.Reader.Ack(o.heldAck)
		o.heldAck = 0
	}
	if n > 0 {
		clear(o.txq[:n])
		o.txq = o.txq[n:]
	}
	close(o.progress)
	o.progress = make(chan struct{})
}

func (s *Service) onChangesAck(from string, pos position) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.own
	if o == nil {
		return
	}
	if o.acked[from].before(pos) {
		o.acked[from] = pos
	}
	if ob := o.outbox[from]; ob != nil {
		k := 0
		for k < len(ob.frames) && !pos.before(ob.frames[k].pos) {
			ob.bytes -= len(ob.frames[k].frame)
			k++
		}
		clear(ob.frames[:k])
		ob.frames = ob.frames[k:]
	}
	o.advanceLocked()
}

// resyncChanges sends again what a node has not acknowledged, when its
// changes lane is new or lost frames.
func (s *Service) resyncChanges(peer string, emit func([]byte) error) error {
	s.mu.Lock()
	var frames [][]byte
	if o := s.own; o != nil {
		if ob := o.outbox[peer]; ob != nil {
			for _, f := range ob.frames {
				frames = append(frames, f.frame)
			}
		}
	}
	s.mu.Unlock()
	for _, f := range frames {
		if err := emit(f); err != nil {
			return err
		}
	}
	return nil
}

// transactions routes txs, in commit order: each change goes once to each
// node with matching subscriptions, and each transaction is acknowledged
// to the reader once every one of them has acknowledged it.
//
// A transaction that changed the catalog (a GRANT, a policy, …) splits the
// batch: the transactions before it are authorized as the caches were,
// then CatalogChanged refreshes them, then it and the rest are authorized
// on the catalog as of its commit.
func (o *ownerState) transactions(ctx context.Context, txs []*Transaction) {
	s := o.s
	for i := 0; s.cfg.CatalogChanged != nil && i < len(txs); i++ {
		if !txs[i].catalog {
			continue
		}
		if i > 0 && !o.transactionsBatch(ctx, txs[:i]) {
			return
		}
		if err := s.cfg.CatalogChanged(ctx, txs[i]); err != nil && ctx.Err() == nil {
			s.log.Warn("could not refresh the authorization caches after a catalog change; changes are hidden until it succeeds", "lsn", txs[i].LSN, "err", err)
		}
		txs, i = txs[i:], 0
	}
	o.transactionsBatch(ctx, txs)
}

// transactionsBatch routes txs in chunks of at most maxBatchChanges
// changes or maxChunkBytes (the changes of several small transactions, or
// a part of a large one, read back from its file if it spilled): each
// change goes once to each node with matching subscriptions, and each
// transaction is queued for acknowledgement once its last change is sent.
// The row-level security checks of a chunk run together, one query per
// distinct claims set (see txBatcher). It reports false when ownership was
// lost or the reader stops.
func (o *ownerState) transactionsBatch(ctx context.Context, txs []*Transaction) bool {
	s := o.s
	s.mu.Lock()
	gen := o.gen
	s.mu.Unlock()
	if ctx.Err() != nil {
		return false // a reader stopping, or restarting to read again
	}
	r := &chunkRouter{o: o, ctx: ctx, gen: gen, pending: map[string]position{}}
	for _, tx := range txs {
		if err := tx.Range(maxBatchChanges, maxChunkBytes, r.add); err != nil {
			if !errors.Is(err, errStopRouting) {
				s.log.Error("cannot read a large transaction back; the reader starts over", "lsn", tx.LSN, "err", err)
				o.restartReader(gen)
			}
			return false
		}
		r.ends = append(r.ends, txEnd{at: len(r.changes), lsn: tx.LSN})
	}
	return r.flush()
}

// maxChunkBytes bounds (about: one change may be larger) the changes the
// owner routes at once, in memory beside the reader's TxMemory.
const maxChunkBytes = 4 << 20

var errStopRouting = errors.New("ownership lost or reader stopping")

// chunkRouter collects the changes of transactions into chunks and routes
// each chunk once it is full.
type chunkRouter struct {
	o       *ownerState
	ctx     context.Context
	gen     int
	changes []*Change
	bytes   int64
	ends    []txEnd             // transactions ending in changes, in order
	pending map[string]position // of the transaction being routed: the last change sent to each node
}

// txEnd is a transaction whose last change is changes[at-1].
type txEnd struct {
	at  int
	lsn LSN
}

// add takes the next changes (a chunk of Range, not kept) and routes what
// was collected once it makes a chunk.
func (r *chunkRouter) add(cs []*Change) error {
	for _, c := range cs {
		r.changes = append(r.changes, c)
		r.bytes += c.memSize()
		if (len(r.changes) >= maxBatchChanges || r.bytes >= maxChunkBytes) && !r.flush() {
			return errStopRouting
		}
	}
	return nil
}

// flush matches and checks the chunk's changes, sends them, and queues
// the transactions that end in it; false when ownership was lost or the
// reader stops.
func (r *chunkRouter) flush() bool {
	o, s := r.o, r.o.s
	matched := make([][]*Subscription, len(r.changes))
	any := false
	for i, c := range r.changes {
		matched[i] = s.matcher.Match(c, nil)
		any = any || len(matched[i]) > 0
	}
	if any && s.cfg.Authorize != nil {
		if err := s.cfg.Authorize(r.ctx, r.changes, matched); err != nil {
			s.log.Warn("row-level security check failed; those subscribers miss these changes", "lsn", r.changes[0].LSN, "err", err)
		}
	}
	e := 0
	for i, c := range r.changes {
		for ; e < len(r.ends) && r.ends[e].at == i; e++ {
			if !r.commit(r.ends[e].lsn) {
				return false
			}
		}
		if len(matched[i]) > 0 && !o.routeChange(r.ctx, r.gen, c, matched[i], r.pending) {
			return false
		}
	}
	for ; e < len(r.ends); e++ {
		if !r.commit(r.ends[e].lsn) {
			return false
		}
	}
	clear(r.changes)
	r.changes, r.ends, r.bytes = r.changes[:0], r.ends[:0], 0
	return true
}

// commit queues a transaction whose changes were all sent for
// acknowledgement.
func (r *chunkRouter) commit(lsn LSN) bool {
	o, s := r.o, r.o.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.own != o || o.gen != r.gen {
		return false
	}
	o.txq = append(o.txq, &txState{lsn: lsn, pending: r.pending})
	r.pending = map[string]position{}
	o.advanceLocked()
	return true
}

// routeChange sends a change with its matched subscriptions to their
// nodes (one frame per node), recording in pending the last change sent
// to each; false when ownership was lost or the reader stops.
func (o *ownerState) routeChange(ctx context.Context, gen int, c *Change, subs []*Subscription, pending map[string]position) bool {
	s := o.s
	pos := position{uint64(c.LSN), c.Seq}
	var record []byte
	for start := 0; start < len(subs); {
		end := start + 1
		for end < len(subs) && subs[end].Node == subs[start].Node {
			end++
		}
		node := subs[start].Node
		ids := make([]uint64, 0, end-start)
		for _, sub := range subs[start:end] {
			ids = append(ids, sub.ID)
		}
		start = end
		if node == s.cfg.Self {
			s.deliverLocal(pos, c, ids) // may wait for a subscriber: flow control
			continue
		}
		if record == nil {
			record = c.AppendBinary(nil)
		}
		frame := meshproto.Append(nil, &meshproto.Changes{DB: s.cfg.DB, LSN: pos.lsn, Seq: pos.seq, Record: record, IDs: ids})
		if !o.send(ctx, node, pos, frame, pending) {
			return false
		}
	}
	return true
}

// send queues a Changes frame for node once its window has room; false
// when ownership was lost or the reader stops (the next reader sends it
// again).
func (o *ownerState) send(ctx context.Context, node string, pos position, frame []byte, pending map[string]position) bool {
	s := o.s
	if !o.room(ctx, node) {
		return false
	}
	s.mu.Lock()
	if s.own != o {
		s.mu.Unlock()
		return false
	}
	if _, live := s.regs[node]; !live {
		s.mu.Unlock()
		return true // the node went meanwhile
	}
	ob := o.outbox[node]
	if ob == nil {
		ob = &outbox{}
		o.outbox[node] = ob
	}
	ob.frames = append(ob.frames, sentChange{pos, frame})
	ob.bytes += len(frame)
	pending[node] = pos
	s.mu.Unlock()
	if s.tr != nil {
		s.tr.send(node, mesh.LaneChanges, frame)
	}
	return true
}

// restartReader makes the reader start over from the last confirmed
// position, dropping what it delivered since.
func (o *ownerState) restartReader(gen int) {
	s := o.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.own == o && o.gen == gen && o.cancel != nil {
		o.restartLocked()
	}
}

// noteAbsentLocked updates the absent members from a change of the
// member list: a participant that vanished without draining is absent; a
// live one with its name and another ID ends its absence (it restarted);
// one that is live again ends it at once on a node that does not own the
// database, and on the owner when it registers again (onRegister).
func (s *Service) noteAbsentLocked(before, now []Member) {
	live := map[string]bool{}
	names := map[string]string{}
	for _, m := range now {
		live[m.ID] = true
		if m.Name != "" {
			names[m.Name] = m.ID
		}
	}
	for _, m := range before {
		if m.ID != s.cfg.Self && m.DB == s.cfg.DB && !m.Draining && !live[m.ID] {
			s.absent[m.ID] = absence{name: m.Name, since: time.Now()}
			s.log.Info("a member vanished without leaving; confirming nothing until it is back", "member", m.ID, "for_at_most", s.cfg.AbsentWait)
		}
	}
	for id, a := range s.absent {
		switch {
		case a.name != "" && names[a.name] != "" && names[a.name] != id:
			s.log.Info("an absent member restarted; it missed nothing its clients can still get", "member", id, "now", names[a.name])
			delete(s.absent, id)
		case live[id] && s.own == nil:
			delete(s.absent, id)
		}
	}
	if s.own != nil {
		s.own.advanceLocked()
	}
}

// holdingLocked reports whether a member is absent, forgetting those
// absent for longer than AbsentWait.
func (s *Service) holdingLocked() bool {
	for id, a := range s.absent {
		if time.Since(a.since) > s.cfg.AbsentWait {
			s.log.Warn("a member that vanished did not come back in time; confirming the changes it missed: it will not get them",
				"member", id, "absent_wait", s.cfg.AbsentWait)
			delete(s.absent, id)
		}
	}
	return len(s.absent) > 0
}

// backLocked ends the absence of a member that registered again with this
// owner: the reader starts over from the last confirmed position, so that
// the member gets every change it missed; the other nodes drop the ones
// they had. A member without subscriptions missed nothing.
func (s *Service) backLocked(node string, subscribed bool) {
	if _, ok := s.absent[node]; !ok {
		return
	}
	delete(s.absent, node)
	o := s.own
	if o == nil || o.cancel == nil {
		return // the reader has not started: it starts from the confirmed position
	}
	if !subscribed {
		return // no subscriber of it can have missed anything
	}
	s.log.Info("a member that was cut off is back; reading the changes it missed again", "member", node)
	o.restartLocked()
}

// restartLocked makes the reader start over from the last confirmed
// position: what it delivered since is routed no further, nor confirmed.
func (o *ownerState) restartLocked() {
	o.gen++
	o.txq = nil
	o.heldAck = 0
	o.cancel()
}

// room waits until node has room in its window of unacknowledged changes.
func (o *ownerState) room(ctx context.Context, node string) bool {
	s := o.s
	for {
		s.mu.Lock()
		if s.own != o {
			s.mu.Unlock()
			return false
		}
		ob := o.outbox[node]
		if ob == nil || ob.bytes < s.cfg.Window {
			s.mu.Unlock()
			return true
		}
		wait := o.progress
		s.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return false
		}
	}
}

// deliverLocal hands a change to this node's own subscribers, the owner's
// shortcut around the mesh.
func (s *Service) deliverLocal(pos position, c *Change, ids []uint64) {
	if s.firstTime(pos) {
		s.deliver(c, ids)
	}
}

// txBatcher hands the owner's transactions to it from a goroutine of its
// own, so that the reader keeps reading while the owner checks row-level
// security: what arrives meanwhile waits in q and is taken as one batch
// (at most maxBatchTx transactions, about maxBatchChanges changes), whose
// RLS checks cost one query per claims set in all. A reader that keeps up
// sees batches of one; one that falls behind pays less per change the
// further behind it is. A transaction is released once routed: the reader
// paces itself to that (flow control, see txBudget).
type txBatcher struct {
	o *ownerState
	q chan *Transaction
}

const (
	maxBatchTx      = 256
	maxBatchChanges = 4096
)

func newTxBatcher(o *ownerState) *txBatcher {
	// The reader hands over at most maxOpenTx unreleased transactions, so
	// Transaction never waits.
	return &txBatcher{o: o, q: make(chan *Transaction, maxOpenTx)}
}

// Transaction implements Handler: it queues tx.
func (b *txBatcher) Transaction(ctx context.Context, tx *Transaction) {
	select {
	case b.q <- tx:
	case <-ctx.Done():
		tx.Release()
	}
}

// run routes the queued transactions in order until ctx ends.
func (b *txBatcher) run(ctx context.Context) {
	defer b.drain()
	var batch []*Transaction
	for {
		select {
		case <-ctx.Done():
			return
		case tx := <-b.q:
			batch = append(batch[:0], tx)
		}
		changes := batch[0].Len()
	more:
		for len(batch) < maxBatchTx && changes < maxBatchChanges {
			select {
			case tx := <-b.q:
				batch = append(batch, tx)
				changes += tx.Len()
			default:
				break more
			}
		}
		b.o.transactions(ctx, batch)
		for i, tx := range batch {
			tx.Release()
			batch[i] = nil
		}
	}
}

// drain releases what is queued: the reader stopped, and the next one
// reads it again.
func (b *txBatcher) drain() {
	for {
		select {
		case tx := <-b.q:
			tx.Release()
		default:
			return
		}
	}
}
