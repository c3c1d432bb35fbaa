package wal

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/cespare/xxhash/v2"

	"github.com/meshcast/meshcast/wal/owner"
	"github.com/meshcast/meshcast/wire/meshproto"
)

// A Service is one node's part in streaming a database's changes to the
// cluster. Every node has one: it registers its channels' subscriptions
// with the database's owner and hands the changes the owner sends it to
// its Deliver function. The owner — one node, chosen by OwnerOf among the
// members that can read the database — also runs the Reader, matches each
// change against every node's subscriptions, sends each node one Changes
// frame per change with the IDs it matches, and confirms a transaction to
// Postgres only once every node it was sent to has acknowledged it. When
// the owner goes, the next one asks every node for its subscriptions, then
// resumes from the slot's confirmed position; nodes drop changes they have
// delivered already, so a failover repeats at most the unconfirmed tail
// and loses nothing.
//
// The rules live in package owner, a pure state machine; the Service is
// its driver: one goroutine (Run's) owns the core, steps it with what
// arrives (frames, membership, calls, the reader's and the router's
// progress), ticks it on its deadlines, and carries out its effects —
// sending frames on the Bus, handing changes to the delivery goroutine,
// confirming to the Reader, starting and stopping reader runs. Matching,
// row-level security and encoding happen on the router's goroutine, one
// chunk at a time, which waits for the core's leave to go on (flow
// control).
//
// On a single node (no Bus), the node is the owner and nothing crosses a
// network.
type Service struct {
	cfg     ServiceConfig
	log     *slog.Logger
	bus     Bus
	reader  *Reader // the Service's own, configured from cfg.Reader; nil: cannot read
	matcher *Matcher
	next    atomic.Uint32
	calls   atomic.Uint64

	mail mailbox       // inputs for the driver
	out  deliveryQueue // Deliver effects, for the delivery goroutine
	stop chan struct{} // closed once Run returns (or by Close): Resync stops waiting
	once sync.Once

	// Read by the metrics and tests; written by the driver.
	owns    atomic.Bool
	nMember atomic.Int32

	deliveries *metrics.Counter
	dupes      *metrics.Counter

	// head is Head's: raised before Deliver, and by SubAcks.
	head headPos
	// store is the owner's history of the recovery window (history.go).
	store   *changeStore
	answers answerBox     // Recover calls waiting for the owner
	serving chan struct{} // recoveries being served (at most maxServing)

	regexSkipped *metrics.Counter
	recoveries   *metrics.Counter // recoveries this node asked for that succeeded
	served       *metrics.Counter // recoveries this owner answered

	// keepHits is keep's scratch, used by the reader's goroutine only.
	keepHits []*Subscription
}

// ServiceConfig configures a Service.
type ServiceConfig struct {
	// DB names the database; every node configured with it is a candidate
	// owner (the cluster must advertise the same). Required.
	DB string
	// Self is this node's ID (its cluster member ID). Required.
	Self string
	// Regions lists the regions the owner is preferred in, in order (see
	// OwnerOf); if empty, any.
	Regions []string
	// Bus connects the Service to the other members; if nil, the node is
	// alone and owns the database at once.
	Bus Bus
	// Reader configures the reading of the database while this node owns
	// it; the Service reads with a copy of its own (its Handler, TakeOver,
	// Keep and OnStreaming are ignored), and the caller's is left as it
	// is. If nil, this node cannot read the database itself.
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
	// acknowledgement; if zero, 5s.
	RegisterTimeout time.Duration
	// TakeoverWait bounds how long a new owner waits for every member's
	// subscriptions before it starts reading; if zero, 2s.
	TakeoverWait time.Duration
	// Window bounds the bytes of changes sent to one node and not yet
	// acknowledged; the owner reads no further meanwhile. If zero, 4 MiB.
	Window int
	// SettleWait is how long a cluster node alone after its start waits
	// before it owns the database itself; if zero, 3s.
	SettleWait time.Duration
	// AbsentWait is how long the owner waits for a member that vanished
	// without leaving (a crash, or a partition) to come back before it
	// confirms the changes that member missed; if zero, 60s. Until then
	// the owner confirms nothing; a member that comes back in time
	// registers again and gets every change it missed (the owner reads the
	// unconfirmed tail again; the others drop what they had). A new
	// incarnation of the member (the same name) ends the wait at once: the
	// old one is gone for good.
	AbsentWait time.Duration
	// RegexValueBytes bounds the bytes of a value a match or imatch
	// filter scans on the owner's routing path: a longer value does not
	// match such a filter, negated or not (its binding does not see the
	// change), counted in meshcast_wal_regex_skipped_total. If zero,
	// DefaultRegexValueBytes; if negative, no bound.
	RegexValueBytes int
	// RecoveryWindow is how long the owner keeps the changes it read, so
	// that Recover can find what a client missed (edge's
	// --recovery-window); the owner confirms the slot only past what the
	// window no longer needs. If zero, recovery is off: no history, and
	// Recover fails.
	RecoveryWindow time.Duration
	// HistoryBytes bounds the memory of the owner's history of the
	// recovery window (oldest changes evicted first: recovery from before
	// them fails); if zero, DefaultHistoryBytes; if negative, only the
	// window bounds it.
	HistoryBytes int
	// Logger receives the service's logs; if nil, slog.Default().
	Logger *slog.Logger
	// Metrics receives the service's metrics; if nil, a set of its own.
	Metrics *metrics.Set
}

