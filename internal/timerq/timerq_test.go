package timerq

import (
	"testing"
	"time"
)

func TestPopDueInTimeOrder(t *testing.T) {
	var q Queue[string]
	t0 := time.Unix(1000, 0)
	q.Add(t0.Add(3*time.Second), "c")
	q.Add(t0.Add(time.Second), "a")
	q.Add(t0.Add(2*time.Second), "b")
	if at, ok := q.Next(); !ok || !at.Equal(t0.Add(time.Second)) {
		t.Fatalf("Next = %v, %v", at, ok)
	}
	if _, _, ok := q.PopDue(t0); ok {
		t.Fatal("a value popped before it fell due")
	}
	var got []string
	for {
		_, v, ok := q.PopDue(t0.Add(2 * time.Second))
		if !ok {
			break
		}
		got = append(got, v)
	}
	if len(got) != 2 || got[0] != "a" || got[1] != "b" || q.Len() != 1 {
		t.Fatalf("popped %v, %d left; want [a b], 1 left", got, q.Len())
	}
	if _, v, ok := q.PopDue(t0.Add(time.Hour)); !ok || v != "c" {
		t.Fatalf("last = %q, %v", v, ok)
	}
	if _, ok := q.Next(); ok {
		t.Fatal("Next on an empty queue")
	}
}
