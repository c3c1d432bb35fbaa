package presence

// Topic is one topic's presence as a node replicates it: the entries of
// every owner (its own included) and, per remote owner, the sequence number
// of the last change applied.
//
// Sequence numbers come from a node-wide counter (so they grow even when a
// topic's state is dropped and made again), and every delta names the
// previous sequence number of its owner in that topic. A delta whose PrevSeq
// is not the last applied one reveals a gap: it is not applied, and the
// caller asks the owner for a snapshot, which replaces everything held for
// that owner.
type Topic struct {
	Set
	self    string            // this node's ID
	ownSeq  uint64            // sequence of this node's last change here
	applied map[string]uint64 // remote owner → last applied sequence
}

// NewTopic returns the presence of a topic on node self.
func NewTopic(self string) *Topic {
	return &Topic{self: self, applied: make(map[string]uint64)}
}

// Delta is one owner's change of one topic, as it travels between nodes.
type Delta struct {
	Owner   string
	Seq     uint64
	PrevSeq uint64
	Joins   []Join
	Leaves  []Entry
}

// Snapshot is all of one owner's entries of one topic at Seq.
type Snapshot struct {
	Owner   string
	Seq     uint64
	Entries []Entry
}

// Local applies a change of this node's own entries (made by Track or
// Untrack on the embedded Set, which returned d) and returns the delta to
// send to interested nodes, numbered with seq from the node-wide counter.
// It returns ok false when d is empty and nothing needs to be sent.
func (t *Topic) Local(d Diff, seq uint64) (Delta, bool) {
	if d.Empty() {
		return Delta{}, false
	}
	out := Delta{Owner: t.self, Seq: seq, PrevSeq: t.ownSeq, Joins: d.Joins, Leaves: d.Leaves}
	t.ownSeq = seq
	return out, true
}

// OwnSnapshot returns this node's entries of the topic.
func (t *Topic) OwnSnapshot() Snapshot {
	s := Snapshot{Owner: t.self, Seq: t.ownSeq}
	for _, e := range t.List() {
		if e.Owner == t.self {
			s.Entries = append(s.Entries, e)
		}
	}
	return s
}

// ApplyDelta applies a remote owner's delta. It returns the change for
// local clients, and ok false when a gap means the caller must ask the
// owner for a snapshot (nothing was applied). Old and duplicate deltas are
// ignored.
func (t *Topic) ApplyDelta(d Delta) (Diff, bool) {
	if d.Owner == t.self {
		return Diff{}, true
	}
	last, known := t.applied[d.Owner]
	switch {
	case known && d.Seq <= last:
		return Diff{}, true // already applied (a snapshot may have covered it)
	case d.PrevSeq != last || (!known && d.PrevSeq != 0):
		return Diff{}, false
	}
	t.applied[d.Owner] = d.Seq
	var out Diff
	for _, l := range d.Leaves {
		if cur, ok := t.Get(l.Owner, l.Holder); ok && cur.Ref == l.Ref {
			out.Leaves = append(out.Leaves, t.Untrack(l.Owner, l.Holder).Leaves...)
		}
	}
	for _, j := range d.Joins {
		j.Owner = d.Owner
		if t.entries == nil {
			t.entries = make(map[holderID]*slot)
		}
		t.next++
		t.entries[holderID{j.Owner, j.Holder}] = &slot{Entry: j.Entry, order: t.next}
		out.Joins = append(out.Joins, j)
	}
	return out, true
}

// ApplySnapshot replaces everything held for a remote owner with its
// snapshot and returns the difference for local clients.
func (t *Topic) ApplySnapshot(s Snapshot) Diff {
	if s.Owner == t.self {
		return Diff{}
	}
	if last, ok := t.applied[s.Owner]; ok && s.Seq < last {
		return Diff{} // older than what we applied already
	}
	t.applied[s.Owner] = s.Seq
	want := make(map[holderID]Entry, len(s.Entries))
	for _, e := range s.Entries {
		e.Owner = s.Owner
		want[holderID{e.Owner, e.Holder}] = e
	}
	var out Diff
	for id, cur := range t.entries {
		if id.owner != s.Owner {
			continue
		}
		if w, ok := want[id]; ok && w.Ref == cur.Ref {
			delete(want, id)
			continue
		}
		out.Leaves = append(out.Leaves, cur.Entry)
		delete(t.entries, id)
	}
	for _, e := range s.Entries {
		e.Owner = s.Owner
		if _, ok := want[holderID{e.Owner, e.Holder}]; !ok {
			continue
		}
		if t.entries == nil {
			t.entries = make(map[holderID]*slot)
		}
		t.next++
		t.entries[holderID{e.Owner, e.Holder}] = &slot{Entry: e, order: t.next}
		out.Joins = append(out.Joins, Join{Entry: e})
	}
	return out
}

// Forget drops a remote owner (a dead node): its entries leave.
func (t *Topic) Forget(owner string) Diff {
	delete(t.applied, owner)
	return t.RemoveOwner(owner)
}
