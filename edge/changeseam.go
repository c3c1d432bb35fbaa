package edge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/meshcast/meshcast/edge/outq"
	"github.com/meshcast/meshcast/wal"
)

// A channel's postgres_changes seam (issue 18 §4). A join attaches its
// bindings holding: the channel's live changes wait in its seam while the
// node reads Head (the join reply's positions.postgres_changes) or asks
// the change stream for what the client missed since the position it
// gave. After the reply go the recovered changes, then the held live ones
// after them, then live; a live change at or before the seam is dropped
// (the client has it, or it is before the position the reply gave).

// recoverTimeout bounds a join's Recover: a backstop above the change
// stream's own bound on its wait for the owner (wal's RegisterTimeout, 5 s
// by default), whose answer says better why.
const recoverTimeout = 7 * time.Second

// changeSeam is where a channel's change stream starts. Guarded by
// changeSubs.mu.
type changeSeam struct {
	// floor: changes at or before it are not sent live.
	floor wal.Pos
	// holding: live changes after floor go to held, not to the client
	// (until the join reply and what follows it are queued).
	holding bool
	held    []heldChange
	// bytes is the size of the live changes in held, bounded by the
	// connection's queue bound.
	bytes int
	// replied is set once the join reply is queued; past it an overflow
	// closes the connection (cut), before it the held changes are dropped
	// and the seam moves past them (skipped).
	replied bool
	skipped bool
	cut     bool
}

// heldChange is a change a seam holds and the subscription IDs (of the
// channel's bindings) it matched.
type heldChange struct {
	c   *wal.Change
	ids []uint64
}

// pass decides a live change for a channel with a seam: true to send it
// now; false when it is at or before the seam, or held. Called with mu
// held.
func (cs *changeSubs) pass(ch *channel, c *wal.Change, ids []uint64, limit int) bool {
	sm := ch.pgSeam
	p := c.Pos()
	if !sm.floor.Before(p) {
		cs.m.dropped.Inc()
		return false
	}
	if !sm.holding {
		ch.pgSeam = nil // past the seam: changes arrive in order
		return true
	}
	if limit <= 0 {
		limit = 4 << 20
	}
	sm.bytes += changeSize(c)
	if sm.bytes <= limit {
		sm.held = append(sm.held, heldChange{c, ids})
		return false
	}
	cs.m.overflows.Inc()
	if sm.replied {
		sm.cut = true
		return false
	}
	// Before the reply: what it would say is not sent yet, so the seam
	// moves past what is dropped (recovery, if asked, then fails).
	sm.held, sm.bytes, sm.skipped, sm.floor = nil, 0, true, p
	return false
}

// changeSize estimates what a held change costs: its values and a fixed
// overhead.
func changeSize(c *wal.Change) int {
	n := 256
	for _, v := range c.Record {
		n += len(v)
	}
	for _, v := range c.OldRecord {
		n += len(v)
	}
	return n
}

// changesJoin is what a join's postgres_changes say about recovery.
type changesJoin struct {
	held   bool    // the channel has a seam (some binding subscribed)
	seam   wal.Pos // positions.postgres_changes
	asked  bool
	reason string // why recovery failed ("" if it did not)
	sent   int    // recovered changes queued after the reply
}

func (j changesJoin) ok() bool { return !j.asked || j.reason == "" }

