package shrink

import "testing"

// A map that grew and emptied is laid out again, smaller, with what is
// left.
func TestMapShrinks(t *testing.T) {
	var m Map[int, int]
	for i := range 1000 {
		m.Put(i, i)
	}
	for i := range 990 {
		m.Delete(i)
	}
	if m.Len() != 10 || m.peak >= 64 {
		t.Fatalf("after deleting 990 of 1000: %d entries, peak %d; want 10 and a fresh map", m.Len(), m.peak)
	}
	for i := 990; i < 1000; i++ {
		if m.M[i] != i {
			t.Fatalf("entry %d lost in the copy", i)
		}
	}
	var small Map[int, int]
	small.Put(1, 1)
	small.Delete(1)
	if small.M == nil {
		t.Fatal("a small map was replaced")
	}
}
