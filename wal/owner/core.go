// Package owner holds the rules by which the nodes of a cluster share one
// database's change stream through its owner, as a pure state machine in
// the shape of etcd raft's: events go in through Step, the passing of
// time through Tick, and what the node must do comes back as effects
// (frames to send, changes to deliver locally, transactions to confirm,
// the reader to start or stop, subscriptions for the matcher, answers to
// Subscribe). Nothing inside locks, reads a clock, starts a goroutine or
// does I/O; the wal package's Service runs it on one goroutine (its
// driver) and carries out its effects. Matching, row-level security and
// encoding a chunk of changes happen outside, in the router: the core
// gets the routed chunk (Routed) and decides when each change goes out.
//
// The rules:
//   - Ownership: the owner is Of(members): one candidate, the same on every
//     node. A clustered node alone does not own the database until it has
//     seen another member or Config.SettleWait has passed since its first
//     Tick (a node starting beside a running cluster must not read before
//     it knows the cluster's owner). A draining node is no candidate.
//   - Hand-off: a new owner asks every member taking part for its
//     subscriptions (SubSync) and starts the reader once all have
//     answered, or after Config.TakeoverWait. If the previous owner died
//     (it is not a live member), the reader may take the slot over.
//     Every other node sends its whole set to each new owner (Replace, in
//     parts).
//   - Registration: a subscription is acknowledged (SubAck) only once the
//     owner's reader streams: from then on every commit is matched against
//     it. Subscribe's answer waits for that acknowledgement of every one
//     of its subscriptions, at most Config.RegisterTimeout.
//   - Windows: the owner sends a node changes while the bytes it sent and
//     the node has not acknowledged are under Config.Window; the rest of a
//     chunk waits, and the router routes its next chunk (RouteMore) only
//     once all went out and this node's own subscribers took theirs.
//   - Confirmation: a transaction is confirmed once every node it was sent
//     to has acknowledged its last change there, in commit order; nothing
//     is confirmed while a member is absent (below). The reader's forced
//     confirmation (its lag bound) supersedes what it covers.
//   - Absent members: a member that vanished without draining (a crash,
//     or a partition that leaves its clients connected on the other side)
//     is absent for Config.AbsentWait: until it comes back and registers
//     again, or a new incarnation (the same name, another ID) appears, or
//     the wait ends. When it registers again, the reader starts over from
//     the confirmed position, so that it gets what it missed. A member the
//     owner sees only after it began owning (a late member) is asked for
//     its subscriptions and held the same way until they arrive.
//   - Node side: changes are delivered in the order they arrive, each
//     once: one at or before the last delivered (the unconfirmed tail
//     read again) is dropped as a repeat. A node acknowledges to each
//     owner what it delivered, gathered for Config.AckDelay.
//   - History (Config.RecoveryWindow): the owner's account of the changes
//     it keeps for recovery, what the slot may confirm meanwhile (Hold),
//     eviction, and recovery requests waiting for it (history.go).
//   - Resync: a new or reconnected peer, or one whose frames were lost,
//     gets on the control lane this node's whole set if it is the owner,
//     a SubSync if this owner still waits for its set, and the last
//     acknowledgement due to it; on the changes lane, what it has not
//     acknowledged (Core.Resync).
package owner

import (
	"cmp"
	"log/slog"
	"slices"
	"time"

	"github.com/meshcast/meshcast/internal/timerq"
	"github.com/meshcast/meshcast/wal/internal/shrink"
	"github.com/meshcast/meshcast/wire/meshproto"
)

