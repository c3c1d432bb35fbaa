package wal

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/cespare/xxhash/v2"

	"github.com/meshcast/meshcast/mesh"
	"github.com/meshcast/meshcast/wire/meshproto"
)

// A Service is one node's part in streaming a database's changes to the
// cluster (design §4). Every node has one: it registers its channels'
// subscriptions with the database's owner and hands the changes the owner
// sends it to its Deliver function. The owner — one node, chosen by
// OwnerOf among the members that can read the database — also runs the
// Reader, matches each change against every node's subscriptions, sends
// each node one Changes frame per change with the IDs it matches, and
// confirms a transaction to Postgres only once every node it was sent to
// has acknowledged it. When the owner goes, the next one asks every node
// for its subscriptions, then resumes from the slot's confirmed position;
// nodes drop changes they have delivered already, so a failover repeats
// at most the unconfirmed tail and loses nothing.
//
// On a single node, the node is the owner and nothing crosses a network.
type Service struct {
	cfg  ServiceConfig
	log  *slog.Logger
	tr   transport // nil on a single node
	next atomic.Uint32
	kick chan struct{} // the reader loop re-reads the state

	metrics    *metrics.Set
	deliveries *metrics.Counter
	dupes      *metrics.Counter

	mu      sync.Mutex
	members []Member // the live members, this node included
	owner   string   // whom this node registers with ("" when none can read)
	// A cluster node claims ownership for itself only once it has seen
	// another member or SettleWait has passed: a node starting next to a
	// running cluster must not read (and confirm) before it knows the
	// cluster's owner.
	clustered, settled bool
	settle             *time.Timer
	draining           bool // this node is leaving: never its own owner again

	// Node side.
	in      inbox                    // changes from owners, for the delivery goroutine
	local   map[uint64]*Subscription // this node's subscriptions
	waiters map[uint64]chan error    // Subscribe calls waiting for the owner's ack
	last    position                 // the last change delivered to local subscribers
	acks    map[string]*ackState     // acknowledgements due to (former) owners

	// Owner side (kept on every node: a node keeps what was registered
	// with it, whether or not it owns the database yet).
	regs    map[string]map[uint64]*Subscription // by registering node
	parts   map[string]*meshproto.SubRegister   // Replace sets arriving in parts
	matcher *Matcher
	own     *ownerState // non-nil while this node owns the database
	// absent are the members that vanished without leaving (a crash, or a
	// partition: their clients may still be connected on the other side),
	// by ID. While one is absent the owner confirms nothing to Postgres, so
	// that when it comes back the changes it missed can be read again.
	absent map[string]absence

	// keepHits is keep's scratch, used by the reader's goroutine only.
	keepHits []*Subscription
}

// absence is a member that vanished without leaving.
type absence struct {
	name  string
	since time.Time
}

// ServiceConfig configures a Service.
type ServiceConfig struct {
	// DB names the database; every node configured with it is a candidate
	// owner (mesh.Config.Database must be the same). Required.
	DB string
	// Self is this node's ID (its mesh ID in a cluster). Required.
	Self string
	// Regions lists the regions the owner is preferred in, in order (see
	// OwnerOf); empty: any.
	Regions []string
	// Reader streams the database while this node owns it; its Handler
	// and TakeOver are set by the Service. Nil on a node that cannot read
	// the database itself.
	Reader *Reader
	// Deliver hands a change to the local channels whose subscriptions
	// are ids. It is called in commit order, from one goroutine at a
	// time. It may block while a subscriber has no room (flow control:
	// the node acknowledges later, so the owner waits and stops reading),
	// but must return within a bounded time: edge.Server.DeliverChange
	// closes a subscriber that took nothing for its stall time.
	Deliver func(c *Change, ids []uint64)
	// Authorize, if set, removes from hits (per change of a transaction,
	// the subscriptions it matched) those whose role may not see the
	// change (row-level security); Authorizer.Authorize is one. The owner
	// calls it once per batch: the transactions the reader read while the
	// previous batch was being checked, so that a reader that falls behind
	// pays one query per claims set for many transactions.
	Authorize func(ctx context.Context, changes []*Change, hits [][]*Subscription) error
	// CatalogChanged, if set, is called by the owner for a transaction
	// that changed privileges, policies, the publication or tables
	// (meshcast's event trigger marks it), after the transactions before
	// it were authorized and before its own changes and later ones are:
	// Authorizer.CatalogChanged is one. An error is logged; Authorize then
	// fails closed.
	CatalogChanged func(ctx context.Context, tx *Transaction) error
	// RegisterTimeout bounds how long Subscribe waits for the owner's
	// acknowledgement (default 5s).
	RegisterTimeout time.Duration
	// TakeoverWait bounds how long a new owner waits for every member's
	// subscriptions before it starts reading (default 2s).
	TakeoverWait time.Duration
	// Window bounds the bytes of changes sent to one node and not yet
	// acknowledged (default 4 MiB); the owner reads no further meanwhile.
	Window int
	// SettleWait is how long a cluster node alone after its start waits
	// before it owns the database itself (default 3s).
	SettleWait time.Duration
	// AbsentWait is how long the owner waits for a member that vanished
	// without leaving (a crash, or a partition) to come back before it
	// confirms the changes that member missed (default 60s). Until then
	// the owner confirms nothing; a member that comes back in time
	// registers again and gets every change it missed (the owner reads the
	// unconfirmed tail again; the others drop what they had). A new
	// incarnation of the member (the same name) ends the wait at once: the
	// old one is gone for good.
	AbsentWait time.Duration
	Logger     *slog.Logger
	// Metrics receives the service's metrics (default: a set of its own).
	Metrics *metrics.Set
}

