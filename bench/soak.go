package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshcast/meshcast/bench/client"
	"github.com/meshcast/meshcast/bench/cluster"
	"github.com/meshcast/meshcast/bench/measure"

	"github.com/gobwas/ws"
	"github.com/jackc/pgx/v5"
)

// The bounded soak (meshbench soak, make soak): a cluster with Postgres
// under steady mixed load for a while — latency-mode broadcast to
// subscribers on every node, postgres_changes of a table written at a
// steady rate, and churners that connect, join with presence, track, and
// leave (gracefully or by dropping the socket) over and over. Every node's
// goroutines and RSS are sampled from /metrics throughout; the run fails
// when either grows beyond the bounds below, or when the idle cluster
// after the load holds more goroutines than before it.

// SoakConfig configures RunSoak. Zero fields take the defaults noted.
type SoakConfig struct {
	MeshcastBin string        // default bin/meshcast
	Nodes       int           // default 3
	BasePort    int           // default 5400 (see cluster.Config)
	Duration    time.Duration // default 10m
	Sample      time.Duration // default 5s
	Subs        int           // broadcast subscribers over the nodes; default 300
	Rate        float64       // broadcasts/s; default 100
	WALSubs     int           // postgres_changes subscribers; default 30
	WALRate     float64       // rows/s; default 20
	Churners    int           // presence + connection churn clients; default 12
	LogDir      string
	Logf        func(format string, args ...any)
}

func (c SoakConfig) withDefaults() SoakConfig {
	orDefault(&c.MeshcastBin, "bin/meshcast")
	orDefault(&c.Nodes, 3)
	orDefault(&c.BasePort, 5400)
	orDefault(&c.Duration, 10*time.Minute)
	orDefault(&c.Sample, 5*time.Second)
	orDefault(&c.Subs, 300)
	orDefault(&c.Rate, 100)
	orDefault(&c.WALSubs, 30)
	orDefault(&c.WALRate, 20)
	orDefault(&c.Churners, 12)
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
	return c
}

// Budget bounds RunSoak.
func (c SoakConfig) Budget() time.Duration {
	c = c.withDefaults()
	return c.Duration + 5*time.Minute
}

// The soak's bounds. Under load, the median of the last quarter of the
// samples against the median of the second quarter (the first is warm-up):
// goroutines may grow by soakGoroutineGrowth, RSS by soakRSSGrowth. Idle,
// after the load: goroutines at most soakIdleSlack over the idle count
// before it.
const (
	soakGoroutineGrowth = 0.15 // + 30
	soakRSSGrowth       = 0.25 // + 16 MiB
	soakIdleSlack       = 10
)

// SoakSample is one reading of one node.
type SoakSample struct {
	At          float64 `json:"t_s"` // since the load started
	Goroutines  float64 `json:"goroutines"`
	RSSMiB      float64 `json:"rss_mib"`
	Connections float64 `json:"connections"`
}

// SoakNode is one node's figures.
type SoakNode struct {
	Name    string       `json:"name"`
	Samples []SoakSample `json:"samples"`
	// Idle before and after the load.
	IdleGoroutinesBefore float64 `json:"idle_goroutines_before"`
	IdleGoroutinesAfter  float64 `json:"idle_goroutines_after"`
	IdleRSSBefore        float64 `json:"idle_rss_mib_before"`
	IdleRSSAfter         float64 `json:"idle_rss_mib_after"`
	// Under load: medians of the second and the last quarter, the
	// maximum, and the least-squares slope after the first quarter.
	GoroutinesEarly, GoroutinesLate, GoroutinesMax float64
	RSSEarly, RSSLate, RSSMax                      float64
	GoroutinesPer10Min, RSSMiBPer10Min             float64
	Failures                                       []string `json:"failures,omitempty"`
}

