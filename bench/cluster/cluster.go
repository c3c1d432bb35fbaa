// Package cluster starts what meshbench measures on this machine: meshcast
// processes forming one cluster on a fixed port layout, optionally on an
// emulated WAN and streaming a throwaway Postgres; and it reads their
// /metrics.
package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/meshcast/meshcast/mesh/wanemu"
)

// StartTimeout bounds a cluster's start (processes serving, every mesh
// connection up, the database's reader streaming) and its stop.
const StartTimeout = 30 * time.Second

// Config describes a cluster of meshcast processes on this machine.
type Config struct {
	Bin string // the meshcast binary; if empty, bin/meshcast
	// Regions are the nodes' regions, one per node; if empty, three nodes
	// in iad, fra and sin.
	Regions []string
	// BasePort lays the ports out: node i (1-based) serves clients on
	// BasePort+i, pprof on BasePort+50+i, gossips on BasePort+100+10i and
	// meshes on that +1. If zero, 4400.
	BasePort int
	// JoinAll has every node join every other, so that any of them can be
	// killed and restarted; otherwise the nodes join n1.
	JoinAll bool
	// DatabaseURL, if set, is the database the nodes stream (the reader
	// prefers the first node's region); Start then waits for one reader.
	DatabaseURL string
	// WAN, if set, is emulated between the nodes' regions (--emulate-wan,
	// its file written to LogDir/wan.json).
	WAN   *wanemu.Config
	Pprof bool     // --pprof-addr on every node
	Flags []string // more meshcast flags for every node (the last of a repeated flag wins)
	// Env is more environment for every node; MESHCAST_ variables of this
	// process are never passed on (the flags are the whole config).
	Env    []string
	LogDir string // the nodes' logs, <name>.log; if empty, a new temporary directory
}

func (c Config) withDefaults() (Config, error) {
	if c.Bin == "" {
		c.Bin = "bin/meshcast"
	}
	if len(c.Regions) == 0 {
		c.Regions = []string{"iad", "fra", "sin"}
	}
	if c.BasePort == 0 {
		c.BasePort = 4400
	}
	if n := len(c.Regions); n > 9 {
		return c, fmt.Errorf("cluster: %d nodes: at most 9 on one port layout", n)
	}
	if c.BasePort < 1024 || c.BasePort+100+10*len(c.Regions)+1 > 65535 {
		return c, errors.New("cluster: base port out of range")
	}
	var err error
	if c.LogDir == "" {
		c.LogDir, err = os.MkdirTemp("", "meshbench")
	} else {
		err = os.MkdirAll(c.LogDir, 0o755)
	}
	return c, err
}

// Cycle returns n regions, regions repeated in turn.
func Cycle(regions []string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = regions[i%len(regions)]
	}
	return out
}

// Node is one meshcast process.
type Node struct {
	Name, Region string
	Addr         string // host:port of clients and /metrics
	PprofAddr    string // "" without pprof
	args         []string
	cmd          *exec.Cmd
	done         chan struct{} // closed when the process ended
}

// URL is the node's WebSocket URL with apikey.
func (n *Node) URL(apikey string) string {
	return "ws://" + n.Addr + "/realtime/v1/websocket?apikey=" + apikey + "&vsn=2.0.0"
}

// MetricsURL is the node's /metrics.
func (n *Node) MetricsURL() string { return "http://" + n.Addr + "/metrics" }

// PID is the node's process id.
func (n *Node) PID() int { return n.cmd.Process.Pid }

// Exited reports whether the process ended.
func (n *Node) Exited() bool {
	select {
	case <-n.done:
		return true
	default:
		return false
	}
}

// Kill kills the process (kill -9) and waits until it is gone.
func (n *Node) Kill() error {
	err := n.cmd.Process.Kill()
	<-n.done
	return err
}

// Cluster is running meshcast nodes.
type Cluster struct {
	Nodes  []*Node
	LogDir string
	cfg    Config
	env    []string
}

