package edge

import (
	"sync"
	"sync/atomic"
	"time"
)

// workers runs tasks (a readable connection's frames) on a few goroutines,
// in the order they were submitted. A task may wait (a join waits for the
// cluster or the database): its worker then hands its place to a fresh
// one, so that the others' tasks do not queue behind the wait, and retires
// when its task ends. A task that says nothing but holds its worker longer
// than stallAfter while others queue is handed off the same way by a
// watchdog. So at most size workers take tasks at any time, and a worker
// beyond them exists only while a task holds it.
type workers struct {
	counted func(reason string) // counts handoffs: "wait" or "stall"
	epoch   time.Time           // the watchdog's clock: since(epoch)

	mu     sync.Mutex
	cond   sync.Cond
	queue  []task
	head   int // queue[head:] wait
	all    map[*worker]struct{}
	closed bool

	stop chan struct{}
	wg   sync.WaitGroup
}

// task is work for a worker. run gets the worker, for worker.wait.
type task interface{ run(w *worker) }

// worker is one goroutine of the pool.
type worker struct {
	pool  *workers
	since atomic.Int64 // the pool clock when its task began; 0 when idle
	// replaced: another worker took its place; it retires after its task.
	replaced atomic.Bool
}

// stallAfter is how long a task may hold its worker, while other tasks
// queue, before the watchdog hands its place to another worker.
const stallAfter = 50 * time.Millisecond

// newWorkers starts size workers; counted (if set) counts handoffs.
func newWorkers(size int, counted func(reason string)) *workers {
	p := &workers{counted: counted, epoch: time.Now(), all: make(map[*worker]struct{}), stop: make(chan struct{})}
	p.cond.L = &p.mu
	p.mu.Lock()
	for range size {
		p.startLocked()
	}
	p.mu.Unlock()
	p.wg.Add(1)
	go p.watch()
	return p
}

func (p *workers) now() int64 { return int64(time.Since(p.epoch)) + 1 }

// startLocked starts a worker. Called with p.mu held.
func (p *workers) startLocked() {
	w := &worker{pool: p}
	p.all[w] = struct{}{}
	p.wg.Add(1)
	go w.loop()
}

// submit queues t; the first idle worker runs it.
func (p *workers) submit(t task) {
	p.mu.Lock()
	p.queue = append(p.queue, t)
	p.mu.Unlock()
	p.cond.Signal()
}

// waiting reports whether tasks wait for a worker.
func (p *workers) waiting() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.head < len(p.queue)
}

// running returns the number of workers, held ones included.
func (p *workers) running() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.all)
}

// take waits for a task; nil when the pool is closed.
func (p *workers) take() task {
	p.mu.Lock()
	defer p.mu.Unlock()
	for !p.closed && p.head == len(p.queue) {
		p.cond.Wait()
	}
	if p.closed {
		return nil
	}
	t := p.queue[p.head]
	p.queue[p.head] = nil
	p.head++
	switch {
	case p.head == len(p.queue):
		p.queue, p.head = p.queue[:0], 0
	case p.head >= 1024 && p.head*2 >= len(p.queue):
		// A queue that never empties would otherwise only grow.
		n := copy(p.queue, p.queue[p.head:])
		clear(p.queue[n:])
		p.queue, p.head = p.queue[:n], 0
	}
	return t
}

func (w *worker) loop() {
	p := w.pool
	defer p.wg.Done()
	for {
		t := p.take()
		if t == nil {
			break
		}
		w.since.Store(p.now())
		t.run(w)
		w.since.Store(0)
		if w.replaced.Load() {
			break
		}
	}
	p.mu.Lock()
	delete(p.all, w)
	p.mu.Unlock()
}

// progress tells the watchdog that w's task, which goes on, has just
// checked that no other task waits.
func (w *worker) progress() { w.since.Store(w.pool.now()) }

// wait tells the pool that w's task is about to wait for something other
// than its own work: another worker takes w's place. nil does nothing
// (a connection with a goroutine of its own).
func (w *worker) wait() {
	if w != nil {
		w.pool.handOff(w, "wait")
	}
}

// handOff starts a worker in w's place, once.
func (p *workers) handOff(w *worker, reason string) {
	if !w.replaced.CompareAndSwap(false, true) {
		return
	}
	p.mu.Lock()
	if !p.closed {
		p.startLocked()
	}
	p.mu.Unlock()
	if p.counted != nil {
		p.counted(reason)
	}
}

// watch hands off the workers whose task has held them past stallAfter
// while other tasks wait.
func (p *workers) watch() {
	defer p.wg.Done()
	tick := time.NewTicker(stallAfter)
	defer tick.Stop()
	var stuck []*worker
	for {
		select {
		case <-p.stop:
			return
		case <-tick.C:
		}
		now := p.now()
		stuck = stuck[:0]
		p.mu.Lock()
		if p.head < len(p.queue) {
			for w := range p.all {
				if s := w.since.Load(); s != 0 && now-s > int64(stallAfter) && !w.replaced.Load() {
					stuck = append(stuck, w)
				}
			}
		}
		p.mu.Unlock()
		for _, w := range stuck {
			p.handOff(w, "stall")
		}
	}
}

// close stops the workers once their tasks end; tasks still queued are
// not run. It waits for them.
func (p *workers) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.cond.Broadcast()
	close(p.stop)
	p.wg.Wait()
}