// ErrNotConfirmed is returned by Subscribe when the owner did not
// acknowledge the subscriptions in time; they stay registered and are
// sent again to every new owner, but changes committed meanwhile may be
// missed.
var ErrNotConfirmed = errors.New("the database's change stream did not confirm the subscription in time")

// DefaultRegexValueBytes is ServiceConfig.RegexValueBytes's default: a
// match or imatch pattern within edge's default bound (64 instructions)
// costs at most some 20 ms on a value this long (a 24-instruction one took
// 8 ms on the 2-core development box, and 0.3 s on 100 KB).
const DefaultRegexValueBytes = 8 << 10

// DefaultHistoryBytes is ServiceConfig.HistoryBytes's default.
const DefaultHistoryBytes = 64 << 20

// ackDelay is how long acknowledgements are gathered before they go out;
// it delays confirming to Postgres, not delivery.
const ackDelay = 2 * time.Millisecond

// NewService returns a Service; Run starts it.
func NewService(cfg ServiceConfig) *Service {
	cfg.RegisterTimeout = orDuration(cfg.RegisterTimeout, 5*time.Second)
	cfg.TakeoverWait = orDuration(cfg.TakeoverWait, 2*time.Second)
	cfg.SettleWait = orDuration(cfg.SettleWait, 3*time.Second)
	cfg.AbsentWait = orDuration(cfg.AbsentWait, time.Minute)
	if cfg.RegexValueBytes == 0 {
		cfg.RegexValueBytes = DefaultRegexValueBytes
	}
	if cfg.Window == 0 {
		cfg.Window = 4 << 20
	}
	if cfg.HistoryBytes == 0 {
		cfg.HistoryBytes = DefaultHistoryBytes
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
		bus:     cfg.Bus,
		mail:    newMailbox(),
		out:     deliveryQueue{wake: make(chan struct{}, 1)},
		stop:    make(chan struct{}),
		store:   newChangeStore(cfg.RecoveryWindow > 0),
		serving: make(chan struct{}, maxServing),
	}
	s.regexSkipped = cfg.Metrics.NewCounter("meshcast_wal_regex_skipped_total")
	s.matcher = NewMatcherBounded(cfg.RegexValueBytes, s.regexSkipped)
	if cfg.Reader != nil {
		s.reader = cfg.Reader.clone()
		s.reader.Keep = s.keep
		s.reader.onForced = func(lsn LSN) { s.mail.push(owner.Forced{LSN: uint64(lsn)}) }
		s.reader.holdOn = cfg.RecoveryWindow > 0
		s.reader.markIdle = cfg.RecoveryWindow > 0
	}
	s.recoveries = cfg.Metrics.NewCounter("meshcast_wal_recoveries_total")
	s.served = cfg.Metrics.NewCounter("meshcast_wal_recoveries_served_total")
	cfg.Metrics.NewGauge("meshcast_wal_history_bytes", func() float64 { b, _ := s.store.stats(); return float64(b) })
	cfg.Metrics.NewGauge("meshcast_wal_history_changes", func() float64 { _, n := s.store.stats(); return float64(n) })
	s.deliveries = cfg.Metrics.NewCounter("meshcast_wal_deliveries_total")
	s.dupes = cfg.Metrics.NewCounter("meshcast_wal_duplicates_dropped_total")
	cfg.Metrics.NewGauge("meshcast_wal_owner", func() float64 {
		if s.owns.Load() {
			return 1
		}
		return 0
	})
	cfg.Metrics.NewGauge("meshcast_wal_subscriptions", func() float64 { return float64(s.matcher.Len()) })
	return s
}

