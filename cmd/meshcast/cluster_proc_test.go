//go:build linux

package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/testkit"
)

// Processes, ports and /metrics for the cluster tests.

// nodeSpec is what a node is started with; a restart reuses it.
type nodeSpec struct {
	name, region string
	httpAddr     string // client HTTP/WebSocket, TCP
	gossipAddr   string // memberlist, TCP+UDP
	meshAddr     string // QUIC, UDP
	secret       string
	join         string   // seed gossip address, "" for the first node
	extra        []string // more flags
	// defaultProbe starts the node without --gossip-probe-interval, so
	// it runs the binary's default failure detection.
	defaultProbe bool
	// ns, when set, runs the process in that network namespace; the test
	// reaches its addresses through ns.dial.
	ns *netns
}

// node is one meshcast process.
type node struct {
	nodeSpec
	id   string // <name>-<incarnation>, from the "mesh started" log line
	cmd  *exec.Cmd
	log  *syncBuffer
	done chan struct{} // closed once the process has exited and been reaped
	err  error         // cmd.Wait's result, set before done closes
}

// syncBuffer collects a process's stderr.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

var meshStartedRE = regexp.MustCompile(`msg="mesh started" node=(\S+)`)

// spawnNode starts a meshcast process and waits until it serves /healthz
// and has logged its node ID. It is killed and reaped in t.Cleanup if the
// test has not stopped it; its log is shown when the test failed.
func spawnNode(t *testing.T, spec nodeSpec) *node {
	t.Helper()
	args := []string{
		"--listen", spec.httpAddr,
		"--name", spec.name,
		"--region", spec.region,
		"--gossip-addr", spec.gossipAddr,
		"--mesh-addr", spec.meshAddr,
		"--cluster-secret", spec.secret,
		"--shutdown-timeout", "5s",
	}
	if !spec.defaultProbe {
		args = append(args, "--gossip-probe-interval", probeInterval.String())
	}
	if spec.join != "" {
		args = append(args, "--join", spec.join)
	}
	args = append(args, spec.extra...)
	n := &node{nodeSpec: spec, log: &syncBuffer{}, done: make(chan struct{})}
	n.cmd = exec.Command(meshcastBin, args...)
	if spec.ns != nil { // ip execs the binary: same process, same PID
		n.cmd = exec.Command("ip", append([]string{"netns", "exec", spec.ns.name, meshcastBin}, args...)...)
	}
	n.cmd.Stdout = n.log
	n.cmd.Stderr = n.log
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	for _, kv := range os.Environ() { // the flags above are the whole config
		if !strings.HasPrefix(kv, "MESHCAST_") {
			n.cmd.Env = append(n.cmd.Env, kv)
		}
	}
	if err := n.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", spec.name, err)
	}
	go func() {
		n.err = n.cmd.Wait()
		close(n.done)
	}()
	t.Cleanup(func() {
		n.cmd.Process.Kill() // an error only says it has exited already
		<-n.done
		if t.Failed() {
			t.Logf("--- log of %s (%s) ---\n%s", spec.name, n.id, tail(n.log.String(), 60))
		}
	})

	deadline := time.Now().Add(readyWait)
	for {
		if m := meshStartedRE.FindStringSubmatch(n.log.String()); m != nil && n.id == "" {
			n.id = m[1]
		}
		if n.id != "" && httpStatus(n, "/healthz") == http.StatusOK {
			return n
		}
		select {
		case <-n.done:
			t.Fatalf("%s exited during start: %v\n%s", spec.name, n.err, n.log.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready within %v (id %q)\n%s", spec.name, readyWait, n.id, n.log.String())
		}
	}
}

func tail(s string, lines int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

// signal sends sig to the process.
func (n *node) signal(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := n.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v to %s: %v", sig, n.name, err)
	}
}

// exited waits up to d for the process to end.
func (n *node) exited(d time.Duration) bool {
	select {
	case <-n.done:
		return true
	case <-time.After(d):
		return false
	}
}

// cluster is three nodes: n1 (iad, the seed), n2 (fra), n3 (sin).
type cluster struct {
	specs []nodeSpec
	nodes []*node
}

// startCluster starts three nodes on free loopback ports and waits until
// each one counts three members and has its mesh connection to both others
// up.
func startCluster(t *testing.T, secret string, extra ...string) *cluster {
	t.Helper()
	c := &cluster{specs: clusterSpecs(t, secret, extra...)}
	for _, spec := range c.specs {
		c.nodes = append(c.nodes, spawnNode(t, spec))
	}
	c.waitMembers(t, c.nodes, 3, readyWait)
	return c
}

