package bench

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/gobwas/ws"

	"github.com/meshcast/meshcast/bench/client"
	"github.com/meshcast/meshcast/bench/measure"
)

// The scale scenario's publishing, its readings of the nodes and its
// result (scale.go runs it).

// ScaleNode is one node's figures.
type ScaleNode struct {
	Name        string  `json:"name"`
	Connections float64 `json:"connections"` // meshcast_connections after the hold
	RSSIdleMiB  float64 `json:"rss_idle_mib"`
	RSSHeldMiB  float64 `json:"rss_held_mib"`
	KiBPerConn  float64 `json:"kib_per_conn"` // (held − idle) / connections
	RSSEndMiB   float64 `json:"rss_end_mib"`  // after publishing
	CPU         float64 `json:"cpu_cores"`    // while publishing
	Goroutines  float64 `json:"goroutines"`
	Drops       float64 `json:"client_drops"` // queue drops + slow-consumer closes while publishing
	MeshDrops   float64 `json:"mesh_drops"`   // while publishing
}

// ScaleResult is what RunScale measured; latencies in milliseconds.
type ScaleResult struct {
	Config            ScaleConfig       `json:"-"`
	Connected         int               `json:"connected"`
	ConnectErrors     int               `json:"connect_errors"`
	FirstConnectError string            `json:"first_connect_error,omitempty"`
	ConnectSeconds    float64           `json:"connect_seconds"`
	ConnectMS         measure.Quantiles `json:"connect_ms"`
	Held              []ScaleNode       `json:"nodes"`

	Published         uint64  `json:"published"`
	PublishedMeasured uint64  `json:"published_measured"`
	PublishPerSec     float64 `json:"publish_per_sec"`
	Expected          uint64  `json:"expected"` // every publication × its channel's subscribers
	Received          uint64  `json:"received"`
	Lost              int64   `json:"lost"`
	Delivered         uint64  `json:"delivered"` // measured
	DeliveriesPerSec  float64 `json:"deliveries_per_sec"`
	P50, P90, P99     float64
	P999, Max, Mean   float64
	PublisherLagMaxMS float64 `json:"publisher_lag_max_ms"`
	PublisherLate     uint64  `json:"publisher_late"`

	Gaps            uint64 `json:"gaps"`
	OutOfOrder      uint64 `json:"out_of_order"`
	Unexpected      uint64 `json:"unexpected"`
	FirstUnexpected string `json:"first_unexpected,omitempty"`
	Disconnects     int    `json:"disconnects"`
	FirstDisconnect string `json:"first_disconnect,omitempty"`
	PublishErrors   int    `json:"publish_errors"`
	FirstPublishErr string `json:"first_publish_error,omitempty"`

	NodeCPU       float64 `json:"node_cpu_cores"` // while publishing, all nodes
	NodeUsPerDel  float64 `json:"node_us_per_delivery"`
	WorkerCPU     float64 `json:"worker_cpu_cores"` // the workers while publishing
	HostCPU       float64 `json:"host_cpu_cores"`   // the whole machine while publishing
	WorkerRSSMiB  float64 `json:"worker_rss_mib"`   // the workers together
	WorkerKiBConn float64 `json:"worker_kib_per_conn"`
	Load1Before   float64 `json:"load1_before"`
	Load1After    float64 `json:"load1_after"`
	// Detector is the failure detector's counters over the whole run,
	// all nodes: nothing is killed, so every death is false (a starved
	// node missed its probes) and costs the broadcasts sent to it
	// meanwhile.
	Detector DetectorCounts `json:"detector"`
}

