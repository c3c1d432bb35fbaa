package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/meshcast/meshcast/bench/client"
	"github.com/meshcast/meshcast/bench/cluster"
	"github.com/meshcast/meshcast/bench/measure"
	"github.com/meshcast/meshcast/wire/phx"

	"github.com/gobwas/ws"
)

// The failure-detection benchmark (meshbench detect). A cluster of meshcast
// processes, one client per node tracking a presence key named after its
// node on one topic. Kill rounds: kill -9 a node, time until every other
// node's client has the presence_diff leave of that node's key, restart the
// node, wait until everyone sees it again, repeat (the victim rotates).
// Load run: nothing is killed, a broadcast load saturates the cluster for a
// while, and any presence leave a client sees, or any suspicion, death or
// refutation the nodes count, is a false positive of the failure detector.

// DetectConfig configures RunDetect. Zero fields take the defaults noted.
type DetectConfig struct {
	MeshcastBin string   // default bin/meshcast
	Nodes       int      // processes, default 3 (at most 9)
	Kills       int      // kill rounds; default 20 (0 with Load set)
	BasePort    int      // node i serves on BasePort+i, gossips on BasePort+100+10i (mesh +1); default 4900
	Flags       []string // more meshcast flags for every node (e.g. --gossip-probe-interval 1s)
	// Settle is the wait between a restarted node being back and the
	// next kill: Settle plus up to Settle at random, so that kills fall at
	// any phase of the probes. Default 1s.
	Settle time.Duration
	// Timeout: a leave not seen this long after the kill counts as
	// missed; default 30s.
	Timeout time.Duration
	// Load, if set, runs the false-positive run instead of the kills:
	// throughput-mode broadcast to LoadSubs subscribers spread over the
	// nodes for this long.
	Load     time.Duration
	LoadSubs int // default 1000
	// GOGC for the nodes of the load run (more collections, more pauses);
	// default 25, -1 leaves Go's default.
	GOGC   int
	LogDir string // node logs; default a new temporary directory
	Seed   uint64 // the settle jitter; default 1
	Logf   func(format string, args ...any)
}

func (c DetectConfig) withDefaults() (DetectConfig, error) {
	orDefault(&c.MeshcastBin, "bin/meshcast")
	orDefault(&c.Nodes, 3)
	if c.Load == 0 {
		orDefault(&c.Kills, 20)
	}
	orDefault(&c.BasePort, 4900)
	orDefault(&c.Settle, time.Second)
	orDefault(&c.Timeout, 30*time.Second)
	orDefault(&c.LoadSubs, 1000)
	orDefault(&c.GOGC, 25)
	orDefault(&c.Seed, 1)
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
	switch {
	case c.Nodes < 2 || c.Nodes > 9:
		return c, errors.New("bench: detect needs 2 to 9 nodes")
	case c.Kills < 0 || c.Kills > 1000:
		return c, errors.New("bench: kills must be within [0, 1000]")
	case c.Load < 0 || c.Load > time.Hour:
		return c, errors.New("bench: load must be within [0, 1h]")
	}
	return c, nil
}

// Budget bounds RunDetect.
func (c DetectConfig) Budget() time.Duration {
	c, err := c.withDefaults()
	if err != nil {
		return time.Minute
	}
	perKill := c.Timeout + 2*cluster.StartTimeout + 2*c.Settle
	return time.Minute + time.Duration(c.Kills)*perKill + c.Load + 2*time.Minute
}

// DetectorCounts are the failure detector's counters summed over every
// node process of a run (killed ones as of just before their kill).
type DetectorCounts struct {
	Suspicions     float64 `json:"suspicions"`       // meshcast_gossip_suspicions_total
	DeclaredDead   float64 `json:"declared_dead"`    // meshcast_gossip_declared_dead_total
	RefutedSuspect float64 `json:"refuted_suspect"`  // meshcast_gossip_refuted_total{accusation="suspect"}
	RefutedDead    float64 `json:"refuted_dead"`     // meshcast_gossip_refuted_total{accusation="dead"}
	Failed         float64 `json:"members_failed"`   // meshcast_mesh_members_failed_total
	Returned       float64 `json:"members_returned"` // meshcast_mesh_members_returned_total
	MaxHealthScore float64 `json:"max_health_score"` // highest meshcast_gossip_health_score seen
}

