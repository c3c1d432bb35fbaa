package bench

import (
	"context"
	"fmt"
	"runtime"
	"time"

	"github.com/meshcast/meshcast/bench/measure"

	"github.com/gobwas/ws"
)

// maxPublications caps one run's publications whatever the clock does.
const maxPublications = 1 << 32

// pubStats is what the publish loop reports.
type pubStats struct {
	sent, sentMeasured uint64
	publishEnd         int64 // runner clock
	lagMax             time.Duration
	late               uint64
	stalls             int
	writeErr           error
}

// runTraffic runs the throughput and latency modes.
func (r *runner) runTraffic(ctx context.Context, res *Result) (*Result, error) {
	cfg := &r.cfg
	if err := r.connectAll(ctx, res); err != nil {
		return res, err
	}

	c, err := r.dial(ctx, cfg.PubURL, false)
	if err != nil {
		return res, fmt.Errorf("bench: publisher dial: %w", err)
	}
	if err := r.proto.handshake(c, true, cfg.HandshakeTimeout); err != nil {
		c.Close()
		return res, fmt.Errorf("bench: publisher handshake: %w", err)
	}
	r.pub = &pubReader{r: r, c: c}
	r.readers.Add(1)
	go func() {
		defer r.readers.Done()
		r.pub.readLoop()
	}()

	if cfg.Mode == ModeThroughput {
		res.Window = cfg.Window
	}
	res.RatePerSec = cfg.Rate
	cfg.Logf("publishing: warmup %s, measure %s, rate %s, window %d", cfg.Warmup, cfg.Duration, rateString(cfg.Rate), res.Window)

	var cpu0 cpuSample
	var mallocs0 uint64
	var dgSent0, dgDropped0 float64
	var dgErr error
	if cfg.Unreliable {
		dgSent0, dgDropped0, dgErr = datagramCounters(ctx, cfg.PubURL)
	}
	ps := r.publish(ctx, c, func() { cpu0, mallocs0 = r.cpu(), mallocs() })
	r.drain(ctx, ps.sent)
	if cfg.Unreliable && dgErr == nil {
		if s, d, err := datagramCounters(ctx, cfg.PubURL); err == nil {
			res.ServerDatagramsSent, res.ServerDatagramsDropped = s-dgSent0, d-dgDropped0
		}
	}
	cpu1, mallocs1 := r.cpu(), mallocs()
	drainEnd := r.now()
	r.shutdown()

	measureStart := r.measureStart.Load()
	hist := measure.NewHistogram()
	var total, lastRecv int64
	for _, s := range r.connected {
		total += int64(s.total)
		res.Delivered += s.measured
		res.Gaps += s.gaps
		res.OutOfOrder += s.ooo
		lastRecv = max(lastRecv, s.lastRecv)
	}
	for _, h := range r.hists {
		hist.Merge(h)
	}
	res.Published = ps.sent
	res.PublishedMeasured = ps.sentMeasured
	res.Expected = ps.sentMeasured * uint64(res.Connected)
	res.Lost = int64(ps.sent)*int64(res.Connected) - total
	res.WindowStalls = ps.stalls
	res.PublisherLagMax = measure.MS(ps.lagMax)
	res.PublisherLate = ps.late
	if pubDur := ps.publishEnd - measureStart; ps.sentMeasured > 0 && pubDur > 0 {
		res.PublishPerSec = float64(ps.sentMeasured) / time.Duration(pubDur).Seconds()
	}
	if res.Delivered > 0 && lastRecv > measureStart {
		res.Elapsed = time.Duration(lastRecv - measureStart).Seconds()
		res.DeliveriesPerSec = float64(res.Delivered) / res.Elapsed
	}
	sum := hist.Summary()
	res.P50, res.P90, res.P99, res.P999 = measure.MS(sum.P50), measure.MS(sum.P90), measure.MS(sum.P99), measure.MS(sum.P999)
	res.Max, res.Mean = measure.MS(sum.Max), measure.MS(sum.Mean)
	setCPU(res, cpu0, cpu1, time.Duration(drainEnd-measureStart).Seconds())
	if res.ServerCPU >= 0 && res.Delivered > 0 {
		// CPU over the measured window (drain included) per measured
		// delivery: the server's cost of one delivery, whatever the rate.
		res.ServerCPUPerDeliveryUs = res.ServerCPU * time.Duration(drainEnd-measureStart).Seconds() / float64(res.Delivered) * 1e6
	}
	if res.Delivered > 0 {
		res.ClientAllocsPerDelivery = float64(mallocs1-mallocs0) / float64(res.Delivered)
	}
	r.collectErrors(res)
	res.PublishErrors = r.pub.unexpectedN
	if r.pub.readErr != nil || ps.writeErr != nil {
		res.PublishErrors++
		res.FirstUnexpected = fmt.Sprintf("publisher: write %v, read %v; %s", ps.writeErr, r.pub.readErr, res.FirstUnexpected)
	} else if r.pub.firstUnexp != "" && res.FirstUnexpected == "" {
		res.FirstUnexpected = "publisher got: " + r.pub.firstUnexp
	}
	return res, nil
}

