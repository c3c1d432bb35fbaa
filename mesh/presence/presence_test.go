package presence

import (
	"reflect"
	"testing"
)

func entry(owner string, holder uint64, key, ref, meta string) Entry {
	return Entry{Owner: owner, Holder: holder, Key: key, Ref: ref, Meta: []byte(meta)}
}

func TestTrackJoinUpdateNoop(t *testing.T) {
	var s Set
	a := entry("n1", 1, "alice", "r1", `{"x":1}`)
	if d := s.Track(a); len(d.Joins) != 1 || len(d.Leaves) != 0 || d.Joins[0].PrevRef != "" {
		t.Fatalf("first track: %+v", d)
	}
	if d := s.Track(entry("n1", 1, "alice", "r2", `{"x":1}`)); !d.Empty() {
		t.Fatalf("same meta must be a no-op, got %+v", d)
	}
	d := s.Track(entry("n1", 1, "alice", "r3", `{"x":2}`))
	if len(d.Joins) != 1 || d.Joins[0].Ref != "r3" || d.Joins[0].PrevRef != "r1" {
		t.Fatalf("update join: %+v", d)
	}
	if len(d.Leaves) != 1 || d.Leaves[0].Ref != "r1" {
		t.Fatalf("update leave: %+v", d)
	}
	if got := s.List(); len(got) != 1 || got[0].Ref != "r3" {
		t.Fatalf("list after update: %+v", got)
	}
}

func TestKeyChangeIsLeaveAndJoin(t *testing.T) {
	var s Set
	s.Track(entry("n1", 1, "a", "r1", `{}`))
	d := s.Track(entry("n1", 1, "b", "r2", `{}`))
	if len(d.Joins) != 1 || d.Joins[0].PrevRef != "" || d.Joins[0].Key != "b" || len(d.Leaves) != 1 || d.Leaves[0].Key != "a" {
		t.Fatalf("key change: %+v", d)
	}
}

func TestSeveralMetasPerKeyListedInTrackOrder(t *testing.T) {
	var s Set
	s.Track(entry("n1", 2, "bob", "r1", `{"tab":1}`))
	s.Track(entry("n2", 7, "alice", "r2", `{}`))
	s.Track(entry("n1", 3, "bob", "r3", `{"tab":2}`))
	var refs []string
	for _, e := range s.List() {
		refs = append(refs, e.Key+"/"+e.Ref)
	}
	want := []string{"alice/r2", "bob/r1", "bob/r3"}
	if !reflect.DeepEqual(refs, want) {
		t.Fatalf("list = %v, want %v", refs, want)
	}
}

func TestUntrackAndRemoveOwner(t *testing.T) {
	var s Set
	s.Track(entry("n1", 1, "a", "r1", `{}`))
	s.Track(entry("n1", 2, "b", "r2", `{}`))
	s.Track(entry("n2", 1, "c", "r3", `{}`))
	if d := s.Untrack("n1", 9); !d.Empty() {
		t.Fatalf("untrack unknown holder: %+v", d)
	}
	if d := s.Untrack("n2", 1); len(d.Leaves) != 1 || d.Leaves[0].Ref != "r3" {
		t.Fatalf("untrack: %+v", d)
	}
	d := s.RemoveOwner("n1")
	if len(d.Leaves) != 2 || d.Leaves[0].Ref != "r1" || d.Leaves[1].Ref != "r2" {
		t.Fatalf("remove owner: %+v", d)
	}
	if s.Len() != 0 {
		t.Fatalf("len = %d after removing everything", s.Len())
	}
}

func TestOwnersDoNotCollide(t *testing.T) {
	var s Set
	s.Track(entry("n1", 1, "a", "r1", `{}`))
	s.Track(entry("n2", 1, "a", "r2", `{}`))
	if s.Len() != 2 {
		t.Fatalf("same holder number on two owners must be two entries, got %d", s.Len())
	}
	if e, ok := s.Get("n2", 1); !ok || e.Ref != "r2" {
		t.Fatalf("get: %+v %v", e, ok)
	}
}
