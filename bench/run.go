package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// The runner every scenario runs on: one clock for the stamps publishers
// put in payloads and subscribers read them against, the deliveries so
// far, when measuring starts, and the phases of a run: connect at a rate,
// publish on a schedule or within a window of outstanding deliveries,
// drain. A scenario (fanout.go, regions.go, wal.go) says what a
// connection joins, what a subscriber counts and what is published.

const (
	histShards = 8  // latency histograms the subscribers of a run spread over
	recvShards = 16 // delivery counters likewise
	// maxHandshakes bounds connections being opened at once.
	maxHandshakes = 512
	// maxPublications caps one run's publications whatever the clock does.
	maxPublications = 1 << 32
	// heartbeatEvery is the Phoenix client heartbeat period (realtime-js's).
	heartbeatEvery = 25 * time.Second
	// windowStallAfter is how long a full window waits for deliveries to
	// progress before the missing ones are written off as lost.
	windowStallAfter = 2 * time.Second
	maxDuration      = time.Hour
	maxConnectRate   = 20000
)

type paddedCounter struct {
	atomic.Uint64
	_ [56]byte
}

// run is the state a scenario's phases share.
type run struct {
	logf     func(format string, args ...any)
	base     time.Time
	baseUnix int64
	// measureStart is the runner clock from which stamps are measured:
	// set when publishing starts, read by every subscriber.
	measureStart atomic.Int64
	recv         [recvShards]paddedCounter
}

func newRun(logf func(string, ...any)) *run {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	r := &run{logf: logf, base: time.Now()}
	r.baseUnix = r.base.UnixNano()
	r.measureStart.Store(math.MaxInt64)
	return r
}

// now is the runner clock: unix nanoseconds that advance with the
// monotonic clock, so a wall-clock step during a run cannot distort
// latencies.
func (r *run) now() int64 { return r.baseUnix + int64(time.Since(r.base)) }

// deliver counts one delivery to subscriber i.
func (r *run) deliver(i int) { r.recv[i%recvShards].Add(1) }

// received is every delivery so far.
func (r *run) received() uint64 {
	var n uint64
	for i := range r.recv {
		n += r.recv[i].Load()
	}
	return n
}

// measured reports whether a payload stamped t counts.
func (r *run) measured(t int64) bool { return t >= r.measureStart.Load() }

// connectStats is how opening a run's connections went.
type connectStats struct {
	ok, errs int
	first    string
	seconds  float64
}

// connect calls open for 0..n-1 at rate per second, at most inFlight at a
// time (each open bounds itself), and returns once every open it started
// returned; ctx ends the starting.
func (r *run) connect(ctx context.Context, n int, rate float64, inFlight int, open func(ctx context.Context, i int) error) connectStats {
	start := time.Now()
	interval := time.Duration(float64(time.Second) / rate)
	sem := make(chan struct{}, inFlight)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var st connectStats
	launched, lastLog := 0, start
	for i := range n {
		sleepCtx(ctx, time.Until(start.Add(time.Duration(i)*interval)))
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		launched++
		wg.Go(func() {
			err := open(ctx, i)
			<-sem
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				st.ok++
			} else if st.errs++; st.first == "" {
				st.first = err.Error()
			}
		})
		if time.Since(lastLog) >= time.Second {
			lastLog = time.Now()
			mu.Lock()
			r.logf("connecting: %d/%d subscribed, %d failed", st.ok, n, st.errs)
			mu.Unlock()
		}
	}
	wg.Wait()
	st.errs += n - launched
	st.seconds = time.Since(start).Seconds()
	r.logf("connected %d/%d subscribers in %.1fs (%d failed)", st.ok, n, st.seconds, st.errs)
	return st
}

// pacer decides when publication i of a run (from 0) goes out; the WAL's
// writers share one. On a fixed-rate schedule a late send is counted, and
// the schedule restarts when measuring starts, so that a publisher that
// fell behind during the warmup does not catch up inside the measured
// window. With a window, a publication waits while that many deliveries
// are outstanding (owed and not received); after windowStallAfter without
// progress the missing ones are written off and a stall counted.
type pacer struct {
	r                   *run
	interval            int64  // ns between publications; 0: no schedule
	window              uint64 // outstanding deliveries; 0: no window
	poll                time.Duration
	start, warmEnd, end int64 // runner clock
	owed, writtenOff    atomic.Uint64

	mu         sync.Mutex
	schedStart int64
	schedFrom  uint64
	restarted  bool
	late       uint64
	lagMax     time.Duration
	stalls     int
}

// pace starts measuring (after the warmup from lead on) and returns the
// pacer of the publications. poll is how often a full window is looked at.
func (r *run) pace(rate float64, window uint64, lead, warmup, duration, poll time.Duration) *pacer {
	p := &pacer{r: r, window: window, poll: poll, start: r.now() + int64(lead)}
	if rate > 0 {
		p.interval = int64(float64(time.Second) / rate)
	}
	p.warmEnd = p.start + int64(warmup)
	p.end = p.warmEnd + int64(duration)
	p.schedStart = p.start
	r.measureStart.Store(p.warmEnd)
	return p
}

