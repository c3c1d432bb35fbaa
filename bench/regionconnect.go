package bench

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"time"

	"github.com/meshcast/meshcast/bench/measure"

	"github.com/gobwas/ws"
)

// idleSub is a connection of the connect scenario: it only counts what
// arrives (heartbeat replies).
type idleSub struct{ r *regionRun }

func (s *idleSub) onMessage(shard int, op ws.OpCode, b []byte, _ int64) {
	if op != ws.OpText || !containsAll(b, phxReplyEvent) {
		s.r.shards[shard].unexpectedFrame(b)
	}
}

func containsAll(b []byte, parts ...[]byte) bool {
	for _, p := range parts {
		if !bytes.Contains(b, p) {
			return false
		}
	}
	return true
}

// runConnect ramps the connections up, holds them idle and reads what they
// cost: each node's resident memory per connection it holds, meshbench's
// own, and the handshake times per region.
func (r *regionRun) runConnect(ctx context.Context, res *RegionResult) error {
	cfg := &r.cfg
	rss0 := nodeRSS(ctx, cfg.Sites, cfg.RegionHeader)
	runtime.GC()
	client0, _ := measure.ReadRSSKiB(0)
	cpu0 := readClientCPU()
	before := scrapeSites(ctx, cfg.Sites, cfg.RegionHeader)
	ps := r.placements()
	r.connectSubs(ctx, res, ps, func(int) string { return regionJoinBroadcast }, func(int) msgHandler { return &idleSub{r: r} })
	if res.Connected == 0 {
		return fmt.Errorf("bench: no connection: %s", res.FirstConnectError)
	}
	cf := &ConnectFigures{RampSeconds: res.ConnectSeconds, IdleSeconds: cfg.Idle.Seconds(), NodeRSSPerConnKB: map[string]float64{}}
	if res.ConnectSeconds > 0 {
		cf.ConnectsPerSec = float64(res.Connected) / res.ConnectSeconds
	}
	cfg.Logf("holding %d connections for %s", res.Connected, cfg.Idle)
	select {
	case <-time.After(cfg.Idle):
	case <-ctx.Done():
	}
	rss1 := nodeRSS(ctx, cfg.Sites, cfg.RegionHeader)
	after := scrapeSites(ctx, cfg.Sites, cfg.RegionHeader)
	for i, kib := range rss1 {
		if m := after.metrics[i]; m != nil && m["meshcast_connections"] > 0 && rss0[i] > 0 && kib > 0 {
			id, region := m.nodeInfo()
			cf.NodeRSSPerConnKB[region+" "+id] = float64(kib-rss0[i]) / m["meshcast_connections"]
		}
	}
	if client1, err := measure.ReadRSSKiB(0); err == nil {
		cf.ClientRSSMiB = float64(client1) / 1024
		cf.ClientRSSPerConn = float64(client1-client0) / float64(res.Connected)
	}
	res.Goroutines = runtime.NumGoroutine()
	cf.HeldAfterIdle = res.Connected - r.failedSoFar()
	cpu1 := readClientCPU()
	res.ClientCPU, res.HostCPU = cpu1.rate(cpu0)
	res.Server = serverFigures(before, after, 0, 0, time.Since(cpu0.at).Seconds())
	r.group.stopping.Store(true)
	r.group.wg.Wait()
	res.Disconnects, _ = r.group.errs()
	if _, err := r.group.errs(); err != nil {
		res.FirstDisconnect = err.Error()
	}
	for _, st := range r.shards {
		res.Unexpected += st.unexpected
		if res.FirstUnexpected == "" {
			res.FirstUnexpected = st.firstUnexp
		}
	}
	res.Connect = cf
	return nil
}

// failedSoFar counts connections that closed early (racy read while the
// pollers run: a report figure).
func (r *regionRun) failedSoFar() int {
	n := 0
	for _, p := range r.group.ps {
		p.mu.Lock()
		for _, c := range p.conns {
			if !c.open {
				n++
			}
		}
		p.mu.Unlock()
	}
	return n
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
			} else if m, err := scrapeRegion(ctx, metricsURLOf(u), header, s.Region); err == nil {
				kib = int64(m["process_resident_memory_bytes"] / 1024)
			}
			out = append(out, kib)
		}
	}
	return out
}
