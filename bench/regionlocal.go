package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/meshcast/meshcast/mesh/wanemu"
)

// LocalConfig describes a cluster of meshcast processes on this machine
// with an emulated WAN between its regions (meshbench local).
type LocalConfig struct {
	MeshcastBin    string   // default bin/meshcast
	Regions        []string // default iad, fra, sin
	NodesPerRegion int      // default 2
	// RTT overrides DefaultRTT for some pairs ("a-b" → ms, either order;
	// "a-a" a delay inside a region).
	RTT      map[string]float64
	JitterMS float64 // added to each cross-region one-way delay, 0…JitterMS
	Loss     float64 // fraction of cross-region UDP packets dropped
	Strategy string  // --mesh-strategy: interested (default), all or relay
	// BasePort: node i (1-based) serves clients on BasePort+i, gossips on
	// BasePort+100+10i and meshes on that +1 (the layout of meshbench wal).
	// Default 4700.
	BasePort int
	Flags    []string // more meshcast flags for every node
	LogDir   string   // node logs and the WAN file; default a new temporary directory
	Logf     func(format string, args ...any)
}

func (c LocalConfig) withDefaults() (LocalConfig, error) {
	if c.MeshcastBin == "" {
		c.MeshcastBin = "bin/meshcast"
	}
	if len(c.Regions) == 0 {
		c.Regions = []string{"iad", "fra", "sin"}
	}
	if c.NodesPerRegion == 0 {
		c.NodesPerRegion = 2
	}
	if c.Strategy == "" {
		c.Strategy = "interested"
	}
	if c.BasePort == 0 {
		c.BasePort = 4700
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
	n := len(c.Regions) * c.NodesPerRegion
	if c.NodesPerRegion < 1 || n > 9 {
		return c, fmt.Errorf("bench: %d nodes: at most 9 local nodes (ports)", n)
	}
	if c.BasePort < 1024 || c.BasePort+100+10*n+1 > 65535 {
		return c, errors.New("bench: base port out of range")
	}
	return c, nil
}

// LocalNodes is the number of nodes and their regions, node i (0-based)
// in Regions[i / NodesPerRegion].
func (c *LocalConfig) nodeRegions() []string {
	var out []string
	for _, r := range c.Regions {
		for range c.NodesPerRegion {
			out = append(out, r)
		}
	}
	return out
}

// WANConfig is the emulated WAN of a local cluster: every node's gossip
// and mesh address with its region, and the RTT between every pair of
// regions (DefaultRTT unless RTT says otherwise).
func (c LocalConfig) WANConfig() (wanemu.Config, error) {
	c, err := c.withDefaults()
	if err != nil {
		return wanemu.Config{}, err
	}
	w := wanemu.Config{Nodes: map[string]string{}, RTT: map[string]float64{}, JitterMS: c.JitterMS, Loss: c.Loss}
	for i, r := range c.nodeRegions() {
		g := c.BasePort + 100 + 10*(i+1)
		w.Nodes["127.0.0.1:"+strconv.Itoa(g)] = r
		w.Nodes["127.0.0.1:"+strconv.Itoa(g+1)] = r
	}
	for i, a := range c.Regions {
		if v, ok := rttOf(c.RTT, a, a); ok {
			w.RTT[a+"-"+a] = v
		}
		for _, b := range c.Regions[i+1:] {
			v, ok := rttOf(c.RTT, a, b)
			if !ok {
				v, ok = rttOf(DefaultRTT, a, b)
			}
			if !ok {
				return w, fmt.Errorf("bench: no RTT between %s and %s: give it with --rtt-matrix %s-%s=MS", a, b, a, b)
			}
			w.RTT[a+"-"+b] = v
		}
	}
	return w, w.Validate()
}

// LocalCluster is a running local cluster.
type LocalCluster struct {
	Nodes   []*Node
	Sites   []Site
	WAN     wanemu.Config
	WANFile string
	LogDir  string
}

// OneWay is the emulated one-way delay from region a to b.
func (c *LocalCluster) OneWay(a, b string) time.Duration { return c.WAN.OneWay(a, b) }

// StartLocal writes the WAN file and starts the nodes with --emulate-wan,
// and returns once every node is connected to every other.
func StartLocal(ctx context.Context, cfg LocalConfig) (*LocalCluster, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	w, err := cfg.WANConfig()
	if err != nil {
		return nil, err
	}
	c := &LocalCluster{WAN: w, LogDir: cfg.LogDir}
	if c.LogDir == "" {
		if c.LogDir, err = os.MkdirTemp("", "meshbench-local"); err != nil {
			return nil, err
		}
	} else if err := os.MkdirAll(c.LogDir, 0o755); err != nil {
		return nil, err
	}
	b, _ := json.MarshalIndent(w, "", "  ")
	c.WANFile = filepath.Join(c.LogDir, "wan.json")
	if err := os.WriteFile(c.WANFile, b, 0o644); err != nil {
		return nil, err
	}
	regions := cfg.nodeRegions()
	bySite := map[string]int{}
	for _, r := range cfg.Regions {
		bySite[r] = len(c.Sites)
		c.Sites = append(c.Sites, Site{Region: r})
	}
	for i, region := range regions {
		n := &Node{Name: "n" + strconv.Itoa(i+1), HTTPAddr: "127.0.0.1:" + strconv.Itoa(cfg.BasePort+i+1), done: make(chan struct{})}
		args := []string{"--listen", n.HTTPAddr, "--name", n.Name, "--region", region,
			"--gossip-addr", "127.0.0.1:" + strconv.Itoa(cfg.BasePort+100+10*(i+1)), "--cluster-secret", "meshbench",
			"--mesh-strategy", cfg.Strategy, "--emulate-wan", c.WANFile, "--log-level", "warn",
			// One publisher per region sends every message of a run.
			"--events-per-sec", "0", "--bytes-per-sec", "0",
			// The lan default probe timeout (125 ms) is under the emulated
			// round trips (up to 223 ms): probe as the figures in the README
			// were measured, with a timeout above every RTT.
			"--gossip-probe-interval", "1s"}
		if i > 0 {
			args = append(args, "--join", "127.0.0.1:"+strconv.Itoa(cfg.BasePort+110))
		}
		args = append(args, cfg.Flags...)
		if err := n.start(cfg.MeshcastBin, args, filepath.Join(c.LogDir, cfg.Strategy+"-"+n.Name+".log")); err != nil {
			c.Stop()
			return nil, err
		}
		c.Nodes = append(c.Nodes, n)
		s := &c.Sites[bySite[region]]
		s.URLs = append(s.URLs, "ws://"+n.HTTPAddr+"/realtime/v1/websocket?apikey=meshbench&vsn=2.0.0")
		s.PIDs = append(s.PIDs, n.PID())
	}
	if err := c.waitMeshed(ctx); err != nil {
		c.Stop()
		return nil, err
	}
	cfg.Logf("local cluster up: %d nodes in %s, strategy %s, WAN %v (logs in %s)", len(c.Nodes), strings.Join(cfg.Regions, ","), cfg.Strategy, w.RTT, c.LogDir)
	return c, nil
}

// start runs the node's process with args, its output in logPath.
func (n *Node) start(bin string, args []string, logPath string) error {
	logf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	var env []string
	for _, kv := range os.Environ() { // the flags are the whole config
		if !strings.HasPrefix(kv, "MESHCAST_") {
			env = append(env, kv)
		}
	}
	return n.startWith(bin, args, logf, env)
}

// startWith runs the node's process with args and env, its output in
// logf, which it closes when the process ends.
func (n *Node) startWith(bin string, args []string, logf *os.File, env []string) error {
	n.cmd = exec.Command(bin, args...)
	n.cmd.Stdout, n.cmd.Stderr = logf, logf
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	n.cmd.Env = env
	if err := n.cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("bench: start %s: %w", bin, err)
	}
	go func() { n.cmd.Wait(); logf.Close(); close(n.done) }()
	return nil
}

// waitMeshed waits until every node has every other as a connected peer.
func (c *LocalCluster) waitMeshed(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, clusterStartTimeout)
	defer cancel()
	want := float64(len(c.Nodes) - 1)
	for {
		ready := 0
		for _, n := range c.Nodes {
			select {
			case <-n.done:
				return fmt.Errorf("bench: node %s exited at start (log in %s)", n.Name, c.LogDir)
			default:
			}
			if m, err := ScrapeMetrics(ctx, n.MetricsURL()); err == nil && m["meshcast_mesh_peers_connected"] == want {
				ready++
			}
		}
		if ready == len(c.Nodes) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("bench: local cluster not meshed in %s: %d/%d nodes ready (logs in %s)", clusterStartTimeout, ready, len(c.Nodes), c.LogDir)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Stop stops the nodes: SIGTERM, SIGKILL after 10 s.
func (c *LocalCluster) Stop() {
	cl := Cluster{Nodes: c.Nodes}
	cl.Stop()
	c.Nodes = nil
}
