package owner

import (
	"cmp"
	"slices"

	"github.com/meshcast/meshcast/wire/meshproto"
)

// The node side: this node's subscriptions, registered with the owner,
// and the changes owners send it.

// subscribe keeps subs as this node's, and registers them with the owner.
// Without an owner, they go with the Replace sent to the next one.
func (c *Core) subscribe(ev Subscribe) {
	cl := &call{}
	for _, s := range ev.Subs {
		c.local.Put(s.ID, s)
		if prev, ok := c.callOf.M[s.ID]; !ok || prev != ev.Call {
			cl.ids = append(cl.ids, s.ID)
		}
		c.callOf.Put(s.ID, ev.Call)
	}
	cl.left = len(cl.ids)
	if cl.left == 0 {
		c.emit(Subscribed{Call: ev.Call})
		return
	}
	c.calls.Put(ev.Call, cl)
	if c.cfg.RegisterTimeout > 0 {
		cl.until = c.after(c.cfg.RegisterTimeout, timer{kind: tCall, call: ev.Call})
	}
	if c.owner != "" {
		c.send(c.owner, LaneControl, &meshproto.SubRegister{DB: c.cfg.DB, Subs: slices.Clone(ev.Subs)})
	}
}

// unsubscribe forgets subscriptions of this node, at the owner too.
func (c *Core) unsubscribe(ids []uint64) {
	for _, id := range ids {
		c.local.Delete(id)
	}
	if c.owner != "" && len(ids) > 0 {
		c.send(c.owner, LaneControl, &meshproto.SubUnregister{DB: c.cfg.DB, IDs: slices.Clone(ids)})
	}
}

// onSubAck takes an owner's answer to registrations: each acknowledged
// subscription counts toward its Subscribe; a refusal answers it at once.
// A refusal of a subscription no Subscribe waits for is the owner
// dropping it (it costs too much to match): its channels are told.
func (c *Core) onSubAck(f *meshproto.SubAck) {
	var dropped []uint64
	for _, id := range f.IDs {
		callID, waiting := c.callOf.M[id]
		if !waiting {
			if _, ok := c.local.M[id]; ok && f.Err != "" {
				dropped = append(dropped, id)
			}
			continue
		}
		c.callOf.Delete(id)
		cl := c.calls.M[callID]
		if cl == nil {
			continue
		}
		if f.Err != "" {
			c.finish(callID, cl, f.Err, false)
			continue
		}
		if cl.left--; cl.left == 0 {
			c.finish(callID, cl, "", false)
		}
	}
	if len(dropped) > 0 {
		c.emit(Dropped{IDs: dropped, Err: f.Err})
	}
}

// finish answers a Subscribe.
func (c *Core) finish(callID uint64, cl *call, err string, timedOut bool) {
	c.calls.Delete(callID)
	for _, id := range cl.ids {
		if c.callOf.M[id] == callID {
			c.callOf.Delete(id)
		}
	}
	c.emit(Subscribed{Call: callID, Err: err, TimedOut: timedOut})
}

// replace sends this node's whole set to a (new) owner.
func (c *Core) replace(to string) {
	for _, f := range c.replaceFrames() {
		c.send(to, LaneControl, f)
	}
}

// replacePart bounds (about) the subscriptions of one Replace frame.
const replacePart = 256 << 10

// replaceFrames is this node's whole set as Replace frames, in parts of
// about replacePart bytes, by subscription ID.
func (c *Core) replaceFrames() []*meshproto.SubRegister {
	subs := make([]meshproto.Sub, 0, c.local.Len())
	for _, s := range c.local.M {
		subs = append(subs, s)
	}
	slices.SortFunc(subs, func(a, b meshproto.Sub) int { return cmp.Compare(a.ID, b.ID) })
	var frames []*meshproto.SubRegister
	cur := &meshproto.SubRegister{DB: c.cfg.DB, Replace: true}
	size := 0
	for _, s := range subs {
		n := subSize(&s)
		if size > 0 && size+n > replacePart {
			cur.More = true
			frames = append(frames, cur)
			cur = &meshproto.SubRegister{DB: c.cfg.DB, Replace: true, Part: uint64(len(frames))}
			size = 0
		}
		cur.Subs = append(cur.Subs, s)
		size += n
	}
	return append(frames, cur)
}

// subSize estimates a subscription's bytes in a frame.
func subSize(s *meshproto.Sub) int {
	n := len(s.Schema) + len(s.Table) + len(s.Claims) + len(s.Role) + 32
	for _, col := range s.Columns {
		n += len(col) + 1
	}
	for _, f := range s.Filters {
		n += len(f.Column) + len(f.Value) + 4
	}
	return n
}

// receiveChange takes a change from an owner (this node for its own
// subscribers) for delivery: once, in order. One at or before the last
// delivered is the unconfirmed tail that a new owner, or a restarted
// reader, sends again: it is counted and dropped, and acknowledged like
// the others once the deliveries before it are done.
func (c *Core) receiveChange(from string, pos Pos, f *meshproto.Changes, local any) {
	dup := !c.last.Before(pos)
	if !dup {
		c.last = pos
	}
	c.emit(Deliver{From: from, Pos: pos, Changes: f, Local: local, Dup: dup})
}

// delivered acknowledges a delivered change: to this node's own owner
// state at once, to another owner after AckDelay, batched.
func (c *Core) delivered(from string, pos Pos) {
	if from == c.cfg.Self {
		c.onChangesAck(from, pos)
		return
	}
	if !c.live[from] {
		return // gone: nobody to acknowledge to
	}
	a := c.acks[from]
	if a == nil {
		a = &ackDue{}
		c.acks[from] = a
	}
	if a.due.Before(pos) {
		a.due = pos
	}
	if a.at.IsZero() {
		a.at = c.after(c.cfg.AckDelay, timer{kind: tAck, key: from})
	}
}

func ackFrame(db string, p Pos) *meshproto.ChangesAck {
	return &meshproto.ChangesAck{DB: db, LSN: p.LSN, Seq: p.Seq}
}

func subAck(db string, ids []uint64) *meshproto.SubAck { return &meshproto.SubAck{DB: db, IDs: ids} }