// ErrNotConfirmed is returned by Subscribe when the owner did not
// acknowledge the subscriptions in time; they stay registered and are
// sent again to every new owner, but changes committed meanwhile may be
// missed.
var ErrNotConfirmed = errors.New("the database's change stream did not confirm the subscription in time")

// NewService returns a Service; Run starts it.
func NewService(cfg ServiceConfig) *Service {
	if cfg.RegisterTimeout == 0 {
		cfg.RegisterTimeout = 5 * time.Second
	}
	if cfg.TakeoverWait == 0 {
		cfg.TakeoverWait = 2 * time.Second
	}
	if cfg.Window == 0 {
		cfg.Window = 4 << 20
	}
	if cfg.SettleWait == 0 {
		cfg.SettleWait = 3 * time.Second
	}
	if cfg.AbsentWait == 0 {
		cfg.AbsentWait = time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.NewSet()
	}
	s := &Service{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "wal", "db", cfg.DB),
		kick:    make(chan struct{}, 1),
		metrics: cfg.Metrics,
		local:   make(map[uint64]*Subscription),
		waiters: make(map[uint64]chan error),
		acks:    make(map[string]*ackState),
		regs:    make(map[string]map[uint64]*Subscription),
		parts:   make(map[string]*meshproto.SubRegister),
		matcher: NewMatcher(),
		absent:  make(map[string]absence),
		in:      inbox{wake: make(chan struct{}, 1)},
	}
	s.deliveries = s.metrics.NewCounter("meshcast_wal_deliveries_total")
	s.dupes = s.metrics.NewCounter("meshcast_wal_duplicates_dropped_total")
	s.metrics.NewGauge("meshcast_wal_owner", func() float64 {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.own != nil {
			return 1
		}
		return 0
	})
	s.metrics.NewGauge("meshcast_wal_subscriptions", func() float64 { return float64(s.matcher.Len()) })
	return s
}

// NewID returns a subscription ID for this node: cluster-unique with
// overwhelming likelihood (its high 21 bits come from the node ID, the
// low 32 count), at most 2^53-1 as realtime-js needs, and telling which
// node holds it.
func (s *Service) NewID() uint64 {
	return (xxhash.Sum64String(s.cfg.Self)&(1<<21-1))<<32 | uint64(s.next.Add(1))
}

func (s *Service) selfMember() Member {
	return Member{ID: s.cfg.Self, DB: s.cfg.DB, Reader: s.cfg.Reader != nil}
}

// transport is what the service needs of the mesh.
type transport interface {
	send(to string, l mesh.Lane, frame []byte) bool
}

type meshTransport struct{ n *mesh.Node }

func (t meshTransport) send(to string, l mesh.Lane, frame []byte) bool { return t.n.Send(to, l, frame) }

