// Package timerq is the timer queue of the pure protocol cores (mesh/route,
// wal/owner): values that fall due at a time, popped in time order by the
// core's Tick. It reads no clock and starts no goroutine; timers are not
// removed when what they time is over, so a core checks that what pops is
// still current.
package timerq

import (
	"container/heap"
	"time"
)

// Queue holds values of T by the time they fall due. The zero Queue is
// empty and ready to use.
type Queue[T any] struct{ h entries[T] }

type entry[T any] struct {
	at time.Time
	v  T
}

// Add schedules v at at.
func (q *Queue[T]) Add(at time.Time, v T) { heap.Push(&q.h, entry[T]{at, v}) }

// PopDue removes and returns the earliest value due at or before now;
// false when none is.
func (q *Queue[T]) PopDue(now time.Time) (at time.Time, v T, ok bool) {
	if len(q.h) == 0 || q.h[0].at.After(now) {
		return at, v, false
	}
	e := heap.Pop(&q.h).(entry[T])
	return e.at, e.v, true
}

// Next returns when the earliest value falls due; false when the queue is
// empty.
func (q *Queue[T]) Next() (time.Time, bool) {
	if len(q.h) == 0 {
		return time.Time{}, false
	}
	return q.h[0].at, true
}

// Len is the number of values scheduled.
func (q *Queue[T]) Len() int { return len(q.h) }

type entries[T any] []entry[T]

func (h entries[T]) Len() int           { return len(h) }
func (h entries[T]) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h entries[T]) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *entries[T]) Push(x any)        { *h = append(*h, x.(entry[T])) }
func (h *entries[T]) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = entry[T]{} // let go of what v points to
	*h = old[:len(old)-1]
	return e
}
