package bench

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshcast/meshcast/bench/client"
	"github.com/meshcast/meshcast/bench/cluster"
	"github.com/meshcast/meshcast/bench/measure"
)

// The Postgres changes benchmark (meshbench wal): writers commit rows to a
// table, subscribers spread over the nodes receive them as
// postgres_changes, each row stamped with its writer's clock.

// Shape is what the subscribers of a WAL run bind to, and so which rows each
// one must receive.
type Shape string

// Shapes of a WAL run.
const (
	// ShapeFanout: every subscriber binds INSERT on the table and gets
	// every row.
	ShapeFanout Shape = "fanout"
	// ShapeFiltered: subscriber i binds UPDATE with filter id=eq.<k>, k
	// = i mod Keys + 1; the writer updates rows 1..Keys in turn, so each
	// change reaches the subscribers of one key.
	ShapeFiltered Shape = "filtered"
	// ShapeRLS: subscribers are distinct users (JWT sub) in Teams teams;
	// a row level security policy lets a user see the rows of its team,
	// 1/Teams of the table. Needs JWTSecret.
	ShapeRLS Shape = "rls"
	// ShapeDBCast: broadcasts from the database. The writer calls
	// realtime.send(…, private false) for each row, on topic k = row mod
	// Topics; subscriber i joins topic i mod Topics (no binding) and gets
	// the rows of its topic as broadcasts.
	ShapeDBCast Shape = "dbcast"
)

// WALConfig describes one run of the Postgres changes benchmark (meshbench
// wal). Zero fields take the defaults noted.
type WALConfig struct {
	Shape Shape  // default ShapeFanout
	Label string // names the run in results

	// Where. With URL empty the run starts its own Postgres and cluster
	// (Postgres, Cluster); otherwise URL lists the nodes' WebSocket URLs
	// and DatabaseURL the database they stream.
	URL         string // comma-separated WebSocket URLs; subscribers round-robin over them
	DatabaseURL string // the writer's database (needs CREATE, and to set up RLS, superuser)
	Slot        string // the nodes' replication slot, for the lag reading; default "meshcast"
	Publication string // the nodes' publication; default "supabase_realtime"
	JWTSecret   string // the nodes' --jwt-secret: sockets and joins carry tokens signed with it
	PostgresPID int    // the postmaster, for Postgres's CPU (0: unknown; set when the run starts it)
	Cluster     cluster.Config
	Postgres    cluster.PostgresConfig

	Subs        int           // subscriber connections; default 1000
	Topics      int           // distinct channel topics the subscribers spread over; default 1
	Keys        int           // filtered: distinct keys (rows); default Subs
	Teams       int           // rls: teams; default 5
	Rate        float64       // rows committed per second; 0 = as fast as Window allows
	Window      int           // rows committed and not yet received by all their subscribers; default 64, <0 = unbounded
	Writers     int           // writer connections (transactions in flight); default 4
	RowsPerTx   int           // rows per transaction; default 1
	Pad         int           // bytes of the pad column; default 64
	Duration    time.Duration // measured writing; default 10s
	Warmup      time.Duration // writing before measuring; default 2s
	Drain       time.Duration // max wait for outstanding deliveries; default 10s
	ConnectRate float64       // subscriber connections per second; default 1000
	// SkipSetup leaves the schema alone (it must exist as a previous run
	// made it); otherwise the run (re)creates WALTable and what the shape
	// needs.
	SkipSetup bool

	// HandshakeTimeout bounds dial + join of one subscriber, including the
	// wait for "Subscribed to PostgreSQL"; default 15s.
	HandshakeTimeout time.Duration

	Logf func(format string, args ...any)
}

// Limits of a WAL run.
const (
	maxWALSubs    = 60000
	maxWALKeys    = 1 << 20
	maxWALWriters = 64
	maxRowsPerTx  = 10000
	maxWALPad     = 1 << 20
)

