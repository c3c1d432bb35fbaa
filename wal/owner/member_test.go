package owner

import (
	"fmt"
	"testing"
)

func TestOf(t *testing.T) {
	ms := []Member{
		{ID: "a", Region: "iad", DB: "db", Reader: true},
		{ID: "b", Region: "iad", DB: "db", Reader: true},
		{ID: "c", Region: "fra", DB: "db", Reader: true},
		{ID: "d", Region: "fra", DB: "db"}, // takes part, cannot read
		{ID: "e", Region: "sin", DB: "other", Reader: true},
	}
	iad := Of("db", []string{"iad"}, ms)
	if iad != "a" && iad != "b" {
		t.Fatalf("owner %q is not in iad", iad)
	}
	if got := Of("db", []string{"fra", "iad"}, ms); got != "c" {
		t.Errorf("fra first: %q, want c", got)
	}
	if got := Of("db", []string{"sin"}, ms); got == "" || got == "d" || got == "e" {
		t.Errorf("no candidate in sin: %q, want any member that can read db", got)
	}
	if got := Of("nope", nil, ms); got != "" {
		t.Errorf("owner of a database no one reads: %q", got)
	}
	// The same owner whatever the order members are listed in.
	for i := range ms {
		rot := append(append([]Member(nil), ms[i:]...), ms[:i]...)
		if got := Of("db", []string{"iad"}, rot); got != iad {
			t.Errorf("rotation %d: owner %q, want %q", i, got, iad)
		}
	}
	// A draining owner hands over to the other iad node; its loss too.
	drain := append([]Member(nil), ms...)
	for i := range drain {
		if drain[i].ID == iad {
			drain[i].Draining = true
		}
	}
	next := Of("db", []string{"iad"}, drain)
	if next == iad || next == "" || next == "c" {
		t.Errorf("after %s drains: %q, want the other iad node", iad, next)
	}
}

// Adding a node elsewhere never moves the reader.
func TestOfStable(t *testing.T) {
	ms := []Member{{ID: "n1", Region: "iad", DB: "db", Reader: true}, {ID: "n2", Region: "iad", DB: "db", Reader: true}}
	owner := Of("db", []string{"iad"}, ms)
	for i := range 20 {
		ms = append(ms, Member{ID: fmt.Sprintf("x%d", i), Region: "fra", DB: "db", Reader: true})
		if got := Of("db", []string{"iad"}, ms); got != owner {
			t.Fatalf("adding a fra node moved the reader from %s to %s", owner, got)
		}
	}
}