// publish sends Rate broadcasts per second to every channel, in turn, for
// Warmup + Duration, then drains.
func (s *scaleRun) publish(ctx context.Context) error {
	cfg, res := &s.cfg, s.res
	holder := client.NewReaders(s.now, client.PhoenixHeartbeat, heartbeatEvery)
	defer holder.Close()
	for _, p := range s.pubs {
		holder.Hold(p.c, discard{})
	}
	subs := s.subsPerChannel()
	cpu0, nodes0, workers0 := measure.ReadCPU(0, false), s.procCPU(s.nodePIDs()), s.procCPU(s.workerPIDs())
	before := s.scrape(ctx)
	p := s.pace(cfg.Rate*float64(cfg.Channels), 0, 0, cfg.Warmup, cfg.Duration, 0)
	s.tell("measure " + strconv.FormatInt(p.warmEnd, 10))
	cfg.Logf("scale: publishing %s to each of %d channels for %s + %s", rateString(cfg.Rate), cfg.Channels, cfg.Warmup, cfg.Duration)
	var payload, frame, scratch []byte
	var owed uint64
	for i := uint64(0); i < maxPublications; i++ {
		if _, ok := p.wait(ctx, i); !ok {
			break
		}
		ch := int(i % uint64(cfg.Channels))
		pub := s.pubs[ch]
		t := s.now()
		payload, _ = measure.AppendPayload(payload[:0], cfg.PayloadSize, t, pub.sent+1)
		frame, scratch = client.Broadcast(frame[:0], scratch, pub.sent+2, pub.topic, "m", payload)
		if err := pub.c.WriteFrame(ws.OpText, frame); err != nil {
			if res.PublishErrors++; res.FirstPublishErr == "" {
				res.FirstPublishErr = err.Error()
			}
			continue
		}
		pub.sent++
		res.Published++
		if t >= p.warmEnd {
			res.PublishedMeasured++
		}
		owed += uint64(subs[ch])
	}
	publishEnd := s.now()
	res.Expected = owed
	s.drainWorkers(ctx, owed)
	cpu1, nodes1, workers1 := measure.ReadCPU(0, false), s.procCPU(s.nodePIDs()), s.procCPU(s.workerPIDs())
	wall := cpu1.At.Sub(cpu0.At).Seconds()
	_, res.HostCPU, _ = cpu1.Cores(cpu0)
	after := s.scrape(ctx)
	for i := range res.Held {
		n := &res.Held[i]
		n.CPU = (nodes1[i] - nodes0[i]) / wall
		res.NodeCPU += n.CPU
		if m0, m1 := before.metrics[i], after.metrics[i]; m0 != nil && m1 != nil {
			n.Drops = m1["meshcast_queue_drops_total"] - m0["meshcast_queue_drops_total"] +
				m1["meshcast_slow_consumer_closes_total"] - m0["meshcast_slow_consumer_closes_total"]
			n.MeshDrops = m1.Sum("meshcast_mesh_drops_total") - m0.Sum("meshcast_mesh_drops_total")
		}
		if m1 := after.metrics[i]; m1 != nil {
			res.Detector.add(m1)
		}
		if kib, err := measure.ReadRSSKiB(s.cl.Nodes[i].PID()); err == nil {
			n.RSSEndMiB = float64(kib) / 1024
		}
	}
	for i := range workers1 {
		res.WorkerCPU += (workers1[i] - workers0[i]) / wall
	}
	res.PublisherLagMaxMS, res.PublisherLate = measure.MS(p.lagMax), p.late
	if d := time.Duration(publishEnd - p.warmEnd).Seconds(); d > 0 {
		res.PublishPerSec = float64(res.PublishedMeasured) / d
	}
	res.Load1After, _ = measure.ReadLoad1()
	return nil
}

// subsPerChannel sums the workers' connected subscribers per channel.
func (s *scaleRun) subsPerChannel() []int {
	out := make([]int, s.cfg.Channels)
	for _, wp := range s.workers {
		wp.mu.Lock()
		for c, n := range wp.last.Subs {
			if c < len(out) {
				out[c] += n
			}
		}
		wp.mu.Unlock()
	}
	return out
}