// wait blocks until publication i may go; ok is false once the run is
// over (its end, ctx).
func (p *pacer) wait(ctx context.Context, i uint64) (now int64, ok bool) {
	now = p.r.now()
	if p.interval > 0 {
		sched := p.schedule(i, now)
		if sched >= p.end {
			return now, false
		}
		if sched > now {
			sleepCtx(ctx, time.Duration(sched-now))
			now = p.r.now()
		} else if lag := time.Duration(now - sched); lag > time.Millisecond {
			p.mu.Lock()
			p.late++
			p.lagMax = max(p.lagMax, lag)
			p.mu.Unlock()
		}
	}
	if p.window > 0 {
		now = p.waitWindow(ctx, now)
	}
	return now, now < p.end && ctx.Err() == nil
}

// schedule is when publication i is due.
func (p *pacer) schedule(i uint64, now int64) int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	sched := p.schedStart + int64(i-min(i, p.schedFrom))*p.interval
	// The first publication due in the measured window, or sent in it,
	// restarts the schedule if it is late.
	if !p.restarted && max(now, sched) >= p.warmEnd && p.warmEnd > p.start {
		p.restarted = true
		if sched < now {
			p.schedStart, p.schedFrom, sched = now, i, now
		}
	}
	return sched
}

// owe adds n deliveries owed by what was published.
func (p *pacer) owe(n uint64) { p.owed.Add(n) }

func (p *pacer) waitWindow(ctx context.Context, now int64) int64 {
	last, since := p.r.received()+p.writtenOff.Load(), now
	for {
		got, owed := p.r.received()+p.writtenOff.Load(), p.owed.Load()
		if owed < got+p.window || now >= p.end || ctx.Err() != nil {
			return now
		}
		if got != last {
			last, since = got, now
		} else if now-since > int64(windowStallAfter) {
			p.writtenOff.Add(owed - got)
			p.mu.Lock()
			p.stalls++
			p.mu.Unlock()
			return now
		}
		time.Sleep(p.poll)
		now = p.r.now()
	}
}

// drain waits until want deliveries arrived, none arrived for idle, or
// maxWait passed, and reports whether all did.
func (r *run) drain(ctx context.Context, want uint64, maxWait, idle time.Duration) bool {
	deadline := time.Now().Add(maxWait)
	last, since := r.received(), time.Now()
	for {
		got := r.received()
		if got >= want {
			return true
		}
		if got != last {
			last, since = got, time.Now()
		} else if time.Since(since) > idle {
			r.logf("drain: no progress for %s, %d of %d deliveries missing", idle, want-got, want)
			return false
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// tally is what every subscriber counts; the goroutine that reads it owns
// it until its holder is closed.
type tally struct {
	measured   uint64 // deliveries stamped after measuring started
	lastRecv   int64  // runner clock of the last of them
	gaps, ooo  uint64 // sequence numbers skipped; repeated or older ones
	unexpected uint64
	firstUnexp string
}

// odd counts a frame the subscriber did not expect.
func (t *tally) odd(frame []byte) {
	t.unexpected++
	if t.firstUnexp == "" {
		t.firstUnexp = string(frame[:min(len(frame), 300)])
	}
}

// seq checks sequence number s of a publisher whose next is expected.
func (t *tally) seq(next *uint64, s uint64) {
	switch {
	case s == *next:
		*next++
	case s > *next:
		t.gaps += s - *next
		*next = s + 1
	default:
		t.ooo++
	}
}

// add sums o into t.
func (t *tally) add(o *tally) {
	t.measured += o.measured
	t.lastRecv = max(t.lastRecv, o.lastRecv)
	t.gaps += o.gaps
	t.ooo += o.ooo
	t.unexpected += o.unexpected
	if t.firstUnexp == "" {
		t.firstUnexp = o.firstUnexp
	}
}

// sleepCtx sleeps d or until ctx ends (noticed within 50 ms), without
// allocating: the publishers sleep before every publication.
func sleepCtx(ctx context.Context, d time.Duration) {
	for end := time.Now().Add(d); d > 0 && ctx.Err() == nil; d = time.Until(end) {
		time.Sleep(min(d, 50*time.Millisecond))
	}
}

// plainJSONString reports whether s can be written between JSON quotes as is.
func plainJSONString(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// rateString is a rate for the progress lines.
func rateString(r float64) string {
	if r <= 0 {
		return "max"
	}
	return strconv.FormatFloat(r, 'f', 0, 64) + "/s"
}

// checks collects what is wrong with a config.
type checks []error

// ok adds the error msg when cond does not hold.
func (c *checks) ok(cond bool, msg string, args ...any) {
	if !cond {
		*c = append(*c, fmt.Errorf(msg, args...))
	}
}

// err is every error, prefixed with what was checked.
func (c checks) err(what string) error {
	if err := errors.Join(c...); err != nil {
		return fmt.Errorf("bench: invalid %s: %w", what, err)
	}
	return nil
}

// orDefault sets *v to def when it is zero.
func orDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}
