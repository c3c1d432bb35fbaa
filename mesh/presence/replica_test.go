package presence

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"sort"
	"testing"
)

func refsOf(entries []Entry) []string {
	var out []string
	for _, e := range entries {
		out = append(out, e.Owner+"/"+e.Key+"/"+e.Ref+"/"+string(e.Meta))
	}
	sort.Strings(out)
	return out
}

// TestReplicaConvergesDespiteLostDeltas drives two owners with random
// tracks and untracks, loses a share of their deltas on the way to a
// replica, and answers the replica's gap reports with snapshots, as the
// mesh does. The replica must end up with exactly the owners' entries.
func TestReplicaConvergesDespiteLostDeltas(t *testing.T) {
	for seed := uint64(1); seed <= 50; seed++ {
		rng := rand.New(rand.NewPCG(seed, seed))
		owners := map[string]*Topic{"a": NewTopic("a"), "b": NewTopic("b")}
		replica := NewTopic("c")
		var counter uint64
		ref := 0
		for step := 0; step < 300; step++ {
			name := []string{"a", "b"}[rng.IntN(2)]
			o := owners[name]
			holder := uint64(rng.IntN(5))
			var d Diff
			if rng.IntN(3) == 0 {
				d = o.Untrack(name, holder)
			} else {
				ref++
				d = o.Track(Entry{Owner: name, Holder: holder, Key: fmt.Sprint("k", holder%3), Ref: fmt.Sprint("r", ref), Meta: []byte(fmt.Sprintf(`{"v":%d}`, rng.IntN(3)))})
			}
			counter++
			delta, ok := o.Local(d, counter)
			if !ok || rng.IntN(4) == 0 {
				continue // nothing to send, or lost on the way
			}
			if _, ok := replica.ApplyDelta(delta); !ok {
				replica.ApplySnapshot(o.OwnSnapshot())
			}
		}
		// A final round of snapshots, as a reconnect sends.
		for _, o := range owners {
			replica.ApplySnapshot(o.OwnSnapshot())
		}
		want := append(owners["a"].List(), owners["b"].List()...)
		if got := refsOf(replica.List()); !reflect.DeepEqual(got, refsOf(want)) {
			t.Fatalf("seed %d: replica diverged\n got %v\nwant %v", seed, got, refsOf(want))
		}
	}
}

func TestApplyDeltaDetectsGapAndIgnoresDuplicates(t *testing.T) {
	o, r := NewTopic("a"), NewTopic("c")
	d1, _ := o.Local(o.Track(Entry{Owner: "a", Holder: 1, Key: "k", Ref: "r1", Meta: []byte(`{}`)}), 10)
	d2, _ := o.Local(o.Track(Entry{Owner: "a", Holder: 2, Key: "k", Ref: "r2", Meta: []byte(`{}`)}), 11)
	if _, ok := r.ApplyDelta(d2); ok {
		t.Fatal("delta after a missing one must report a gap")
	}
	if diff, ok := r.ApplyDelta(d1); !ok || len(diff.Joins) != 1 {
		t.Fatalf("first delta: %+v %v", diff, ok)
	}
	if diff, ok := r.ApplyDelta(d1); !ok || !diff.Empty() {
		t.Fatalf("duplicate must be ignored: %+v %v", diff, ok)
	}
	if diff, ok := r.ApplyDelta(d2); !ok || len(diff.Joins) != 1 {
		t.Fatalf("second delta: %+v %v", diff, ok)
	}
}

func TestSnapshotReplacesOwnerAndForgetEmitsLeaves(t *testing.T) {
	r := NewTopic("c")
	r.ApplySnapshot(Snapshot{Owner: "a", Seq: 5, Entries: []Entry{{Holder: 1, Key: "k", Ref: "r1", Meta: []byte(`{}`)}, {Holder: 2, Key: "k", Ref: "r2", Meta: []byte(`{}`)}}})
	d := r.ApplySnapshot(Snapshot{Owner: "a", Seq: 9, Entries: []Entry{{Holder: 2, Key: "k", Ref: "r2", Meta: []byte(`{}`)}, {Holder: 3, Key: "j", Ref: "r3", Meta: []byte(`{}`)}}})
	if len(d.Leaves) != 1 || d.Leaves[0].Ref != "r1" || len(d.Joins) != 1 || d.Joins[0].Ref != "r3" {
		t.Fatalf("snapshot diff: %+v", d)
	}
	if d := r.ApplySnapshot(Snapshot{Owner: "a", Seq: 7}); !d.Empty() {
		t.Fatalf("older snapshot must be ignored: %+v", d)
	}
	d = r.Forget("a")
	if len(d.Leaves) != 2 || r.Len() != 0 {
		t.Fatalf("forget: %+v, %d left", d, r.Len())
	}
}
