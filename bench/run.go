package bench

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshcast/meshcast/bench/measure"
)

const (
	histShards = 8
	recvShards = 16
	// maxHandshakes bounds connections being opened at once.
	maxHandshakes = 512
	// maxWTHandshakes bounds WebTransport handshakes at once: quic-go's
	// server queues at most 32 connections waiting for Accept and refuses
	// the next ones (CONNECTION_REFUSED), which a CPU-starved node on a
	// shared machine hits under a burst of 512.
	maxWTHandshakes = 16
)

type paddedCounter struct {
	atomic.Uint64
	_ [56]byte
}

// runner holds the state of one Run.
type runner struct {
	cfg   Config
	proto protocol

	base     time.Time
	baseUnix int64

	measureStart atomic.Int64 // runner clock; MaxInt64 until measuring starts
	stopping     atomic.Bool

	hists []*measure.Histogram
	recv  []paddedCounter

	subs      []*subscriber // all created up front; s.c is set once subscribed
	connected []*subscriber

	wtTargets map[string]*wtTarget // WebTransport endpoints by WebSocket URL, discovered up front

	pub *pubReader

	readers      sync.WaitGroup
	shutdownOnce sync.Once
}

// now is the runner clock: unix nanoseconds that advance with the monotonic
// clock, so a wall-clock step during a run cannot distort latencies.
func (r *runner) now() int64 { return r.baseUnix + int64(time.Since(r.base)) }

func (r *runner) received() uint64 {
	var n uint64
	for i := range r.recv {
		n += r.recv[i].Load()
	}
	return n
}

// Run executes one benchmark described by cfg against a running server. It
// returns when the run is over (bounded by cfg's durations and timeouts, see
// Config.Budget) or ctx is done. The error is non-nil only if nothing could be
// measured (bad config, no subscriber connected, publisher failed);
// partial failures are reported in the Result.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	proto, err := newProtocol(&cfg)
	if err != nil {
		return nil, err
	}
	r := &runner{cfg: cfg, proto: proto, base: time.Now()}
	r.baseUnix = r.base.UnixNano()
	r.measureStart.Store(math.MaxInt64)
	r.hists = make([]*measure.Histogram, histShards)
	for i := range r.hists {
		r.hists[i] = measure.NewHistogram()
	}
	r.recv = make([]paddedCounter, recvShards)
	r.subs = make([]*subscriber, cfg.Subs)
	for i := range r.subs {
		r.subs[i] = &subscriber{r: r, id: i, hist: r.hists[i%histShards], recv: &r.recv[i%recvShards].Uint64, next: 1}
	}

	res := &Result{
		Target: cfg.Target, Transport: cfg.Transport, Unreliable: cfg.Unreliable, Mode: string(cfg.Mode), URL: cfg.URL, Binary: cfg.Binary,
		Payload: cfg.PayloadSize, Subs: cfg.Subs, ServerCPU: -1, ServerCPUPerDeliveryUs: -1, ClientCPU: -1, HostCPU: -1,
		ServerDatagramsSent: -1, ServerDatagramsDropped: -1,
	}
	defer r.shutdown()

	if cfg.Transport == TransportWebTransport {
		if err := r.discover(ctx); err != nil {
			return nil, err
		}
	}
	stopHB := make(chan struct{})
	hbDone := make(chan struct{})
	go r.heartbeats(stopHB, hbDone)
	defer func() { close(stopHB); <-hbDone }()

	if cfg.Mode == ModeIdle {
		return r.runIdle(ctx, res)
	}
	return r.runTraffic(ctx, res)
}