// drainWorkers waits until the workers received want deliveries, none
// arrived for 2 s, or Drain passed.
func (s *scaleRun) drainWorkers(ctx context.Context, want uint64) {
	deadline := time.Now().Add(s.cfg.Drain)
	var last uint64
	since := time.Now()
	for time.Now().Before(deadline) && ctx.Err() == nil {
		p, _ := s.progress()
		if p.Recv >= want {
			return
		}
		if p.Recv != last {
			last, since = p.Recv, time.Now()
		} else if time.Since(since) > 2*time.Second {
			s.cfg.Logf("scale: drain: no progress for 2s, %d of %d deliveries missing", want-p.Recv, want)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *scaleRun) nodePIDs() []int {
	var out []int
	for _, n := range s.cl.Nodes {
		out = append(out, n.PID())
	}
	return out
}

func (s *scaleRun) workerPIDs() []int {
	var out []int
	for _, wp := range s.workers {
		out = append(out, wp.cmd.Process.Pid)
	}
	return out
}

// procCPU reads each process's CPU seconds (0 where unreadable).
func (s *scaleRun) procCPU(pids []int) []float64 {
	out := make([]float64, len(pids))
	for i, pid := range pids {
		out[i], _ = measure.ReadCPUSeconds(pid)
	}
	return out
}

// nodeRSS reads each node's resident memory in KiB (0: unknown).
func (s *scaleRun) nodeRSS() []int64 {
	var out []int64
	for _, n := range s.cl.Nodes {
		kib, _ := measure.ReadRSSKiB(n.PID())
		out = append(out, kib)
	}
	return out
}

// scrape reads every node's /metrics.
func (s *scaleRun) scrape(ctx context.Context) siteScrape {
	var sites []Site
	for _, n := range s.cl.Nodes {
		sites = append(sites, Site{Region: n.Name, URLs: []string{n.URL("meshbench")}})
	}
	return scrapeSites(ctx, sites, "")
}

// readNodes fills each node's memory figures after the hold (rss0: idle,
// before any connection).
func (s *scaleRun) readNodes(out *[]ScaleNode, rss0 []int64) {
	m := s.scrape(context.Background())
	rss := s.nodeRSS()
	for i, n := range s.cl.Nodes {
		sn := ScaleNode{Name: n.Name, RSSIdleMiB: float64(rss0[i]) / 1024, RSSHeldMiB: float64(rss[i]) / 1024}
		if m.metrics[i] != nil {
			sn.Connections, sn.Goroutines = m.metrics[i]["meshcast_connections"], m.metrics[i]["go_goroutines"]
		}
		if sn.Connections > 0 {
			sn.KiBPerConn = float64(rss[i]-rss0[i]) / sn.Connections
		}
		*out = append(*out, sn)
	}
}

// collect sums the workers' results into the result.
func (s *scaleRun) collect() {
	res := s.res
	lat, conn := measure.NewHistogram(), measure.NewHistogram()
	var lastRecv int64
	for _, wp := range s.workers {
		r := wp.result
		if r == nil {
			res.Disconnects++
			if res.FirstDisconnect == "" {
				res.FirstDisconnect = fmt.Sprintf("worker %d gave no result (%v)", wp.cmd.Process.Pid, wp.err)
			}
			continue
		}
		for _, n := range r.Subs {
			res.Connected += n
		}
		res.Received += r.Recv
		res.Delivered += r.Measured
		lastRecv = max(lastRecv, r.LastRecv)
		res.Gaps += r.Gaps
		res.OutOfOrder += r.OutOfOrder
		res.Unexpected += r.Unexpected
		res.Disconnects += r.Disconnects
		if res.FirstUnexpected == "" {
			res.FirstUnexpected = r.FirstUnexpected
		}
		if res.FirstDisconnect == "" {
			res.FirstDisconnect = r.FirstDisconnect
		}
		if res.FirstConnectError == "" {
			res.FirstConnectError = r.FirstConnectErr
		}
		lat.AddSparse(r.Latency)
		conn.AddSparse(r.ConnectMS)
		res.WorkerRSSMiB += float64(r.RSSKiB) / 1024
	}
	res.ConnectErrors = s.cfg.Conns - res.Connected
	res.Lost = int64(res.Expected) - int64(res.Received)
	q := lat.Summary()
	res.P50, res.P90, res.P99, res.P999 = measure.MS(q.P50), measure.MS(q.P90), measure.MS(q.P99), measure.MS(q.P999)
	res.Max, res.Mean = measure.MS(q.Max), measure.MS(q.Mean)
	res.ConnectMS = conn.Quantiles()
	if res.Connected > 0 {
		res.WorkerKiBConn = res.WorkerRSSMiB * 1024 / float64(res.Connected)
	}
	if m := s.measureStart.Load(); lastRecv > m && res.Delivered > 0 {
		res.DeliveriesPerSec = float64(res.Delivered) / time.Duration(lastRecv-m).Seconds()
	}
	if res.DeliveriesPerSec > 0 {
		res.NodeUsPerDel = res.NodeCPU / res.DeliveriesPerSec * 1e6
	}
}

func (r *ScaleResult) String() string {
	var b strings.Builder
	c := r.Config
	fmt.Fprintf(&b, "scale: %d nodes, %d/%d connections (%d workers, %d failed, ramp %.1fs, dial+join p50/p99 %.1f/%.1f ms), %d channels, held %s\n",
		c.Nodes, r.Connected, c.Conns, c.Workers, r.ConnectErrors, r.ConnectSeconds, r.ConnectMS.P50, r.ConnectMS.P99, c.Channels, c.Hold)
	for _, n := range r.Held {
		fmt.Fprintf(&b, "  %s: %.0f connections, RSS %.1f → %.1f MiB = %.2f KiB/connection (%.1f MiB after publishing), %.0f goroutines, CPU %.2f cores publishing, %.0f client drops, %.0f mesh drops\n",
			n.Name, n.Connections, n.RSSIdleMiB, n.RSSHeldMiB, n.KiBPerConn, n.RSSEndMiB, n.Goroutines, n.CPU, n.Drops, n.MeshDrops)
	}
	fmt.Fprintf(&b, "  publishing %.0f/s (%g per channel per second): %.0f deliveries/s, received %d of %d (lost %d), p50/p90/p99/p99.9/max %.1f/%.1f/%.1f/%.1f/%.1f ms\n",
		r.PublishPerSec, c.Rate, r.DeliveriesPerSec, r.Received, r.Expected, r.Lost, r.P50, r.P90, r.P99, r.P999, r.Max)
	fmt.Fprintf(&b, "  CPU while publishing (cores): nodes %.2f (%.1f µs/delivery), workers %.2f, host %.2f of the machine; load1 %.1f → %.1f; workers' RSS %.0f MiB (%.2f KiB/connection)\n",
		r.NodeCPU, r.NodeUsPerDel, r.WorkerCPU, r.HostCPU, r.Load1Before, r.Load1After, r.WorkerRSSMiB, r.WorkerKiBConn)
	fmt.Fprintf(&b, "  gaps %d, out of order %d, disconnects %d %s, unexpected %d %.120s, publish errors %d %s, publisher late %d (max %.1f ms)",
		r.Gaps, r.OutOfOrder, r.Disconnects, r.FirstDisconnect, r.Unexpected, r.FirstUnexpected, r.PublishErrors, r.FirstPublishErr,
		r.PublisherLate, r.PublisherLagMaxMS)
	d := r.Detector
	fmt.Fprintf(&b, "\n  failure detector (nothing killed): %.0f suspicions, %.0f declared dead, %.0f members failed, %.0f returned",
		d.Suspicions, d.DeclaredDead, d.Failed, d.Returned)
	if r.FirstConnectError != "" {
		fmt.Fprintf(&b, "\n  first connect error: %s", r.FirstConnectError)
	}
	return b.String()
}
