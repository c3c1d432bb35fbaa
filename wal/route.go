package wal

import (
	"context"
	"errors"

	"github.com/meshcast/meshcast/wal/owner"
	"github.com/meshcast/meshcast/wire/meshproto"
)

// readerRun is one run of the reader (owner.StartReader): the reader's
// goroutine and its router's, stopped by cancel.
type readerRun struct {
	gen    int
	cancel context.CancelFunc
	more   chan struct{} // the core's RouteMore: the router may route its next chunk
}

func (r *readerRun) goOn() {
	select {
	case r.more <- struct{}{}:
	default:
	}
}

// startRun starts run gen of the reader and its router; the driver learns
// of its end by owner.ReaderStopped.
func (d *driver) startRun(gen int, takeOver bool) {
	s := d.s
	if s.reader == nil {
		return
	}
	ctx, cancel := context.WithCancel(d.ctx)
	run := &readerRun{gen: gen, cancel: cancel, more: make(chan struct{}, 1)}
	d.cur = run
	// One run at a time (the core starts the next once this one
	// stopped), so the reader's fields are not in use.
	b := &txBatcher{s: s, rr: run, q: make(chan *Transaction, maxOpenTx)}
	s.reader.Handler = b
	s.reader.TakeOver = takeOver
	s.reader.OnStreaming = func() { s.mail.push(owner.Streaming{Gen: gen}) }
	s.reader.onStart = func(from, walAt LSN) {
		s.store.startAt(from, walAt)
		s.mail.push(owner.HistoryFrom{Gen: gen, From: uint64(from)})
	}
	s.log.Info("reading the database's changes", "slot", s.reader.slot(), "run", gen)
	d.wg.Go(func() {
		routing := make(chan struct{})
		go func() { defer close(routing); b.run(ctx) }()
		err := s.reader.Run(ctx)
		cancel()
		<-routing
		b.drain() // what the reader handed over after the router stopped
		if err != nil {
			s.log.Error("change reader stopped", "err", err)
		}
		s.mail.push(owner.ReaderStopped{Gen: gen, Failed: err != nil})
	})
}

// txBatcher hands the reader's transactions to the router from a
// goroutine of its own, so that the reader keeps reading while the owner
// checks row-level security: what arrives meanwhile waits in q and is
// taken as one batch (at most maxBatchTx transactions, about
// maxBatchChanges changes), whose RLS checks cost one query per claims
// set in all. A reader that keeps up sees batches of one; one that falls
// behind pays less per change the further behind it is. A transaction is
// released once routed: the reader paces itself to that (flow control,
// see txBudget).
type txBatcher struct {
	s  *Service
	rr *readerRun
	q  chan *Transaction
	// sentHead is the history's head the core was last told of.
	sentHead Pos
}

const (
	maxBatchTx      = 256
	maxBatchChanges = 4096
)

