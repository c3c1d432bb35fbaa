package bench

import (
	"context"
	"fmt"
	"math"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshcast/meshcast/bench/measure"

	"github.com/jackc/pgx/v5"
)

// walRunner holds the state of one RunWAL.
type walRunner struct {
	cfg WALConfig

	base     time.Time
	baseUnix int64
	// measureStart is the runner clock from which rows are measured:
	// fixed before writing starts, read by every subscriber.
	measureStart atomic.Int64
	stopping     atomic.Bool

	urls      []string
	subs      []*walSub
	connected []*walSub
	classSubs []int // connected subscribers per class
	hists     []*measure.Histogram
	ackHists  []*measure.Histogram
	recv      []paddedCounter
	// writer is set before writing starts; subscribers read it per row.
	writer atomic.Pointer[walWriter]

	readers sync.WaitGroup
}

func (r *walRunner) now() int64 { return r.baseUnix + int64(time.Since(r.base)) }

func (r *walRunner) received() uint64 {
	var n uint64
	for i := range r.recv {
		n += r.recv[i].Load()
	}
	return n
}

// RunWAL runs the Postgres changes benchmark: a writer commits rows to
// WALTable, subscribers spread over the nodes receive them as
// postgres_changes, and the result has commit→client latency, deliveries,
// losses, the slot's lag, and what the nodes' /metrics say (CPU, changes
// out, mesh bytes). With cfg.URL empty it starts its own Postgres and
// cluster first (cfg.Cluster) and stops them at the end. The run is bounded
// by cfg.Budget.
func RunWAL(ctx context.Context, cfg WALConfig) (*WALResult, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	r := &walRunner{cfg: cfg, base: time.Now()}
	r.baseUnix = r.base.UnixNano()
	r.measureStart.Store(math.MaxInt64)
	res := &WALResult{Label: cfg.Label, Shape: string(cfg.Shape), Subs: cfg.Subs, Topics: cfg.Topics, Writers: cfg.Writers,
		RowsPerTx: cfg.RowsPerTx, Window: cfg.Window, RateTarget: cfg.Rate, Pad: cfg.Pad,
		ServerCPU: -1, PostgresCPU: -1, ClientCPU: -1, HostCPU: -1}
	tokenLife := cfg.Budget() + time.Hour

	dbURL := cfg.DatabaseURL
	pgPID := cfg.PostgresPID
	var metricURLs []string
	apikey := "meshbench"
	if cfg.JWTSecret != "" {
		if apikey, err = anonKey(cfg.JWTSecret, tokenLife); err != nil {
			return nil, err
		}
	}
	if cfg.URL == "" {
		var flags []string
		if cfg.JWTSecret != "" {
			flags = append(flags, "--jwt-secret", cfg.JWTSecret)
		}
		cfg.Logf("starting Postgres and %d nodes", cfg.Cluster.Nodes)
		cl, err := StartCluster(ctx, cfg.Cluster, flags, func(ctx context.Context, url string) error {
			return withConn(ctx, url, func(conn *pgx.Conn) error { return setupSchema(ctx, conn, &r.cfg) })
		})
		if err != nil {
			return nil, err
		}
		defer cl.Stop()
		res.Logs = cl.LogDir
		dbURL, pgPID = cl.PG.URL(), cl.PG.PID()
		r.urls = cl.WSURLs(apikey)
		for _, n := range cl.Nodes {
			metricURLs = append(metricURLs, n.MetricsURL())
		}
	} else {
		if !cfg.SkipSetup {
			if err := withConn(ctx, dbURL, func(conn *pgx.Conn) error { return setupSchema(ctx, conn, &r.cfg) }); err != nil {
				return nil, err
			}
		}
		for _, u := range cfg.urls() {
			p, _ := url.Parse(u)
			q := p.Query()
			if cfg.JWTSecret != "" {
				q.Set("apikey", apikey)
			}
			p.RawQuery = q.Encode()
			r.urls = append(r.urls, p.String())
			metricURLs = append(metricURLs, (&url.URL{Scheme: "http", Host: p.Host, Path: "/metrics"}).String())
		}
	}
	res.Nodes = len(r.urls)
	defer r.shutdown()

	if err := r.connectAll(ctx, res, tokenLife); err != nil {
		return res, err
	}
	stopHB := make(chan struct{})
	hbDone := make(chan struct{})
	go r.heartbeats(stopHB, hbDone)
	defer func() { close(stopHB); <-hbDone }()

	w, err := newWALWriter(ctx, r, dbURL)
	if err != nil {
		return res, err
	}
	defer w.close()
	r.writer.Store(w)
	lag, err := newLagSampler(ctx, dbURL, cfg.Slot, metricURLs)
	if err != nil {
		return res, err
	}
	defer lag.close()

	// Measuring starts after the warmup; CPU and metrics are read then and
	// once the deliveries have drained.
	start := r.now() + int64(50*time.Millisecond)
	measureStart := start + int64(cfg.Warmup)
	r.measureStart.Store(measureStart)
	end := measureStart + int64(cfg.Duration)
	cfg.Logf("writing: %s rows/s, window %d, %d writers × %d rows per transaction, warmup %s, measure %s",
		rateString(cfg.Rate), cfg.Window, cfg.Writers, cfg.RowsPerTx, cfg.Warmup, cfg.Duration)
	var snap0 walSnapshot
	var received0 uint64
	snapped := make(chan struct{})
	go func() {
		defer close(snapped)
		sleepCtx(ctx, time.Duration(measureStart-r.now()))
		received0 = r.received()
		snap0 = r.snapshot(ctx, metricURLs, pgPID)
		lag.mark()
	}()
	lagDone := make(chan struct{})
	lagCtx, stopLag := context.WithCancel(ctx)
	go func() { defer close(lagDone); lag.run(lagCtx) }()
	w.run(ctx, start, end)
	<-snapped
	lag.mark() // end of writing
	drained := r.drain(ctx, w)
	snap1 := r.snapshot(ctx, metricURLs, pgPID)
	received1 := r.received()
	stopLag()
	<-lagDone
	lag.final(ctx)
	drainEnd := r.now()
	r.shutdown()

	r.collect(res, w, lag)
	res.Drained = drained
	elapsed := time.Duration(drainEnd - measureStart).Seconds()
	res.setSnapshots(metricURLs, snap0, snap1, elapsed, received1-received0)
	return res, nil
}