// Attach connects the service to its cluster node; call it before the
// node's Start. It makes the node advertise the database, and whether it
// can read it (a candidate owner).
func (s *Service) Attach(n *mesh.Node) {
	n.SetDatabase(s.cfg.DB, s.cfg.Reader != nil)
	s.tr = meshTransport{n}
	s.mu.Lock()
	s.clustered = true
	s.settle = time.AfterFunc(s.cfg.SettleWait, func() {
		s.mu.Lock()
		s.settled = true
		ms := s.members
		s.mu.Unlock()
		s.setMembers(ms)
	})
	s.mu.Unlock()
	for _, t := range []meshproto.Type{meshproto.TypeSubRegister, meshproto.TypeSubUnregister, meshproto.TypeSubAck,
		meshproto.TypeChanges, meshproto.TypeChangesAck, meshproto.TypeSubSync} {
		n.Handle(t, s.handle)
	}
	n.OnResync(mesh.LaneControl, s.resyncControl)
	n.OnResync(mesh.LaneChanges, s.resyncChanges)
	n.Watch(func(self mesh.Member, members []mesh.Member) {
		ms := []Member{{ID: self.ID, Name: self.Name, Region: self.Region, DB: self.DB, Reader: self.Reader, Draining: self.Draining}}
		for _, m := range members {
			ms = append(ms, Member{ID: m.ID, Name: m.Name, Region: m.Region, DB: m.DB, Reader: m.Reader, Draining: m.Draining})
		}
		s.setMembers(ms)
	})
}

// SetDraining hands the reader over before this node leaves: it stops
// counting itself a candidate owner.
func (s *Service) SetDraining() {
	s.mu.Lock()
	s.draining = true
	ms := slices.Clone(s.members)
	s.mu.Unlock()
	s.setMembers(ms)
}

// out is a frame to send once the lock is released.
type out struct {
	to    string
	lane  mesh.Lane
	frame meshproto.Frame
	raw   []byte
}

// flush sends frames; those addressed to this node are handled here.
func (s *Service) flush(outs []out) {
	for _, o := range outs {
		if o.to == s.cfg.Self {
			s.handle(s.cfg.Self, o.frame)
			continue
		}
		if s.tr == nil {
			continue
		}
		raw := o.raw
		if raw == nil {
			raw = meshproto.Append(nil, o.frame)
		}
		s.tr.send(o.to, o.lane, raw)
	}
}

// handle takes a frame from another node (or from this one to itself).
func (s *Service) handle(from string, f meshproto.Frame) {
	switch f := f.(type) {
	case *meshproto.SubRegister:
		if f.DB == s.cfg.DB {
			s.flush(s.onRegister(from, f))
		}
	case *meshproto.SubUnregister:
		if f.DB == s.cfg.DB {
			s.onUnregister(from, f.IDs)
		}
	case *meshproto.SubAck:
		if f.DB == s.cfg.DB {
			s.onSubAck(f)
		}
	case *meshproto.SubSync:
		if f.DB == s.cfg.DB {
			s.mu.Lock()
			outs := s.replaceLocked(from)
			s.mu.Unlock()
			s.flush(outs)
		}
	case *meshproto.Changes:
		if f.DB == s.cfg.DB {
			s.onChanges(from, f)
		}
	case *meshproto.ChangesAck:
		if f.DB == s.cfg.DB {
			s.onChangesAck(from, position{f.LSN, f.Seq})
		}
	}
}

// setMembers takes a new membership: the owner may have changed.
func (s *Service) setMembers(ms []Member) {
	s.mu.Lock()
	if s.draining {
		ms = slices.Clone(ms)
		for i := range ms {
			if ms[i].ID == s.cfg.Self {
				ms[i].Draining = true
			}
		}
	}
	before := s.members
	s.noteAbsentLocked(before, ms)
	s.members = ms
	if len(ms) > 1 {
		s.settled = true
	}
	owner := OwnerOf(s.cfg.DB, s.cfg.Regions, ms)
	if owner == s.cfg.Self && s.clustered && !s.settled {
		owner = ""
	}
	var outs []out
	live := map[string]bool{}
	for _, m := range ms {
		live[m.ID] = true
	}
	// What dead members registered goes, and they are no longer waited on.
	for node := range s.regs {
		if !live[node] {
			outs = append(outs, s.dropNodeLocked(node)...)
		}
	}
	for node := range s.acks {
		if !live[node] {
			s.acks[node].stop()
			delete(s.acks, node)
		}
	}
	if owner != s.owner {
		s.log.Info("database owner", "owner", owner, "previous", s.owner)
		prev := s.owner
		s.owner = owner
		if prev == s.cfg.Self {
			s.stopOwningLocked()
		}
		if owner == s.cfg.Self {
			outs = append(outs, s.startOwningLocked(prev, live[prev])...)
		} else if owner != "" {
			outs = append(outs, s.replaceLocked(owner)...)
		}
	} else if s.own != nil {
		outs = append(outs, s.own.membersChangedLocked(s, before, live)...)
	}
	s.mu.Unlock()
	s.flush(outs)
	s.poke()
}

