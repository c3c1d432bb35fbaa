package owner

import (
	"log/slog"
	"time"
)

// timer is something falling due at at. Timers are not removed when what
// they time is over or rescheduled: fire checks they are still current.
type timer struct {
	at    time.Time
	kind  timerKind
	key   string    // tAbsent: the member; tAck: the owner
	call  uint64    // tCall
	own   *owning   // tTakeover
	since time.Time // tAbsent: the absence it ends
}

type timerKind uint8

const (
	tSettle   timerKind = iota // a clustered node alone may own the database
	tTakeover                  // a new owner stops waiting for subscriptions
	tAbsent                    // an absent member is given up on
	tAck                       // acknowledgements to an owner go out
	tCall                      // a Subscribe stops waiting
	tRetry                     // a failed reader may start again
	tExpire                    // the history's oldest transaction leaves the window
	tRecover                   // a recovery request stops waiting
)

// after schedules t in d.
func (c *Core) after(d time.Duration, t timer) time.Time {
	t.at = c.now.Add(d)
	c.timers.Add(t.at, t)
	return t.at
}

// fire carries out a timer that fell due, if it is still current.
func (c *Core) fire(t timer) {
	switch t.kind {
	case tSettle:
		if !c.settled {
			c.settled = true
			c.setMembers(c.members)
		}
	case tTakeover:
		if c.own == t.own && len(t.own.expect) > 0 {
			c.logf(slog.LevelWarn, "starting to read without every member's subscriptions", "missing", len(t.own.expect))
			clear(t.own.expect)
		}
	case tAbsent:
		if a, ok := c.absent[t.key]; ok && a.since.Equal(t.since) {
			c.logf(slog.LevelWarn, "a member that vanished did not come back in time; confirming the changes it missed: it will not get them",
				"member", t.key, "absent_wait", c.cfg.AbsentWait)
			delete(c.absent, t.key)
			c.advance()
		}
	case tAck:
		if a := c.acks[t.key]; a != nil && a.at.Equal(t.at) {
			a.at = time.Time{}
			c.send(t.key, LaneControl, ackFrame(c.cfg.DB, a.due))
		}
	case tCall:
		if cl := c.calls.M[t.call]; cl != nil && cl.until.Equal(t.at) {
			c.finish(t.call, cl, "", true)
		}
	case tExpire:
		c.expire()
	case tRecover:
		c.checkWaits()
	case tRetry:
		// maybeStartReader, after every Tick, looks at retryAt.
	}
}
