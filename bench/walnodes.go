package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clusterStartTimeout bounds a cluster's start (processes serving, every
// mesh connection up, the database's reader streaming) and its stop.
const clusterStartTimeout = 30 * time.Second

// ClusterConfig describes the Postgres and meshcast nodes a WAL run starts
// for itself when it is not given URLs.
type ClusterConfig struct {
	MeshcastBin string // default bin/meshcast
	Nodes       int    // default 3
	// BasePort: node i (1-based) serves clients on BasePort+i, gossips on
	// BasePort+100+10i (QUIC mesh +1) and, with Pprof, serves pprof on
	// BasePort+50+i. Default 4400.
	BasePort int
	Regions  []string // per node, cycled; default iad, fra, sin
	Flags    []string // more meshcast flags for every node
	Pprof    bool     // --pprof-addr on every node
	LogDir   string   // node logs (n1.log …); default a new temporary directory
	Postgres PostgresConfig
}

func (c ClusterConfig) withDefaults() (ClusterConfig, error) {
	if c.MeshcastBin == "" {
		c.MeshcastBin = "bin/meshcast"
	}
	if c.Nodes == 0 {
		c.Nodes = 3
	}
	if c.BasePort == 0 {
		c.BasePort = 4400
	}
	if len(c.Regions) == 0 {
		c.Regions = []string{"iad", "fra", "sin"}
	}
	if c.Nodes < 1 || c.Nodes > 9 {
		return c, errors.New("cluster nodes must be within [1, 9]")
	}
	if c.BasePort < 1024 || c.BasePort+100+10*c.Nodes+1 > 65535 {
		return c, errors.New("cluster base port out of range")
	}
	return c, nil
}

// Node is one meshcast process of a Cluster.
type Node struct {
	Name      string
	HTTPAddr  string // host:port of clients and /metrics
	PprofAddr string // "" without pprof
	cmd       *exec.Cmd
	done      chan struct{}
}

// MetricsURL is the node's /metrics.
func (n *Node) MetricsURL() string { return "http://" + n.HTTPAddr + "/metrics" }

// PID is the node's process id.
func (n *Node) PID() int { return n.cmd.Process.Pid }

// Cluster is meshcast nodes streaming a database, and the local Postgres
// serving it when StartCluster started one.
type Cluster struct {
	PG     *LocalPostgres // nil from StartNodes
	Nodes  []*Node
	LogDir string
}

// StartCluster starts Postgres, lets prepare set up the database (before
// any node reads it), then starts the nodes (StartNodes). Stop stops both.
func StartCluster(ctx context.Context, cfg ClusterConfig, flags []string, prepare func(ctx context.Context, url string) error) (*Cluster, error) {
	pg, err := StartPostgres(ctx, cfg.Postgres)
	if err != nil {
		return nil, err
	}
	if prepare != nil {
		if err := prepare(ctx, pg.URL()); err != nil {
			pg.Stop()
			return nil, err
		}
	}
	c, err := StartNodes(ctx, cfg, pg.URL(), flags)
	if err != nil {
		pg.Stop()
		return nil, err
	}
	c.PG = pg
	return c, nil
}