func (cfg WALConfig) withDefaults() (WALConfig, error) {
	orDefault(&cfg.Shape, ShapeFanout)
	orDefault(&cfg.Slot, "meshcast")
	orDefault(&cfg.Publication, "supabase_realtime")
	orDefault(&cfg.Subs, 1000)
	orDefault(&cfg.Topics, 1)
	orDefault(&cfg.Keys, cfg.Subs)
	orDefault(&cfg.Teams, 5)
	orDefault(&cfg.Window, 64)
	orDefault(&cfg.Writers, 4)
	orDefault(&cfg.RowsPerTx, 1)
	orDefault(&cfg.Pad, 64)
	orDefault(&cfg.Duration, 10*time.Second)
	orDefault(&cfg.Drain, 10*time.Second)
	orDefault(&cfg.ConnectRate, 1000)
	orDefault(&cfg.HandshakeTimeout, 15*time.Second)
	var errs checks
	check := errs.ok
	check(cfg.Shape == ShapeFanout || cfg.Shape == ShapeFiltered || cfg.Shape == ShapeRLS || cfg.Shape == ShapeDBCast,
		"unknown shape %q (fanout, filtered, rls or dbcast)", cfg.Shape)
	check(cfg.Shape != ShapeRLS || cfg.JWTSecret != "", "the rls shape needs a JWT secret (the nodes' --jwt-secret)")
	check(cfg.URL == "" || cfg.DatabaseURL != "", "with node URLs, the database URL is needed too")
	check(cfg.URL != "" || cfg.DatabaseURL == "", "with a database URL, the nodes' URLs are needed too (or neither: the run starts its own)")
	for _, u := range cfg.urls() {
		p, err := url.Parse(u)
		check(err == nil && (p.Scheme == "ws" || p.Scheme == "wss"), "bad node URL %q", u)
	}
	check(cfg.Subs >= 1 && cfg.Subs <= maxWALSubs, "subs %d outside [1, %d]", cfg.Subs, maxWALSubs)
	check(cfg.Topics >= 1 && cfg.Topics <= cfg.Subs, "topics must be within [1, subs]")
	check(cfg.Keys >= 1 && cfg.Keys <= maxWALKeys, "keys outside [1, %d]", maxWALKeys)
	check(cfg.Teams >= 1 && cfg.Teams <= cfg.Subs, "teams must be within [1, subs]")
	check(cfg.Writers >= 1 && cfg.Writers <= maxWALWriters, "writers outside [1, %d]", maxWALWriters)
	check(cfg.RowsPerTx >= 1 && cfg.RowsPerTx <= maxRowsPerTx, "rows per transaction outside [1, %d]", maxRowsPerTx)
	check(cfg.Shape != ShapeFiltered || cfg.Writers*cfg.RowsPerTx <= cfg.Keys, "filtered: writers × rows per transaction must not exceed keys (concurrent updates of one row)")
	check(cfg.Pad >= 0 && cfg.Pad <= maxWALPad, "pad outside [0, %d]", maxWALPad)
	check(cfg.Rate >= 0, "rate must be >= 0")
	check(cfg.Duration >= 0 && cfg.Duration <= maxDuration && cfg.Warmup >= 0 && cfg.Warmup <= maxDuration, "duration and warmup must be within [0, 1h]")
	check(cfg.Drain >= 0 && cfg.Drain <= time.Minute, "drain must be within [0, 1m]")
	check(cfg.ConnectRate > 0 && cfg.ConnectRate <= maxConnectRate, "connect rate must be within (0, %d]", maxConnectRate)
	check(plainJSONString(cfg.Slot), "bad slot name")
	return cfg, errs.err("wal config")
}

// Budget bounds how long RunWAL takes with this config, for a context
// deadline.
func (cfg WALConfig) Budget() time.Duration {
	c, err := cfg.withDefaults()
	if err != nil {
		return time.Minute
	}
	connect := time.Duration(float64(c.Subs)/c.ConnectRate*float64(time.Second)) + 2*c.HandshakeTimeout
	start := time.Duration(0)
	if c.URL == "" {
		start = 2*cluster.StartTimeout + cluster.PostgresStartTimeout + 30*time.Second // start and stop
	}
	return start + connect + c.Warmup + c.Duration + c.Drain + time.Minute
}

