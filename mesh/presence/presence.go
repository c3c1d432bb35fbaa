// Package presence holds the presence state of one topic as a pure data
// type: no goroutines, no clocks, no I/O. The edge drives it for its own
// clients; the mesh replicates it between nodes.
//
// Every entry is owned by the node whose client tracked it, and only the
// owner changes its entries. That is what lets the cluster merge replicas
// without conflicts: the state of a topic is the union, over owners, of each
// owner's latest entries.
package presence

import "sort"

// Entry is one tracked presence: a client's channel join (Holder, on node
// Owner) tracking Meta under Key. One key may hold several entries (several
// tabs of one user).
type Entry struct {
	Owner  string // node ID of the owner
	Holder uint64 // owner-local ID of the channel join that tracked it
	Key    string
	Ref    string // unique phx_ref of this version of the entry
	Meta   []byte // user fields as a JSON object, without phx_ref
}

// Join is an entry that appeared; PrevRef is set when it replaced an
// earlier version of the same holder's entry (an update).
type Join struct {
	Entry
	PrevRef string
}

// Diff is what changed in one operation: leaves are removed by Ref.
type Diff struct {
	Joins  []Join
	Leaves []Entry
}

// Empty reports whether d carries nothing.
func (d Diff) Empty() bool { return len(d.Joins) == 0 && len(d.Leaves) == 0 }

type holderID struct {
	owner  string
	holder uint64
}

type slot struct {
	Entry
	order uint64 // insertion order, for stable listing
}

// Set is the presence state of one topic. The zero value is ready to use.
type Set struct {
	entries map[holderID]*slot
	next    uint64
}

// Len returns the number of entries.
func (s *Set) Len() int { return len(s.entries) }

// Track adds or updates the entry of e's holder. Tracking the same key and
// meta again is a no-op (empty diff). A changed key or meta replaces the old
// version: one join (with PrevRef) and one leave of the old ref.
func (s *Set) Track(e Entry) Diff {
	if s.entries == nil {
		s.entries = make(map[holderID]*slot)
	}
	id := holderID{e.Owner, e.Holder}
	old, ok := s.entries[id]
	if ok && old.Key == e.Key && string(old.Meta) == string(e.Meta) {
		return Diff{}
	}
	s.next++
	s.entries[id] = &slot{Entry: e, order: s.next}
	if !ok {
		return Diff{Joins: []Join{{Entry: e}}}
	}
	if old.Key != e.Key {
		// A new key is a different presence, not an update of the old one.
		return Diff{Joins: []Join{{Entry: e}}, Leaves: []Entry{old.Entry}}
	}
	return Diff{Joins: []Join{{Entry: e, PrevRef: old.Ref}}, Leaves: []Entry{old.Entry}}
}

// Untrack removes the entry of a holder, if any.
func (s *Set) Untrack(owner string, holder uint64) Diff {
	id := holderID{owner, holder}
	old, ok := s.entries[id]
	if !ok {
		return Diff{}
	}
	delete(s.entries, id)
	return Diff{Leaves: []Entry{old.Entry}}
}

// Get returns the entry of a holder.
func (s *Set) Get(owner string, holder uint64) (Entry, bool) {
	e, ok := s.entries[holderID{owner, holder}]
	if !ok {
		return Entry{}, false
	}
	return e.Entry, true
}

// RemoveOwner removes every entry of an owner (a node that died or left)
// and returns them as leaves.
func (s *Set) RemoveOwner(owner string) Diff {
	var d Diff
	for id, e := range s.entries {
		if id.owner == owner {
			d.Leaves = append(d.Leaves, e.Entry)
			delete(s.entries, id)
		}
	}
	sort.Slice(d.Leaves, func(i, j int) bool { return d.Leaves[i].Ref < d.Leaves[j].Ref })
	return d
}

// List returns all entries grouped by key (keys sorted), each key's entries
// in the order they were tracked.
func (s *Set) List() []Entry {
	all := make([]*slot, 0, len(s.entries))
	for _, e := range s.entries {
		all = append(all, e)
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].Key != all[j].Key {
			return all[i].Key < all[j].Key
		}
		return all[i].order < all[j].order
	})
	out := make([]Entry, len(all))
	for i, e := range all {
		out[i] = e.Entry
	}
	return out
}