// SoakResult is what RunSoak measured.
type SoakResult struct {
	Config    SoakConfig  `json:"-"`
	Seconds   float64     `json:"seconds"`
	Nodes     []*SoakNode `json:"nodes"`
	Broadcast *Result     `json:"broadcast"`
	WAL       *WALResult  `json:"wal,omitempty"`
	// Detector is the failure detector's counters over the run: nothing
	// was killed, so every suspicion was false (refuted) and a death a
	// false positive.
	Detector     DetectorCounts `json:"detector"`
	ChurnCycles  uint64         `json:"churn_cycles"`
	ChurnErrors  uint64         `json:"churn_errors"`
	FirstChurnEr string         `json:"first_churn_error,omitempty"`
	Failed       bool           `json:"failed"`
}

func (r *SoakResult) String() string {
	var b strings.Builder
	c := r.Config
	fmt.Fprintf(&b, "soak: %d nodes, %.0f s: broadcast %.0f msg/s to %d subscribers, %d churners (connect, join, track, leave), ",
		c.Nodes, r.Seconds, c.Rate, c.Subs, c.Churners)
	fmt.Fprintf(&b, "postgres_changes %.0f rows/s to %d subscribers\n", c.WALRate, c.WALSubs)
	if r.Broadcast != nil {
		fmt.Fprintf(&b, "  broadcast: %s\n", r.Broadcast)
	}
	if r.WAL != nil {
		fmt.Fprintf(&b, "  wal: %s\n", r.WAL)
	}
	fmt.Fprintf(&b, "  churn: %d cycles, %d errors %s\n", r.ChurnCycles, r.ChurnErrors, r.FirstChurnEr)
	d := r.Detector
	fmt.Fprintf(&b, "  failure detector (nothing killed): %.0f suspicions, %.0f refuted, %.0f declared dead, %.0f members failed, %.0f returned\n",
		d.Suspicions, d.RefutedSuspect+d.RefutedDead, d.DeclaredDead, d.Failed, d.Returned)
	for _, n := range r.Nodes {
		fmt.Fprintf(&b, "  %s goroutines: idle %.0f → %.0f; load %.0f → %.0f (max %.0f, %+.1f per 10 min) | RSS MiB: idle %.1f → %.1f; load %.1f → %.1f (max %.1f, %+.2f per 10 min)\n",
			n.Name, n.IdleGoroutinesBefore, n.IdleGoroutinesAfter, n.GoroutinesEarly, n.GoroutinesLate, n.GoroutinesMax, n.GoroutinesPer10Min,
			n.IdleRSSBefore, n.IdleRSSAfter, n.RSSEarly, n.RSSLate, n.RSSMax, n.RSSMiBPer10Min)
		for _, f := range n.Failures {
			fmt.Fprintf(&b, "    FAIL: %s\n", f)
		}
	}
	if r.Failed {
		b.WriteString("  soak FAILED")
	} else {
		fmt.Fprintf(&b, "  within bounds (load: goroutines +%.0f %% + 30, RSS +%.0f %% + 16 MiB, second vs last quarter; idle goroutines after ≤ before + %d)",
			soakGoroutineGrowth*100, soakRSSGrowth*100, soakIdleSlack)
	}
	return b.String()
}

// ErrSoakGrowth is returned when a node grew beyond the soak's bounds.
var ErrSoakGrowth = errors.New("bench: soak: growth beyond the bounds")