func withConn(ctx context.Context, url string, f func(*pgx.Conn) error) error {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	conn, err := pgx.Connect(cctx, url)
	cancel()
	if err != nil {
		return fmt.Errorf("bench: connect to the database: %w", err)
	}
	defer conn.Close(context.Background())
	return f(conn)
}

// connectAll opens the subscribers at cfg.ConnectRate, each joined and
// confirmed, and counts the connected ones per class.
func (r *walRunner) connectAll(ctx context.Context, res *WALResult, tokenLife time.Duration) error {
	cfg := &r.cfg
	r.hists = make([]*measure.Histogram, histShards)
	r.ackHists = make([]*measure.Histogram, histShards)
	for i := range r.hists {
		r.hists[i] = measure.NewHistogram()
		r.ackHists[i] = measure.NewHistogram()
	}
	r.recv = make([]paddedCounter, recvShards)
	r.subs = make([]*walSub, cfg.Subs)
	for i := range r.subs {
		s := &walSub{r: r, id: i, class: subClass(cfg, i), topic: fmt.Sprintf("realtime:meshbench-wal-%d", i%cfg.Topics),
			hist: r.hists[i%histShards], ack: r.ackHists[i%histShards], recv: &r.recv[i%recvShards].Uint64, lastSeq: make([]int64, cfg.Writers)}
		r.subs[i] = s
	}
	start := time.Now()
	interval := time.Duration(float64(time.Second) / cfg.ConnectRate)
	results := make(chan error, cfg.Subs)
	sem := make(chan struct{}, maxHandshakes)
	launched, okN, errN := 0, 0, 0
	collect := func(err error) {
		if err == nil {
			okN++
			return
		}
		errN++
		if res.FirstConnectError == "" {
			res.FirstConnectError = err.Error()
		}
	}
	lastLog := start
	for i, s := range r.subs {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			sleepCtx(ctx, d)
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		launched++
		go func() {
			err := r.open(ctx, s, tokenLife)
			<-sem
			results <- err
		}()
		for more := true; more; {
			select {
			case err := <-results:
				collect(err)
			default:
				more = false
			}
		}
		if time.Since(lastLog) >= time.Second {
			lastLog = time.Now()
			cfg.Logf("connecting: %d/%d subscribed, %d failed", okN, cfg.Subs, errN)
		}
	}
	for okN+errN < launched {
		collect(<-results) // each open is bounded by HandshakeTimeout
	}
	res.ConnectSeconds = time.Since(start).Seconds()
	res.ConnectErrors = errN + cfg.Subs - launched
	classes := 1
	switch cfg.Shape {
	case ShapeRLS:
		classes = cfg.Teams
	case ShapeFiltered:
		classes = cfg.Keys + 1
	}
	r.classSubs = make([]int, classes)
	for _, s := range r.subs {
		if s.c != nil {
			r.connected = append(r.connected, s)
			r.classSubs[s.class]++
		}
	}
	res.Connected = len(r.connected)
	cfg.Logf("connected %d/%d subscribers in %.1fs (%d failed)", res.Connected, cfg.Subs, res.ConnectSeconds, res.ConnectErrors)
	if res.Connected == 0 {
		return fmt.Errorf("bench: no subscriber connected: %s", res.FirstConnectError)
	}
	return ctx.Err()
}