func (s *Service) poke() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Subscribe registers subscriptions of this node's channels with the
// owner and waits until it holds them: from then on, every change
// committed is matched against them. They stay registered (and are sent
// to every new owner) until Unsubscribe, even when Subscribe returns
// ErrNotConfirmed.
func (s *Service) Subscribe(ctx context.Context, subs []*Subscription) error {
	if len(subs) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RegisterTimeout)
	defer cancel()
	s.mu.Lock()
	reg := &meshproto.SubRegister{DB: s.cfg.DB}
	waits := make([]chan error, 0, len(subs))
	for _, sub := range subs {
		sub.Node = s.cfg.Self
		s.local[sub.ID] = sub
		w := make(chan error, 1)
		s.waiters[sub.ID] = w
		waits = append(waits, w)
		reg.Subs = append(reg.Subs, wireSub(sub))
	}
	owner := s.owner
	s.mu.Unlock()
	if owner != "" {
		s.flush([]out{{to: owner, lane: mesh.LaneControl, frame: reg}})
	}
	// Without an owner, the subscriptions go with the Replace sent to the
	// next one.
	defer func() {
		s.mu.Lock()
		for _, sub := range subs {
			delete(s.waiters, sub.ID)
		}
		s.mu.Unlock()
	}()
	for _, w := range waits {
		select {
		case err := <-w:
			if err != nil {
				return err
			}
		case <-ctx.Done():
			return ErrNotConfirmed
		}
	}
	return nil
}

// Unsubscribe removes subscriptions of this node.
func (s *Service) Unsubscribe(ids []uint64) {
	s.mu.Lock()
	for _, id := range ids {
		delete(s.local, id)
	}
	owner := s.owner
	s.mu.Unlock()
	if owner != "" && len(ids) > 0 {
		s.flush([]out{{to: owner, lane: mesh.LaneControl, frame: &meshproto.SubUnregister{DB: s.cfg.DB, IDs: ids}}})
	}
}