// RunSoak runs the soak.
func RunSoak(ctx context.Context, cfg SoakConfig) (*SoakResult, error) {
	cfg = cfg.withDefaults()
	wc, err := WALConfig{Subs: cfg.WALSubs, Rate: cfg.WALRate, Duration: cfg.Duration, Warmup: time.Second, ConnectRate: 200}.withDefaults()
	if err != nil {
		return nil, err
	}
	cc := cluster.Config{Bin: cfg.MeshcastBin, Regions: cluster.Cycle([]string{"iad", "fra", "sin"}, cfg.Nodes), BasePort: cfg.BasePort, LogDir: cfg.LogDir}
	cl, pg, err := startWithPostgres(ctx, cc, cluster.PostgresConfig{}, func(ctx context.Context, url string) error {
		return withConn(ctx, url, func(conn *pgx.Conn) error { return setupSchema(ctx, conn, &wc) })
	})
	if err != nil {
		return nil, err
	}
	defer pg.Stop()
	defer cl.Stop()
	cfg.Logf("soak: cluster up (logs in %s)", cl.LogDir)
	res := &SoakResult{Config: cfg}
	for _, n := range cl.Nodes {
		res.Nodes = append(res.Nodes, &SoakNode{Name: n.Name})
	}
	scrape := func(i int) cluster.Metrics {
		m, _ := cluster.Scrape(ctx, cl.Nodes[i].MetricsURL(), nil)
		return m
	}
	for i, n := range res.Nodes {
		m := scrape(i)
		n.IdleGoroutinesBefore, n.IdleRSSBefore = m["go_goroutines"], m["process_resident_memory_bytes"]/(1<<20)
	}
	wc.URL, wc.DatabaseURL, wc.SkipSetup, wc.PostgresPID = strings.Join(cl.URLs("meshbench"), ","), pg.URL(), true, pg.PID()
	loadErr := soakLoad(ctx, cfg, wc, res, scrape)
	// Idle again: every client gone (the nodes notice closed sockets at
	// once), then the goroutines that wind down with them.
	for settle := time.Now().Add(30 * time.Second); time.Now().Before(settle); time.Sleep(200 * time.Millisecond) {
		conns := 0.0
		for i := range cl.Nodes {
			conns += scrape(i)["meshcast_connections"]
		}
		if conns == 0 {
			break
		}
	}
	time.Sleep(3 * time.Second) // interest lingers (2 s), then its timers and goroutines are gone
	for i, n := range res.Nodes {
		m := scrape(i)
		n.IdleGoroutinesAfter, n.IdleRSSAfter = m["go_goroutines"], m["process_resident_memory_bytes"]/(1<<20)
		res.Detector.add(m)
		if n.judge(); len(n.Failures) > 0 {
			res.Failed = true
		}
	}
	if loadErr != nil {
		return res, loadErr
	}
	if res.Failed {
		return res, ErrSoakGrowth
	}
	return res, nil
}

// soakLoad runs the broadcast, the changes (wc) and the churners for
// cfg.Duration and samples the nodes meanwhile.
func soakLoad(ctx context.Context, cfg SoakConfig, wc WALConfig, res *SoakResult, scrape func(i int) cluster.Metrics) error {
	ctx, cancel := context.WithTimeout(ctx, cfg.Duration+4*time.Minute)
	defer cancel()
	began := time.Now()
	deadline := began.Add(cfg.Duration)
	var wg sync.WaitGroup
	var bErr, wErr error
	wg.Go(func() {
		res.Broadcast, bErr = Run(ctx, Config{URL: wc.URL, Mode: ModeLatency, Subs: cfg.Subs, Rate: cfg.Rate,
			Duration: cfg.Duration, Topic: "realtime:soak", ConnectRate: 500})
	})
	wg.Go(func() { res.WAL, wErr = RunWAL(ctx, wc) })
	var cycles, churnErrs atomic.Uint64
	var firstErr atomic.Value
	urls := wc.urls()
	for i := range cfg.Churners {
		wg.Go(func() { churn(ctx, urls[i%len(urls)], i, deadline, &cycles, &churnErrs, &firstErr) })
	}
	loadDone := make(chan struct{})
	go func() { wg.Wait(); close(loadDone) }()
	tick := time.NewTicker(cfg.Sample)
	defer tick.Stop()
	for loop := true; loop; {
		select {
		case <-loadDone:
			loop = false
		case <-tick.C:
			if time.Now().After(deadline) {
				continue // the load is winding down: not a steady-state sample
			}
			at := time.Since(began).Seconds()
			for i, n := range res.Nodes {
				if m := scrape(i); m != nil {
					n.Samples = append(n.Samples, SoakSample{At: at, Goroutines: m["go_goroutines"],
						RSSMiB: m["process_resident_memory_bytes"] / (1 << 20), Connections: m["meshcast_connections"]})
				}
			}
		}
	}
	res.Seconds = time.Since(began).Seconds()
	res.ChurnCycles, res.ChurnErrors = cycles.Load(), churnErrs.Load()
	if e, ok := firstErr.Load().(string); ok {
		res.FirstChurnEr = e
	}
	return errors.Join(bErr, wErr)
}