func (d *DetectorCounts) add(m cluster.Metrics) {
	d.Suspicions += m["meshcast_gossip_suspicions_total"]
	d.DeclaredDead += m["meshcast_gossip_declared_dead_total"]
	d.RefutedSuspect += m[`meshcast_gossip_refuted_total{accusation="suspect"}`]
	d.RefutedDead += m[`meshcast_gossip_refuted_total{accusation="dead"}`]
	d.Failed += m["meshcast_mesh_members_failed_total"]
	d.Returned += m["meshcast_mesh_members_returned_total"]
	d.MaxHealthScore = max(d.MaxHealthScore, m["meshcast_gossip_health_score"])
}

// DetectResult is what RunDetect measured.
type DetectResult struct {
	Nodes int      `json:"nodes"`
	Flags []string `json:"flags"`
	Kills int      `json:"kills"`
	// Per kill: from kill -9 to the presence leave at the last (Last) and
	// the first (First) of the other nodes' clients, ms.
	LastMS  []float64 `json:"last_ms"`
	FirstMS []float64 `json:"first_ms"`
	Missed  int       `json:"missed"` // kills whose leave some client did not see within Timeout
	Min     float64   `json:"min_ms"`
	P50     float64   `json:"p50_ms"`
	P95     float64   `json:"p95_ms"`
	Max     float64   `json:"max_ms"`

	LoadSeconds       float64 `json:"load_s,omitempty"`
	LoadDeliveriesSec float64 `json:"load_deliveries_per_s,omitempty"`
	LoadHostCPU       float64 `json:"load_host_cpu,omitempty"`
	GOGC              int     `json:"gogc,omitempty"`
	// Leaves seen by the clients during the load run: each is a node
	// declared dead while it was alive.
	FalseLeaves int `json:"false_leaves"`

	Detector DetectorCounts `json:"detector"`
}

func (r *DetectResult) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "detect: %d nodes, flags %q\n", r.Nodes, r.Flags)
	if r.Kills > 0 {
		fmt.Fprintf(&b, "  %d kills: kill -9 → presence leave at every other node's client: min %.0f, p50 %.0f, p95 %.0f, max %.0f ms; missed %d\n",
			r.Kills, r.Min, r.P50, r.P95, r.Max, r.Missed)
		fmt.Fprintf(&b, "  per kill (last client, ms): %s\n", joinMS(r.LastMS))
	}
	if r.LoadSeconds > 0 {
		fmt.Fprintf(&b, "  load %.0f s (GOGC %d): %.0f deliveries/s, host CPU %.2f cores; presence leaves seen: %d\n",
			r.LoadSeconds, r.GOGC, r.LoadDeliveriesSec, r.LoadHostCPU, r.FalseLeaves)
	}
	d := r.Detector
	fmt.Fprintf(&b, "  detector: %.0f suspicions, %.0f declared dead, %.0f members failed, %.0f returned, refuted %.0f suspect / %.0f dead, max health score %.0f",
		d.Suspicions, d.DeclaredDead, d.Failed, d.Returned, d.RefutedSuspect, d.RefutedDead, d.MaxHealthScore)
	return b.String()
}

func joinMS(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.FormatFloat(x, 'f', 0, 64)
	}
	return strings.Join(s, " ")
}

// detectRun is one RunDetect.
type detectRun struct {
	cfg     DetectConfig
	cl      *cluster.Cluster
	clients *client.Readers
	conns   []client.Conn // per node, its client

	mu        sync.Mutex
	lastLeave []map[string]time.Time // per watcher (node index): key → last leave seen
	lastJoin  []map[string]time.Time
	leaves    int // leaves seen in all
}

const detectTopic = "realtime:detect"

