package ring

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"

	"github.com/cespare/xxhash/v2"
)

// testKeys returns n random keys from a fixed seed, so every run measures
// the same keys.
func testKeys(n int) []string {
	rng := rand.New(rand.NewPCG(1, 2))
	keys := make([]string, n)
	for i := range keys {
		keys[i] = strconv.FormatUint(rng.Uint64(), 36)
	}
	return keys
}

func owners(r *Ring, keys []string) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i], _ = r.Owner(k)
	}
	return out
}

func TestBalance(t *testing.T) {
	keys := testKeys(100_000)
	for _, n := range []int{3, 5, 10} {
		t.Run(fmt.Sprintf("%dnodes", n), func(t *testing.T) {
			nodes := nodeNames(n)
			load := map[string]int{}
			for _, o := range owners(New(nodes, 128), keys) {
				load[o]++
			}
			lo, hi := len(keys), 0
			for _, nd := range nodes {
				lo, hi = min(lo, load[nd]), max(hi, load[nd])
			}
			ratio := float64(hi) / float64(lo)
			t.Logf("min %d max %d max/min %.3f", lo, hi, ratio)
			if ratio > 1.10 {
				t.Errorf("max/min load = %.3f (min %d, max %d), want <= 1.10", ratio, lo, hi)
			}
		})
	}
}

func TestAddMovesOnlyToNewNode(t *testing.T) {
	keys := testKeys(50_000)
	for _, n := range []int{3, 5, 10} {
		t.Run(fmt.Sprintf("%dnodes", n), func(t *testing.T) {
			nodes := nodeNames(n)
			before := owners(New(nodes, 0), keys)
			after := owners(New(append(nodes, "node-new"), 0), keys)
			moved := 0
			for i := range keys {
				if before[i] == after[i] {
					continue
				}
				moved++
				if after[i] != "node-new" {
					t.Fatalf("key %q moved %s -> %s, want only moves to node-new", keys[i], before[i], after[i])
				}
			}
			got, want := float64(moved)/float64(len(keys)), 1/float64(n+1)
			t.Logf("moved %.4f of keys, 1/(N+1) = %.4f", got, want)
			if got < want*0.9 || got > want*1.1 {
				t.Errorf("moved %.4f of keys, want about %.4f", got, want)
			}
		})
	}
}

func TestRemoveMovesOnlyRemovedNodesKeys(t *testing.T) {
	keys := testKeys(50_000)
	nodes := nodeNames(5)
	before := owners(New(nodes, 0), keys)
	gone := nodes[2]
	after := owners(New(slices.Delete(slices.Clone(nodes), 2, 3), 0), keys)
	for i := range keys {
		if (before[i] == gone) != (before[i] != after[i]) {
			t.Fatalf("key %q: %s -> %s after removing %s", keys[i], before[i], after[i], gone)
		}
	}
}

func TestOwners(t *testing.T) {
	nodes := nodeNames(6)
	r := New(nodes, 0)
	for _, k := range testKeys(200) {
		all := r.Owners(k, len(nodes)+3)
		if len(all) != len(nodes) {
			t.Fatalf("Owners(%q, %d) = %v, want all %d nodes", k, len(nodes)+3, all, len(nodes))
		}
		sorted := slices.Sorted(slices.Values(all))
		if !slices.Equal(slices.Compact(sorted), r.Nodes()) {
			t.Fatalf("Owners(%q) = %v, want each node once", k, all)
		}
		if o, _ := r.Owner(k); all[0] != o {
			t.Fatalf("Owners(%q)[0] = %s, Owner = %s", k, all[0], o)
		}
		if got := r.Owners(k, 2); !slices.Equal(got, all[:2]) {
			t.Fatalf("Owners(%q, 2) = %v, want prefix of %v", k, got, all)
		}
		// Failover order: without the first i owners, the owner is all[i].
		rest := slices.Clone(nodes)
		for i := 0; i < len(all)-1; i++ {
			rest = slices.DeleteFunc(rest, func(s string) bool { return s == all[i] })
			if o, _ := New(rest, 0).Owner(k); o != all[i+1] {
				t.Fatalf("key %q: owner without %v = %s, Owners = %v", k, all[:i+1], o, all)
			}
		}
	}
}

