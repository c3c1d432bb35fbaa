package owner

import (
	"log/slog"
	"time"

	"github.com/meshcast/meshcast/wire/meshproto"
)

// Pos is a change's place in the WAL: its transaction's commit LSN and its
// sequence number within the transaction.
type Pos struct {
	LSN uint64
	Seq uint32
}

// Before reports whether p comes before q.
func (p Pos) Before(q Pos) bool {
	return p.LSN < q.LSN || p.LSN == q.LSN && p.Seq < q.Seq
}

// Lane is the mesh lane a frame goes on.
type Lane uint8

// The lanes the change stream uses.
const (
	// LaneControl carries registrations, acknowledgements and sync
	// requests: small, ordered, never lost (a lost frame resyncs).
	LaneControl = Lane(meshproto.LaneControl)
	// LaneChanges carries Changes frames, resent from the owner's outbox
	// when the lane resyncs.
	LaneChanges = Lane(meshproto.LaneChanges)
)

// An Event is an input of Step.
type Event interface{ event() }

// Members is the live membership, this node included.
type Members struct{ Members []Member }

// Drain says that this node is leaving: it stops counting itself a
// candidate owner, and hands the reader over if it has it.
type Drain struct{}

// Subscribe registers subscriptions of this node's channels with the
// owner; Subscribed{Call} answers once the owner holds them all (or one
// was refused, or RegisterTimeout passed).
type Subscribe struct {
	Call uint64
	Subs []meshproto.Sub
}

// Unsubscribe removes subscriptions of this node.
type Unsubscribe struct{ IDs []uint64 }

// Receive is a frame from node From (SubRegister, SubUnregister, SubAck,
// SubSync, Changes or ChangesAck; frames of another database are
// ignored). Refused, for a SubRegister, lists the IDs of its
// subscriptions the caller could not take (an unknown operator): they are
// answered with an error and not registered.
type Receive struct {
	From    string
	Frame   meshproto.Frame
	Refused []uint64
}

// Delivered says that the change at Pos from owner From (this node for
// its own changes) was handed to the local subscribers (or dropped as a
// repeat): it may be acknowledged.
type Delivered struct {
	From string
	Pos  Pos
}

// Routed is a chunk of the reader's transactions as the router matched
// them: per change, what goes to each node, and where each transaction
// ends, in commit order. Gen is the reader run's (StartReader.Gen): the
// chunk of a run that was stopped meanwhile is dropped. With a recovery
// window, Head is the chunk's last change and Bytes what its changes
// added to the history (the router appends them before it matches them),
// counted whatever the run.
type Routed struct {
	Gen   int
	Items []Item
	Head  Pos
	Bytes int64
}

// HistoryFrom says that the reader of run Gen streams from From: every
// transaction after it is read.
type HistoryFrom struct {
	Gen  int
	From uint64
}

// Item is one change for one node, or, when Node is empty, the end of the
// transaction Commit: every change of it before this item was routed.
type Item struct {
	Node   string
	Pos    Pos
	Frame  []byte // the encoded Changes frame, for another node
	Local  any    // what Deliver hands this node, for its own subscribers
	Size   int    // the bytes it counts against Node's window
	Commit uint64
	Time   time.Time // the commit's time, with Commit
}

// Streaming says that the reader of run Gen streams: the slot exists,
// so a subscription held from now on sees every later commit.
type Streaming struct{ Gen int }

// ReaderStopped says that the reader of run Gen has returned, with all
// its goroutines; Failed when it stopped without being asked to.
type ReaderStopped struct {
	Gen    int
	Failed bool
}

// Forced says that the reader confirmed LSN without its acknowledgement:
// the slot's lag passed its bound (Reader.MaxSlotLag).
type Forced struct{ LSN uint64 }

// ReadAgain asks for the reader of run Gen to start over from the last
// confirmed position (a transaction could not be read back from disk).
type ReadAgain struct{ Gen int }

func (Members) event()       {}
func (Drain) event()         {}
func (Subscribe) event()     {}
func (Unsubscribe) event()   {}
func (Receive) event()       {}
func (Delivered) event()     {}
func (Routed) event()        {}
func (Streaming) event()     {}
func (ReaderStopped) event() {}
func (Forced) event()        {}
func (ReadAgain) event()     {}
func (HistoryFrom) event()   {}

