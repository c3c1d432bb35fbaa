package wanemu

import (
	"container/heap"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

// Traffic kinds, the "kind" label of the metrics.
const (
	KindMesh      = "mesh"       // QUIC mesh packets (UDP)
	KindGossipUDP = "gossip_udp" // memberlist packets
	KindGossipTCP = "gossip_tcp" // memberlist stream bytes, both directions, counted by the dialer
)

// Emulator delays one node's traffic toward other regions. Build it with
// New, wrap the node's sockets with PacketConn and Transport, and Close it
// after them.
type Emulator struct {
	cfg    Config
	region string
	addrs  map[string]string // normalised address → region

	line *delayLine

	rngMu sync.Mutex
	rng   *rand.Rand

	set *metrics.Set
}

// New returns the emulator for a node of region self.
func New(cfg Config, self string) (*Emulator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	e := &Emulator{
		cfg: cfg, region: self, addrs: make(map[string]string, len(cfg.Nodes)),
		rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0x5eed)),
		set: metrics.NewSet(),
	}
	for a, r := range cfg.Nodes {
		n, _ := normAddr(a) // Validate checked it
		e.addrs[n] = r
		if r != self {
			if _, ok := cfg.rtt(self, r); !ok {
				return nil, fmt.Errorf("wanemu: no rtt between %s and %s", self, r)
			}
		}
	}
	e.line = newDelayLine()
	return e, nil
}

// Region is the emulating node's own region.
func (e *Emulator) Region() string { return e.region }

// Metrics are the emulator's counters, for the node's /metrics:
// meshcast_wanemu_bytes_total and meshcast_wanemu_packets_total by kind and
// destination region (bytes sent there, after any delay; packets dropped
// by Loss are in meshcast_wanemu_dropped_total), and
// meshcast_wanemu_unknown_total for traffic to an address outside the table
// (sent undelayed: a hole in the emulation, which should stay 0).
func (e *Emulator) Metrics() *metrics.Set { return e.set }

// Close stops the delay line; what is still in it is dropped. Close the
// wrapped sockets first.
func (e *Emulator) Close() { e.line.close() }

// route tells where a destination is and how long to hold what goes there.
// It returns the region ("" when unknown) and the delay, base plus jitter;
// known is false for addresses outside the table.
func (e *Emulator) route(addr string) (region string, delay time.Duration, known bool) {
	n, err := normAddr(addr)
	if err != nil {
		return "", 0, false
	}
	r, ok := e.addrs[n]
	if !ok {
		return "", 0, false
	}
	d := e.cfg.OneWay(e.region, r)
	if r != e.region && e.cfg.JitterMS > 0 {
		e.rngMu.Lock()
		d += time.Duration(e.rng.Float64() * e.cfg.JitterMS * float64(time.Millisecond))
		e.rngMu.Unlock()
	}
	return r, d, true
}

// lose reports whether a UDP packet to region r is dropped.
func (e *Emulator) lose(r string) bool {
	if e.cfg.Loss == 0 || r == e.region {
		return false
	}
	e.rngMu.Lock()
	defer e.rngMu.Unlock()
	return e.rng.Float64() < e.cfg.Loss
}

// count adds n bytes (and one packet when packet is set) of kind to region r.
func (e *Emulator) count(kind, r string, n int, packet bool) {
	if r == "" {
		e.set.GetOrCreateCounter(fmt.Sprintf(`meshcast_wanemu_unknown_total{kind=%q}`, kind)).Inc()
		return
	}
	e.set.GetOrCreateCounter(fmt.Sprintf(`meshcast_wanemu_bytes_total{kind=%q,to=%q}`, kind, r)).Add(n)
	if packet {
		e.set.GetOrCreateCounter(fmt.Sprintf(`meshcast_wanemu_packets_total{kind=%q,to=%q}`, kind, r)).Inc()
	}
}

func (e *Emulator) dropped(kind, r string) {
	e.set.GetOrCreateCounter(fmt.Sprintf(`meshcast_wanemu_dropped_total{kind=%q,to=%q}`, kind, r)).Inc()
}

// delayLine runs functions at their due time, in due order (ties in the
// order they were scheduled), on one goroutine.
type delayLine struct {
	mu     sync.Mutex
	q      dueHeap
	seq    uint64
	wake   chan struct{}
	done   chan struct{}
	closed bool
	wg     sync.WaitGroup
}

type dueItem struct {
	due time.Time
	seq uint64
	fn  func()
}

type dueHeap []dueItem

func (h dueHeap) Len() int { return len(h) }
func (h dueHeap) Less(i, j int) bool {
	if !h[i].due.Equal(h[j].due) {
		return h[i].due.Before(h[j].due)
	}
	return h[i].seq < h[j].seq
}
func (h dueHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *dueHeap) Push(x any)   { *h = append(*h, x.(dueItem)) }
func (h *dueHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	old[len(old)-1] = dueItem{}
	*h = old[:len(old)-1]
	return it
}

func newDelayLine() *delayLine {
	l := &delayLine{wake: make(chan struct{}, 1), done: make(chan struct{})}
	l.wg.Add(1)
	go l.run()
	return l
}

// at schedules fn at due; it reports false once the line is closed.
func (l *delayLine) at(due time.Time, fn func()) bool {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return false
	}
	l.seq++
	heap.Push(&l.q, dueItem{due: due, seq: l.seq, fn: fn})
	first := l.q[0].seq == l.seq
	l.mu.Unlock()
	if first {
		select {
		case l.wake <- struct{}{}:
		default:
		}
	}
	return true
}

func (l *delayLine) run() {
	defer l.wg.Done()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		l.mu.Lock()
		var ready []func()
		now := time.Now()
		for len(l.q) > 0 && !l.q[0].due.After(now) {
			ready = append(ready, heap.Pop(&l.q).(dueItem).fn)
		}
		wait := time.Hour
		if len(l.q) > 0 {
			wait = l.q[0].due.Sub(now)
		}
		l.mu.Unlock()
		for _, fn := range ready {
			fn()
		}
		if len(ready) > 0 {
			continue // the functions took time: look again before sleeping
		}
		t.Reset(wait)
		select {
		case <-l.done:
			return
		case <-l.wake: // Go ≥ 1.23: Reset discards a stale tick
		case <-t.C:
		}
	}
}

func (l *delayLine) close() {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	l.q = nil
	l.mu.Unlock()
	close(l.done)
	l.wg.Wait()
}