func TestOrderAndDuplicatesIgnored(t *testing.T) {
	a := New([]string{"c", "a", "b"}, 0)
	b := New([]string{"b", "a", "c", "a", "b"}, 0)
	if !slices.Equal(a.Nodes(), []string{"a", "b", "c"}) || b.Len() != 3 {
		t.Fatalf("Nodes = %v, Len = %d", b.Nodes(), b.Len())
	}
	for _, k := range testKeys(1000) {
		oa, _ := a.Owner(k)
		ob, _ := b.Owner(k)
		if oa != ob {
			t.Fatalf("Owner(%q) = %s and %s for the same node set", k, oa, ob)
		}
	}
}

func TestEmpty(t *testing.T) {
	for name, r := range map[string]*Ring{"nil": nil, "zero": {}, "New": New(nil, 0)} {
		if o, ok := r.Owner("k"); ok || o != "" {
			t.Errorf("%s: Owner = %q, %v; want \"\", false", name, o, ok)
		}
		if got := r.Owners("k", 3); got != nil {
			t.Errorf("%s: Owners = %v, want nil", name, got)
		}
		if r.Len() != 0 || r.Nodes() != nil {
			t.Errorf("%s: Len = %d, Nodes = %v", name, r.Len(), r.Nodes())
		}
	}
	r := New([]string{"only"}, 1)
	if o, ok := r.Owner("k"); !ok || o != "only" {
		t.Errorf("single node: Owner = %q, %v", o, ok)
	}
	if got := r.Owners("k", 0); got != nil {
		t.Errorf("Owners(k, 0) = %v, want nil", got)
	}
	if got := r.Owners("k", 5); !slices.Equal(got, []string{"only"}) {
		t.Errorf("Owners(k, 5) = %v", got)
	}
}

// TestPoints pins the documented point hash, which every node must compute
// alike.
func TestPoints(t *testing.T) {
	r := New([]string{"b", "a"}, 0)
	if len(r.points) != 2*DefaultVnodes {
		t.Fatalf("%d points, want %d", len(r.points), 2*DefaultVnodes)
	}
	want := map[uint64]string{}
	for _, n := range []string{"a", "b"} {
		for i := range DefaultVnodes {
			want[xxhash.Sum64String(n+"#"+strconv.Itoa(i))] = n
		}
	}
	for i, p := range r.points {
		if want[p] != r.nodes[r.owner[i]] {
			t.Fatalf("point %x owned by %s, want %q", p, r.nodes[r.owner[i]], want[p])
		}
		if i > 0 && r.points[i-1] > p {
			t.Fatalf("points not sorted at %d", i)
		}
	}
}

// TestSuccessor checks the bucket index against a binary search, including
// probes before the first and after the last point.
func TestSuccessor(t *testing.T) {
	r := New(nodeNames(7), 13)
	probes := []uint64{0, 1, ^uint64(0), r.points[0], r.points[0] - 1, r.points[len(r.points)-1] + 1}
	for _, p := range r.points {
		probes = append(probes, p, p+1, p-1)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for range 10_000 {
		probes = append(probes, rng.Uint64())
	}
	for _, p := range probes {
		want, _ := slices.BinarySearch(r.points, p)
		if want == len(r.points) {
			want = 0
		}
		if got := r.successor(p); got != want {
			t.Fatalf("successor(%x) = %d, want %d", p, got, want)
		}
	}
}

// TestStable pins a few owners so that a change to hashing, which would
// make nodes of different versions disagree, fails loudly.
func TestStable(t *testing.T) {
	r := New(nodeNames(5), 0)
	got := r.Owners("db:main", 5)
	t.Logf("Owners(db:main) = %q", got)
	want := []string{"node-2", "node-1", "node-4", "node-3", "node-0"}
	if !slices.Equal(got, want) {
		t.Errorf("Owners(db:main) = %q, want %q", got, want)
	}
}
