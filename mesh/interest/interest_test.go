package interest

import (
	"math/rand/v2"
	"reflect"
	"sort"
	"testing"
)

func TestAddRemoveReplace(t *testing.T) {
	var tb Table
	if !tb.Add("n2", "a") || !tb.Add("n1", "a") || tb.Add("n1", "a") {
		t.Fatal("Add must report only new interests")
	}
	if got := tb.Nodes("a"); !reflect.DeepEqual(got, []string{"n1", "n2"}) {
		t.Fatalf("Nodes(a) = %v", got)
	}
	shared := tb.Nodes("a")
	tb.Add("n3", "a")
	if !reflect.DeepEqual(shared, []string{"n1", "n2"}) {
		t.Fatal("a slice returned earlier must not change")
	}
	added, removed := tb.Replace("n1", []string{"b", "c"})
	if !reflect.DeepEqual(added, []string{"b", "c"}) || !reflect.DeepEqual(removed, []string{"a"}) {
		t.Fatalf("Replace: added %v removed %v", added, removed)
	}
	if got := tb.RemoveNode("n1"); !reflect.DeepEqual(got, []string{"b", "c"}) {
		t.Fatalf("RemoveNode = %v", got)
	}
	if tb.Nodes("b") != nil || tb.Has("n1", "b") {
		t.Fatal("a removed node keeps no interest")
	}
	if !tb.Remove("n2", "a") || tb.Remove("n2", "a") {
		t.Fatal("Remove must report only existing interests")
	}
}

// TestMatchesModel checks the table against a plain set model under random
// operations.
func TestMatchesModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var tb Table
	model := map[string]map[string]bool{} // topic → nodes
	nodes := []string{"n1", "n2", "n3", "n4"}
	topics := []string{"a", "b", "c", "d", "e"}
	for i := 0; i < 5000; i++ {
		n, tp := nodes[rng.IntN(len(nodes))], topics[rng.IntN(len(topics))]
		switch rng.IntN(10) {
		case 0:
			tb.RemoveNode(n)
			for _, m := range model {
				delete(m, n)
			}
		case 1:
			var snap []string
			for _, x := range topics {
				if rng.IntN(2) == 0 {
					snap = append(snap, x)
				}
			}
			tb.Replace(n, snap)
			for _, m := range model {
				delete(m, n)
			}
			for _, x := range snap {
				if model[x] == nil {
					model[x] = map[string]bool{}
				}
				model[x][n] = true
			}
		case 2, 3, 4:
			tb.Remove(n, tp)
			delete(model[tp], n)
		default:
			tb.Add(n, tp)
			if model[tp] == nil {
				model[tp] = map[string]bool{}
			}
			model[tp][n] = true
		}
		for _, x := range topics {
			var want []string
			for n := range model[x] {
				want = append(want, n)
			}
			sort.Strings(want)
			if got := tb.Nodes(x); !reflect.DeepEqual(got, want) && !(len(got) == 0 && len(want) == 0) {
				t.Fatalf("step %d: Nodes(%s) = %v, want %v", i, x, got, want)
			}
		}
	}
}
