package bench

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"strings"
	"time"

	"github.com/gobwas/ws"

	"github.com/meshcast/meshcast/bench/client"
	"github.com/meshcast/meshcast/bench/cluster"
	"github.com/meshcast/meshcast/bench/measure"
)

// The fan-out (meshbench's default command): N subscribers of one topic
// and one publisher against a running server, in throughput (a window of
// publications in flight), latency (a fixed rate) or idle (the server's
// memory per connection) mode; meshcast over WebSocket or WebTransport
// (with datagrams), or Centrifugo.

// Targets.
const (
	TargetMeshcast   = "meshcast"   // Phoenix v2 / Supabase Realtime protocol
	TargetCentrifugo = "centrifugo" // Centrifugo v6 JSON protocol
)

// Transports of the meshcast target.
const (
	TransportWebSocket    = "websocket"
	TransportWebTransport = "webtransport"
)

// Mode selects what a run measures.
type Mode string

// Modes.
const (
	// ModeThroughput publishes as fast as the in-flight window allows.
	ModeThroughput Mode = "throughput"
	// ModeLatency publishes at a fixed rate.
	ModeLatency Mode = "latency"
	// ModeIdle only connects and subscribes, and measures the server's RSS.
	ModeIdle Mode = "idle"
)

// Default URLs per target.
const (
	DefaultMeshcastURL   = "ws://127.0.0.1:4000/realtime/v1/websocket?apikey=bench&vsn=2.0.0"
	DefaultCentrifugoURL = "ws://127.0.0.1:8000/connection/websocket"
)

// Config describes one fan-out run. Zero fields take the defaults noted.
type Config struct {
	Target string // TargetMeshcast (default) or TargetCentrifugo
	URL    string // WebSocket URL; default per target. Several, comma-separated, spread the subscribers round-robin (one per cluster node)
	PubURL string // the publisher's WebSocket URL; default the first of URL
	Mode   Mode   // default ModeThroughput

	Subs        int           // subscriber connections; default 1000
	Duration    time.Duration // measured publishing time; default 10s
	Warmup      time.Duration // publishing before measuring starts; 0 = none
	Rate        float64       // publications/s; 0 = unlimited (throughput only; latency requires > 0)
	Window      int           // throughput: max publications in flight (sent, not yet received by every subscriber); default 32, <0 = unlimited
	PayloadSize int           // bytes of the JSON payload; default 100
	ConnectRate float64       // connections opened per second; default 2000
	Binary      bool          // meshcast: publish kind-3 binary frames instead of text
	// Transport is how meshcast clients connect: TransportWebSocket
	// (default) or TransportWebTransport (sessions at the URL the node's
	// cert-hash endpoint names, its certificate pinned by hash).
	Transport string
	// Unreliable (WebTransport): subscribers join with
	// broadcast.unreliable and the publisher sends datagrams; lost
	// datagrams count as lost deliveries.
	Unreliable bool

	ServerPID int           // server process for RSS/CPU readings; 0 = none
	Hold      time.Duration // idle: keep connections open this long after measuring
	Settle    time.Duration // idle: max wait for the server's RSS to settle; default 5s
	Drain     time.Duration // max wait for in-flight deliveries after publishing; default 5s

	Topic   string // meshcast topic; default "realtime:bench"
	Channel string // centrifugo channel; default "bench:room"

	// HandshakeTimeout bounds dial + upgrade + join/subscribe of one
	// connection; default 10s.
	HandshakeTimeout time.Duration
	// ReadBuffer is the per-connection read buffer size; default 2048.
	ReadBuffer int

	// Logf, if set, receives progress lines.
	Logf func(format string, args ...any)
}

const (
	maxSubs = 60000
	// maxWTHandshakes bounds WebTransport handshakes at once: quic-go's
	// server queues at most 32 connections waiting for Accept and refuses
	// the next ones (CONNECTION_REFUSED), which a CPU-starved node on a
	// shared machine hits under a burst of 512.
	maxWTHandshakes = 16
)