// open dials and joins s, then starts its reader.
func (r *walRunner) open(ctx context.Context, s *walSub, tokenLife time.Duration) error {
	cfg := &r.cfg
	hctx, cancel := context.WithTimeout(ctx, cfg.HandshakeTimeout)
	defer cancel()
	c, err := dialWS(hctx, r.urls[s.id%len(r.urls)], cfg.HandshakeTimeout, 4096)
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	var token string
	if cfg.JWTSecret != "" {
		if token, err = userToken(cfg.JWTSecret, s.id, tokenLife); err != nil {
			c.Close()
			return err
		}
	}
	s.c = c
	if err := s.handshake(appendWALJoin(nil, s.topic, binding(cfg, s.id), token), cfg.HandshakeTimeout); err != nil {
		s.c = nil
		c.Close()
		return err
	}
	s.nextHB.Store(r.now() + int64(walHeartbeatEvery))
	r.readers.Add(1)
	go func() {
		defer r.readers.Done()
		s.readLoop()
	}()
	return nil
}

// heartbeats sends every subscriber's heartbeat when due, until stop
// closes.
func (r *walRunner) heartbeats(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
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
		for _, s := range r.connected {
			if r.stopping.Load() {
				return
			}
			buf = s.heartbeat(now, buf)
		}
	}
}

// drain waits until every delivery owed has arrived, at most cfg.Drain, or
// 2 s without progress. It reports whether everything arrived.
func (r *walRunner) drain(ctx context.Context, w *walWriter) bool {
	deadline := time.Now().Add(r.cfg.Drain)
	last, since := r.received(), time.Now()
	for {
		got := r.received()
		if got >= w.expected.Load() {
			return true
		}
		if got != last {
			last, since = got, time.Now()
		}
		if ctx.Err() != nil || time.Now().After(deadline) || time.Since(since) > 2*time.Second {
			return false
		}
		sleepCtx(ctx, 5*time.Millisecond)
	}
}

// shutdown closes the subscribers and waits for their readers.
func (r *walRunner) shutdown() {
	if r.stopping.Swap(true) {
		return
	}
	for _, s := range r.connected {
		_ = s.c.CloseGracefully()
	}
	r.readers.Wait()
}

