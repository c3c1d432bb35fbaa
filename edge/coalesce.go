package edge

import (
	"sync"
	"time"
)

// coalescer bounds how often one connection is written to. A connection
// that wrote less than Config.WriteCoalesce ago does not start a writer for
// a new frame; it joins a list that one ticker flushes every WriteCoalesce.
// Frames arriving meanwhile share that one write. A connection that gets a
// frame now and then (rarer than every WriteCoalesce) is written at once,
// so coalescing only delays busy connections, and by at most
// WriteCoalesce, while it cuts their write system calls, which are most of
// a busy node's CPU.
type coalescer struct {
	every time.Duration
	epoch time.Time

	mu      sync.Mutex
	pending []*conn
	started bool
	closed  bool
	stop    chan struct{}
	done    chan struct{}
}

func newCoalescer(every time.Duration) *coalescer {
	return &coalescer{every: every, epoch: time.Now(), stop: make(chan struct{}), done: make(chan struct{})}
}

// now is a monotonic clock for the last-write times.
func (k *coalescer) now() int64 { return int64(time.Since(k.epoch)) }

// recent reports whether a write at t was less than every ago.
func (k *coalescer) recent(t int64) bool { return k.every > 0 && t > 0 && k.now()-t < int64(k.every) }

// add schedules c's writer for the next tick. Called (as the queue's Hold
// hook) with c's queue locked.
func (k *coalescer) add(c *conn) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return false
	}
	if !k.started {
		k.started = true
		go k.run()
	}
	k.pending = append(k.pending, c)
	return true
}

func (k *coalescer) run() {
	defer close(k.done)
	t := time.NewTicker(k.every)
	defer t.Stop()
	var batch []*conn
	for {
		select {
		case <-k.stop:
			return
		case <-t.C:
		}
		k.mu.Lock()
		batch, k.pending = k.pending, batch[:0]
		k.mu.Unlock()
		for i, c := range batch {
			c.flushScheduled()
			batch[i] = nil
		}
	}
}

// close stops the ticker; connections still scheduled are written by
// their own close.
func (k *coalescer) close() {
	k.mu.Lock()
	started := k.started && !k.closed
	k.closed = true
	k.mu.Unlock()
	if started {
		close(k.stop)
		<-k.done
	}
}