// RunDetect runs the kill rounds or, with Load, the false-positive run.
func RunDetect(ctx context.Context, cfg DetectConfig) (*DetectResult, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	r := &detectRun{cfg: cfg, conns: make([]client.Conn, cfg.Nodes)}
	for range cfg.Nodes {
		r.lastLeave = append(r.lastLeave, map[string]time.Time{})
		r.lastJoin = append(r.lastJoin, map[string]time.Time{})
	}
	cc := cluster.Config{Bin: cfg.MeshcastBin, Regions: cluster.Cycle([]string{"local"}, cfg.Nodes), BasePort: cfg.BasePort, JoinAll: true,
		LogDir: cfg.LogDir, Flags: append([]string{"--webtransport-listen", "off", "--log-level", "info", "--events-per-sec", "0", "--bytes-per-sec", "0"}, cfg.Flags...)}
	if cfg.Load > 0 && cfg.GOGC > 0 {
		cc.Env = []string{"GOGC=" + strconv.Itoa(cfg.GOGC)}
	}
	if r.cl, err = cluster.Start(ctx, cc); err != nil {
		return nil, err
	}
	defer r.cl.Stop()
	r.clients = client.NewReaders(time.Now().UnixNano, client.PhoenixHeartbeat, heartbeatEvery)
	defer r.clients.Close()
	for i := range cfg.Nodes {
		if err := r.connect(ctx, i); err != nil {
			return nil, err
		}
	}
	for i := range cfg.Nodes {
		if err := r.waitSeen(ctx, i, time.Time{}); err != nil {
			return nil, err
		}
	}
	res := &DetectResult{Nodes: cfg.Nodes, Flags: cfg.Flags}
	cfg.Logf("detect: %d nodes up (logs in %s)", cfg.Nodes, r.cl.LogDir)
	if cfg.Load > 0 {
		err = r.runLoad(ctx, res)
	} else {
		err = r.runKills(ctx, res)
	}
	for _, n := range r.cl.Nodes {
		if m, serr := cluster.Scrape(ctx, n.MetricsURL(), nil); serr == nil {
			res.Detector.add(m)
		}
	}
	return res, err
}

// connect opens node i's client: join with presence key n<i+1>, track.
func (r *detectRun) connect(ctx context.Context, i int) error {
	key := r.cl.Nodes[i].Name
	c, err := client.DialWS(ctx, r.cl.Nodes[i].URL("meshbench"), client.Options{})
	if err == nil {
		if err = client.JoinChannel(c, detectTopic, client.Join{Presence: key}, 10*time.Second, nil); err != nil {
			c.Close()
		}
	}
	if err != nil {
		return fmt.Errorf("bench: client of %s: %w", key, err)
	}
	r.conns[i] = c
	r.clients.Hold(c, &watcher{r: r, i: i})
	if err := c.WriteFrame(ws.OpText, client.Track(nil, 2, detectTopic, []byte(`{"node":"`+key+`"}`))); err != nil {
		return fmt.Errorf("bench: track on %s: %w", key, err)
	}
	return nil
}

// watcher is node i's client: it records the presence joins and leaves it
// sees.
type watcher struct {
	r *detectRun
	i int
}

func (w *watcher) OnMessage(op ws.OpCode, b []byte, _ int64) {
	now := time.Now()
	f, err := phx.ScanV2(b)
	if op != ws.OpText || err != nil {
		return
	}
	var keys struct {
		Joins  map[string]json.RawMessage `json:"joins"`
		Leaves map[string]json.RawMessage `json:"leaves"`
	}
	switch string(f.Event) {
	case "presence_state":
		err = json.Unmarshal(f.Payload, &keys.Joins)
	case "presence_diff":
		err = json.Unmarshal(f.Payload, &keys)
	default:
		return
	}
	if err != nil {
		return
	}
	w.r.mu.Lock()
	defer w.r.mu.Unlock()
	for k := range keys.Joins {
		w.r.lastJoin[w.i][k] = now
	}
	for k := range keys.Leaves {
		w.r.lastLeave[w.i][k] = now
		w.r.leaves++
	}
}