// An Effect is what the node must do, returned by Step and Tick in the
// order it must be done.
type Effect interface{ effect() }

// Send is a frame for node To on Lane: Frame, or Raw when it is encoded
// already (a Changes frame). Frames to this node never appear: the core
// takes them itself.
type Send struct {
	To    string
	Lane  Lane
	Frame meshproto.Frame
	Raw   []byte
}

// Deliver hands a change to this node's subscribers: Changes from
// another owner, or Local from this one; Dup says it was delivered
// already (a repeat of the unconfirmed tail) and is only to be counted.
// Either way Delivered{From, Pos} follows once it is done: the local
// deliveries go in this order, one at a time.
type Deliver struct {
	From    string
	Pos     Pos
	Changes *meshproto.Changes
	Local   any
	Dup     bool
}

// Confirm accepts every transaction up to LSN: the reader may confirm it
// to Postgres.
type Confirm struct{ LSN uint64 }

// StartReader starts a run of the reader, from the slot's confirmed
// position; TakeOver lets it take the slot from a silent consumer (the
// previous owner died).
type StartReader struct {
	Gen      int
	TakeOver bool
}

// StopReader stops run Gen; ReaderStopped follows once it has.
type StopReader struct{ Gen int }

// RouteMore lets the router of run Gen route its next chunk: every change
// of the last one went out (no window is full) and this node's own
// subscribers took theirs.
type RouteMore struct{ Gen int }

// AddSubs adds subscriptions of Node to the matcher (replacing those with
// their IDs); RemoveSubs removes some. Fresh says they are new (not a
// node's whole set sent again to a new owner): a change read before they
// were added reaches them only if a subscription that was there matches
// it too, so that a transaction read before a join is not delivered to
// it in part.
type AddSubs struct {
	Node  string
	Subs  []meshproto.Sub
	Fresh bool
}

// RemoveSubs removes subscriptions from the matcher.
type RemoveSubs struct{ IDs []uint64 }

// Subscribed answers Subscribe{Call}: Err is the owner's refusal ("" when
// it holds them all); TimedOut, that RegisterTimeout passed first.
type Subscribed struct {
	Call     uint64
	Err      string
	TimedOut bool
}

// Dropped says that the owner stopped matching this node's subscriptions
// IDs, for Err (they cost too much): their channels must be told.
type Dropped struct {
	IDs []uint64
	Err string
}

// Log is a line for the node's log.
type Log struct {
	Level slog.Level
	Msg   string
	Args  []any
}

// Hold bounds what the reader may confirm to Postgres: at most LSN
// (NoHold: no bound), so that the slot keeps what the history holds
// (history.go). The reader's lag bound still wins.
type Hold struct{ LSN uint64 }

// Evict drops the history's changes at or before Through; Bytes says it
// was for the byte budget (else for the window, or a reset).
type Evict struct {
	Through Pos
	Bytes   bool
}

// ServeRecovery answers Req from node To from the history, which is
// complete through Through: the changes after the request's position up
// to Through that its subscriptions match and may see (the driver checks
// the history holds them all, matches and authorizes them, and sends the
// answer).
type ServeRecovery struct {
	To      string
	Req     *meshproto.ChangesRecover
	Through Pos
}

// Answer is an answer to a recovery request for node To (this node's
// own included): a failure (Frame.Err).
type Answer struct {
	To    string
	Frame *meshproto.ChangesRecovered
}

func (Hold) effect()          {}
func (Evict) effect()         {}
func (ServeRecovery) effect() {}
func (Answer) effect()        {}
func (Send) effect()          {}
func (Deliver) effect()       {}
func (Confirm) effect()       {}
func (StartReader) effect()   {}
func (StopReader) effect()    {}
func (RouteMore) effect()     {}
func (AddSubs) effect()       {}
func (RemoveSubs) effect()    {}
func (Subscribed) effect()    {}
func (Dropped) effect()       {}
func (Log) effect()           {}