// Transaction implements Handler: it queues tx. The reader hands over at
// most maxOpenTx unreleased transactions, so it never waits.
func (b *txBatcher) Transaction(ctx context.Context, tx *Transaction) {
	b.s.store.read(tx.LSN)
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
		b.transactions(ctx, batch)
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

// transactions routes txs, in commit order.
//
// A transaction that changed the catalog (a GRANT, a policy, …) splits the
// batch: the transactions before it are authorized as the caches were,
// then CatalogChanged refreshes them, then it and the rest are authorized
// on the catalog as of its commit.
func (b *txBatcher) transactions(ctx context.Context, txs []*Transaction) {
	s := b.s
	for i := 0; s.cfg.CatalogChanged != nil && i < len(txs); i++ {
		if !txs[i].catalog {
			continue
		}
		s.store.noteCatalog(txs[i].LSN) // before the caches change for it
		if i > 0 && !b.batch(ctx, txs[:i]) {
			return
		}
		if err := s.cfg.CatalogChanged(ctx, txs[i]); err != nil && ctx.Err() == nil {
			s.log.Warn("could not refresh the authorization caches after a catalog change; changes are hidden until it succeeds", "lsn", txs[i].LSN, "err", err)
		}
		txs, i = txs[i:], 0
	}
	b.batch(ctx, txs)
}

// batch routes txs in chunks of at most maxBatchChanges changes or
// maxChunkBytes (the changes of several small transactions, or a part of
// a large one, read back from its file if it spilled): the row-level
// security checks of a chunk run together, one query per distinct claims
// set. It reports false when the run stops.
func (b *txBatcher) batch(ctx context.Context, txs []*Transaction) bool {
	if ctx.Err() != nil {
		return false
	}
	r := &chunkRouter{b: b, ctx: ctx}
	for _, tx := range txs {
		if tx.mark {
			r.mark = max(r.mark, tx.LSN) // after the changes before it are in (flush)
			continue
		}
		if err := tx.Range(maxBatchChanges, maxChunkBytes, r.add); err != nil {
			if !errors.Is(err, errStopRouting) {
				b.s.log.Error("cannot read a large transaction back; the reader starts over", "lsn", tx.LSN, "err", err)
				b.s.mail.push(owner.ReadAgain{Gen: b.rr.gen})
			}
			return false
		}
		r.items = append(r.items, owner.Item{Commit: uint64(tx.LSN), Time: tx.CommitTime})
		r.mark = max(r.mark, tx.LSN) // the history holds all of it once flushed
	}
	return r.flush()
}

// maxChunkBytes bounds (about: one change may be larger) the changes the
// owner routes at once, in memory beside the reader's TxMemory.
const maxChunkBytes = 4 << 20

var errStopRouting = errors.New("reader run stopping")

// chunkRouter collects the changes of transactions into chunks and routes
// each chunk once it is full: matched, checked, encoded per node, and
// handed to the core (owner.Routed), which sends it as the nodes' windows
// allow and answers RouteMore once it is all out.
type chunkRouter struct {
	b       *txBatcher
	ctx     context.Context
	changes []*Change
	bytes   int64
	// items are the commits of the transactions that end in changes,
	// each at the index of the change it follows (Pos.Seq; set by add).
	items []owner.Item
	ends  []int
	// mark is the last transaction (or marking transaction,
	// Reader.markIdle) whose changes are all in the chunk: the history's
	// head moves to its end once they are in.
	mark LSN
}

// add takes the next changes (a chunk of Range, not kept) and routes what
// was collected once it makes a chunk.
func (r *chunkRouter) add(cs []*Change) error {
	for _, c := range cs {
		r.markEnds()
		r.changes = append(r.changes, c)
		r.bytes += c.memSize()
		if (len(r.changes) >= maxBatchChanges || r.bytes >= maxChunkBytes) && !r.flush() {
			return errStopRouting
		}
	}
	return nil
}

// markEnds records where the commits gathered so far stand among the
// changes: before the next one.
func (r *chunkRouter) markEnds() {
	for len(r.ends) < len(r.items) {
		r.ends = append(r.ends, len(r.changes))
	}
}

// flush matches and checks the chunk's changes, hands them with the
// commits among them to the core, and waits for its leave to go on;
// false when the run stops.
func (r *chunkRouter) flush() bool {
	r.markEnds()
	s := r.b.s
	// Into the history before matching: a subscription added meanwhile
	// is acknowledged with a head at or after every change matched
	// without it (withHead).
	histBytes, histHead := s.store.append(r.changes)
	if r.mark != 0 {
		histHead, r.mark = s.store.advance(caughtUp(r.mark)), 0
	}
	matched := make([][]*Subscription, len(r.changes))
	hit := false
	for i, c := range r.changes {
		matched[i] = freshOnly(s.matcher.Match(c, nil), c.Pos())
		hit = hit || len(matched[i]) > 0
	}
	if hit && s.cfg.Authorize != nil {
		if err := s.cfg.Authorize(r.ctx, r.changes, matched); err != nil {
			s.log.Warn("row-level security check failed; those subscribers miss these changes", "lsn", r.changes[0].LSN, "err", err)
		}
	}
	var items []owner.Item
	e := 0
	for i, c := range r.changes {
		for ; e < len(r.items) && r.ends[e] == i; e++ {
			items = append(items, r.items[e])
		}
		items = r.route(items, c, matched[i])
	}
	items = append(items, r.items[e:]...)
	clear(r.changes)
	r.changes, r.items, r.ends, r.bytes = r.changes[:0], r.items[:0], r.ends[:0], 0
	moved := r.b.sentHead.Before(histHead)
	if len(items) == 0 && histBytes == 0 && !moved {
		return true
	}
	r.b.sentHead = histHead
	s.mail.push(owner.Routed{Gen: r.b.rr.gen, Items: items, Head: owner.Pos{LSN: uint64(histHead.LSN), Seq: histHead.Seq}, Bytes: histBytes})
	select {
	case <-r.b.rr.more:
		return true
	case <-r.ctx.Done():
		return false
	}
}

// freshOnly drops the matches of a change read before they were all
// added (Subscription.from): what the reader's Keep did before the
// history kept every change. A change that also matches a subscription
// that was there when it was read goes to all it matches, the new ones
// too (a token refresh's subscriptions replace the old ones meanwhile).
func freshOnly(subs []*Subscription, p Pos) []*Subscription {
	for _, sub := range subs {
		if sub.from.Before(p) {
			return subs
		}
	}
	return subs[:0]
}

// route appends a change's items: one per node its matched subscriptions
// are on (subs is sorted by node), encoded for another node, as it is for
// this one.
func (r *chunkRouter) route(items []owner.Item, c *Change, subs []*Subscription) []owner.Item {
	s := r.b.s
	pos := owner.Pos{LSN: uint64(c.LSN), Seq: c.Seq}
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
			items = append(items, owner.Item{Node: node, Pos: pos, Local: &localChange{c, ids}})
			continue
		}
		if record == nil {
			record = c.AppendBinary(nil)
		}
		frame := meshproto.Append(nil, &meshproto.Changes{DB: s.cfg.DB, LSN: pos.LSN, Seq: pos.Seq, Record: record, IDs: ids})
		items = append(items, owner.Item{Node: node, Pos: pos, Frame: frame, Size: len(frame)})
	}
	return items
}