// collect sums what the subscribers and the writer saw; after shutdown.
func (r *walRunner) collect(res *WALResult, w *walWriter, lag *lagSampler) {
	measureStart := r.measureStart.Load()
	hist, ack := measure.NewHistogram(), measure.NewHistogram()
	for i, h := range r.hists {
		hist.Merge(h)
		ack.Merge(r.ackHists[i])
	}
	var lastRecv int64
	for _, s := range r.connected {
		res.Received += s.unique
		res.Delivered += s.measured
		res.ReadBeforeAck += s.beforeAck
		res.Repeated += s.repeated
		res.Wrong += s.wrong
		res.ChangeErrors += s.errorsN
		res.Unexpected += s.unexpectedN
		if res.FirstUnexpected == "" {
			res.FirstUnexpected = s.firstUnexp
		}
		if s.readErr != nil {
			res.Disconnects++
			if res.FirstDisconnect == "" {
				res.FirstDisconnect = s.readErr.Error()
			}
		}
		lastRecv = max(lastRecv, s.lastRecv)
		// What this subscriber was owed: every committed row of its class.
		owed := w.committed[s.class].Load()
		if owed > s.unique {
			res.Lost += int64(owed - s.unique)
		}
	}
	for i := range w.committed {
		res.Rows += w.committed[i].Load()
	}
	res.Expected = w.expected.Load()
	w.mu.Lock()
	res.RowsMeasured = w.rowsMeas
	if w.rowsMeas > 0 && w.lastSent > measureStart {
		res.RowsPerSec = float64(w.rowsMeas) / time.Duration(w.lastSent-measureStart).Seconds()
	}
	res.CommitErrors, res.FirstCommitError = w.errs, w.firstErr
	res.WindowStalls, res.WriterLate, res.WriterLagMax = w.stalls, w.late, measure.MS(w.lagMax)
	w.mu.Unlock()
	cs := w.commit.Summary()
	res.CommitP50, res.CommitP99 = measure.MS(cs.P50), measure.MS(cs.P99)
	if res.Delivered > 0 && lastRecv > measureStart {
		res.Elapsed = time.Duration(lastRecv - measureStart).Seconds()
		res.DeliveriesPerSec = float64(res.Delivered) / res.Elapsed
	}
	sum := hist.Summary()
	res.P50, res.P90, res.P99, res.P999 = measure.MS(sum.P50), measure.MS(sum.P90), measure.MS(sum.P99), measure.MS(sum.P999)
	res.P95 = measure.MS(time.Duration(hist.Quantile(0.95)))
	res.Max, res.Mean = measure.MS(sum.Max), measure.MS(sum.Mean)
	as := ack.Summary()
	res.AckP50, res.AckP99, res.AckMax = measure.MS(as.P50), measure.MS(as.P99), measure.MS(as.Max)
	res.AckP95 = measure.MS(time.Duration(ack.Quantile(0.95)))
	lag.fill(res)
}

// walSnapshot is what the nodes, Postgres and this process had consumed at
// one instant.
type walSnapshot struct {
	at       time.Time
	nodes    []Metrics // nil entries: not readable
	postgres float64   // CPU seconds, -1 unknown
	client   float64
	host     float64
}

func (r *walRunner) snapshot(ctx context.Context, metricURLs []string, pgPID int) walSnapshot {
	s := walSnapshot{at: time.Now(), nodes: make([]Metrics, len(metricURLs)), postgres: -1, client: -1, host: -1}
	var wg sync.WaitGroup
	for i, u := range metricURLs {
		wg.Go(func() {
			if m, err := ScrapeMetrics(ctx, u); err == nil {
				s.nodes[i] = m
			}
		})
	}
	if pgPID > 0 {
		if v, err := measure.ReadTreeCPUSeconds(pgPID); err == nil {
			s.postgres = v
		}
	}
	if v, err := measure.ReadCPUSeconds(0); err == nil {
		s.client = v
	}
	if v, err := measure.ReadHostBusySeconds(); err == nil {
		s.host = v
	}
	wg.Wait()
	return s
}

