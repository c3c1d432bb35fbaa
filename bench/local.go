package bench

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/meshcast/meshcast/bench/cluster"
	"github.com/meshcast/meshcast/mesh/wanemu"
)

// LocalConfig describes a cluster of meshcast processes on this machine
// with an emulated WAN between its regions (meshbench local).
type LocalConfig struct {
	MeshcastBin    string   // default bin/meshcast
	Regions        []string // default iad, fra, sin
	NodesPerRegion int      // default 2
	// RTT overrides cluster.DefaultRTT for some pairs ("a-b" → ms, either
	// order; "a-a" a delay inside a region).
	RTT      map[string]float64
	JitterMS float64 // added to each cross-region one-way delay, 0…JitterMS
	Loss     float64 // fraction of cross-region UDP packets dropped
	Strategy string  // --mesh-strategy: interested (default), all or relay
	// BasePort lays the nodes' ports out as cluster.Config says; default
	// 4700.
	BasePort int
	Flags    []string // more meshcast flags for every node
	LogDir   string   // node logs and the WAN file; default a new temporary directory
	Logf     func(format string, args ...any)
}

func (c LocalConfig) withDefaults() (LocalConfig, error) {
	orDefault(&c.MeshcastBin, "bin/meshcast")
	if len(c.Regions) == 0 {
		c.Regions = []string{"iad", "fra", "sin"}
	}
	orDefault(&c.NodesPerRegion, 2)
	orDefault(&c.Strategy, "interested")
	orDefault(&c.BasePort, 4700)
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
	if c.NodesPerRegion < 1 {
		return c, errors.New("bench: at least one node per region")
	}
	return c, nil
}

// WANConfig is the emulated WAN of the cluster.
func (c LocalConfig) WANConfig() (wanemu.Config, error) {
	cc, err := c.Cluster()
	if err != nil {
		return wanemu.Config{}, err
	}
	return *cc.WAN, nil
}

// Cluster is the cluster.Config of the nodes: NodesPerRegion per region,
// the emulated WAN, and the flags the region scenarios run with.
func (c LocalConfig) Cluster() (cluster.Config, error) {
	c, err := c.withDefaults()
	if err != nil {
		return cluster.Config{}, err
	}
	var regions []string
	for _, r := range c.Regions {
		for range c.NodesPerRegion {
			regions = append(regions, r)
		}
	}
	wan, err := cluster.WAN(regions, c.BasePort, c.RTT, c.JitterMS, c.Loss)
	if err != nil {
		return cluster.Config{}, err
	}
	return cluster.Config{Bin: c.MeshcastBin, Regions: regions, BasePort: c.BasePort, WAN: &wan, LogDir: c.LogDir,
		Flags: append([]string{"--mesh-strategy", c.Strategy,
			// One publisher per region sends every message of a run.
			"--events-per-sec", "0", "--bytes-per-sec", "0",
			// The lan default probe timeout (125 ms) is under the emulated
			// round trips (up to 223 ms): probe as the figures in the README
			// were measured, with a timeout above every RTT.
			"--gossip-probe-interval", "1s"}, c.Flags...)}, nil
}

// LocalCluster is a running local cluster.
type LocalCluster struct {
	*cluster.Cluster
	Sites []Site
	WAN   wanemu.Config
}

// OneWay is the emulated one-way delay from region a to b.
func (c *LocalCluster) OneWay(a, b string) time.Duration { return c.WAN.OneWay(a, b) }

// StartLocal starts the nodes on the emulated WAN and returns once every
// node is connected to every other.
func StartLocal(ctx context.Context, cfg LocalConfig) (*LocalCluster, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	cc, err := cfg.Cluster()
	if err != nil {
		return nil, err
	}
	cl, err := cluster.Start(ctx, cc)
	if err != nil {
		return nil, err
	}
	c := &LocalCluster{Cluster: cl, Sites: sitesOf(cl, "meshbench"), WAN: *cc.WAN}
	cfg.Logf("local cluster up: %d nodes in %s, strategy %s, WAN %v (logs in %s)", len(cl.Nodes), strings.Join(cfg.Regions, ","), cfg.Strategy, c.WAN.RTT, cl.LogDir)
	return c, nil
}

// sitesOf groups a cluster's nodes by region, in the order regions first
// appear.
func sitesOf(c *cluster.Cluster, apikey string) []Site {
	var sites []Site
	for _, n := range c.Nodes {
		i := regionIndex(sites, []byte(n.Region))
		if i < 0 {
			i, sites = len(sites), append(sites, Site{Region: n.Region})
		}
		sites[i].URLs = append(sites[i].URLs, n.URL(apikey))
		sites[i].PIDs = append(sites[i].PIDs, n.PID())
	}
	return sites
}