func (cfg *WALConfig) urls() []string {
	var out []string
	for _, u := range strings.Split(cfg.URL, ",") {
		if u = strings.TrimSpace(u); u != "" {
			out = append(out, u)
		}
	}
	return out
}

// classes is how many classes of rows (see subClass) a shape has.
func (cfg *WALConfig) classes() int {
	switch cfg.Shape {
	case ShapeRLS:
		return cfg.Teams
	case ShapeFiltered:
		return cfg.Keys + 1 // class 0 is no key
	case ShapeDBCast:
		return cfg.Topics
	}
	return 1
}

// walRun is one RunWAL.
type walRun struct {
	*run
	cfg        WALConfig
	urls       []string
	metricURLs []string
	subs       []*walSub
	classSubs  []int // connected subscribers per class
	hists      [histShards]*measure.Histogram
	ackHists   [histShards]*measure.Histogram
	holder     *client.Readers
	// writer is set before writing starts; subscribers read it per row.
	writer atomic.Pointer[walWriter]
}

// RunWAL runs the Postgres changes benchmark: writers commit rows to
// WALTable, subscribers spread over the nodes receive them as
// postgres_changes, and the result has commit→client latency, deliveries,
// losses, the slot's lag, and what the nodes' /metrics say (CPU, changes
// out, mesh bytes). With cfg.URL empty it starts its own Postgres and
// cluster first and stops them at the end. The run is bounded by
// cfg.Budget.
func RunWAL(ctx context.Context, cfg WALConfig) (*WALResult, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	r := &walRun{run: newRun(cfg.Logf), cfg: cfg}
	res := newWALResult(&cfg)
	tokenLife := cfg.Budget() + time.Hour
	apikey := "meshbench"
	if cfg.JWTSecret != "" {
		if apikey, err = anonKey(cfg.JWTSecret, tokenLife); err != nil {
			return nil, err
		}
	}
	dbURL, pgPID, stop, err := r.nodes(ctx, apikey, res)
	if err != nil {
		return nil, err
	}
	defer stop()
	for i := range r.hists {
		r.hists[i], r.ackHists[i] = measure.NewHistogram(), measure.NewHistogram()
	}
	r.holder = client.NewReaders(r.now, client.PhoenixHeartbeat, heartbeatEvery)
	defer r.holder.Close()
	if err := r.connectAll(ctx, res, tokenLife); err != nil {
		return res, err
	}
	w, err := newWALWriter(ctx, r, dbURL)
	if err != nil {
		return res, err
	}
	defer w.close()
	r.writer.Store(w)
	lag, err := newLagSampler(ctx, dbURL, cfg.Slot, r.metricURLs)
	if err != nil {
		return res, err
	}
	defer lag.close()
	return res, r.write(ctx, res, w, lag, pgPID)
}

// nodes starts Postgres and the cluster (without cfg.URL) or sets up the
// schema of the given database, and says where things are.
func (r *walRun) nodes(ctx context.Context, apikey string, res *WALResult) (dbURL string, pgPID int, stop func(), err error) {
	cfg := &r.cfg
	setup := func(ctx context.Context, url string) error {
		return withConn(ctx, url, func(conn *pgx.Conn) error { return setupSchema(ctx, conn, cfg) })
	}
	if cfg.URL != "" {
		if !cfg.SkipSetup {
			if err := setup(ctx, cfg.DatabaseURL); err != nil {
				return "", 0, nil, err
			}
		}
		for _, u := range cfg.urls() {
			p, _ := url.Parse(u)
			if cfg.JWTSecret != "" {
				q := p.Query()
				q.Set("apikey", apikey)
				p.RawQuery = q.Encode()
			}
			r.urls = append(r.urls, p.String())
			r.metricURLs = append(r.metricURLs, cluster.MetricsURL(u))
		}
		res.Nodes = len(r.urls)
		return cfg.DatabaseURL, cfg.PostgresPID, func() {}, nil
	}
	cc := cfg.Cluster
	if cfg.JWTSecret != "" {
		cc.Flags = append([]string{"--jwt-secret", cfg.JWTSecret}, cc.Flags...)
	}
	r.logf("starting Postgres and the nodes")
	cl, pg, err := startWithPostgres(ctx, cc, cfg.Postgres, setup)
	if err != nil {
		return "", 0, nil, err
	}
	res.Logs, r.urls, res.Nodes = cl.LogDir, cl.URLs(apikey), len(cl.Nodes)
	for _, n := range cl.Nodes {
		r.metricURLs = append(r.metricURLs, n.MetricsURL())
	}
	return pg.URL(), pg.PID(), func() { cl.Stop(); pg.Stop() }, nil
}

