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
	BasePort    int           // default 5400 (see ClusterConfig)
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
	if c.MeshcastBin == "" {
		c.MeshcastBin = "bin/meshcast"
	}
	if c.Nodes == 0 {
		c.Nodes = 3
	}
	if c.BasePort == 0 {
		c.BasePort = 5400
	}
	if c.Duration == 0 {
		c.Duration = 10 * time.Minute
	}
	if c.Sample == 0 {
		c.Sample = 5 * time.Second
	}
	if c.Subs == 0 {
		c.Subs = 300
	}
	if c.Rate == 0 {
		c.Rate = 100
	}
	if c.WALSubs == 0 {
		c.WALSubs = 30
	}
	if c.WALRate == 0 {
		c.WALRate = 20
	}
	if c.Churners == 0 {
		c.Churners = 12
	}
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
	cc := ClusterConfig{MeshcastBin: cfg.MeshcastBin, Nodes: cfg.Nodes, BasePort: cfg.BasePort, LogDir: cfg.LogDir}
	wc, err := WALConfig{Subs: cfg.WALSubs, Rate: cfg.WALRate, Duration: cfg.Duration, Warmup: time.Second, ConnectRate: 200}.withDefaults()
	if err != nil {
		return nil, err
	}
	cl, err := StartCluster(ctx, cc, nil, func(ctx context.Context, url string) error {
		return withConn(ctx, url, func(conn *pgx.Conn) error { return setupSchema(ctx, conn, &wc) })
	})
	if err != nil {
		return nil, err
	}
	defer cl.Stop()
	cfg.Logf("soak: cluster up (logs in %s)", cl.LogDir)
	res := &SoakResult{Config: cfg}
	for _, n := range cl.Nodes {
		res.Nodes = append(res.Nodes, &SoakNode{Name: n.Name})
	}
	idle := func(after bool) {
		for i, n := range cl.Nodes {
			m, err := ScrapeMetrics(ctx, n.MetricsURL())
			if err != nil {
				continue
			}
			g, rss := m["go_goroutines"], m["process_resident_memory_bytes"]/(1<<20)
			if after {
				res.Nodes[i].IdleGoroutinesAfter, res.Nodes[i].IdleRSSAfter = g, rss
			} else {
				res.Nodes[i].IdleGoroutinesBefore, res.Nodes[i].IdleRSSBefore = g, rss
			}
		}
	}
	idle(false)

	urls := cl.WSURLs("meshbench")
	lctx, cancel := context.WithTimeout(ctx, cfg.Duration+4*time.Minute)
	defer cancel()
	began := time.Now()
	deadline := began.Add(cfg.Duration)
	var wg sync.WaitGroup
	var bErr, wErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		res.Broadcast, bErr = Run(lctx, Config{URL: strings.Join(urls, ","), Mode: ModeLatency, Subs: cfg.Subs, Rate: cfg.Rate,
			Duration: cfg.Duration, Topic: "realtime:soak", ConnectRate: 500})
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		w := wc
		w.URL, w.DatabaseURL, w.SkipSetup, w.PostgresPID = strings.Join(urls, ","), cl.PG.URL(), true, cl.PG.PID()
		res.WAL, wErr = RunWAL(lctx, w)
	}()
	var cycles, churnErrs atomic.Uint64
	var firstErr atomic.Value
	for i := range cfg.Churners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			churn(lctx, urls[i%len(urls)], i, deadline, &cycles, &churnErrs, &firstErr)
		}()
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
			at := time.Since(began).Seconds()
			if time.Now().After(deadline) {
				continue // the load is winding down: not a steady-state sample
			}
			for i, n := range cl.Nodes {
				if m, err := ScrapeMetrics(ctx, n.MetricsURL()); err == nil {
					res.Nodes[i].Samples = append(res.Nodes[i].Samples, SoakSample{At: at, Goroutines: m["go_goroutines"],
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
	// Idle again: every client gone (the nodes notice closed sockets at
	// once), then the goroutines that wind down with them.
	settle := time.Now().Add(30 * time.Second)
	for time.Now().Before(settle) {
		conns := 0.0
		for _, n := range cl.Nodes {
			if m, err := ScrapeMetrics(ctx, n.MetricsURL()); err == nil {
				conns += m["meshcast_connections"]
			}
		}
		if conns == 0 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(3 * time.Second) // interest lingers (2 s), then its timers and goroutines are gone
	idle(true)
	for _, n := range cl.Nodes {
		if m, err := ScrapeMetrics(ctx, n.MetricsURL()); err == nil {
			res.Detector.add(m)
		}
	}
	for _, n := range res.Nodes {
		n.judge()
		if len(n.Failures) > 0 {
			res.Failed = true
		}
	}
	if err := errors.Join(bErr, wErr); err != nil {
		return res, err
	}
	if res.Failed {
		return res, ErrSoakGrowth
	}
	return res, nil
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
	fail := func(err error) {
		errs.Add(1)
		first.CompareAndSwap(nil, err.Error())
		time.Sleep(time.Second)
	}
	for n := 0; time.Now().Before(deadline) && ctx.Err() == nil; n++ {
		c, err := dialWS(ctx, url, 10*time.Second, 4096)
		if err != nil {
			fail(err)
			continue
		}
		topic := "realtime:soak-room-" + strconv.Itoa(rng.IntN(4))
		key := fmt.Sprintf("c%d-%d", id, n)
		if err := joinTopic(c, topic, fmt.Sprintf(regionJoinPresence, key), 10*time.Second); err != nil {
			c.Close()
			fail(err)
			continue
		}
		track := `["1","2","` + topic + `","presence",{"type":"presence","event":"track","payload":{"k":"` + key + `"}}]`
		if err := c.WriteFrame(ws.OpText, []byte(track)); err != nil {
			c.Close()
			fail(err)
			continue
		}
		// Read (and discard) what arrives while holding, so that the
		// churner is never a slow consumer.
		readDone := make(chan struct{})
		go func() {
			defer close(readDone)
			for {
				if _, _, err := c.ReadFrame(); err != nil {
					return
				}
			}
		}()
		hold := time.Duration(500+rng.IntN(1500)) * time.Millisecond
		select {
		case <-time.After(hold):
		case <-ctx.Done():
		}
		if n%2 == 0 {
			c.CloseGracefully()
		} else {
			c.Close()
		}
		<-readDone
		cycles.Add(1)
	}
}
