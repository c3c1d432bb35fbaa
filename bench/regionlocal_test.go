package bench

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/meshcast/meshcast/bench/cluster"
)

// TestLocalRegions starts 6 real meshcast processes, 3 regions × 2, on an
// emulated WAN with region relay, and runs each region scenario on them
// for a few seconds. It proves the emulation is real: no delivery across
// regions ever arrives sooner than the emulated one-way delay (a p50, or
// even a minimum, under it would be a harness bug), memberlist's own probes
// see the emulated round trip, and nothing crossed regions outside the
// emulator's address table.
func TestLocalRegions(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 6 meshcast processes")
	}
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	bin := buildMeshcast(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := StartLocal(ctx, LocalConfig{MeshcastBin: bin, Strategy: "relay", BasePort: freeBasePort(t, 6), LogDir: t.TempDir(), Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	base := RegionConfig{Sites: c.Sites, OneWay: c.OneWay, Duration: 2 * time.Second, Warmup: 500 * time.Millisecond, Drain: 3 * time.Second, Logf: t.Logf}
	run := func(cfg RegionConfig) *RegionResult {
		t.Helper()
		rctx, cancel := context.WithTimeout(ctx, cfg.Budget())
		defer cancel()
		res, err := RunRegions(rctx, cfg)
		if err != nil {
			t.Fatalf("%s: %v", cfg.Scenario, err)
		}
		t.Log(res)
		if res.Connected != res.Subs || res.Disconnects != 0 || res.Unexpected != 0 || res.ConnectErrors != 0 {
			t.Errorf("%s went wrong: %s (%s %s %s)", cfg.Scenario, res, res.FirstConnectError, res.FirstDisconnect, res.FirstUnexpected)
		}
		return res
	}
	checkPairs := func(res *RegionResult, pairs int) {
		t.Helper()
		if len(res.Pairs) != pairs {
			t.Errorf("%s: %d pairs, want %d", res.Scenario, len(res.Pairs), pairs)
		}
		for _, p := range res.Pairs {
			if p.Count == 0 || p.Lost != 0 {
				t.Errorf("%s %s → %s: %d measured, %d lost", res.Scenario, p.From, p.To, p.Count, p.Lost)
			}
			if p.Min < p.OneWayMS || p.P50 < p.OneWayMS {
				t.Errorf("%s %s → %s: min %.2f / p50 %.2f ms under the emulated one-way %.1f ms: the WAN emulation leaks", res.Scenario, p.From, p.To, p.Min, p.P50, p.OneWayMS)
			}
			if p.From == p.To && p.P50 > 30 {
				t.Errorf("%s %s → %s: p50 %.1f ms inside a region", res.Scenario, p.From, p.To, p.P50)
			}
		}
	}

	fan := base
	fan.Scenario, fan.Subs, fan.Rate = ScenarioFanout, 30, 50
	res := run(fan)
	checkPairs(res, 3)
	// Relay: one frame per remote region crosses the WAN, and one forward
	// inside each remote region plus one to the publisher's region peer.
	if res.Server.WANFramesPerMsg != 2 || res.Server.MeshFramesPerMsg != 5 {
		t.Errorf("relay sent %.2f WAN and %.2f mesh frames per message, want 2 and 5", res.Server.WANFramesPerMsg, res.Server.MeshFramesPerMsg)
	}
	if res.Server.WireWANBytesPerMsg < res.Server.WANBytesPerMsg {
		t.Errorf("wire WAN bytes %.0f below the data lane's %.0f: the emulator does not see the mesh", res.Server.WireWANBytesPerMsg, res.Server.WANBytesPerMsg)
	}

	rooms := base
	rooms.Scenario, rooms.Channels, rooms.SubsPerChannel, rooms.Rate = ScenarioRooms, 6, 4, 60
	checkPairs(run(rooms), 9)

	pres := base
	pres.Scenario, pres.Subs, pres.Rate = ScenarioPresence, 12, 6
	res = run(pres)
	checkPairs(res, 9)
	if res.Presence.Joins == 0 || res.Presence.Incomplete != 0 || res.Presence.AllSeen.P50 < 111.5 {
		t.Errorf("presence: %+v (every join must reach the farthest region, 111.5 ms away)", res.Presence)
	}

	conn := base
	conn.Scenario, conn.Subs, conn.Idle = ScenarioConnect, 300, time.Second
	res = run(conn)
	if res.Connect.HeldAfterIdle != 300 || len(res.Connect.NodeRSSPerConnKB) != 6 || res.Goroutines > 100 {
		t.Errorf("connect: %+v, %d goroutines", res.Connect, res.Goroutines)
	}

	// Gossip crosses the emulated WAN too: every node's memberlist probes
	// of a node in another region took at least that round trip.
	s := scrapeSites(ctx, c.Sites, "")
	crossProbes := 0
	for i, m := range s.metrics {
		id, region := m.NodeInfo()
		for k, v := range m {
			if strings.Contains(k, "unknown_total") {
				t.Errorf("node %d sent %s = %v outside the emulator's table", i, k, v)
			}
			if !strings.HasPrefix(k, "meshcast_gossip_rtt_seconds{") {
				continue
			}
			peerRegion := s.regions[cluster.LabelValue(k, "peer")]
			rtt := 2 * c.OneWay(region, peerRegion).Seconds()
			if peerRegion != region {
				crossProbes++
				if v < rtt {
					t.Errorf("%s (%s) → %s (%s): gossip probe rtt %.1f ms under the emulated %.0f ms", id, region, cluster.LabelValue(k, "peer"), peerRegion, v*1e3, rtt*1e3)
				}
			} else if v > 0.05 {
				t.Errorf("%s: gossip rtt inside %s %.1f ms", id, region, v*1e3)
			}
		}
	}
	if crossProbes < 6 {
		t.Errorf("only %d cross-region gossip probes seen", crossProbes)
	}
}