// startWithPostgres starts Postgres, lets prepare set up the database
// before any node reads it, then starts the nodes streaming it.
func startWithPostgres(ctx context.Context, cc cluster.Config, pc cluster.PostgresConfig, prepare func(ctx context.Context, url string) error) (*cluster.Cluster, *cluster.Postgres, error) {
	pg, err := cluster.StartPostgres(ctx, pc)
	if err != nil {
		return nil, nil, err
	}
	if err := prepare(ctx, pg.URL()); err != nil {
		pg.Stop()
		return nil, nil, err
	}
	cc.DatabaseURL = pg.URL()
	cl, err := cluster.Start(ctx, cc)
	if err != nil {
		pg.Stop()
		return nil, nil, err
	}
	return cl, pg, nil
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
func (r *walRun) connectAll(ctx context.Context, res *WALResult, tokenLife time.Duration) error {
	cfg := &r.cfg
	for i := range cfg.Subs {
		r.subs = append(r.subs, &walSub{r: r, id: i, class: subClass(cfg, i), topic: fmt.Sprintf("realtime:meshbench-wal-%d", i%cfg.Topics),
			hist: r.hists[i%histShards], ack: r.ackHists[i%histShards], lastSeq: make([]int64, cfg.Writers)})
	}
	st := r.connect(ctx, cfg.Subs, cfg.ConnectRate, maxHandshakes, func(ctx context.Context, i int) error { return r.open(ctx, r.subs[i], tokenLife) })
	res.Connected, res.ConnectErrors, res.FirstConnectError, res.ConnectSeconds = st.ok, st.errs, st.first, st.seconds
	r.classSubs = make([]int, cfg.classes())
	for _, s := range r.subs {
		if s.c != nil {
			r.classSubs[s.class]++
		}
	}
	if res.Connected == 0 {
		return fmt.Errorf("bench: no subscriber connected: %s", res.FirstConnectError)
	}
	return ctx.Err()
}

// open dials and joins s, then hands it to the holder.
func (r *walRun) open(ctx context.Context, s *walSub, tokenLife time.Duration) error {
	cfg := &r.cfg
	ctx, cancel := context.WithTimeout(ctx, cfg.HandshakeTimeout)
	defer cancel()
	c, err := client.DialWS(ctx, r.urls[s.id%len(r.urls)], client.Options{Timeout: cfg.HandshakeTimeout})
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	j := client.Join{Changes: []string{binding(cfg, s.id)}}
	until := s.subscribed
	if cfg.Shape == ShapeDBCast {
		j.Changes, until = nil, nil // a broadcast channel: live at the join reply
	}
	if cfg.JWTSecret != "" {
		if j.Token, err = userToken(cfg.JWTSecret, s.id, tokenLife); err != nil {
			c.Close()
			return err
		}
	}
	if err := client.JoinChannel(c, s.topic, j, cfg.HandshakeTimeout, until); err != nil {
		c.Close()
		return err
	}
	s.c = c
	return r.holder.Hold(c, s)
}

// write runs the writers, the lag sampler and the snapshots around the
// measured window, then drains and collects.
func (r *walRun) write(ctx context.Context, res *WALResult, w *walWriter, lag *lagSampler, pgPID int) error {
	cfg := &r.cfg
	var window uint64
	if cfg.Window > 0 { // in deliveries: rows in flight times a row's mean fan-out
		window = uint64(max(1, cfg.Window*res.Connected/max(1, cfg.classes()-btoi(cfg.Shape == ShapeFiltered))))
	}
	p := r.pace(cfg.Rate/float64(cfg.RowsPerTx), window, 50*time.Millisecond, cfg.Warmup, cfg.Duration, 200*time.Microsecond)
	r.logf("writing: %s rows/s, window %d, %d writers × %d rows per transaction, warmup %s, measure %s",
		rateString(cfg.Rate), cfg.Window, cfg.Writers, cfg.RowsPerTx, cfg.Warmup, cfg.Duration)
	var snap0 walSnapshot
	var received0 uint64
	snapped := make(chan struct{})
	go func() {
		defer close(snapped)
		sleepCtx(ctx, time.Duration(p.warmEnd-r.now()))
		received0 = r.received()
		snap0 = r.snapshot(ctx, pgPID)
		lag.mark()
	}()
	lagDone := make(chan struct{})
	lagCtx, stopLag := context.WithCancel(ctx)
	go func() { defer close(lagDone); lag.run(lagCtx) }()
	w.run(ctx, p)
	<-snapped
	lag.mark() // end of writing
	res.Drained = r.drain(ctx, p.owed.Load(), cfg.Drain, windowStallAfter)
	snap1 := r.snapshot(ctx, pgPID)
	received1 := r.received()
	stopLag()
	<-lagDone
	lag.final(ctx)
	r.holder.Close()
	r.collect(res, w, p)
	lag.fill(res)
	res.setSnapshots(r.metricURLs, snap0, snap1, received1-received0)
	return nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// collect sums what the subscribers and the writers saw; after the holder
// closed.
func (r *walRun) collect(res *WALResult, w *walWriter, p *pacer) {
	hist, ack := measure.NewHistogram(), measure.NewHistogram()
	for i, h := range r.hists {
		hist.Merge(h)
		ack.Merge(r.ackHists[i])
	}
	var t tally
	for _, s := range r.subs {
		if s.c == nil {
			continue
		}
		t.add(&s.tally)
		res.Received += s.unique
		res.ReadBeforeAck += s.beforeAck
		res.Repeated += s.repeated
		res.Wrong += s.wrong
		res.ChangeErrors += s.errorsN
		// What this subscriber was owed: every committed row of its class.
		if owed := w.committed[s.class].Load(); owed > s.unique {
			res.Lost += int64(owed - s.unique)
		}
	}
	res.Delivered, res.Unexpected, res.FirstUnexpected = t.measured, t.unexpected, t.firstUnexp
	if n, err := r.holder.Errs(); n > 0 {
		res.Disconnects, res.FirstDisconnect = n, err.Error()
	}
	for i := range w.committed {
		res.Rows += w.committed[i].Load()
	}
	res.Expected = p.owed.Load()
	w.mu.Lock()
	res.RowsMeasured = w.rowsMeas
	if w.rowsMeas > 0 && w.lastSent > p.warmEnd {
		res.RowsPerSec = float64(w.rowsMeas) / time.Duration(w.lastSent-p.warmEnd).Seconds()
	}
	res.CommitErrors, res.FirstCommitError = w.errs, w.firstErr
	w.mu.Unlock()
	res.WindowStalls, res.WriterLate, res.WriterLagMax = p.stalls, p.late, measure.MS(p.lagMax)
	cs := w.commit.Summary()
	res.CommitP50, res.CommitP99 = measure.MS(cs.P50), measure.MS(cs.P99)
	if t.measured > 0 && t.lastRecv > p.warmEnd {
		res.Elapsed = time.Duration(t.lastRecv - p.warmEnd).Seconds()
		res.DeliveriesPerSec = float64(t.measured) / res.Elapsed
	}
	sum := hist.Summary()
	res.P50, res.P90, res.P99, res.P999 = measure.MS(sum.P50), measure.MS(sum.P90), measure.MS(sum.P99), measure.MS(sum.P999)
	res.P95 = measure.MS(time.Duration(hist.Quantile(0.95)))
	res.Max, res.Mean = measure.MS(sum.Max), measure.MS(sum.Mean)
	as := ack.Summary()
	res.AckP50, res.AckP99, res.AckMax = measure.MS(as.P50), measure.MS(as.P99), measure.MS(as.Max)
	res.AckP95 = measure.MS(time.Duration(ack.Quantile(0.95)))
}