// judge computes a node's figures and checks the bounds.
func (n *SoakNode) judge() {
	s := n.Samples
	if len(s) < 4 {
		n.Failures = append(n.Failures, fmt.Sprintf("only %d samples", len(s)))
		return
	}
	q := len(s) / 4
	col := func(part []SoakSample, f func(SoakSample) float64) []float64 {
		v := make([]float64, len(part))
		for i, x := range part {
			v[i] = f(x)
		}
		return v
	}
	gor := func(x SoakSample) float64 { return x.Goroutines }
	rss := func(x SoakSample) float64 { return x.RSSMiB }
	n.GoroutinesEarly, n.GoroutinesLate = measure.Median(col(s[q:2*q], gor)), measure.Median(col(s[len(s)-q:], gor))
	n.RSSEarly, n.RSSLate = measure.Median(col(s[q:2*q], rss)), measure.Median(col(s[len(s)-q:], rss))
	for _, x := range s {
		n.GoroutinesMax, n.RSSMax = max(n.GoroutinesMax, x.Goroutines), max(n.RSSMax, x.RSSMiB)
	}
	at := col(s[q:], func(x SoakSample) float64 { return x.At })
	n.GoroutinesPer10Min = 600 * measure.Slope(at, col(s[q:], gor))
	n.RSSMiBPer10Min = 600 * measure.Slope(at, col(s[q:], rss))
	if lim := n.GoroutinesEarly*(1+soakGoroutineGrowth) + 30; n.GoroutinesLate > lim {
		n.Failures = append(n.Failures, fmt.Sprintf("goroutines grew under load: %.0f → %.0f (bound %.0f)", n.GoroutinesEarly, n.GoroutinesLate, lim))
	}
	if lim := n.RSSEarly*(1+soakRSSGrowth) + 16; n.RSSLate > lim {
		n.Failures = append(n.Failures, fmt.Sprintf("RSS grew under load: %.1f → %.1f MiB (bound %.1f)", n.RSSEarly, n.RSSLate, lim))
	}
	if lim := n.IdleGoroutinesBefore + soakIdleSlack; n.IdleGoroutinesAfter > lim {
		n.Failures = append(n.Failures, fmt.Sprintf("idle goroutines after the load %.0f, before %.0f (bound %.0f): something leaked", n.IdleGoroutinesAfter, n.IdleGoroutinesBefore, lim))
	}
}

// churn connects, joins a presence channel, tracks, holds for a while and
// leaves — gracefully or by dropping the socket — until deadline.
func churn(ctx context.Context, url string, id int, deadline time.Time, cycles, errs *atomic.Uint64, first *atomic.Value) {
	rng := rand.New(rand.NewPCG(uint64(id), 77))
	for n := 0; time.Now().Before(deadline) && ctx.Err() == nil; n++ {
		topic := "realtime:soak-room-" + strconv.Itoa(rng.IntN(4))
		key := fmt.Sprintf("c%d-%d", id, n)
		c, err := client.DialWS(ctx, url, client.Options{})
		if err == nil {
			if err = client.JoinChannel(c, topic, client.Join{Presence: key}, 10*time.Second, nil); err == nil {
				err = c.WriteFrame(ws.OpText, client.Track(nil, 2, topic, []byte(`{"k":"`+key+`"}`)))
			}
			if err != nil {
				c.Close()
			}
		}
		if err != nil {
			errs.Add(1)
			first.CompareAndSwap(nil, err.Error())
			time.Sleep(time.Second)
			continue
		}
		// Read (and discard) what arrives while holding, so that the
		// churner is never a slow consumer.
		readDone := make(chan struct{})
		go func() {
			defer close(readDone)
			for err == nil {
				_, _, err = c.ReadFrame()
			}
		}()
		sleepCtx(ctx, time.Duration(500+rng.IntN(1500))*time.Millisecond)
		if n%2 == 0 {
			c.CloseGracefully()
		} else {
			c.Close()
		}
		<-readDone
		cycles.Add(1)
	}
}