// Config configures a core. Its durations are in the core's clock (the
// times Tick is given).
type Config struct {
	// DB names the database; frames of another are ignored.
	DB string
	// Self is this node's ID.
	Self string
	// Regions lists the regions the owner is preferred in (see Of).
	Regions []string
	// Clustered says this node is in a cluster: alone, it waits
	// SettleWait before it owns the database. A single node owns it at
	// once.
	Clustered bool
	// RegisterTimeout bounds a Subscribe's wait for the owner's
	// acknowledgement; if zero, it has no bound.
	RegisterTimeout time.Duration
	// TakeoverWait bounds a new owner's wait for the members'
	// subscriptions; if zero, it reads at once.
	TakeoverWait time.Duration
	// SettleWait is how long a clustered node alone waits before it owns
	// the database; if zero, it owns it at its first Tick.
	SettleWait time.Duration
	// AbsentWait is how long the owner holds confirmation for a member
	// that vanished without leaving; if zero, it holds nothing.
	AbsentWait time.Duration
	// Window bounds the bytes of changes sent to a node and not
	// acknowledged; if zero, there is no bound.
	Window int
	// AckDelay is how long a node gathers acknowledgements to an owner
	// before it sends them; if zero, they go at the next Tick.
	AckDelay time.Duration
	// RetryWait is how long after a reader that failed the next starts;
	// if zero, at once.
	RetryWait time.Duration
	// RecoveryWindow is how long the owner keeps the changes it read
	// (history.go); if zero, it keeps none and recovery is off.
	RecoveryWindow time.Duration
	// HistoryBytes bounds the history's bytes (as the router counts
	// them); if zero, no bound.
	HistoryBytes int64
	// RecoverWait bounds how long a recovery request waits for the
	// history to reach the asking node; if zero, it does not wait.
	RecoverWait time.Duration
}

// Core is one node's part in sharing the change stream. It is not safe
// for concurrent use.
type Core struct {
	cfg     Config
	now     time.Time
	started bool
	out     []Effect // the effects of the Step or Tick under way
	timers  timerq.Queue[timer]

	members  []Member
	live     map[string]bool
	owner    string // whom this node registers with ("" when none can read)
	settled  bool
	draining bool

	// Node side.
	local  shrink.Map[uint64, meshproto.Sub] // this node's subscriptions
	calls  shrink.Map[uint64, *call]         // Subscribe calls waiting
	callOf shrink.Map[uint64, uint64]        // subscription ID → its call
	last   Pos                               // the last change delivered
	acks   map[string]*ackDue                // due to (former) owners

	// Registrations, kept on every node: a node keeps what was registered
	// with it, whether or not it owns the database yet.
	regs   map[string]*shrink.Map[uint64, struct{}] // by registering node
	parts  map[string]*meshproto.SubRegister        // Replace sets arriving in parts
	absent map[string]absence

	own    *owning // non-nil while this node owns the database
	reader reader
	hist   history // the owner's history of the recovery window
}

// call is a Subscribe waiting for the owner's acknowledgements.
type call struct {
	ids   []uint64
	left  int
	until time.Time
}

// ackDue is what this node owes an owner: the last change delivered, and
// when it is sent (zero: nothing scheduled). due stays after it is sent:
// a resync sends it again.
type ackDue struct {
	due Pos
	at  time.Time
}

// absence is a member that vanished without leaving.
type absence struct {
	name  string
	since time.Time
}

// New returns a core that knows no member yet.
func New(cfg Config) *Core {
	return &Core{
		cfg:    cfg,
		live:   map[string]bool{},
		acks:   map[string]*ackDue{},
		regs:   map[string]*shrink.Map[uint64, struct{}]{},
		parts:  map[string]*meshproto.SubRegister{},
		absent: map[string]absence{},
	}
}

// Step applies one event at the time of the last Tick and returns its
// effects.
func (c *Core) Step(ev Event) []Effect {
	switch ev := ev.(type) {
	case Members:
		c.setMembers(ev.Members)
	case Drain:
		c.draining = true
		c.setMembers(c.members)
	case Subscribe:
		c.subscribe(ev)
	case Unsubscribe:
		c.unsubscribe(ev.IDs)
	case Receive:
		c.receive(ev.From, ev.Frame, ev.Refused)
	case Delivered:
		c.delivered(ev.From, ev.Pos)
	case Routed:
		c.routedHistory(ev)
		c.routed(ev)
	case HistoryFrom:
		c.historyFrom(ev)
	case Streaming:
		c.streaming(ev.Gen)
	case ReaderStopped:
		c.readerStopped(ev)
	case Forced:
		c.forced(ev.LSN)
	case ReadAgain:
		if c.reader.current(ev.Gen) {
			c.restartReader()
		}
	}
	return c.flush()
}

// Tick advances the core's clock to now and returns the effects of what
// fell due: the end of the settle wait, of a takeover wait, of an
// absence, of a Subscribe's wait; acknowledgements to send; a reader to
// start again.
func (c *Core) Tick(now time.Time) []Effect {
	if now.After(c.now) {
		c.now = now
	}
	if !c.started {
		c.started = true
		if c.cfg.Clustered {
			c.after(c.cfg.SettleWait, timer{kind: tSettle})
		}
	}
	for {
		_, t, ok := c.timers.PopDue(c.now)
		if !ok {
			break
		}
		c.fire(t)
	}
	return c.flush()
}

