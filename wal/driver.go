package wal

import (
	"context"
	"sync"
	"time"

	"github.com/meshcast/meshcast/wal/owner"
	"github.com/meshcast/meshcast/wire/meshproto"
)

// mailbox holds the driver's inputs: owner events, and the requests
// below. It has no bound of its own and never blocks a sender (the mesh's
// reading goroutines, its membership callbacks, Subscribe): what arrives
// is bounded by what causes it — the owner sends a node at most Window
// bytes it has not acknowledged, the router one chunk at a time.
type mailbox struct {
	mu   sync.Mutex
	q    []any
	wake chan struct{}
}

func newMailbox() mailbox { return mailbox{wake: make(chan struct{}, 1)} }

func (m *mailbox) push(in ...any) {
	m.mu.Lock()
	m.q = append(m.q, in...)
	m.mu.Unlock()
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

func (m *mailbox) take(spare []any) []any {
	m.mu.Lock()
	defer m.mu.Unlock()
	got := m.q
	m.q = spare[:0]
	return got
}

// subscribeReq is a Subscribe call: the driver answers it on reply.
type subscribeReq struct {
	call  uint64
	subs  []meshproto.Sub
	reply chan owner.Subscribed
}

// forgetCall says that the Subscribe call stopped waiting.
type forgetCall struct{ call uint64 }

// resyncReq asks for the frames peer's lane needs (Core.Resync).
type resyncReq struct {
	peer  string
	lane  Lane
	reply chan [][]byte
}

// driver owns the owner core: it steps and ticks it on Run's goroutine
// and carries out its effects, none of which blocks.
type driver struct {
	s       *Service
	core    *owner.Core
	ctx     context.Context
	wg      *sync.WaitGroup
	waiters map[uint64]chan owner.Subscribed // Subscribe calls, by call
	cur     *readerRun                       // the reader's run under way
}

func newDriver(s *Service) *driver {
	return &driver{s: s, core: owner.New(s.coreConfig()), waiters: map[uint64]chan owner.Subscribed{}}
}

// run drives the core until ctx ends; the reader runs it starts join wg.
func (d *driver) run(ctx context.Context, wg *sync.WaitGroup) {
	d.ctx, d.wg = ctx, wg
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var batch []any
	for {
		d.do(d.core.Tick(time.Now()))
		batch = d.s.mail.take(batch)
		for i, in := range batch {
			d.input(in)
			batch[i] = nil
		}
		d.s.owns.Store(d.core.Owns())
		d.s.nMember.Store(int32(len(d.core.Members())))
		wait := time.Hour
		if at, ok := d.core.Deadline(); ok {
			wait = max(time.Until(at), 0)
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			if d.cur != nil {
				d.cur.cancel()
			}
			return
		case <-d.s.mail.wake:
		case <-timer.C:
		}
	}
}

// input steps the core with one input.
func (d *driver) input(in any) {
	switch in := in.(type) {
	case owner.Event:
		d.do(d.core.Step(in))
	case subscribeReq:
		d.waiters[in.call] = in.reply
		d.do(d.core.Step(owner.Subscribe{Call: in.call, Subs: in.subs}))
	case forgetCall:
		delete(d.waiters, in.call)
	case resyncReq:
		in.reply <- d.core.Resync(in.peer, in.lane)
	case recoverReq:
		d.askOwner(in.f)
	}
}

// askOwner sends a Recover call's request to the owner (this node's own
// core when it owns the database); without one, the call fails at once.
func (d *driver) askOwner(f *meshproto.ChangesRecover) {
	s := d.s
	to := d.core.Owner()
	switch {
	case to == s.cfg.Self:
		d.do(d.core.Step(owner.Receive{From: to, Frame: f}))
		return
	case to != "" && s.bus != nil && s.bus.Send(to, LaneControl, meshproto.Append(nil, f)):
		return
	}
	s.answers.deliver(&meshproto.ChangesRecovered{DB: s.cfg.DB, Call: f.Call, Err: ReasonNoAnswer})
}

// do carries out effects, in order.
func (d *driver) do(effects []owner.Effect) {
	s := d.s
	for _, e := range effects {
		switch e := e.(type) {
		case owner.Send:
			if s.bus != nil {
				raw := e.Raw
				if raw == nil {
					raw = meshproto.Append(nil, d.withHead(e.Frame))
				}
				s.bus.Send(e.To, e.Lane, raw)
			}
		case owner.Hold:
			s.reader.hold.Store(e.LSN)
		case owner.Evict:
			s.store.evict(e)
		case owner.ServeRecovery:
			d.wg.Go(func() { s.serve(d.ctx, e) })
		case owner.Answer:
			s.answer(e.To, e.Frame)
		case owner.Deliver:
			s.out.push(e)
		case owner.Confirm:
			s.reader.Ack(LSN(e.LSN))
		case owner.StartReader:
			d.startRun(e.Gen, e.TakeOver)
		case owner.StopReader:
			if d.cur != nil && d.cur.gen == e.Gen {
				d.cur.cancel()
			}
		case owner.RouteMore:
			if d.cur != nil && d.cur.gen == e.Gen {
				d.cur.goOn()
			}
		case owner.AddSubs:
			var from Pos
			if e.Fresh {
				from = s.store.ackHead()
			}
			for i := range e.Subs {
				if sub, err := subOf(e.Node, &e.Subs[i]); err == nil {
					sub.from = from
					s.matcher.Add(sub)
				}
			}
		case owner.RemoveSubs:
			for _, id := range e.IDs {
				s.matcher.Remove(id)
			}
		case owner.Subscribed:
			if e.Err == "" && d.core.Owns() {
				s.head.raise(s.store.ackHead()) // as a SubAck from itself would
			}
			if w := d.waiters[e.Call]; w != nil {
				w <- e
				delete(d.waiters, e.Call)
			}
		case owner.Dropped:
			// A refusal no Subscribe waits for (a set sent again to a new
			// owner): the channels keep their bindings, which get nothing.
			s.log.Warn("the owner refused subscriptions of this node's channels; they get no changes", "subscriptions", len(e.IDs), "err", e.Err)
		case owner.Log:
			s.log.Log(context.Background(), e.Level, e.Msg, e.Args...)
		}
	}
}

// withHead fills an acknowledgement's head in: the history's head, read
// now that the subscriptions acknowledged are in the matcher (AddSubs came
// first). The router appends a chunk to the history before it matches
// it, so every change matched without them is at or before that head.
func (d *driver) withHead(f meshproto.Frame) meshproto.Frame {
	ack, ok := f.(*meshproto.SubAck)
	if !ok || ack.Err != "" || !d.core.Owns() {
		return f
	}
	h := d.s.store.ackHead()
	cp := *ack
	cp.LSN, cp.Seq = uint64(h.LSN), h.Seq
	return &cp
}

// deliveryQueue holds the Deliver effects for the delivery goroutine:
// Deliver may wait for a subscriber, and the driver must not. It needs no
// bound of its own: an owner sends a node at most Window bytes it has not
// acknowledged, its own router one chunk at a time, and a change is
// acknowledged once it is delivered.
type deliveryQueue struct {
	mu   sync.Mutex
	q    []owner.Deliver
	wake chan struct{}
}

func (b *deliveryQueue) push(d owner.Deliver) {
	b.mu.Lock()
	b.q = append(b.q, d)
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

func (b *deliveryQueue) take(spare []owner.Deliver) []owner.Deliver {
	b.mu.Lock()
	defer b.mu.Unlock()
	got := b.q
	b.q = spare[:0]
	return got
}

// localChange is what the router hands the owner's own subscribers.
type localChange struct {
	c   *Change
	ids []uint64
}

// deliverLoop delivers the changes in the order the core released them,
// one at a time, and tells the core each is done, until ctx ends.
func (s *Service) deliverLoop(ctx context.Context) {
	var batch []owner.Deliver
	var done []any
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.out.wake:
		}
		for batch = s.out.take(batch); len(batch) > 0; batch = s.out.take(batch) {
			for i, e := range batch {
				s.deliverOne(e)
				done = append(done, owner.Delivered{From: e.From, Pos: e.Pos})
				batch[i] = owner.Deliver{}
				if ctx.Err() != nil {
					return // what is left was not acknowledged: sent again
				}
			}
			s.mail.push(done...)
			clear(done)
			done = done[:0]
		}
	}
}

func (s *Service) deliverOne(e owner.Deliver) {
	switch {
	case e.Dup:
		s.dupes.Inc()
	case e.Changes != nil:
		c, err := DecodeChange(e.Changes.Record)
		if err != nil {
			s.log.Error("undecodable change from the owner; skipped", "from", e.From, "lsn", LSN(e.Changes.LSN), "err", err)
			return
		}
		s.deliveries.Add(len(e.Changes.IDs))
		s.head.raise(c.Pos())
		s.cfg.Deliver(c, e.Changes.IDs)
	case e.Local != nil:
		lc := e.Local.(*localChange)
		s.deliveries.Add(len(lc.ids))
		s.head.raise(lc.c.Pos())
		s.cfg.Deliver(lc.c, lc.ids)
	}
}
