//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Network namespaces for the chaos test's partitions: every node process
// runs in a namespace of its own whose eth0 is one end of a veth pair; the
// other ends are ports of a bridge in a namespace of the test's. A
// partition takes one node's bridge port down, which cuts its gossip and
// QUIC mesh traffic (and nothing else); healing brings it up again.
//
// The test process stays in its own namespace and reaches each node's
// loopback by creating its sockets inside that namespace (setns on a
// locked thread: a socket belongs to the namespace it was created in), so
// clients and /metrics keep working while a node is cut off, and a proxy
// listening on each node's loopback forwards to the test's Postgres.
//
// The addresses (10.213.0.0/24) exist only inside these namespaces; no
// packet of them reaches the test's namespace or the host's links.

// netns is one namespace the test created.
type netns struct {
	name       string
	httpClient *http.Client // DisableKeepAlives: no transport goroutine outlives a request (goleak)
}

const nsSubnet = "10.213.0." // /24, inside the namespaces only

// nsPrefix names the namespaces of this test binary; a leftover of a
// binary that died (a -timeout panic skips t.Cleanup) carries its PID.
const nsPrefix = "mcchaos"

// netnsUnavailable says why the test cannot make namespaces, or "".
func netnsUnavailable() string {
	if os.Geteuid() != 0 {
		return "not root (network namespaces need CAP_SYS_ADMIN)"
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return "no ip command (iproute2)"
	}
	name := fmt.Sprintf("%s%d-probe", nsPrefix, os.Getpid())
	if err := ipCmd("netns", "add", name); err != nil {
		return "ip netns add failed: " + err.Error()
	}
	defer ipCmd("netns", "del", name)
	if err := ipCmd("-n", name, "link", "add", "p0", "type", "veth", "peer", "name", "p1"); err != nil {
		return "veth pairs unavailable: " + err.Error()
	}
	return ""
}

func ipCmd(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// removeStaleNamespaces deletes the namespaces of test binaries that are
// no longer running.
func removeStaleNamespaces(t *testing.T) {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		name, _, _ := strings.Cut(sc.Text(), " ")
		rest, ok := strings.CutPrefix(name, nsPrefix)
		if !ok {
			continue
		}
		pidText, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		if err != nil || pid == os.Getpid() || syscall.Kill(pid, 0) != syscall.ESRCH {
			continue
		}
		t.Logf("removing network namespace %s left by process %d", name, pid)
		ipCmd("netns", "del", name)
	}
}

// nsNetwork is a bridge namespace and one namespace per node.
type nsNetwork struct {
	bridge  string
	nodes   []*netns
	proxies []*nsProxy
}

// newNSNetwork makes count node namespaces on one bridge. Node i (from 0)
// has the address nsSubnet+(i+1). Everything is removed in t.Cleanup,
// which runs after the cleanups of the processes started later.
func newNSNetwork(t *testing.T, count int) *nsNetwork {
	t.Helper()
	removeStaleNamespaces(t)
	base := fmt.Sprintf("%s%d-", nsPrefix, os.Getpid())
	nw := &nsNetwork{bridge: base + "br"}
	t.Cleanup(nw.remove)
	must := func(args ...string) {
		t.Helper()
		if err := ipCmd(args...); err != nil {
			t.Fatal(err)
		}
	}
	must("netns", "add", nw.bridge)
	must("-n", nw.bridge, "link", "add", "br0", "type", "bridge")
	must("-n", nw.bridge, "link", "set", "br0", "up")
	for i := range count {
		ns := &netns{name: base + "n" + strconv.Itoa(i+1)}
		ns.httpClient = &http.Client{
			Transport: &http.Transport{DisableKeepAlives: true, DialContext: ns.dial},
			Timeout:   2 * time.Second,
		}
		must("netns", "add", ns.name)
		nw.nodes = append(nw.nodes, ns)
		must("-n", ns.name, "link", "set", "lo", "up")
		port := nw.port(i)
		must("-n", nw.bridge, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns.name)
		must("-n", nw.bridge, "link", "set", port, "master", "br0", "up")
		must("-n", ns.name, "addr", "add", nw.addr(i)+"/24", "dev", "eth0")
		must("-n", ns.name, "link", "set", "eth0", "up")
	}
	return nw
}

