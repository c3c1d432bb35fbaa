package owner

import (
	"log/slog"
	"slices"

	"github.com/meshcast/meshcast/wire/meshproto"
)

// setMembers takes a new membership: the owner may have changed, members
// may have vanished (absent) or appeared.
func (c *Core) setMembers(ms []Member) {
	if c.draining {
		ms = slices.Clone(ms)
		for i := range ms {
			if ms[i].ID == c.cfg.Self {
				ms[i].Draining = true
			}
		}
	}
	before := c.members
	c.noteAbsent(before, ms)
	c.members = ms
	clear(c.live)
	for _, m := range ms {
		c.live[m.ID] = true
	}
	if len(ms) > 1 {
		c.settled = true
	}
	owner := Of(c.cfg.DB, c.cfg.Regions, ms)
	if owner == c.cfg.Self && c.cfg.Clustered && !c.settled {
		owner = ""
	}
	// What dead members registered goes, and they are no longer waited on.
	for _, node := range sortedKeys(c.regs) {
		if !c.live[node] {
			c.dropNode(node)
		}
	}
	for node := range c.parts {
		if !c.live[node] {
			delete(c.parts, node)
		}
	}
	for node := range c.acks {
		if !c.live[node] {
			delete(c.acks, node)
		}
	}
	if owner == c.owner {
		if c.own != nil {
			c.membersChanged(before)
		}
		return
	}
	c.logf(slog.LevelInfo, "database owner", "owner", owner, "previous", c.owner)
	prev := c.owner
	c.owner = owner
	if prev == c.cfg.Self {
		c.stopOwning()
	}
	if owner == c.cfg.Self {
		c.startOwning(prev, c.live[prev])
	} else if owner != "" {
		c.replace(owner)
	}
}

// noteAbsent updates the absent members from a change of the member
// list: a participant that vanished without draining is absent; a live
// one with its name and another ID ends its absence (it restarted); one
// that is live again ends it at once on a node that does not own the
// database, and on the owner when it registers again (back).
func (c *Core) noteAbsent(before, now []Member) {
	live := map[string]bool{}
	names := map[string]string{}
	for _, m := range now {
		live[m.ID] = true
		if m.Name != "" {
			names[m.Name] = m.ID
		}
	}
	for _, m := range before {
		if m.ID != c.cfg.Self && m.DB == c.cfg.DB && !m.Draining && !live[m.ID] {
			c.markAbsent(m.ID, m.Name, "a member vanished without leaving; confirming nothing until it is back")
		}
	}
	for _, id := range sortedKeys(c.absent) {
		a := c.absent[id]
		switch {
		case a.name != "" && names[a.name] != "" && names[a.name] != id:
			c.logf(slog.LevelInfo, "an absent member restarted; it missed nothing its clients can still get", "member", id, "now", names[a.name])
			delete(c.absent, id)
		case live[id] && c.own == nil:
			delete(c.absent, id)
		}
	}
	c.advance()
}

// markAbsent holds confirmation for member id for AbsentWait.
func (c *Core) markAbsent(id, name, why string) {
	if c.cfg.AbsentWait <= 0 {
		return
	}
	c.absent[id] = absence{name: name, since: c.now}
	c.after(c.cfg.AbsentWait, timer{kind: tAbsent, key: id, since: c.now})
	c.logf(slog.LevelInfo, why, "member", id, "for_at_most", c.cfg.AbsentWait)
}

// membersChanged drops members that left from what the owner waits for,
// and takes in the members it sees for the first time. Such a member may
// hold subscriptions an earlier owner acknowledged (this node saw it
// late: it had just restarted, say), and the owner may have read past
// changes they match already: it asks the member for its subscriptions
// and, until they arrive, holds it absent, confirming nothing; when they
// do, the reader reads the unconfirmed tail again for it (back), as for a
// member back from a partition.
func (c *Core) membersChanged(before []Member) {
	o := c.own
	for id := range o.expect {
		if !c.live[id] {
			delete(o.expect, id)
		}
	}
	known := map[string]bool{}
	for _, m := range before {
		known[m.ID] = true
	}
	for _, m := range c.members {
		if known[m.ID] || m.ID == c.cfg.Self || m.DB != c.cfg.DB || o.expect[m.ID] {
			continue
		}
		if _, absent := c.absent[m.ID]; !absent {
			c.markAbsent(m.ID, m.Name, "a member appeared after this node began owning the database; confirming nothing until it registers")
		}
		c.send(m.ID, LaneControl, &meshproto.SubSync{DB: c.cfg.DB})
	}
}

// back ends the absence of a member that registered again with this
// owner: the reader starts over from the last confirmed position, so that
// the member gets every change it missed; the other nodes drop the ones
// they had. A member without subscriptions missed nothing.
func (c *Core) back(node string, subscribed bool) {
	if _, ok := c.absent[node]; !ok {
		return
	}
	delete(c.absent, node)
	if c.own == nil || !subscribed || !c.reader.running {
		// Not reading yet: it starts from the confirmed position.
		c.advance()
		return
	}
	c.logf(slog.LevelInfo, "a member that was cut off is back; reading the changes it missed again", "member", node)
	c.restartReader()
}

// startOwning makes this node the owner: it asks every other member for
// its subscriptions and reads once all have answered, or after
// TakeoverWait.
func (c *Core) startOwning(prev string, prevAlive bool) {
	o := newOwning(prev != "" && !prevAlive)
	c.own = o
	c.resetHistory()
	for _, m := range c.members {
		// Only members that take part in the database run a Service,
		// and only they can hold subscriptions of it.
		if m.ID != c.cfg.Self && m.DB == c.cfg.DB {
			o.expect[m.ID] = true
			c.send(m.ID, LaneControl, &meshproto.SubSync{DB: c.cfg.DB})
		}
	}
	// This node registers its own subscriptions with itself, as any
	// member does with a new owner.
	c.replace(c.cfg.Self)
	if len(o.expect) > 0 {
		c.after(c.cfg.TakeoverWait, timer{kind: tTakeover, own: o})
	}
	c.logf(slog.LevelInfo, "this node owns the database's change stream", "waiting_for", len(o.expect))
}

// stopOwning gives ownership up: the reader stops; what was not
// acknowledged is the next owner's to send again.
func (c *Core) stopOwning() {
	if c.own == nil {
		return
	}
	c.stopReader()
	c.own = nil
	c.resetHistory()
	c.logf(slog.LevelInfo, "this node no longer owns the database's change stream")
}
