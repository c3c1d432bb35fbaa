package owner

import (
	"slices"

	"github.com/meshcast/meshcast/wal/internal/shrink"
	"github.com/meshcast/meshcast/wire/meshproto"
)

// The registrations every node keeps of what other nodes (and itself)
// registered with it, whether or not it owns the database yet: the
// matcher holds them (AddSubs, RemoveSubs), the core their IDs by node.

// refusedText is what a node's channel is told of a subscription the
// owner cannot take.
const refusedText = "Unable to subscribe to changes with given parameters"

// onRegister takes subscriptions from a node (this one included): a
// Replace set (in parts) replaces what the node had registered.
func (c *Core) onRegister(from string, f *meshproto.SubRegister, refused []uint64) {
	if len(refused) > 0 {
		c.send(from, LaneControl, &meshproto.SubAck{DB: c.cfg.DB, IDs: refused, Err: refusedText})
		g := *f
		g.Subs = slices.DeleteFunc(slices.Clone(f.Subs), func(s meshproto.Sub) bool { return slices.Contains(refused, s.ID) })
		f = &g
	}
	if f.Replace && (f.Part > 0 || f.More) {
		if f = c.assemble(from, f); f == nil {
			return
		}
	}
	if f.Replace {
		c.prune(from, f.Subs)
	}
	m := c.regs[from]
	if m == nil {
		m = &shrink.Map[uint64, struct{}]{}
		c.regs[from] = m
	}
	ids := make([]uint64, 0, len(f.Subs))
	for _, s := range f.Subs {
		m.Put(s.ID, struct{}{})
		ids = append(ids, s.ID)
	}
	if len(ids) > 0 {
		c.emit(AddSubs{Node: from, Subs: f.Subs, Fresh: !f.Replace})
	}
	if f.Replace {
		c.back(from, len(ids) > 0) // once its subscriptions are in the matcher
	}
	o := c.own
	if o == nil {
		// Kept, but not acknowledged: only the owner can promise that the
		// subscriptions see every later commit.
		return
	}
	if f.Replace {
		delete(o.expect, from)
	}
	if len(ids) == 0 {
		return
	}
	if !o.streaming {
		o.held[from] = append(o.held[from], ids...)
		return
	}
	c.send(from, LaneControl, &meshproto.SubAck{DB: c.cfg.DB, IDs: ids})
}

// assemble gathers a Replace set sent in parts; nil until its last part.
// A part out of order means one was lost: the lane's resync sends the
// whole set again.
func (c *Core) assemble(from string, f *meshproto.SubRegister) *meshproto.SubRegister {
	acc := c.parts[from]
	switch {
	case f.Part == 0:
		acc = &meshproto.SubRegister{DB: f.DB, Replace: true}
	case acc == nil || f.Part != acc.Part+1:
		delete(c.parts, from)
		return nil
	}
	acc.Part = f.Part
	acc.Subs = append(acc.Subs, f.Subs...)
	if f.More {
		c.parts[from] = acc
		return nil
	}
	delete(c.parts, from)
	return acc
}

// prune removes what node registered before and its new set lacks.
func (c *Core) prune(node string, subs []meshproto.Sub) {
	m := c.regs[node]
	if m == nil {
		return
	}
	keep := make(map[uint64]bool, len(subs))
	for _, s := range subs {
		keep[s.ID] = true
	}
	var gone []uint64
	for id := range m.M {
		if !keep[id] {
			gone = append(gone, id)
		}
	}
	c.removeRegs(node, gone)
}

func (c *Core) onUnregister(from string, ids []uint64) {
	m := c.regs[from]
	if m == nil {
		return
	}
	var gone []uint64
	for _, id := range ids {
		if _, ok := m.M[id]; ok {
			gone = append(gone, id)
		}
	}
	c.removeRegs(from, gone)
}

// removeRegs removes registrations of node from the matcher.
func (c *Core) removeRegs(node string, ids []uint64) {
	if len(ids) == 0 {
		return
	}
	m := c.regs[node]
	for _, id := range ids {
		m.Delete(id)
	}
	slices.Sort(ids)
	c.emit(RemoveSubs{IDs: ids})
}

// dropNode forgets a member that is gone: its subscriptions, and the
// acknowledgements the owner waited for from it.
func (c *Core) dropNode(node string) {
	if m := c.regs[node]; m != nil {
		ids := make([]uint64, 0, m.Len())
		for id := range m.M {
			ids = append(ids, id)
		}
		c.removeRegs(node, ids)
	}
	delete(c.regs, node)
	delete(c.parts, node)
	if o := c.own; o != nil {
		o.forget(node)
		c.advance()
		c.checkRouteMore()
	}
}