func (s *Service) onSubAck(f *meshproto.SubAck) {
	var err error
	if f.Err != "" {
		err = errors.New(f.Err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range f.IDs {
		if w := s.waiters[id]; w != nil {
			select {
			case w <- err:
			default:
			}
		}
	}
}

// replaceLocked is this node's whole set, for a (new) owner, in parts.
func (s *Service) replaceLocked(to string) []out {
	subs := make([]meshproto.Sub, 0, len(s.local))
	for _, sub := range s.local {
		subs = append(subs, wireSub(sub))
	}
	slices.SortFunc(subs, func(a, b meshproto.Sub) int { return cmp.Compare(a.ID, b.ID) })
	var outs []out
	const part = 256 << 10
	var cur *meshproto.SubRegister
	size := 0
	for _, sub := range subs {
		n := len(sub.Schema) + len(sub.Table) + len(sub.Claims) + len(sub.Role) + 32
		for _, c := range sub.Columns {
			n += len(c) + 1
		}
		for _, f := range sub.Filters {
			n += len(f.Column) + len(f.Value) + 4
		}
		if cur == nil || (size > 0 && size+n > part) {
			if cur != nil {
				cur.More = true
				outs = append(outs, out{to: to, lane: mesh.LaneControl, frame: cur})
			}
			cur = &meshproto.SubRegister{DB: s.cfg.DB, Replace: true, Part: uint64(len(outs))}
			size = 0
		}
		cur.Subs = append(cur.Subs, sub)
		size += n
	}
	if cur == nil {
		cur = &meshproto.SubRegister{DB: s.cfg.DB, Replace: true}
	}
	return append(outs, out{to: to, lane: mesh.LaneControl, frame: cur})
}

// resyncControl adds this node's registration to a resync toward the
// owner (its earlier frames may be lost), and a new owner's sync request
// toward a member it still waits for.
func (s *Service) resyncControl(peer string, emit func([]byte) error) error {
	s.mu.Lock()
	var outs []out
	if peer == s.owner {
		outs = s.replaceLocked(peer)
	}
	if s.own != nil && s.own.expect[peer] {
		outs = append(outs, out{frame: &meshproto.SubSync{DB: s.cfg.DB}})
	}
	if a := s.acks[peer]; a != nil && a.due.lsn > 0 {
		outs = append(outs, out{frame: &meshproto.ChangesAck{DB: s.cfg.DB, LSN: a.due.lsn, Seq: a.due.seq}})
	}
	s.mu.Unlock()
	for _, o := range outs {
		if err := emit(meshproto.Append(nil, o.frame)); err != nil {
			return err
		}
	}
	return nil
}

// inbox holds the changes owners sent this node until the delivery
// goroutine takes them: Deliver may wait for a subscriber, and the mesh's
// reading goroutine must not. It needs no bound of its own: an owner sends
// a node at most Window bytes it has not acknowledged, and the node
// acknowledges a change once it is delivered.
type inbox struct {
	mu     sync.Mutex
	frames []inFrame
	wake   chan struct{} // signalled when frames gets one
}

type inFrame struct {
	from string
	f    *meshproto.Changes
}

func (b *inbox) push(from string, f *meshproto.Changes) {
	b.mu.Lock()
	b.frames = append(b.frames, inFrame{from, f})
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

func (b *inbox) take(spare []inFrame) []inFrame {
	b.mu.Lock()
	defer b.mu.Unlock()
	got := b.frames
	b.frames = spare[:0]
	return got
}

// onChanges queues a change from an owner for the delivery goroutine.
func (s *Service) onChanges(from string, f *meshproto.Changes) { s.in.push(from, f) }

// deliverLoop delivers the changes owners sent, in the order they came,
// until ctx ends.
func (s *Service) deliverLoop(ctx context.Context) {
	var batch []inFrame
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.in.wake:
		}
		for batch = s.in.take(batch); len(batch) > 0; batch = s.in.take(batch) {
			for i, it := range batch {
				s.deliverRemote(it.from, it.f)
				batch[i] = inFrame{}
				if ctx.Err() != nil {
					return // what is left was not acknowledged: sent again
				}
			}
		}
	}
}

// deliverRemote delivers a change from the owner, unless it was delivered
// already, and acknowledges it.
func (s *Service) deliverRemote(from string, f *meshproto.Changes) {
	pos := position{f.LSN, f.Seq}
	if s.firstTime(pos) {
		if c, err := DecodeChange(f.Record); err != nil {
			s.log.Error("undecodable change from the owner; skipped", "from", from, "lsn", LSN(f.LSN), "err", err)
		} else {
			s.deliver(c, f.IDs)
		}
	}
	s.ackLater(from, pos)
}

// firstTime records pos as delivered and reports whether it is new. A
// change at or before the last one delivered is the unconfirmed tail that
// a new owner, or a restarted reader, sends again: counted and dropped.
func (s *Service) firstTime(pos position) bool {
	s.mu.Lock()
	dup := !s.last.before(pos)
	if !dup {
		s.last = pos
	}
	s.mu.Unlock()
	if dup {
		s.dupes.Inc()
	}
	return !dup
}

func (s *Service) deliver(c *Change, ids []uint64) {
	s.deliveries.Add(len(ids))
	s.cfg.Deliver(c, ids)
}

// ackState batches the acknowledgements to one owner: the first change
// after a quiet spell starts a short timer, and the timer acknowledges
// everything delivered by then in one frame.
type ackState struct {
	due   position
	timer *time.Timer
}

func (a *ackState) stop() {
	if a.timer != nil {
		a.timer.Stop()
	}
}

// ackDelay is how long acknowledgements are gathered before they go out;
// it delays confirming to Postgres, not delivery.
const ackDelay = 2 * time.Millisecond

func (s *Service) ackLater(to string, pos position) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.acks[to]
	if a == nil {
		a = &ackState{}
		s.acks[to] = a
	}
	if a.due.before(pos) {
		a.due = pos
	}
	if a.timer != nil {
		return
	}
	a.timer = time.AfterFunc(ackDelay, func() {
		s.mu.Lock()
		if s.acks[to] != a {
			s.mu.Unlock()
			return
		}
		a.timer = nil
		ack := &meshproto.ChangesAck{DB: s.cfg.DB, LSN: a.due.lsn, Seq: a.due.seq}
		s.mu.Unlock()
		s.flush([]out{{to: to, lane: mesh.LaneControl, frame: ack}})
	})
}