// withDefaults returns a copy of cfg with defaults applied, or an error if
// cfg is invalid.
func (cfg Config) withDefaults() (Config, error) {
	orDefault(&cfg.Target, TargetMeshcast)
	if cfg.Target == TargetCentrifugo {
		orDefault(&cfg.URL, DefaultCentrifugoURL)
	}
	orDefault(&cfg.URL, DefaultMeshcastURL)
	pub, _, _ := strings.Cut(cfg.URL, ",")
	orDefault(&cfg.PubURL, pub)
	orDefault(&cfg.Mode, ModeThroughput)
	orDefault(&cfg.Transport, TransportWebSocket)
	orDefault(&cfg.Subs, 1000)
	orDefault(&cfg.Duration, 10*time.Second)
	orDefault(&cfg.Window, 32)
	orDefault(&cfg.PayloadSize, 100)
	orDefault(&cfg.ConnectRate, 2000)
	orDefault(&cfg.Settle, 5*time.Second)
	orDefault(&cfg.Drain, 5*time.Second)
	orDefault(&cfg.Topic, "realtime:bench")
	orDefault(&cfg.Channel, "bench:room")
	orDefault(&cfg.HandshakeTimeout, 10*time.Second)
	orDefault(&cfg.ReadBuffer, 2048)
	var errs checks
	check := errs.ok
	check(cfg.Target == TargetMeshcast || cfg.Target == TargetCentrifugo, "unknown target %q (want %s or %s)", cfg.Target, TargetMeshcast, TargetCentrifugo)
	check(cfg.Target == TargetMeshcast || !cfg.Binary && !cfg.Unreliable && cfg.Transport == TransportWebSocket,
		"-binary, -unreliable and -transport webtransport apply to the meshcast target only")
	check(cfg.Transport == TransportWebSocket || cfg.Transport == TransportWebTransport, "unknown transport %q", cfg.Transport)
	check(!cfg.Unreliable || cfg.Transport == TransportWebTransport && !cfg.Binary, "-unreliable needs -transport webtransport and sends datagrams (not -binary)")
	check(!cfg.Unreliable || cfg.PayloadSize+len(cfg.Topic)+16 <= 1024, "-unreliable: a datagram carries at most 1024 bytes (payload + topic + 16)")
	check(cfg.Mode == ModeThroughput || cfg.Mode == ModeIdle || cfg.Mode == ModeLatency, "unknown mode %q", cfg.Mode)
	check(cfg.Mode != ModeLatency || cfg.Rate > 0, "latency mode needs -rate > 0")
	check(cfg.Subs >= 1 && cfg.Subs <= maxSubs, "subs %d outside [1, %d]", cfg.Subs, maxSubs)
	check(cfg.Duration >= 0 && cfg.Duration <= maxDuration && cfg.Warmup >= 0 && cfg.Warmup <= maxDuration, "duration and warmup must be within [0, 1h]")
	check(cfg.Hold >= 0 && cfg.Hold <= maxDuration && cfg.Settle >= 0 && cfg.Settle <= time.Minute && cfg.Drain >= 0 && cfg.Drain <= time.Minute,
		"hold must be within [0, 1h], settle and drain within [0, 1m]")
	check(cfg.Rate >= 0, "rate must be >= 0")
	check(cfg.ConnectRate > 0 && cfg.ConnectRate <= maxConnectRate, "connect rate must be within (0, %d]", maxConnectRate)
	check(cfg.PayloadSize >= measure.MinPayloadSize, "payload must be at least %d bytes", measure.MinPayloadSize)
	check(len(cfg.Topic) <= 255 && plainJSONString(cfg.Topic) && plainJSONString(cfg.Channel),
		"topic and channel must be plain strings (no quotes, backslashes, control bytes; topic <= 255 bytes)")
	return cfg, errs.err("config")
}

// Budget returns an upper bound on how long Run takes with this config,
// suitable for a context deadline.
func (cfg Config) Budget() time.Duration {
	c, err := cfg.withDefaults()
	if err != nil {
		return time.Minute
	}
	connect := time.Duration(float64(c.Subs)/c.ConnectRate*float64(time.Second)) + c.HandshakeTimeout
	return connect + c.HandshakeTimeout + c.Warmup + c.Duration + c.Drain + c.Settle + c.Hold + 30*time.Second
}

// subURL returns the URL subscriber i connects to.
func (cfg *Config) subURL(i int) string {
	urls := strings.Split(cfg.URL, ",")
	return strings.TrimSpace(urls[i%len(urls)])
}

// fanout is one Run.
type fanout struct {
	*run
	cfg    Config
	target target
	hists  [histShards]*measure.Histogram
	subs   []*fanSub                     // all, created up front; c is set once joined
	wt     map[string]*client.WTEndpoint // WebTransport endpoints by WebSocket URL
	holder *client.Readers
}

// fanSub is one subscriber, or with id -1 the publisher's connection,
// where whatever is not a reply is unexpected.
type fanSub struct {
	f     *fanout
	id    int
	c     client.Conn
	hist  *measure.Histogram
	now   int64 // when the frame being scanned was read
	next  uint64
	total uint64 // deliveries, warmup included
	tally
	_ [64]byte // keep hot fields of neighbours off this cache line
}