// connectAll opens cfg.Subs subscribers at cfg.ConnectRate and waits until
// each one is subscribed or failed.
func (r *runner) connectAll(ctx context.Context, res *Result) error {
	cfg := &r.cfg
	start := time.Now()
	interval := time.Duration(float64(time.Second) / cfg.ConnectRate)
	results := make(chan error, cfg.Subs)
	inFlight := maxHandshakes
	if cfg.Transport == TransportWebTransport {
		inFlight = maxWTHandshakes
	}
	sem := make(chan struct{}, inFlight)

	launched := 0
	var okCount, errCount int
	lastLog := start
	collect := func(err error) {
		if err == nil {
			okCount++
			return
		}
		errCount++
		if res.FirstConnectError == "" {
			res.FirstConnectError = err.Error()
		}
	}
	for i := range cfg.Subs {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		s := r.subs[i]
		launched++
		go func() {
			err := r.open(ctx, s)
			<-sem
			results <- err
		}()
		for drained := false; !drained; {
			select {
			case err := <-results:
				collect(err)
			default:
				drained = true
			}
		}
		if time.Since(lastLog) >= time.Second {
			lastLog = time.Now()
			cfg.Logf("connecting: %d/%d subscribed, %d failed", okCount, cfg.Subs, errCount)
		}
	}
	for okCount+errCount < launched {
		collect(<-results) // each open is bounded by HandshakeTimeout
	}
	res.ConnectSeconds = time.Since(start).Seconds()
	res.ConnectErrors = errCount + cfg.Subs - launched
	for _, s := range r.subs {
		if s != nil && s.c != nil {
			r.connected = append(r.connected, s)
		}
	}
	res.Connected = len(r.connected)
	if kib, err := measure.ReadRSSKiB(0); err == nil {
		res.ClientRSSKiB = kib
	}
	cfg.Logf("connected %d/%d subscribers in %.1fs (%d failed)", res.Connected, cfg.Subs, res.ConnectSeconds, res.ConnectErrors)
	if res.Connected == 0 {
		return fmt.Errorf("bench: no subscriber connected: %s", res.FirstConnectError)
	}
	return ctx.Err()
}

// open dials and subscribes s, then starts its reader.
func (r *runner) open(ctx context.Context, s *subscriber) error {
	hctx, cancel := context.WithTimeout(ctx, r.cfg.HandshakeTimeout)
	defer cancel()
	c, err := r.dial(hctx, r.cfg.subURL(s.id), r.cfg.Unreliable)
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	if err := r.proto.handshake(c, false, r.cfg.HandshakeTimeout); err != nil {
		c.Close()
		return err
	}
	s.c = c
	if every := r.proto.heartbeatEvery(); every > 0 {
		s.nextHB.Store(r.now() + int64(every))
	}
	r.readers.Add(1)
	go func() {
		defer r.readers.Done()
		s.readLoop()
	}()
	return nil
}

// discover finds the WebTransport endpoint behind every URL of the run.
func (r *runner) discover(ctx context.Context) error {
	r.wtTargets = map[string]*wtTarget{}
	urls := append(strings.Split(r.cfg.URL, ","), r.cfg.PubURL)
	for _, u := range urls {
		u = strings.TrimSpace(u)
		if r.wtTargets[u] != nil {
			continue
		}
		t, err := discoverWT(ctx, u)
		if err != nil {
			return err
		}
		r.wtTargets[u] = t
	}
	return nil
}

// dial opens a connection of the run's transport to the node of url (a
// WebSocket URL; WebTransport sessions go where its node's cert-hash says).
// datagrams: a WebTransport subscriber that reads datagrams too.
func (r *runner) dial(ctx context.Context, url string, datagrams bool) (clientConn, error) {
	if r.cfg.Transport == TransportWebTransport {
		return dialWT(ctx, r.wtTargets[strings.TrimSpace(url)], r.cfg.HandshakeTimeout, r.cfg.ReadBuffer, datagrams)
	}
	return dialWS(ctx, url, r.cfg.HandshakeTimeout, r.cfg.ReadBuffer)
}

// heartbeats sends every subscriber's heartbeat when due, until stop closes.
func (r *runner) heartbeats(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	every := r.proto.heartbeatEvery()
	if every == 0 {
		<-stop
		return
	}
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	var buf []byte
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		now := r.now()
		for _, s := range r.subs {
			if r.stopping.Load() {
				return
			}
			buf = s.heartbeat(now, every, buf)
		}
	}
}

// shutdown closes every connection and waits for the readers. It must not
// run while connectAll is still opening connections.
func (r *runner) shutdown() {
	r.shutdownOnce.Do(func() {
		r.stopping.Store(true)
		for _, s := range r.connected {
			_ = s.c.CloseGracefully()
		}
		if r.pub != nil {
			_ = r.pub.c.CloseGracefully()
		}
		r.readers.Wait()
	})
}

