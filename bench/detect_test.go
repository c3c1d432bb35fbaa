package bench

import (
	"context"
	"errors"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/meshcast/meshcast/bench/cluster"
)

// TestScenarioSmoke runs meshbench detect, slow and soak for a few
// seconds each, in parallel, on real meshcast processes (and Postgres).
func TestScenarioSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts meshcast processes")
	}
	leaks := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, leaks) }) // after the parallel subtests
	bin := buildMeshcast(t)
	t.Run("detect", func(t *testing.T) { t.Parallel(); detectSmoke(t, bin) })
	t.Run("slow", func(t *testing.T) { t.Parallel(); slowSmoke(t, bin) })
	t.Run("soak", func(t *testing.T) { t.Parallel(); soakSmoke(t, bin) })
}

// detectSmoke kills one node of three once: every other node's client
// sees its presence leave, the two survivors count it as failed, nothing
// counts a false death, and the restarted node is back everywhere. Then a
// short load run on a fresh cluster completes with deliveries.
func detectSmoke(t *testing.T, bin string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := DetectConfig{MeshcastBin: bin, Nodes: 3, Kills: 1, BasePort: freeBasePort(t, 3), Settle: 100 * time.Millisecond,
		Timeout: 15 * time.Second, LogDir: t.TempDir(), Logf: t.Logf}
	res, err := RunDetect(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(res)
	if res.Kills != 1 || res.Missed != 0 || len(res.LastMS) != 1 || res.LastMS[0] <= 0 || res.FirstMS[0] > res.LastMS[0] {
		t.Fatalf("kill rounds: %+v", res)
	}
	// Both survivors removed the victim as failed (its own counters died
	// with it). More is possible: a host stalled for seconds makes false
	// deaths too, which the benchmark measures and this smoke run allows.
	if d := res.Detector; d.Failed < 2 || d.Failed-d.Returned < 2 || d.DeclaredDead < 1 || d.Suspicions < 1 {
		t.Fatalf("detector counts after one kill: %+v", d)
	}
	cfg.Kills, cfg.Load, cfg.LoadSubs, cfg.BasePort = 0, 1500*time.Millisecond, 30, freeBasePort(t, 3)
	res, err = RunDetect(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(res)
	if res.LoadDeliveriesSec <= 0 || res.LoadSeconds <= 0 {
		t.Fatalf("load run: %+v", res)
	}
}

// slowSmoke runs one A/B pair against a node with a 2 MiB queue (a
// second of the traffic, so that the others ride out a loaded host): the
// slow subscriber is closed with 1008 and the others lose nothing.
func slowSmoke(t *testing.T, bin string) {
	addr := "127.0.0.1:" + strconv.Itoa(freeBasePort(t, 1)+1)
	cmd := exec.Command(bin, "--listen", addr, "--webtransport-listen", "off", "--log-level", "warn",
		"--queue-bytes", "2097152", "--bytes-per-sec", "0")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	url := "ws://" + addr + "/realtime/v1/websocket?apikey=x&vsn=2.0.0"
	for ctx.Err() == nil {
		if _, err := cluster.Scrape(ctx, cluster.MetricsURL(url), nil); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	res, err := RunSlow(ctx, SlowConfig{URL: url, ServerPID: cmd.Process.Pid, Subs: 20, Rate: 500, PayloadSize: 4000,
		Duration: 4 * time.Second, Rounds: 1, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(res)
	if len(res.Rounds) != 2 || res.Rounds[0].WithSlow || !res.Rounds[1].WithSlow {
		t.Fatalf("rounds: %+v", res.Rounds)
	}
	b := res.Rounds[1]
	if b.SlowClosedAfter < 0 || b.SlowCloseCode != 1008 || !strings.Contains(b.SlowCloseReason, "slow consumer") {
		t.Errorf("the slow subscriber: closed after %.1f s, close %d %q (%s)", b.SlowClosedAfter, b.SlowCloseCode, b.SlowCloseReason, b.SlowEnd)
	}
	for _, rd := range res.Rounds {
		if r := rd.Result; r.Lost != 0 || r.Disconnects != 0 || r.Connected != 20 {
			t.Errorf("the subscribers that keep up (slow one there: %v): %s", rd.WithSlow, r)
		}
	}
}

// soakSmoke runs the soak for a few seconds: every node is sampled,
// the load ran (broadcast, changes, churn), and the idle cluster after it
// has no more goroutines than before.
func soakSmoke(t *testing.T, bin string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := RunSoak(ctx, SoakConfig{MeshcastBin: bin, BasePort: freeBasePort(t, 3), Duration: 6 * time.Second, Sample: 500 * time.Millisecond,
		Subs: 30, Rate: 50, WALSubs: 6, WALRate: 10, Churners: 4, LogDir: t.TempDir(), Logf: t.Logf})
	if res != nil {
		t.Log(res)
	}
	if err != nil && !errors.Is(err, ErrSoakGrowth) {
		t.Fatal(err)
	}
	for _, n := range res.Nodes {
		if len(n.Samples) < 4 {
			t.Errorf("%s: %d samples", n.Name, len(n.Samples))
		}
		if n.IdleGoroutinesAfter > n.IdleGoroutinesBefore+soakIdleSlack {
			t.Errorf("%s: idle goroutines %v before the load, %v after", n.Name, n.IdleGoroutinesBefore, n.IdleGoroutinesAfter)
		}
	}
	if res.ChurnCycles == 0 || res.Broadcast == nil || res.Broadcast.Delivered == 0 || res.WAL == nil {
		t.Errorf("the load did not run: %d churn cycles, broadcast %v, wal %v", res.ChurnCycles, res.Broadcast, res.WAL)
	}
}