func (nw *nsNetwork) port(i int) string { return "b" + strconv.Itoa(i+1) }

// addr is node i's address on the bridge.
func (nw *nsNetwork) addr(i int) string { return nsSubnet + strconv.Itoa(i+1) }

// partition cuts node i off the bridge; heal connects it again.
func (nw *nsNetwork) partition(i int) error {
	return ipCmd("-n", nw.bridge, "link", "set", nw.port(i), "down")
}

func (nw *nsNetwork) heal(i int) error {
	return ipCmd("-n", nw.bridge, "link", "set", nw.port(i), "up")
}

func (nw *nsNetwork) remove() {
	for _, p := range nw.proxies {
		p.close()
	}
	for _, ns := range nw.nodes {
		ipCmd("netns", "del", ns.name)
	}
	ipCmd("netns", "del", nw.bridge)
}

// forward listens on addr in every node namespace and forwards each
// connection to the same addr in the test's namespace (Postgres).
func (nw *nsNetwork) forward(t *testing.T, addr string) {
	t.Helper()
	for _, ns := range nw.nodes {
		p, err := startProxy(ns, addr, addr)
		if err != nil {
			t.Fatal(err)
		}
		nw.proxies = append(nw.proxies, p)
	}
}

// do runs f on a thread that is in ns for the call. It runs on a goroutine
// of its own: should the thread fail to return to its namespace, it stays
// locked and ends with that goroutine.
func (ns *netns) do(f func()) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		self, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer unix.Close(self)
		target, err := unix.Open("/var/run/netns/"+ns.name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer unix.Close(target)
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("setns %s: %w", ns.name, err)
			return
		}
		f()
		if err := unix.Setns(self, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns back from %s: %w", ns.name, err)
			return // the thread stays locked and exits with this goroutine
		}
		runtime.UnlockOSThread()
		errc <- nil
	}()
	return <-errc
}

// dial connects to addr inside ns.
func (ns *netns) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	var derr error
	if err := ns.do(func() { c, derr = (&net.Dialer{}).DialContext(ctx, network, addr) }); err != nil {
		return nil, err
	}
	return c, derr
}

// nsProxy accepts TCP connections in a namespace and forwards them to a
// target in the test's namespace.
type nsProxy struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

func startProxy(ns *netns, listen, target string) (*nsProxy, error) {
	p := &nsProxy{target: target, conns: make(map[net.Conn]struct{})}
	var lerr error
	if err := ns.do(func() { p.ln, lerr = net.Listen("tcp", listen) }); err != nil {
		return nil, err
	}
	if lerr != nil {
		return nil, fmt.Errorf("proxy in %s: %w", ns.name, lerr)
	}
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

func (p *nsProxy) serve() {
	defer p.wg.Done()
	for {
		down, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.DialTimeout("tcp", p.target, 2*time.Second)
		if err != nil {
			down.Close() // Postgres is down: the client sees a refused connection
			continue
		}
		if !p.track(down, up) {
			return
		}
		p.wg.Add(2)
		pipe := func(dst, src net.Conn) {
			defer p.wg.Done()
			io.Copy(dst, src)
			dst.Close()
			src.Close()
			p.untrack(dst, src)
		}
		go pipe(up, down)
		go pipe(down, up)
	}
}

func (p *nsProxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		for _, c := range cs {
			c.Close()
		}
		return false
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *nsProxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		delete(p.conns, c)
	}
}

func (p *nsProxy) close() {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.ln.Close()
	p.wg.Wait()
}