// seamChanges attaches a joined channel's subscribed bindings, holding
// their changes, reads the seam and, when the join asked, recovers what
// the client missed (put in front of the held live changes). Called
// without locks held: Recover waits for the owner.
func (s *Server) seamChanges(ch *channel) changesJoin {
	cs := s.changeSubs
	var subs []*wal.Subscription
	cs.mu.Lock()
	for _, b := range ch.bindings {
		if b.shared != nil {
			b.shared.channels[ch] = struct{}{}
			if !slices.Contains(subs, b.shared.sub) {
				subs = append(subs, b.shared.sub)
			}
		}
	}
	if len(subs) == 0 {
		cs.mu.Unlock()
		j := changesJoin{asked: ch.pgAsked}
		if j.asked {
			j.reason = "the channel's postgres_changes did not subscribe"
		}
		return j
	}
	head := s.changes.Head()
	ch.pgSeam = &changeSeam{floor: head, holding: true}
	cs.mu.Unlock()
	j := changesJoin{held: true, seam: head, asked: ch.pgAsked}
	switch {
	case !j.asked:
		return j
	case ch.pgBad != nil:
		j.reason = ch.pgBad.Error()
		return j
	}
	ctx, cancel := context.WithTimeout(context.Background(), recoverTimeout)
	defer cancel()
	go func() { // ends with ctx (cancel is deferred)
		select {
		case <-s.stopping:
			cancel()
		case <-ctx.Done():
		}
	}()
	res, err := s.changes.Recover(ctx, subs, ch.pgAfter)
	if err != nil {
		j.reason = recoverReason(err)
		return j
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	sm := ch.pgSeam
	through := res.Through
	if through.Before(head) {
		through = head // not per the contract; never resend what may be live
	}
	var front []heldChange
	for _, r := range res.Changes {
		if p := r.Change.Pos(); ch.pgAfter.Before(p) && !through.Before(p) {
			front = append(front, heldChange{r.Change, r.IDs})
		}
	}
	live := sm.held[:0]
	for _, h := range sm.held {
		if through.Before(h.c.Pos()) {
			live = append(live, h)
		}
	}
	sm.held = append(front, live...)
	if sm.floor.Before(through) {
		sm.floor = through
	}
	j.seam, j.sent = sm.floor, len(front)
	return j
}

// recoverReason is what the client is told after "recovery failed: ".
func recoverReason(err error) string {
	var re *wal.RecoveryError
	switch {
	case errors.As(err, &re):
		return re.Reason
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return "the change stream did not answer in time"
	}
	return err.Error()
}

// replyChanges settles a join's seam as its reply is about to be queued
// (called in the join's turn on its topic): from now on an overflow of
// the held changes cuts the connection, and one before it fails the
// recovery and moves the seam.
func (s *Server) replyChanges(ch *channel, j changesJoin) changesJoin {
	if !j.held {
		return j
	}
	cs := s.changeSubs
	cs.mu.Lock()
	defer cs.mu.Unlock()
	sm := ch.pgSeam
	if sm == nil { // cannot happen: only the drain lets go of a holding seam
		return j
	}
	sm.replied = true
	j.seam = sm.floor
	if sm.skipped && j.asked && j.reason == "" {
		j.reason = "more changes arrived while recovering than --queue-bytes holds"
		j.sent = 0
	}
	switch {
	case !j.asked:
	case j.reason == "":
		cs.m.ok.Inc()
		cs.m.sent.Add(j.sent)
	default:
		cs.m.failed.Inc()
		// Nothing recovered is sent: the client goes on from the seam.
		if j.sent > 0 {
			sm.held = sm.held[j.sent:]
			j.sent = 0
		}
	}
	return j
}

// drainChanges sends what a joined channel's seam holds, after the join
// reply, then lets live changes through. What the connection's queue
// takes at once goes now; the rest goes from a goroutine of the
// connection (Server.wg), which waits for room as live changes do, so
// that the reader answers the client's frames (heartbeats) meanwhile. It
// gives up when the channel leaves or the connection goes; a connection
// whose held changes outgrow their bound meanwhile is closed as a slow
// consumer. Called without locks held.
func (s *Server) drainChanges(ch *channel) {
	for {
		frames, ok := s.takeHeld(ch)
		if !ok {
			return
		}
		for i, f := range frames {
			switch ch.conn.pushChange(f) {
			case outq.Queued, outq.Start:
			case outq.Full:
				s.changesSent(i)
				s.wg.Add(1) // the connection's reader holds one: Shutdown waits for this too
				go func() {
					defer s.wg.Done()
					s.drainPaced(ch, frames[i:])
				}()
				return
			default:
				return
			}
		}
		s.changesSent(len(frames))
	}
}

// drainPaced sends frames and then what the seam holds, each waiting for
// room in the connection's queue, until the seam lets go.
func (s *Server) drainPaced(ch *channel, frames [][]byte) {
	for {
		for i, f := range frames {
			if !ch.conn.awaitChange(ch, f) {
				s.changesSent(i)
				return
			}
		}
		s.changesSent(len(frames))
		var ok bool
		if frames, ok = s.takeHeld(ch); !ok {
			return
		}
	}
}

// takeHeld takes the frames of what ch's seam holds; false when there is
// nothing (live changes then go straight to the client) or the seam
// overflowed after the reply (the connection is closed).
func (s *Server) takeHeld(ch *channel) ([][]byte, bool) {
	cs := s.changeSubs
	cs.mu.Lock()
	sm := ch.pgSeam
	switch {
	case sm == nil || !sm.holding:
		cs.mu.Unlock()
		return nil, false
	case sm.cut:
		cs.mu.Unlock()
		ch.conn.stalled()
		return nil, false
	case len(sm.held) == 0:
		sm.holding = false // live from here; the floor still drops
		cs.mu.Unlock()
		return nil, false
	}
	batch := sm.held
	sm.held, sm.bytes = nil, 0
	var frames [][]byte
	for _, h := range batch {
		frames = s.appendChannelFrames(frames, ch, h.c, h.ids)
	}
	cs.mu.Unlock()
	return frames, true
}

func (s *Server) changesSent(n int) {
	s.metrics.messagesOut.Add(n)
	s.metrics.changesOut.Add(n)
}

// remap follows a token refresh of a holding channel: its held changes
// name the subscriptions of old, which next (the same bindings, in order)
// replaces. Called with changeSubs.mu held.
func (sm *changeSeam) remap(old, next []binding) {
	to := map[uint64]uint64{}
	for i := range old {
		if old[i].shared != nil && next[i].shared != nil {
			to[old[i].shared.sub.ID] = next[i].shared.sub.ID
		}
	}
	for i, h := range sm.held {
		ids := make([]uint64, 0, len(h.ids)) // h.ids may be shared with other channels
		for _, id := range h.ids {
			if n, ok := to[id]; ok {
				ids = append(ids, n)
			}
		}
		sm.held[i].ids = ids
	}
}

// appendChannelFrames appends the frames of change c for channel ch,
// whose subscriptions ids matched it: one per column set of its bindings,
// as DeliverChange builds them. Called with changeSubs.mu held.
func (s *Server) appendChannelFrames(frames [][]byte, ch *channel, c *wal.Change, ids []uint64) [][]byte {
	g := groupSet{groups: map[groupKey]*changeGroup{}}
	g.add(ch, ids)
	tail := s.changeTail(c)
	for _, grp := range g.order {
		payload := changeMessage(grp.ids, c.AppendData(nil, grp.cols), tail)
		frames = append(frames, textFrame(ch.conn.format, "", "", grp.topic, "postgres_changes", payload))
	}
	return frames
}

// isAbsent reports whether a join config value was not given.
func isAbsent(v json.RawMessage) bool {
	v = bytes.TrimSpace(v)
	return len(v) == 0 || string(v) == "null"
}

// parseChangePos reads a join's change position: a JSON string as
// wal.Pos prints it.
func parseChangePos(v json.RawMessage) (wal.Pos, error) {
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return wal.Pos{}, errors.New(`recover.postgres_changes must be a change position such as "0/16B3748:3"`)
	}
	return wal.ParsePos(s)
}

// seamMetrics count what joins' seams did.
type seamMetrics struct {
	ok, failed *metrics.Counter // joins that asked to recover changes
	sent       *metrics.Counter // recovered changes sent after join replies
	dropped    *metrics.Counter // live changes at or before a seam
	overflows  *metrics.Counter // live changes that outgrew a seam's bound
}

func newSeamMetrics(set *metrics.Set) seamMetrics {
	return seamMetrics{
		ok:        set.GetOrCreateCounter(`meshcast_changes_recovery_joins_total{result="ok"}`),
		failed:    set.GetOrCreateCounter(`meshcast_changes_recovery_joins_total{result="failed"}`),
		sent:      set.GetOrCreateCounter("meshcast_changes_recovered_total"),
		dropped:   set.GetOrCreateCounter("meshcast_changes_seam_dropped_total"),
		overflows: set.GetOrCreateCounter("meshcast_changes_seam_overflows_total"),
	}
}
