package edge

import (
	"slices"
	"sync"
	"testing"
)

// funcTask runs a function as a task.
type funcTask func(w *worker)

func (f funcTask) run(w *worker) { f(w) }

// handoffs counts the pool's handoffs by reason.
type handoffs struct {
	mu sync.Mutex
	n  map[string]int
}

func (h *handoffs) count(reason string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.n == nil {
		h.n = map[string]int{}
	}
	h.n[reason]++
}

func (h *handoffs) get(reason string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n[reason]
}

func TestWorkersRunInOrder(t *testing.T) {
	p := newWorkers(1, nil)
	defer p.close()
	var mu sync.Mutex
	var got []int
	done := make(chan struct{})
	const n = 200
	for i := range n {
		p.submit(funcTask(func(*worker) {
			mu.Lock()
			got = append(got, i)
			mu.Unlock()
			if i == n-1 {
				close(done)
			}
		}))
	}
	<-done
	mu.Lock()
	defer mu.Unlock()
	for i, v := range got {
		if v != i {
			t.Fatalf("one worker ran tasks in the order %v", got)
		}
	}
}

// TestWorkersWait: a task that says it waits gives its place to another
// worker, so the tasks queued behind it run during the wait; the pool is
// back to its size once the wait is over.
func TestWorkersWait(t *testing.T) {
	var h handoffs
	p := newWorkers(1, h.count)
	defer p.close()
	release := make(chan struct{})
	waiting := make(chan struct{})
	p.submit(funcTask(func(w *worker) {
		w.wait()
		close(waiting)
		<-release
	}))
	<-waiting
	ran := make(chan struct{})
	p.submit(funcTask(func(*worker) { close(ran) }))
	<-ran // would hang if the waiting task held the only worker
	if n := p.running(); n != 2 {
		t.Errorf("%d workers during the wait, want 2", n)
	}
	close(release)
	if !waitFor(testWait, func() bool { return p.running() == 1 }) {
		t.Errorf("%d workers after the wait, want 1", p.running())
	}
	if n := h.get("wait"); n != 1 {
		t.Errorf("%d wait handoffs, want 1", n)
	}
}

// TestWorkersStall: a task that holds its worker without saying so is
// handed off by the watchdog once others queue behind it.
func TestWorkersStall(t *testing.T) {
	var h handoffs
	p := newWorkers(1, h.count)
	defer p.close()
	release := make(chan struct{})
	started := make(chan struct{})
	p.submit(funcTask(func(*worker) {
		close(started)
		<-release
	}))
	<-started
	ran := make(chan struct{})
	p.submit(funcTask(func(*worker) { close(ran) }))
	<-ran // would hang without the watchdog
	close(release)
	if !waitFor(testWait, func() bool { return p.running() == 1 }) {
		t.Errorf("%d workers after the stall, want 1", p.running())
	}
	if n := h.get("stall"); n != 1 {
		t.Errorf("%d stall handoffs, want 1", n)
	}
}

// TestWorkersClose: close waits for the running task and its worker, and
// runs nothing queued after it.
func TestWorkersClose(t *testing.T) {
	p := newWorkers(2, nil)
	release := make(chan struct{})
	started := make(chan struct{}, 2)
	var ran []int
	var mu sync.Mutex
	for i := range 5 {
		p.submit(funcTask(func(w *worker) {
			mu.Lock()
			ran = append(ran, i)
			mu.Unlock()
			if i < 2 {
				started <- struct{}{}
				<-release
			}
		}))
	}
	<-started
	<-started
	closed := make(chan struct{})
	go func() {
		p.close()
		close(closed)
	}()
	waitFor(testWait, func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.closed
	})
	select {
	case <-closed:
		t.Fatal("close returned while tasks ran")
	default:
	}
	close(release)
	<-closed
	mu.Lock()
	defer mu.Unlock()
	slices.Sort(ran)
	if !slices.Equal(ran, []int{0, 1}) {
		t.Errorf("tasks %v ran, want only the two running when close began", ran)
	}
	if n := p.running(); n != 0 {
		t.Errorf("%d workers after close", n)
	}
}