// waitSeen waits until every client (but victim's own when it is down)
// has seen node victim's key join after since, and victim's client every
// other key.
func (r *detectRun) waitSeen(ctx context.Context, victim int, since time.Time) error {
	deadline := time.Now().Add(r.cfg.Timeout)
	key := r.cl.Nodes[victim].Name
	for {
		r.mu.Lock()
		ok := true
		for w := range r.cfg.Nodes {
			ok = ok && r.lastJoin[w][key].After(since) && r.lastJoin[victim][r.cl.Nodes[w].Name].After(since)
		}
		r.mu.Unlock()
		if ok {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("bench: %s's presence not seen everywhere within %s (logs in %s)", key, r.cfg.Timeout, r.cl.LogDir)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// runKills is the kill rounds.
func (r *detectRun) runKills(ctx context.Context, res *DetectResult) error {
	rng := rand.New(rand.NewPCG(r.cfg.Seed, r.cfg.Seed^0x5eed))
	for k := range r.cfg.Kills {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(r.cfg.Settle + time.Duration(rng.Int64N(int64(r.cfg.Settle))))
		v := k % r.cfg.Nodes
		victim := r.cl.Nodes[v]
		if m, err := cluster.Scrape(ctx, victim.MetricsURL(), nil); err == nil {
			res.Detector.add(m) // its life's counts, before they are gone
		}
		killed := time.Now()
		if err := victim.Kill(); err != nil {
			return fmt.Errorf("bench: kill %s: %w", victim.Name, err)
		}
		r.conns[v].Close()
		first, last, ok := r.waitLeave(ctx, v, killed)
		res.Kills++
		if !ok {
			res.Missed++
			r.cfg.Logf("kill %d of %s: leave not seen everywhere within %s", k+1, victim.Name, r.cfg.Timeout)
		} else {
			res.FirstMS = append(res.FirstMS, measure.MS(first))
			res.LastMS = append(res.LastMS, measure.MS(last))
			r.cfg.Logf("kill %d of %s: leave seen after %.0f ms (first client %.0f ms)", k+1, victim.Name, measure.MS(last), measure.MS(first))
		}
		restarted := time.Now()
		if err := r.cl.Restart(ctx, v); err != nil {
			return err
		}
		if err := r.connect(ctx, v); err != nil {
			return err
		}
		if err := r.waitSeen(ctx, v, restarted); err != nil {
			return err
		}
	}
	if len(res.LastMS) > 0 {
		s := slices.Sorted(slices.Values(res.LastMS))
		res.Min, res.Max = s[0], s[len(s)-1]
		res.P50, res.P95 = measure.NearestRank(s, 0.50), measure.NearestRank(s, 0.95)
	}
	return nil
}

// waitLeave waits until every other node's client has seen victim's key
// leave after killed; it returns the first and the last one's delay.
func (r *detectRun) waitLeave(ctx context.Context, victim int, killed time.Time) (first, last time.Duration, ok bool) {
	key := r.cl.Nodes[victim].Name
	deadline := killed.Add(r.cfg.Timeout)
	for {
		r.mu.Lock()
		first, last, ok = 0, 0, true
		for w := range r.cfg.Nodes {
			if w == victim {
				continue
			}
			t := r.lastLeave[w][key]
			if !t.After(killed) {
				ok = false
				break
			}
			d := t.Sub(killed)
			if first == 0 || d < first {
				first = d
			}
			last = max(last, d)
		}
		r.mu.Unlock()
		if ok || time.Now().After(deadline) || ctx.Err() != nil {
			return first, last, ok
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// runLoad is the false-positive run.
func (r *detectRun) runLoad(ctx context.Context, res *DetectResult) error {
	lc := Config{URL: strings.Join(r.cl.URLs("meshbench"), ","), Mode: ModeThroughput, Subs: r.cfg.LoadSubs, Duration: r.cfg.Load,
		Topic: "realtime:load", Drain: 2 * time.Second}
	r.mu.Lock()
	leaves0 := r.leaves
	r.mu.Unlock()
	done := make(chan struct{})
	var loadRes *Result
	var loadErr error
	go func() {
		defer close(done)
		lctx, cancel := context.WithTimeout(ctx, lc.Budget())
		defer cancel()
		loadRes, loadErr = Run(lctx, lc)
	}()
	cpu0 := measure.ReadCPU(0, false)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for loop := true; loop; {
		select {
		case <-done:
			loop = false
		case <-tick.C:
			for _, n := range r.cl.Nodes {
				if m, err := cluster.Scrape(ctx, n.MetricsURL(), nil); err == nil {
					res.Detector.MaxHealthScore = max(res.Detector.MaxHealthScore, m["meshcast_gossip_health_score"])
				}
			}
			for _, c := range r.conns { // a client that cannot write has a dead node
				c.WriteFrame(ws.OpText, client.PhoenixHeartbeat(nil, 1))
			}
		}
	}
	cpu1 := measure.ReadCPU(0, false)
	_, res.LoadHostCPU, _ = cpu1.Cores(cpu0)
	res.LoadSeconds, res.GOGC = cpu1.At.Sub(cpu0.At).Seconds(), r.cfg.GOGC
	if loadRes != nil {
		res.LoadDeliveriesSec = loadRes.DeliveriesPerSec
	}
	r.mu.Lock()
	res.FalseLeaves = r.leaves - leaves0
	r.mu.Unlock()
	if loadErr != nil {
		return fmt.Errorf("bench: load: %w", loadErr)
	}
	return nil
}
