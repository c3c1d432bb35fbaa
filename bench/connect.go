package bench

import (
	"context"
	"fmt"
	"runtime"
	"sync"

	"github.com/gobwas/ws"

	"github.com/meshcast/meshcast/bench/client"
	"github.com/meshcast/meshcast/bench/cluster"
	"github.com/meshcast/meshcast/bench/measure"
	"github.com/meshcast/meshcast/wire/phx"
)

// The connect scenario: connections ramped up at a rate and held idle; what
// they cost the nodes and meshbench.

// idleSubs is the one handler of every connection of the connect scenario:
// only heartbeat replies are expected, so it keeps no state per connection.
type idleSubs struct {
	mu sync.Mutex
	t  tally
}

func (h *idleSubs) OnMessage(op ws.OpCode, b []byte, _ int64) {
	if f, err := phx.ScanV2(b); op != ws.OpText || err != nil || string(f.Event) != "phx_reply" {
		h.mu.Lock()
		h.t.odd(b)
		h.mu.Unlock()
	}
}

// runConnect ramps the connections up, holds them idle and reads what they
// cost: each node's resident memory per connection it holds, meshbench's
// own, and the handshake times per region.
func (r *regionRun) runConnect(ctx context.Context, res *RegionResult) error {
	cfg := &r.cfg
	rss0 := nodeRSS(ctx, cfg.Sites, cfg.RegionHeader)
	runtime.GC()
	client0, _ := measure.ReadRSSKiB(0)
	cpu0 := measure.ReadCPU(0, false)
	before := scrapeSites(ctx, cfg.Sites, cfg.RegionHeader)
	idle := &idleSubs{}
	r.connectSubs(ctx, res, r.placements(), func(int) client.Join { return client.Join{} }, func(int) client.Handler { return idle })
	if res.Connected == 0 {
		return fmt.Errorf("bench: no connection: %s", res.FirstConnectError)
	}
	cf := &ConnectFigures{RampSeconds: res.ConnectSeconds, IdleSeconds: cfg.Idle.Seconds(), NodeRSSPerConnKB: map[string]float64{}}
	if res.ConnectSeconds > 0 {
		cf.ConnectsPerSec = float64(res.Connected) / res.ConnectSeconds
	}
	r.logf("holding %d connections for %s", res.Connected, cfg.Idle)
	sleepCtx(ctx, cfg.Idle)
	rss1 := nodeRSS(ctx, cfg.Sites, cfg.RegionHeader)
	after := scrapeSites(ctx, cfg.Sites, cfg.RegionHeader)
	for i, kib := range rss1 {
		if m := after.metrics[i]; m != nil && m["meshcast_connections"] > 0 && rss0[i] > 0 && kib > 0 {
			id, region := m.NodeInfo()
			cf.NodeRSSPerConnKB[region+" "+id] = float64(kib-rss0[i]) / m["meshcast_connections"]
		}
	}
	if client1, err := measure.ReadRSSKiB(0); err == nil {
		cf.ClientRSSMiB = float64(client1) / 1024
		cf.ClientRSSPerConn = float64(client1-client0) / float64(res.Connected)
	}
	res.Goroutines = runtime.NumGoroutine()
	failed, _ := r.poll.Errs()
	cf.HeldAfterIdle = res.Connected - failed
	cpu1 := measure.ReadCPU(0, false)
	res.ClientCPU, res.HostCPU, _ = cpu1.Cores(cpu0)
	res.Server = serverFigures(before, after, 0, 0, cpu1.At.Sub(cpu0.At).Seconds())
	r.poll.Close()
	r.disconnects(res)
	res.Unexpected, res.FirstUnexpected = idle.t.unexpected, idle.t.firstUnexp
	res.Connect = cf
	return nil
}

// nodeRSS reads every node's resident memory in KiB (0: unknown), in the
// order of the sites' URLs: from /proc for local nodes (Site.PIDs), else
// from its /metrics.
func nodeRSS(ctx context.Context, sites []Site, header string) []int64 {
	var out []int64
	for _, s := range sites {
		for i, u := range s.URLs {
			var kib int64
			if i < len(s.PIDs) && s.PIDs[i] > 0 {
				kib, _ = measure.ReadRSSKiB(s.PIDs[i])
			} else if m, err := cluster.Scrape(ctx, cluster.MetricsURL(u), regionHeader(header, s.Region)); err == nil {
				kib = int64(m["process_resident_memory_bytes"] / 1024)
			}
			out = append(out, kib)
		}
	}
	return out
}