func rateString(r float64) string {
	if r <= 0 {
		return "max"
	}
	return fmt.Sprintf("%.0f/s", r)
}

// publish sends publications for cfg.Warmup + cfg.Duration. atMeasure runs
// once, right when measuring starts.
func (r *runner) publish(ctx context.Context, c clientConn, atMeasure func()) pubStats {
	cfg := &r.cfg
	var ps pubStats
	conns := uint64(len(r.connected))
	window := uint64(0)
	if cfg.Mode == ModeThroughput && cfg.Window > 0 {
		window = uint64(cfg.Window)
	}
	var interval int64
	if cfg.Rate > 0 {
		interval = int64(float64(time.Second) / cfg.Rate)
	}
	hbEvery := int64(r.proto.heartbeatEvery())
	var hbRef uint64 = 1 // ref 1 was the join; publications use refs from 2 up
	var hbBuf []byte
	hbNext := r.now() + hbEvery

	payload := make([]byte, 0, cfg.PayloadSize)
	frame := make([]byte, 0, cfg.PayloadSize+256)

	start := r.now()
	warmEnd := start + int64(cfg.Warmup)
	end := warmEnd + int64(cfg.Duration)
	measuring := false
	var writtenOff uint64 // deliveries given up on after a window stall

	// The rate schedule restarts when measuring starts, so a publisher that
	// fell behind during warmup does not catch up inside the measured window.
	schedStart, schedSeq := start, uint64(1)
	for seq := uint64(1); seq <= maxPublications && ctx.Err() == nil; seq++ {
		now := r.now()
		if interval > 0 {
			if !measuring && now >= warmEnd && schedSeq == 1 && cfg.Warmup > 0 {
				schedStart, schedSeq = max(warmEnd, now), seq
			}
			sched := schedStart + int64(seq-schedSeq)*interval
			if sched > now {
				time.Sleep(time.Duration(sched - now))
				now = r.now()
			} else if lag := time.Duration(now - sched); lag > time.Millisecond {
				ps.late++
				ps.lagMax = max(ps.lagMax, lag)
			}
		}
		if window > 0 {
			now = r.waitWindow(ctx, seq-1, conns, window, end, &writtenOff, &ps.stalls)
		}
		if now >= end {
			break
		}
		if !measuring && now >= warmEnd {
			measuring = true
			atMeasure()
			r.measureStart.Store(r.now())
		}
		if hbEvery > 0 && now >= hbNext {
			hbNext = now + hbEvery
			hbRef++
			hbBuf = r.proto.appendHeartbeat(hbBuf[:0], 1<<62+hbRef) // distinct from publication refs
			if err := c.WriteFrame(ws.OpText, hbBuf); err != nil {
				ps.writeErr = err
				break
			}
		}
		var err error
		payload, err = measure.AppendPayload(payload[:0], cfg.PayloadSize, r.now(), seq)
		if err != nil { // ruled out by Config validation
			ps.writeErr = err
			break
		}
		var op ws.OpCode
		frame, op = r.proto.appendPublish(frame[:0], seq, payload)
		if cfg.Unreliable {
			err = c.(*wtConn).SendDatagram(frame)
		} else {
			err = c.WriteFrame(op, frame)
		}
		if err != nil {
			ps.writeErr = err
			break
		}
		ps.sent = seq
		if measuring {
			ps.sentMeasured++
		}
	}
	ps.publishEnd = r.now()
	if !measuring { // duration shorter than one send; still define the window
		atMeasure()
		r.measureStart.Store(ps.publishEnd)
	}
	return ps
}

// waitWindow blocks until fewer than window publications are in flight, the
// run ends, or no delivery arrives for 2s (then the missing deliveries are
// written off as lost and counted as a stall). It returns the runner clock.
func (r *runner) waitWindow(ctx context.Context, sent, conns, window uint64, end int64, writtenOff *uint64, stalls *int) int64 {
	last := r.received()
	lastProgress := r.now()
	for {
		now := r.now()
		got := r.received() + *writtenOff
		if sent*conns < got+window*conns || now >= end || ctx.Err() != nil {
			return now
		}
		if got != last {
			last, lastProgress = got, now
		} else if now-lastProgress > int64(2*time.Second) {
			*writtenOff += sent*conns - got
			*stalls++
			return now
		}
		time.Sleep(50 * time.Microsecond)
	}
}

// drain waits until every subscriber got all sent publications, progress
// stops for a second, or cfg.Drain passes.
func (r *runner) drain(ctx context.Context, sent uint64) {
	want := sent * uint64(len(r.connected))
	deadline := time.Now().Add(r.cfg.Drain)
	last, lastProgress := r.received(), time.Now()
	for time.Now().Before(deadline) && ctx.Err() == nil {
		got := r.received()
		if got >= want {
			return
		}
		if got != last {
			last, lastProgress = got, time.Now()
		} else if time.Since(lastProgress) > time.Second {
			r.cfg.Logf("drain: no progress for 1s, %d of %d deliveries missing", want-got, want)
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// mallocs returns the number of heap allocations of this process so far.
func mallocs() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.Mallocs
}