// clusterSpecs are the specs of three nodes on free loopback ports, n2
// and n3 joining n1, each started with the extra flags.
func clusterSpecs(t *testing.T, secret string, extra ...string) []nodeSpec {
	t.Helper()
	ports := freePorts(t, 9)
	addr := func(i int) string { return "127.0.0.1:" + strconv.Itoa(ports[i]) }
	var specs []nodeSpec
	for i, region := range []string{"iad", "fra", "sin"} {
		spec := nodeSpec{
			name:       "n" + strconv.Itoa(i+1),
			region:     region,
			httpAddr:   addr(3 * i),
			gossipAddr: addr(3*i + 1),
			meshAddr:   addr(3*i + 2),
			secret:     secret,
			extra:      extra,
		}
		if i > 0 {
			spec.join = specs[0].gossipAddr
		}
		specs = append(specs, spec)
	}
	return specs
}

// waitMembers waits until every node of nodes reports want members and
// want-1 connected mesh peers.
func (c *cluster) waitMembers(t *testing.T, nodes []*node, want int, d time.Duration) {
	t.Helper()
	var last string
	ok := waitFor(d, func() bool {
		last = ""
		good := true
		for _, n := range nodes {
			m, err := scrape(n)
			if err != nil {
				last += fmt.Sprintf(" %s: %v;", n.name, err)
				good = false
				continue
			}
			members, peers := m["meshcast_mesh_members"], m["meshcast_mesh_peers_connected"]
			last += fmt.Sprintf(" %s: members=%v peers_connected=%v;", n.name, members, peers)
			if members != float64(want) || peers != float64(want-1) {
				good = false
			}
		}
		return good
	})
	if !ok {
		t.Fatalf("cluster did not reach %d members with all mesh peers connected within %v:%s", want, d, last)
	}
}

// freePorts returns n distinct loopback ports that were free for both TCP
// and UDP a moment ago (gossip binds both; holding all of them until the
// end keeps them distinct).
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var closers []io.Closer
	defer func() {
		for _, c := range closers {
			c.Close()
		}
	}()
	var ports []int
	for tries := 0; len(ports) < n; tries++ {
		if tries > 100*n {
			t.Fatalf("found only %d free TCP+UDP ports", len(ports))
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		closers = append(closers, ln)
		port := ln.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			continue
		}
		closers = append(closers, pc)
		ports = append(ports, port)
	}
	return ports
}

// httpClient keeps no idle connections, so no transport goroutine outlives
// a request (goleak).
var httpClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 2 * time.Second}

// client is the HTTP client that reaches n: httpClient, or one that dials
// into n's network namespace.
func (n *node) client() *http.Client {
	if n.ns != nil {
		return n.ns.httpClient
	}
	return httpClient
}

func httpStatus(n *node, path string) int {
	resp, err := n.client().Get("http://" + n.httpAddr + path)
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// scrape reads a node's /metrics into series → value, the series written
// as the exposition format has it, e.g.
// meshcast_mesh_frames_sent_total{peer="n2-1abc",lane="data"}.
func scrape(n *node) (map[string]float64, error) {
	resp, err := n.client().Get("http://" + n.httpAddr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	return testkit.ParseMetrics(resp.Body)
}

func mustScrape(t *testing.T, n *node) map[string]float64 {
	t.Helper()
	m, err := scrape(n)
	if err != nil {
		t.Fatalf("scrape %s: %v", n.name, err)
	}
	return m
}

func peerSeries(name, peerID, lane string) string {
	return fmt.Sprintf(`%s{peer=%q,lane=%q}`, name, peerID, lane)
}

// settledDataFrames waits until every data-lane frame from sends to to
// has been counted on both sides, and returns the count. A writer counts
// its frames just after the write returns, so right after a receiver saw a
// message the sender's counter may still lag; the receiver counts before it
// delivers, so equality means nothing is in flight.
func settledDataFrames(t *testing.T, from, to *node) float64 {
	t.Helper()
	sentName := peerSeries("meshcast_mesh_frames_sent_total", to.id, "data")
	recvName := peerSeries("meshcast_mesh_frames_received_total", from.id, "data")
	var sent, recv float64
	var last string
	ok := waitFor(msgWait, func() bool {
		ms, err1 := scrape(from)
		mr, err2 := scrape(to)
		if err := errors.Join(err1, err2); err != nil {
			last = err.Error()
			return false
		}
		var have bool
		if sent, have = ms[sentName]; !have {
			last = fmt.Sprintf("%s has no %s", from.name, sentName)
			return false
		}
		recv = mr[recvName] // absent until the lane has been read from
		last = fmt.Sprintf("%s sent %v, %s received %v", from.name, sent, to.name, recv)
		return sent == recv
	})
	if !ok {
		t.Fatalf("data lane %s→%s did not settle: %s", from.name, to.name, last)
	}
	return sent
}

// waitFor polls cond until it holds or d passes.
var waitFor = testkit.WaitFor