// Close stops the service's timers; Run stops with its context.
func (s *Service) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.settle != nil {
		s.settle.Stop()
	}
	for _, a := range s.acks {
		a.stop()
	}
	s.acks = map[string]*ackState{}
	if s.own != nil && s.own.takeover != nil {
		s.own.takeover.Stop()
	}
}

// Run delivers the changes owners send this node and streams the
// database while this node owns it, until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	var delivery sync.WaitGroup
	delivery.Go(func() { s.deliverLoop(ctx) })
	defer delivery.Wait()
	s.mu.Lock()
	alone := !s.clustered
	s.mu.Unlock()
	if alone {
		s.setMembers([]Member{s.selfMember()})
	}
	if s.cfg.Reader == nil {
		<-ctx.Done()
		return nil
	}
	return s.read(ctx)
}

// read runs the reader whenever this node owns the database, until ctx
// ends.
func (s *Service) read(ctx context.Context) error {
	for {
		s.mu.Lock()
		own := s.own
		ready := own != nil && len(own.expect) == 0
		s.mu.Unlock()
		if !ready {
			select {
			case <-ctx.Done():
				return nil
			case <-s.kick:
				continue
			}
		}
		rctx, cancel := context.WithCancel(ctx)
		s.mu.Lock()
		if s.own != own {
			s.mu.Unlock()
			cancel()
			continue
		}
		own.cancel = cancel
		batcher := newTxBatcher(own)
		s.cfg.Reader.Handler = batcher
		s.cfg.Reader.TakeOver = own.takeOver
		s.cfg.Reader.OnStreaming = own.onStreaming
		s.cfg.Reader.Keep = s.keep
		s.mu.Unlock()
		s.log.Info("reading the database's changes", "slot", s.cfg.Reader.slot())
		var routing sync.WaitGroup
		routing.Go(func() { batcher.run(rctx) })
		err := s.cfg.Reader.Run(rctx)
		cancel()
		routing.Wait()
		batcher.drain() // what the reader handed over after the router stopped
		if err != nil {
			s.log.Error("change reader stopped", "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(time.Second):
			}
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

// keep is the reader's Keep: a change no subscription matches as it is
// read is dropped then, so a transaction nobody subscribes to costs no
// memory whatever its size. A subscription that registers later did not
// need it: Postgres sends a transaction only once it has committed, so
// one whose reading began before the subscription was acknowledged
// committed before the client's join reply, and the promise (the join
// reply means live) is about commits after it. Runs on the reader's
// goroutine only.
func (s *Service) keep(c *Change) bool {
	s.keepHits = s.matcher.Match(c, s.keepHits[:0])
	hit := len(s.keepHits) > 0
	clear(s.keepHits)
	return hit
}

// position is a change's place in the WAL.
type position struct {
	lsn uint64
	seq uint32
}

func (p position) before(q position) bool {
	return p.lsn < q.lsn || p.lsn == q.lsn && p.seq < q.seq
}

func wireSub(s *Subscription) meshproto.Sub {
	w := meshproto.Sub{ID: s.ID, Schema: s.Schema, Table: s.Table, Event: s.Event.String(), Columns: s.Columns, Role: s.Role, Claims: []byte(s.Claims)}
	for _, f := range s.Filters {
		w.Filters = append(w.Filters, meshproto.SubFilter{Column: f.Column, Op: uint8(f.Op), Value: f.Value, Negate: f.Negate})
	}
	return w
}

func subOf(node string, w *meshproto.Sub) (*Subscription, error) {
	s := &Subscription{ID: w.ID, Node: node, Schema: w.Schema, Table: w.Table, Event: ParseEvent(w.Event),
		Columns: w.Columns, Role: w.Role, Claims: string(w.Claims)}
	for _, f := range w.Filters {
		if f.Op < uint8(OpEq) || f.Op > uint8(OpIsDistinct) {
			return nil, fmt.Errorf("subscription %d: unknown filter operator %d", w.ID, f.Op)
		}
		s.Filters = append(s.Filters, Filter{Column: f.Column, Op: Op(f.Op), Value: f.Value, Negate: f.Negate})
	}
	return s, nil
}