// lagSampler reads the slot's lag from Postgres (current WAL position −
// confirmed_flush_lsn) and the nodes' meshcast_wal_lag_bytes, a few times
// a second.
type lagSampler struct {
	connMu     sync.Mutex // mark and run read concurrently
	conn       *pgx.Conn
	slot       string
	metricURLs []string

	mu        sync.Mutex
	marks     []int64 // slot lag at mark() calls
	walAt     []int64 // pg_current_wal_lsn at mark() calls
	max       int64
	nodeMax   float64
	samples   [][2]float64 // (seconds since the first mark, lag) between the marks
	first     time.Time
	lastFinal int64
}

func newLagSampler(ctx context.Context, url, slot string, metricURLs []string) (*lagSampler, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, url)
	if err != nil {
		return nil, fmt.Errorf("bench: lag reader connection: %w", err)
	}
	return &lagSampler{conn: conn, slot: slot, metricURLs: metricURLs, lastFinal: -1}, nil
}

func (l *lagSampler) close() { l.conn.Close(context.Background()) }

// read returns the slot's lag and the current WAL position; -1 when
// unknown.
func (l *lagSampler) read(ctx context.Context) (lag, wal int64) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	lag, wal = -1, -1
	var lagN *int64
	l.connMu.Lock()
	defer l.connMu.Unlock()
	err := l.conn.QueryRow(ctx, `SELECT (pg_current_wal_lsn() - '0/0')::bigint,
		(SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint FROM pg_replication_slots WHERE slot_name = $1)`, l.slot).Scan(&wal, &lagN)
	if err != nil {
		return -1, -1
	}
	if lagN != nil {
		lag = *lagN
	}
	return lag, wal
}

// mark records the lag now: the start and the end of the measured window.
func (l *lagSampler) mark() {
	lag, wal := l.read(context.Background())
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.marks) == 0 {
		l.first = time.Now()
	}
	l.marks = append(l.marks, lag)
	l.walAt = append(l.walAt, wal)
}

func (l *lagSampler) run(ctx context.Context) {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		lag, _ := l.read(ctx)
		var nodeLag float64
		if n%2 == 0 {
			for _, u := range l.metricURLs {
				if m, err := ScrapeMetrics(ctx, u); err == nil {
					nodeLag = max(nodeLag, m["meshcast_wal_lag_bytes"])
				}
			}
		}
		l.mu.Lock()
		l.nodeMax = max(l.nodeMax, nodeLag)
		if len(l.marks) == 1 && lag >= 0 { // within the measured window
			l.max = max(l.max, lag)
			l.samples = append(l.samples, [2]float64{time.Since(l.first).Seconds(), float64(lag)})
		}
		l.mu.Unlock()
	}
}

// final reads the lag once more after the drain.
func (l *lagSampler) final(ctx context.Context) {
	lag, _ := l.read(ctx)
	l.mu.Lock()
	l.lastFinal = lag
	l.mu.Unlock()
}

func (l *lagSampler) fill(res *WALResult) {
	l.mu.Lock()
	defer l.mu.Unlock()
	res.SlotLagStart, res.SlotLagEnd, res.SlotLagMax, res.SlotLagDrained = -1, -1, l.max, l.lastFinal
	res.NodeLagMax = l.nodeMax
	if len(l.marks) >= 2 {
		res.SlotLagStart, res.SlotLagEnd = l.marks[0], l.marks[1]
		res.SlotLagMax = max(res.SlotLagMax, l.marks[0], l.marks[1])
		if l.walAt[0] >= 0 && l.walAt[1] > l.walAt[0] {
			res.WALBytes = l.walAt[1] - l.walAt[0]
		}
	}
	xs, ys := make([]float64, len(l.samples)), make([]float64, len(l.samples))
	for i, p := range l.samples {
		xs[i], ys[i] = p[0], p[1]
	}
	res.SlotLagSlope = measure.Slope(xs, ys)
}