// runIdle connects, lets the server settle and reads its RSS.
func (r *runner) runIdle(ctx context.Context, res *Result) (*Result, error) {
	cfg := &r.cfg
	if cfg.ServerPID > 0 {
		before, err := measure.ReadRSSKiB(cfg.ServerPID)
		if err != nil {
			return nil, fmt.Errorf("bench: read server RSS: %w", err)
		}
		res.RSSBeforeKiB = before
	}
	cpu0, t0 := r.cpu(), time.Now()
	if err := r.connectAll(ctx, res); err != nil {
		return res, err
	}
	if cfg.ServerPID > 0 {
		after, err := r.settledRSS(ctx)
		if err != nil {
			return res, err
		}
		res.RSSAfterKiB = after
		res.RSSPerConnKiB = float64(after-res.RSSBeforeKiB) / float64(res.Connected)
	}
	setCPU(res, cpu0, r.cpu(), time.Since(t0).Seconds())
	if cfg.Hold > 0 {
		cfg.Logf("holding %d connections for %s", res.Connected, cfg.Hold)
		select {
		case <-time.After(cfg.Hold):
		case <-ctx.Done():
		}
	}
	r.shutdown()
	r.collectErrors(res)
	return res, nil
}

// settledRSS waits (at least 1s, at most cfg.Settle) until two readings 500ms
// apart differ by less than 1 %, and returns the last reading.
func (r *runner) settledRSS(ctx context.Context) (int64, error) {
	deadline := time.Now().Add(r.cfg.Settle)
	prev := int64(-1)
	for first := true; ; first = false {
		wait := 500 * time.Millisecond
		if first {
			wait = time.Second
		}
		if rem := time.Until(deadline); rem < wait {
			wait = max(rem, 0)
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		cur, err := measure.ReadRSSKiB(r.cfg.ServerPID)
		if err != nil {
			return 0, fmt.Errorf("bench: read server RSS: %w", err)
		}
		if prev >= 0 && math.Abs(float64(cur-prev)) < 0.01*float64(cur) {
			return cur, nil
		}
		if !time.Now().Before(deadline) {
			r.cfg.Logf("server RSS did not settle within %s; using last reading", r.cfg.Settle)
			return cur, nil
		}
		prev = cur
	}
}

// cpuSample is CPU seconds consumed so far; -1 when unknown.
type cpuSample struct{ server, client, host float64 }

// cpu reads server, client and whole-host CPU seconds.
func (r *runner) cpu() cpuSample {
	s := cpuSample{-1, -1, -1}
	if r.cfg.ServerPID > 0 {
		if v, err := measure.ReadCPUSeconds(r.cfg.ServerPID); err == nil {
			s.server = v
		}
	}
	if v, err := measure.ReadCPUSeconds(0); err == nil {
		s.client = v
	}
	if v, err := measure.ReadHostBusySeconds(); err == nil {
		s.host = v
	}
	return s
}

// setCPU fills res's CPU fields from two samples wall seconds apart.
func setCPU(res *Result, a, b cpuSample, wall float64) {
	if wall <= 0 {
		return
	}
	rate := func(x, y float64) float64 {
		if x < 0 || y < 0 {
			return -1
		}
		return (y - x) / wall
	}
	res.ServerCPU = rate(a.server, b.server)
	res.ClientCPU = rate(a.client, b.client)
	res.HostCPU = rate(a.host, b.host)
}

// collectErrors sums what went wrong on the subscribers. Call it only after
// shutdown: it reads reader-owned fields.
func (r *runner) collectErrors(res *Result) {
	for _, s := range r.connected {
		if s.readErr != nil {
			res.Disconnects++
			if res.FirstDisconnect == "" {
				res.FirstDisconnect = s.readErr.Error()
			}
		}
		res.Unexpected += s.unexpectedN
		if res.FirstUnexpected == "" {
			res.FirstUnexpected = s.firstUnexp
		}
	}
}