// flush starts the reader if it may run, and returns (and forgets) the
// effects gathered.
func (c *Core) flush() []Effect {
	c.maybeStartReader()
	out := c.out
	c.out = nil
	return out
}

// Deadline returns when the next Tick may have something to do (it may
// find nothing: timers are not removed when what they time is over).
func (c *Core) Deadline() (time.Time, bool) {
	return c.timers.Next()
}

// Owns reports whether this node owns the database.
func (c *Core) Owns() bool { return c.own != nil }

// Owner is the node this node registers with ("" when none).
func (c *Core) Owner() string { return c.owner }

// Members returns the live membership as last stepped (shared: do not
// modify).
func (c *Core) Members() []Member { return c.members }

// Resync returns the frames peer needs on lane after a new connection or
// lost frames, encoded: on the control lane, this node's whole set if peer
// is its owner, a SubSync if this owner still waits for peer, and the last
// acknowledgement due to peer; on the changes lane, the changes peer has
// not acknowledged, in order.
func (c *Core) Resync(peer string, lane Lane) [][]byte {
	var frames [][]byte
	switch lane {
	case LaneControl:
		if peer == c.owner && peer != c.cfg.Self {
			for _, f := range c.replaceFrames() {
				frames = append(frames, meshproto.Append(nil, f))
			}
		}
		if c.own != nil && c.waitsFor(peer) {
			frames = append(frames, meshproto.Append(nil, &meshproto.SubSync{DB: c.cfg.DB}))
		}
		if a := c.acks[peer]; a != nil && a.due.LSN > 0 {
			frames = append(frames, meshproto.Append(nil, &meshproto.ChangesAck{DB: c.cfg.DB, LSN: a.due.LSN, Seq: a.due.Seq}))
		}
	case LaneChanges:
		if c.own != nil {
			if ob := c.own.outbox[peer]; ob != nil {
				for _, s := range ob.frames {
					frames = append(frames, s.frame)
				}
			}
		}
	}
	return frames
}

// waitsFor reports whether this owner waits for peer's subscriptions: a
// member of its takeover, or a late one.
func (c *Core) waitsFor(peer string) bool {
	_, late := c.absent[peer]
	return c.own.expect[peer] || late && c.live[peer]
}

func (c *Core) emit(e Effect) { c.out = append(c.out, e) }

func (c *Core) logf(level slog.Level, msg string, args ...any) {
	c.emit(Log{Level: level, Msg: msg, Args: args})
}

// send emits a frame for node to; one for this node is taken at once.
func (c *Core) send(to string, lane Lane, f meshproto.Frame) {
	if to == c.cfg.Self {
		c.receive(to, f, nil)
		return
	}
	c.emit(Send{To: to, Lane: lane, Frame: f})
}

// receive takes a frame from node from (this one included).
func (c *Core) receive(from string, f meshproto.Frame, refused []uint64) {
	switch f := f.(type) {
	case *meshproto.SubRegister:
		if f.DB == c.cfg.DB {
			c.onRegister(from, f, refused)
		}
	case *meshproto.SubUnregister:
		if f.DB == c.cfg.DB {
			c.onUnregister(from, f.IDs)
		}
	case *meshproto.SubAck:
		if f.DB == c.cfg.DB {
			c.onSubAck(f)
		}
	case *meshproto.SubSync:
		if f.DB == c.cfg.DB {
			c.replace(from)
		}
	case *meshproto.Changes:
		if f.DB == c.cfg.DB {
			c.receiveChange(from, Pos{f.LSN, f.Seq}, f, nil)
		}
	case *meshproto.ChangesAck:
		if f.DB == c.cfg.DB {
			c.onChangesAck(from, Pos{f.LSN, f.Seq})
		}
	case *meshproto.ChangesRecover:
		if f.DB == c.cfg.DB {
			c.onRecover(from, f)
		}
	}
}

// sortedKeys returns m's keys in order: effects come out in the same order
// whatever the map's.
func sortedKeys[K cmp.Ordered, V any](m map[K]V) []K {
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