func (s *fanSub) OnMessage(op ws.OpCode, b []byte, now int64) {
	s.now = now
	s.f.target.scan(op, b, s)
}

func (s *fanSub) sample(b []byte) {
	t, seq, err := measure.ParseSample(b)
	if err != nil || s.id < 0 { // the publisher: its own broadcast echoed
		s.odd(b)
		return
	}
	s.total++
	s.f.deliver(s.id)
	s.seq(&s.next, seq)
	if s.f.measured(t) {
		s.measured++
		s.lastRecv = s.now
		s.hist.Record(s.now - t)
	}
}

// reply answers a server ping; a failed write surfaces as a read error.
func (s *fanSub) reply(frame []byte) { _ = s.c.WriteFrame(ws.OpText, frame) }

// Run executes one fan-out run against a running server. It returns when
// the run is over (bounded by cfg's durations and timeouts, see
// Config.Budget) or ctx is done. The error is non-nil only if nothing could
// be measured (bad config, no subscriber connected, publisher failed);
// partial failures are reported in the Result.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	f := &fanout{run: newRun(cfg.Logf), cfg: cfg, target: newTarget(&cfg)}
	for i := range f.hists {
		f.hists[i] = measure.NewHistogram()
	}
	for i := range cfg.Subs {
		f.subs = append(f.subs, &fanSub{f: f, id: i, hist: f.hists[i%histShards], next: 1})
	}
	res := newResult(&cfg)
	if cfg.Transport == TransportWebTransport {
		if err := f.discover(ctx); err != nil {
			return nil, err
		}
	}
	f.holder = client.NewReaders(f.now, f.target.heartbeat(), heartbeatEvery)
	defer f.holder.Close()
	cpu0 := measure.ReadCPU(cfg.ServerPID, false)
	rss0, err := f.serverRSS()
	if err != nil {
		return nil, err
	}
	inFlight := maxHandshakes
	if cfg.Transport == TransportWebTransport {
		inFlight = maxWTHandshakes
	}
	st := f.connect(ctx, cfg.Subs, cfg.ConnectRate, inFlight, f.open)
	res.Connected, res.ConnectErrors, res.FirstConnectError, res.ConnectSeconds = st.ok, st.errs, st.first, st.seconds
	res.ClientRSSKiB, _ = measure.ReadRSSKiB(0)
	if res.Connected == 0 {
		return res, fmt.Errorf("bench: no subscriber connected: %s", res.FirstConnectError)
	}
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	if cfg.Mode == ModeIdle {
		return res, f.idle(ctx, res, rss0, cpu0)
	}
	return res, f.traffic(ctx, res)
}

// discover finds the WebTransport endpoint behind every URL of the run.
func (f *fanout) discover(ctx context.Context) error {
	f.wt = map[string]*client.WTEndpoint{}
	for _, u := range append(strings.Split(f.cfg.URL, ","), f.cfg.PubURL) {
		if u = strings.TrimSpace(u); f.wt[u] == nil {
			e, err := client.DiscoverWT(ctx, u)
			if err != nil {
				return err
			}
			f.wt[u] = e
		}
	}
	return nil
}

// dial opens a connection of the run's transport to the node of url (a
// WebSocket URL). datagrams: a WebTransport subscriber that reads them.
func (f *fanout) dial(ctx context.Context, url string, datagrams bool) (client.Conn, error) {
	c := &f.cfg
	if c.Transport == TransportWebTransport {
		return client.DialWT(ctx, f.wt[strings.TrimSpace(url)], c.HandshakeTimeout, c.ReadBuffer, datagrams)
	}
	return client.DialWS(ctx, url, client.Options{Timeout: c.HandshakeTimeout, ReadBuffer: c.ReadBuffer})
}

// open dials and joins subscriber i and hands it to the holder.
func (f *fanout) open(ctx context.Context, i int) error {
	ctx, cancel := context.WithTimeout(ctx, f.cfg.HandshakeTimeout)
	defer cancel()
	c, err := f.dial(ctx, f.cfg.subURL(i), f.cfg.Unreliable)
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	if err := f.target.join(c, false, f.cfg.HandshakeTimeout); err != nil {
		c.Close()
		return err
	}
	f.subs[i].c = c
	return f.holder.Hold(c, f.subs[i])
}

// serverRSS reads the server's RSS when its pid is known (idle mode).
func (f *fanout) serverRSS() (int64, error) {
	if f.cfg.Mode != ModeIdle || f.cfg.ServerPID <= 0 {
		return 0, nil
	}
	kib, err := measure.ReadRSSKiB(f.cfg.ServerPID)
	if err != nil {
		return 0, fmt.Errorf("bench: read server RSS: %w", err)
	}
	return kib, nil
}