// Start starts the nodes and returns once every node has every other as a
// mesh peer and, with a database, one reader streams it. Stop stops them.
func Start(ctx context.Context, cfg Config) (*Cluster, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	c := &Cluster{LogDir: cfg.LogDir, cfg: cfg, env: environ(cfg.Env)}
	var wanFile string
	if cfg.WAN != nil {
		b, _ := json.MarshalIndent(cfg.WAN, "", "  ")
		wanFile = filepath.Join(cfg.LogDir, "wan.json")
		if err := os.WriteFile(wanFile, b, 0o644); err != nil {
			return nil, err
		}
	}
	for i, region := range cfg.Regions {
		n := &Node{Name: "n" + strconv.Itoa(i+1), Region: region, Addr: c.addr(i + 1)}
		n.args = []string{"--listen", n.Addr, "--name", n.Name, "--region", region, "--gossip-addr", c.gossip(i + 1),
			"--cluster-secret", "meshbench", "--log-level", "warn"}
		if join := c.seeds(i + 1); join != "" {
			n.args = append(n.args, "--join", join)
		}
		if cfg.DatabaseURL != "" {
			n.args = append(n.args, "--database-url", cfg.DatabaseURL, "--database-region", cfg.Regions[0])
		}
		if wanFile != "" {
			n.args = append(n.args, "--emulate-wan", wanFile)
		}
		if cfg.Pprof {
			n.PprofAddr = "127.0.0.1:" + strconv.Itoa(cfg.BasePort+50+i+1)
			n.args = append(n.args, "--pprof-addr", n.PprofAddr)
		}
		n.args = append(n.args, cfg.Flags...)
		c.Nodes = append(c.Nodes, n)
		if err := c.start(n); err != nil {
			c.Stop()
			return nil, err
		}
	}
	if err := c.WaitReady(ctx); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

func (c *Cluster) addr(i int) string   { return "127.0.0.1:" + strconv.Itoa(c.cfg.BasePort+i) }
func (c *Cluster) gossip(i int) string { return "127.0.0.1:" + strconv.Itoa(c.cfg.BasePort+100+10*i) }

// seeds is what node i joins: n1, or with JoinAll every other node.
func (c *Cluster) seeds(i int) string {
	if !c.cfg.JoinAll {
		if i == 1 {
			return ""
		}
		return c.gossip(1)
	}
	var s []string
	for j := 1; j <= len(c.cfg.Regions); j++ {
		if j != i {
			s = append(s, c.gossip(j))
		}
	}
	return strings.Join(s, ",")
}

// environ is this process's environment without MESHCAST_ variables and
// those extra sets, then extra.
func environ(extra []string) []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, "MESHCAST_") && !slices.ContainsFunc(extra, func(e string) bool { return strings.HasPrefix(e, name+"=") }) {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// start runs node n's process, its output appended to its log.
func (c *Cluster) start(n *Node) error {
	logf, err := os.OpenFile(filepath.Join(c.LogDir, n.Name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	n.cmd = exec.Command(c.cfg.Bin, n.args...)
	n.cmd.Stdout, n.cmd.Stderr, n.cmd.Env = logf, logf, c.env
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := n.cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("cluster: start %s: %w", c.cfg.Bin, err)
	}
	done := make(chan struct{})
	n.done = done
	go func() { n.cmd.Wait(); logf.Close(); close(done) }()
	return nil
}

// Restart starts node i (0-based) again after Kill, a new incarnation on
// the same ports, and waits until the cluster is whole again.
func (c *Cluster) Restart(ctx context.Context, i int) error {
	if err := c.start(c.Nodes[i]); err != nil {
		return err
	}
	return c.WaitReady(ctx)
}

// WaitReady waits (at most StartTimeout) until every node has every other
// as a connected peer and a member, and with a database one reader runs.
func (c *Cluster) WaitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, StartTimeout)
	defer cancel()
	n := float64(len(c.Nodes))
	for {
		ready, readers, last := 0, 0.0, ""
		for _, node := range c.Nodes {
			if node.Exited() {
				return fmt.Errorf("cluster: node %s exited (log in %s)", node.Name, c.LogDir)
			}
			m, err := Scrape(ctx, node.MetricsURL(), nil)
			if err != nil {
				last = "; " + err.Error()
				continue
			}
			if n == 1 || (m["meshcast_mesh_peers_connected"] == n-1 && m["meshcast_mesh_members"] == n) {
				ready++
			}
			readers += m["meshcast_wal_reader_running"]
		}
		if ready == len(c.Nodes) && (c.cfg.DatabaseURL == "" || readers == 1) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster: not ready in %s: %d/%d nodes with every peer, %.0f readers%s (logs in %s)",
				StartTimeout, ready, len(c.Nodes), readers, last, c.LogDir)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// URLs are the nodes' WebSocket URLs with apikey.
func (c *Cluster) URLs(apikey string) []string {
	var out []string
	for _, n := range c.Nodes {
		out = append(out, n.URL(apikey))
	}
	return out
}

// Stop stops the nodes still running: SIGTERM, SIGKILL after 10 s.
func (c *Cluster) Stop() {
	for _, n := range c.Nodes {
		if n.cmd != nil && !n.Exited() {
			n.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	deadline := time.After(10 * time.Second)
	for _, n := range c.Nodes {
		if n.cmd == nil {
			continue
		}
		select {
		case <-n.done:
		case <-deadline:
			n.cmd.Process.Kill()
			<-n.done
		}
	}
}