// StartNodes starts cfg.Nodes meshcast processes streaming the database at
// dbURL and waits until they are all connected to each other and one of
// them streams the database. flags are added to every node's command line
// (e.g. --jwt-secret).
func StartNodes(ctx context.Context, cfg ClusterConfig, dbURL string, flags []string) (*Cluster, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	c := &Cluster{LogDir: cfg.LogDir}
	if c.LogDir == "" {
		if c.LogDir, err = os.MkdirTemp("", "meshbench-wal"); err != nil {
			return nil, err
		}
	} else if err := os.MkdirAll(c.LogDir, 0o755); err != nil {
		return nil, err
	}
	for i := 1; i <= cfg.Nodes; i++ {
		n := &Node{Name: "n" + strconv.Itoa(i), HTTPAddr: "127.0.0.1:" + strconv.Itoa(cfg.BasePort+i), done: make(chan struct{})}
		gossip := cfg.BasePort + 100 + 10*i
		args := []string{
			"--listen", n.HTTPAddr, "--name", n.Name, "--region", cfg.Regions[(i-1)%len(cfg.Regions)],
			"--gossip-addr", "127.0.0.1:" + strconv.Itoa(gossip), "--cluster-secret", "meshbench",
			"--database-url", dbURL, "--log-level", "warn",
			// Every node prefers the first region: the reader runs on n1
			// (with one node per region), whatever the default.
			"--database-region", cfg.Regions[0],
		}
		if i > 1 {
			args = append(args, "--join", "127.0.0.1:"+strconv.Itoa(cfg.BasePort+110))
		}
		if cfg.Pprof {
			n.PprofAddr = "127.0.0.1:" + strconv.Itoa(cfg.BasePort+50+i)
			args = append(args, "--pprof-addr", n.PprofAddr)
		}
		args = append(append(args, flags...), cfg.Flags...)
		logf, err := os.Create(filepath.Join(c.LogDir, n.Name+".log"))
		if err != nil {
			c.Stop()
			return nil, err
		}
		n.cmd = exec.Command(cfg.MeshcastBin, args...)
		n.cmd.Stdout, n.cmd.Stderr = logf, logf
		n.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		for _, kv := range os.Environ() { // the flags are the whole config
			if !strings.HasPrefix(kv, "MESHCAST_") {
				n.cmd.Env = append(n.cmd.Env, kv)
			}
		}
		if err := n.cmd.Start(); err != nil {
			logf.Close()
			c.Stop()
			return nil, fmt.Errorf("bench: start %s: %w", cfg.MeshcastBin, err)
		}
		go func() { n.cmd.Wait(); logf.Close(); close(n.done) }()
		c.Nodes = append(c.Nodes, n)
	}
	if err := c.waitReady(ctx); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

// waitReady waits until every node has every other as a mesh peer and one
// node's reader streams.
func (c *Cluster) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, clusterStartTimeout)
	defer cancel()
	want := float64(len(c.Nodes) - 1)
	var last string
	for {
		ready, readers := 0, 0.0
		scrapeErr := ""
		for _, n := range c.Nodes {
			select {
			case <-n.done:
				return fmt.Errorf("bench: node %s exited at start (log in %s)", n.Name, c.LogDir)
			default:
			}
			m, err := ScrapeMetrics(ctx, n.MetricsURL())
			if err != nil {
				scrapeErr = "; " + err.Error()
				continue
			}
			if len(c.Nodes) == 1 || m["meshcast_mesh_peers_connected"] == want {
				ready++
			}
			readers += m["meshcast_wal_reader_running"]
		}
		if ready == len(c.Nodes) && readers == 1 {
			return nil
		}
		last = fmt.Sprintf("%d/%d nodes with all peers, %.0f readers running%s", ready, len(c.Nodes), readers, scrapeErr)
		select {
		case <-ctx.Done():
			return fmt.Errorf("bench: cluster not ready in %s: %s (logs in %s)", clusterStartTimeout, last, c.LogDir)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// WSURLs are the nodes' WebSocket URLs with apikey.
func (c *Cluster) WSURLs(apikey string) []string {
	var out []string
	for _, n := range c.Nodes {
		out = append(out, "ws://"+n.HTTPAddr+"/realtime/v1/websocket?apikey="+apikey+"&vsn=2.0.0")
	}
	return out
}

// Stop stops the nodes (SIGTERM, then SIGKILL after 10 s) and the
// Postgres StartCluster started.
func (c *Cluster) Stop() {
	for _, n := range c.Nodes {
		n.cmd.Process.Signal(syscall.SIGTERM)
	}
	deadline := time.After(10 * time.Second)
	for _, n := range c.Nodes {
		select {
		case <-n.done:
		case <-deadline:
			n.cmd.Process.Kill()
			<-n.done
		}
	}
	c.Nodes = nil
	if c.PG != nil {
		c.PG.Stop()
		c.PG = nil
	}
}

// Metrics are the samples of one /metrics page: name{labels} → value.
type Metrics map[string]float64

// Sum adds the samples of name whose labels contain every one of labels
// (each like `lane="changes"`).
func (m Metrics) Sum(name string, labels ...string) float64 {
	var s float64
	for k, v := range m {
		n, l, _ := strings.Cut(k, "{")
		if n != name {
			continue
		}
		ok := true
		for _, want := range labels {
			if !strings.Contains(l, want) {
				ok = false
				break
			}
		}
		if ok {
			s += v
		}
	}
	return s
}

// metricsClient keeps no idle connections: nothing outlives a scrape.
var metricsClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

// ScrapeMetrics reads a Prometheus text page.
func ScrapeMetrics(ctx context.Context, url string) (Metrics, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := metricsClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("bench: %s: %s", url, resp.Status)
	}
	return parseMetrics(io.LimitReader(resp.Body, 16<<20))
}

func parseMetrics(r io.Reader) (Metrics, error) {
	m := Metrics{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		m[line[:i]] = v
	}
	return m, sc.Err()
}