// idle lets the server settle and reads its RSS.
func (f *fanout) idle(ctx context.Context, res *Result, rss0 int64, cpu0 measure.CPU) error {
	cfg := &f.cfg
	if cfg.ServerPID > 0 {
		after, err := f.settledRSS(ctx)
		if err != nil {
			return err
		}
		res.RSSBeforeKiB, res.RSSAfterKiB = rss0, after
		res.RSSPerConnKiB = float64(after-rss0) / float64(res.Connected)
	}
	res.ClientCPU, res.HostCPU, res.ServerCPU = measure.ReadCPU(cfg.ServerPID, false).Cores(cpu0)
	if cfg.Hold > 0 {
		f.logf("holding %d connections for %s", res.Connected, cfg.Hold)
		sleepCtx(ctx, cfg.Hold)
	}
	f.holder.Close()
	f.collect(res)
	return nil
}

// settledRSS waits (at least 1s, at most cfg.Settle) until two readings 500ms
// apart differ by less than 1 %, and returns the last reading.
func (f *fanout) settledRSS(ctx context.Context) (int64, error) {
	deadline := time.Now().Add(f.cfg.Settle)
	prev := int64(-1)
	for wait := time.Second; ; wait = 500 * time.Millisecond {
		sleepCtx(ctx, min(wait, time.Until(deadline)))
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		cur, err := measure.ReadRSSKiB(f.cfg.ServerPID)
		if err != nil {
			return 0, fmt.Errorf("bench: read server RSS: %w", err)
		}
		if prev >= 0 && math.Abs(float64(cur-prev)) < 0.01*float64(cur) {
			return cur, nil
		}
		if !time.Now().Before(deadline) {
			f.logf("server RSS did not settle within %s; using last reading", f.cfg.Settle)
			return cur, nil
		}
		prev = cur
	}
}

// traffic runs the throughput and latency modes.
func (f *fanout) traffic(ctx context.Context, res *Result) error {
	cfg := &f.cfg
	c, err := f.dial(ctx, cfg.PubURL, false)
	if err != nil {
		return fmt.Errorf("bench: publisher dial: %w", err)
	}
	if err := f.target.join(c, true, cfg.HandshakeTimeout); err != nil {
		c.Close()
		return fmt.Errorf("bench: publisher handshake: %w", err)
	}
	pubs := client.NewReaders(f.now, f.target.heartbeat(), heartbeatEvery)
	defer pubs.Close()
	pub := &fanSub{f: f, id: -1, c: c}
	pubs.Hold(c, pub)
	var window uint64
	if cfg.Mode == ModeThroughput {
		res.Window = cfg.Window
		window = uint64(max(cfg.Window, 0) * res.Connected)
	}
	res.RatePerSec = cfg.Rate
	f.logf("publishing: warmup %s, measure %s, rate %s, window %d", cfg.Warmup, cfg.Duration, rateString(cfg.Rate), res.Window)
	var dg0 [2]float64
	var dgErr error
	if cfg.Unreliable {
		dg0[0], dg0[1], dgErr = datagramCounters(ctx, cfg.PubURL)
	}
	p := f.pace(cfg.Rate, window, 0, cfg.Warmup, cfg.Duration, 50*time.Microsecond)
	var cpu0 measure.CPU
	var mallocs0 uint64
	sent, sentMeasured, publishEnd, writeErr := f.publish(ctx, c, p, uint64(res.Connected), func() { cpu0, mallocs0 = measure.ReadCPU(cfg.ServerPID, false), mallocs() })
	f.drain(ctx, sent*uint64(res.Connected), cfg.Drain, time.Second)
	if cfg.Unreliable && dgErr == nil {
		if s, d, err := datagramCounters(ctx, cfg.PubURL); err == nil {
			res.ServerDatagramsSent, res.ServerDatagramsDropped = s-dg0[0], d-dg0[1]
		}
	}
	cpu1, mallocs1 := measure.ReadCPU(cfg.ServerPID, false), mallocs()
	f.holder.Close()
	pubs.Close()
	res.Published, res.PublishedMeasured = sent, sentMeasured
	f.collect(res)
	res.Expected = sentMeasured * uint64(res.Connected)
	res.WindowStalls, res.PublisherLagMax, res.PublisherLate = p.stalls, measure.MS(p.lagMax), p.late
	if d := time.Duration(publishEnd - p.warmEnd); sentMeasured > 0 && d > 0 {
		res.PublishPerSec = float64(sentMeasured) / d.Seconds()
	}
	res.ClientCPU, res.HostCPU, res.ServerCPU = cpu1.Cores(cpu0)
	if window := cpu1.At.Sub(cpu0.At).Seconds(); res.ServerCPU >= 0 && res.Delivered > 0 {
		// CPU over the measured window (drain included) per measured
		// delivery: the server's cost of one delivery, whatever the rate.
		res.ServerCPUPerDeliveryUs = res.ServerCPU * window / float64(res.Delivered) * 1e6
	}
	if res.Delivered > 0 {
		res.ClientAllocsPerDelivery = float64(mallocs1-mallocs0) / float64(res.Delivered)
	}
	res.PublishErrors = pub.unexpected
	if n, rerr := pubs.Errs(); n > 0 || writeErr != nil {
		res.PublishErrors++
		res.FirstUnexpected = fmt.Sprintf("publisher: write %v, read %v; %s", writeErr, rerr, res.FirstUnexpected)
	} else if pub.firstUnexp != "" && res.FirstUnexpected == "" {
		res.FirstUnexpected = "publisher got: " + pub.firstUnexp
	}
	return nil
}