func orDuration(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// coreConfig is the owner core's configuration.
func (s *Service) coreConfig() owner.Config {
	return owner.Config{DB: s.cfg.DB, Self: s.cfg.Self, Regions: s.cfg.Regions, Clustered: s.bus != nil,
		RegisterTimeout: s.cfg.RegisterTimeout, TakeoverWait: s.cfg.TakeoverWait, SettleWait: s.cfg.SettleWait,
		AbsentWait: s.cfg.AbsentWait, Window: s.cfg.Window, AckDelay: ackDelay, RetryWait: time.Second,
		RecoveryWindow: s.cfg.RecoveryWindow, HistoryBytes: int64(s.cfg.HistoryBytes), RecoverWait: s.cfg.RegisterTimeout}
}

// NewID returns a subscription ID for this node: cluster-unique with
// overwhelming likelihood (its high 21 bits come from the node ID, the
// low 32 count), at most 2^53-1 as realtime-js needs, and telling which
// node holds it.
func (s *Service) NewID() uint64 {
	return (xxhash.Sum64String(s.cfg.Self)&(1<<21-1))<<32 | uint64(s.next.Add(1))
}

// CanRead reports whether this node can read the database (a candidate
// owner): the cluster advertises it.
func (s *Service) CanRead() bool { return s.reader != nil }

// Owns reports whether this node owns the database's change stream.
func (s *Service) Owns() bool { return s.owns.Load() }

// SetDraining hands the reader over before this node leaves: it stops
// counting itself a candidate owner.
func (s *Service) SetDraining() { s.mail.push(owner.Drain{}) }

// SetMembers takes the live membership, this node included (the Bus's
// side of the seam: call it on every change).
func (s *Service) SetMembers(ms []Member) { s.mail.push(owner.Members{Members: ms}) }

// Receive takes a frame of FrameTypes from member from (the Bus's side of
// the seam); it does not block on the Service's work.
func (s *Service) Receive(from string, f meshproto.Frame) {
	switch f := f.(type) {
	case *meshproto.ChangesRecovered:
		if f.DB == s.cfg.DB {
			s.answers.deliver(f)
		}
		return
	case *meshproto.SubAck:
		// Raised before the core answers Subscribe: Head is at least
		// the owner's head once Subscribe returns.
		if f.DB == s.cfg.DB && f.Err == "" {
			s.head.raise(Pos{LSN(f.LSN), f.Seq})
		}
	}
	ev := owner.Receive{From: from, Frame: f}
	if reg, ok := f.(*meshproto.SubRegister); ok {
		for i := range reg.Subs {
			if _, err := subOf(from, &reg.Subs[i]); err != nil {
				s.log.Warn("refusing a subscription", "from", from, "err", err)
				ev.Refused = append(ev.Refused, reg.Subs[i].ID)
			}
		}
	}
	s.mail.push(ev)
}

// Resync returns the frames peer needs on lane after a new connection or
// lost frames, encoded (the Bus's side of the seam: the cluster writes
// them before anything queued). It waits for the driver; nil once the
// Service has stopped.
func (s *Service) Resync(peer string, lane Lane) [][]byte {
	reply := make(chan [][]byte, 1)
	s.mail.push(resyncReq{peer: peer, lane: lane, reply: reply})
	select {
	case frames := <-reply:
		return frames
	case <-s.stop:
		return nil
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
	req := subscribeReq{call: s.calls.Add(1), reply: make(chan owner.Subscribed, 1)}
	for _, sub := range subs {
		sub.Node = s.cfg.Self
		req.subs = append(req.subs, wireSub(sub))
	}
	s.mail.push(req)
	select {
	case r := <-req.reply:
		switch {
		case r.Err != "":
			return errors.New(r.Err)
		case r.TimedOut:
			return ErrNotConfirmed
		}
		return nil
	case <-ctx.Done():
		s.mail.push(forgetCall{req.call})
		return ErrNotConfirmed
	}
}

// Unsubscribe removes subscriptions of this node.
func (s *Service) Unsubscribe(ids []uint64) {
	if len(ids) > 0 {
		s.mail.push(owner.Unsubscribe{IDs: ids})
	}
}

// Close releases what Run left; Run stops with its context.
func (s *Service) Close() { s.once.Do(func() { close(s.stop) }) }

// Run drives the service until ctx ends: it delivers the changes owners
// send this node and streams the database while this node owns it.
func (s *Service) Run(ctx context.Context) error {
	defer s.Close()
	var wg sync.WaitGroup
	wg.Go(func() { s.deliverLoop(ctx) })
	d := newDriver(s)
	if s.bus == nil {
		s.SetMembers([]Member{{ID: s.cfg.Self, DB: s.cfg.DB, Reader: s.reader != nil}})
	}
	d.run(ctx, &wg)
	wg.Wait()
	return nil
}

// keep is the reader's Keep: a change no subscription matches as it is
// read is dropped then, so a transaction nobody subscribes to costs no
// memory whatever its size. A subscription that registers later did not
// need it: Postgres sends a transaction only once it has committed, so
// one whose reading began before the subscription was acknowledged
// committed before the client's join reply, and the promise (the join
// reply means live) is about commits after it. With a recovery window it
// keeps every change: the history needs those nobody matches now (a
// client's subscription is gone while it is disconnected). Runs on the
// reader's goroutine only.
func (s *Service) keep(c *Change) bool {
	if s.cfg.RecoveryWindow > 0 {
		return true // the history keeps every change
	}
	s.keepHits = s.matcher.Match(c, s.keepHits[:0])
	hit := len(s.keepHits) > 0
	clear(s.keepHits)
	return hit
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