// publish sends the publications p lets go, each owed to subs
// subscribers. atMeasure runs once, when measuring starts.
func (f *fanout) publish(ctx context.Context, c client.Conn, p *pacer, subs uint64, atMeasure func()) (sent, sentMeasured uint64, end int64, err error) {
	payload := make([]byte, 0, f.cfg.PayloadSize)
	frame := make([]byte, 0, f.cfg.PayloadSize+256)
	dg, _ := c.(interface{ SendDatagram([]byte) error })
	measuring := false
	for seq := uint64(1); seq <= maxPublications; seq++ {
		now, ok := p.wait(ctx, seq-1)
		if !ok {
			break
		}
		if !measuring && now >= p.warmEnd {
			measuring = true
			atMeasure()
		}
		t := f.now()
		payload, _ = measure.AppendPayload(payload[:0], f.cfg.PayloadSize, t, seq) // sizes checked by Config
		var op ws.OpCode
		frame, op = f.target.appendPublish(frame[:0], seq, payload)
		if f.cfg.Unreliable {
			err = dg.SendDatagram(frame)
		} else {
			err = c.WriteFrame(op, frame)
		}
		if err != nil {
			break
		}
		sent = seq
		if t >= p.warmEnd {
			sentMeasured++
		}
		p.owe(subs)
	}
	if !measuring { // duration shorter than one send; still define the window
		atMeasure()
	}
	return sent, sentMeasured, f.now(), err
}

// collect sums what the subscribers counted; after the holder closed.
func (f *fanout) collect(res *Result) {
	var t tally
	var total int64
	for _, s := range f.subs {
		if s.c != nil {
			t.add(&s.tally)
			total += int64(s.total)
		}
	}
	hist := measure.NewHistogram()
	for _, h := range f.hists {
		hist.Merge(h)
	}
	res.Delivered, res.Gaps, res.OutOfOrder = t.measured, t.gaps, t.ooo
	res.Unexpected, res.FirstUnexpected = t.unexpected, t.firstUnexp
	res.Lost = int64(res.Published)*int64(res.Connected) - total
	if t.measured > 0 && t.lastRecv > f.measureStart.Load() {
		res.Elapsed = time.Duration(t.lastRecv - f.measureStart.Load()).Seconds()
		res.DeliveriesPerSec = float64(t.measured) / res.Elapsed
	}
	sum := hist.Summary()
	res.P50, res.P90, res.P99, res.P999 = measure.MS(sum.P50), measure.MS(sum.P90), measure.MS(sum.P99), measure.MS(sum.P999)
	res.Max, res.Mean = measure.MS(sum.Max), measure.MS(sum.Mean)
	if n, err := f.holder.Errs(); n > 0 {
		res.Disconnects, res.FirstDisconnect = n, err.Error()
	}
}

// mallocs returns the number of heap allocations of this process so far.
func mallocs() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.Mallocs
}

// datagramCounters reads the node's datagram counters from /metrics (the
// node behind a meshcast WebSocket URL): sent, and dropped for any reason.
func datagramCounters(ctx context.Context, wsURL string) (sent, dropped float64, err error) {
	m, err := cluster.Scrape(ctx, cluster.MetricsURL(wsURL), nil)
	return m.Sum("meshcast_datagrams_sent_total"), m.Sum("meshcast_datagrams_dropped_total"), err
}
