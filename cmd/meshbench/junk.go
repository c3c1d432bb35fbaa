package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// junkMain is `meshbench junk`: what rate of junk datagrams on one node's
// gossip port the failure detector survives. A cluster of meshcast
// processes at their default failure detection; one node's gossip UDP
// port gets 1200-byte junk datagrams (half shaped like sealed memberlist
// packets) at each rate in turn for a while, then a pause; after each
// step the nodes' counters tell whether anyone was suspected or declared
// dead. (Kept to this file: bench/ is being restructured.)
func junkMain(args []string) int {
	fs := flag.NewFlagSet("meshbench junk", flag.ExitOnError)
	bin := fs.String("meshcast-bin", "bin/meshcast", "the meshcast binary")
	nodes := fs.Int("nodes", 3, "meshcast processes (2-9); the last one is flooded")
	base := fs.Int("base-port", 5900, "node i serves on base+i, gossips on base+100+10i (mesh +1)")
	rates := fs.String("rates", "0,25000,50000,100000,200000", "junk datagrams per second, one step each (0: none, the control step: what the host's load alone does)")
	step := fs.Duration("step", 30*time.Second, "flood time per rate")
	settle := fs.Duration("settle", 5*time.Second, "pause after each step before the counters are read (a suspicion in flight gets decided)")
	senders := fs.Int("senders", 2, "sending goroutines (sendmmsg batches of 64)")
	nodeFlags := fs.String("node-flags", "", "more meshcast flags for every node (space-separated)")
	pin := fs.Bool("pin", false, "as in issue 21: the flooded node alone on the last CPU, the other nodes and the senders on the others")
	fs.Parse(args)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	c, err := startJunkCluster(ctx, *bin, *nodes, *base, strings.Fields(*nodeFlags))
	if err != nil {
		log.Print(err)
		return 1
	}
	defer c.stop()
	victim := c.nodes[len(c.nodes)-1]
	if *pin {
		if err := c.pin(); err != nil {
			log.Printf("pinning: %v", err)
			return 1
		}
	}
	fmt.Printf("%-10s %-10s %-12s %-10s %-12s %-12s %-10s %-8s\n", "rate", "sent/s", "dropped/s", "victim CPU", "kernel drops", "suspicions", "refuted", "deaths")
	for _, f := range strings.Split(*rates, ",") {
		rate, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || rate < 0 {
			log.Printf("bad rate %q", f)
			return 2
		}
		before, cpu0, k0 := c.counters(), cpuSeconds(victim.cmd.Process.Pid), kernelUDPDrops()
		start := time.Now()
		sent := flood(ctx, victim.gossip, rate, *step, *senders)
		took := time.Since(start)
		cpu := (cpuSeconds(victim.cmd.Process.Pid) - cpu0) / took.Seconds()
		select {
		case <-ctx.Done():
			return 1
		case <-time.After(*settle):
		}
		after, k1 := c.counters(), kernelUDPDrops()
		d := func(name string) float64 { return after[name] - before[name] }
		fmt.Printf("%-10d %-10.0f %-12.0f %-10s %-12.0f %-12.0f %-10.0f %-8.0f\n", rate, float64(sent)/took.Seconds(),
			d("victim:"+`meshcast_gossip_packets_dropped_total{reason="unauthenticated"}`)/took.Seconds(),
			fmt.Sprintf("%.0f%%", 100*cpu), float64(k1-k0), d("meshcast_gossip_suspicions_total"),
			d(`meshcast_gossip_refuted_total{accusation="suspect"}`)+d(`meshcast_gossip_refuted_total{accusation="dead"}`),
			d("meshcast_mesh_members_failed_total"))
	}
	return 0
}

type junkNode struct {
	http, gossip string
	cmd          *exec.Cmd
}

type junkCluster struct{ nodes []*junkNode }

func startJunkCluster(ctx context.Context, bin string, n, base int, extra []string) (*junkCluster, error) {
	dir, err := os.MkdirTemp("", "meshbench-junk-")
	if err != nil {
		return nil, err
	}
	log.Printf("node logs in %s", dir)
	c := &junkCluster{}
	for i := range n {
		nd := &junkNode{
			http:   "127.0.0.1:" + strconv.Itoa(base+i),
			gossip: "127.0.0.1:" + strconv.Itoa(base+100+10*i),
		}
		args := []string{"--listen", nd.http, "--name", "j" + strconv.Itoa(i), "--gossip-addr", nd.gossip,
			"--cluster-secret", "meshbench", "--log-level", "warn"}
		if i > 0 {
			args = append(args, "--join", c.nodes[0].gossip)
		}
		nd.cmd = exec.CommandContext(ctx, bin, append(args, extra...)...)
		logf, err := os.Create(filepath.Join(dir, "j"+strconv.Itoa(i)+".log"))
		if err != nil {
			return nil, err
		}
		nd.cmd.Stdout, nd.cmd.Stderr = logf, logf
		nd.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := nd.cmd.Start(); err != nil {
			c.stop()
			return nil, err
		}
		c.nodes = append(c.nodes, nd)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !c.formed() {
		if time.Now().After(deadline) {
			c.stop()
			return nil, fmt.Errorf("the cluster of %d did not form within 30s", n)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return c, nil
}

func (c *junkCluster) formed() bool {
	for _, nd := range c.nodes {
		m, err := scrapeMetrics(nd.http)
		if err != nil || m["meshcast_mesh_members"] != float64(len(c.nodes)) || m["meshcast_mesh_peers_connected"] != float64(len(c.nodes)-1) {
			return false
		}
	}
	return true
}

// pin puts the last node alone on the last CPU and every other node and
// this process (the senders) on the other CPUs.
func (c *junkCluster) pin() error {
	var all unix.CPUSet
	if err := unix.SchedGetaffinity(0, &all); err != nil {
		return err
	}
	last := -1
	for i := range 1024 {
		if all.IsSet(i) {
			last = i
		}
	}
	if all.Count() < 2 {
		return fmt.Errorf("%d CPU: nothing to pin apart", all.Count())
	}
	alone, rest := unix.CPUSet{}, all
	alone.Set(last)
	rest.Clear(last)
	victim := c.nodes[len(c.nodes)-1].cmd.Process.Pid
	if err := setAffinity(victim, &alone); err != nil {
		return err
	}
	if err := setAffinity(os.Getpid(), &rest); err != nil {
		return err
	}
	for _, nd := range c.nodes[:len(c.nodes)-1] {
		if err := setAffinity(nd.cmd.Process.Pid, &rest); err != nil {
			return err
		}
	}
	return nil
}

// setAffinity pins every thread of process pid.
func setAffinity(pid int, set *unix.CPUSet) error {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return err
	}
	for _, task := range tasks {
		tid, _ := strconv.Atoi(task.Name())
		if err := unix.SchedSetaffinity(tid, set); err != nil {
			return err
		}
	}
	return nil
}

func (c *junkCluster) stop() {
	for _, nd := range c.nodes {
		nd.cmd.Process.Kill()
		nd.cmd.Wait()
	}
}

// counters sums each series over the nodes; the victim's (the last
// node's) are also kept under "victim:" + series.
func (c *junkCluster) counters() map[string]float64 {
	sum := map[string]float64{}
	for i, nd := range c.nodes {
		m, err := scrapeMetrics(nd.http)
		if err != nil {
			log.Printf("metrics of %s: %v", nd.http, err)
		}
		for k, v := range m {
			sum[k] += v
			if i == len(c.nodes)-1 {
				sum["victim:"+k] = v
			}
		}
	}
	return sum
}

func scrapeMetrics(addr string) (map[string]float64, error) {
	cl := http.Client{Timeout: 5 * time.Second}
	resp, err := cl.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		i := strings.LastIndexByte(line, ' ')
		if line == "" || line[0] == '#' || i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out, sc.Err()
}

// flood sends 1200-byte junk datagrams to target at about rate per second
// for d, in sendmmsg batches; it returns how many it sent.
func flood(ctx context.Context, target string, rate int, d time.Duration, senders int) int64 {
	if rate == 0 {
		select {
		case <-ctx.Done():
		case <-time.After(d):
		}
		return 0
	}
	to, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		log.Print(err)
		return 0
	}
	var mu sync.Mutex
	var total int64
	var wg sync.WaitGroup
	start := time.Now()
	for s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := sendJunk(ctx, to, float64(rate)/float64(senders), start, d, uint64(s)<<40)
			mu.Lock()
			total += n
			mu.Unlock()
		}()
	}
	wg.Wait()
	return total
}

func sendJunk(ctx context.Context, to *net.UDPAddr, rate float64, start time.Time, d time.Duration, seq uint64) int64 {
	uc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		log.Print(err)
		return 0
	}
	defer uc.Close()
	pc := ipv4.NewPacketConn(uc)
	msgs := make([]ipv4.Message, 64)
	for i := range msgs {
		b := make([]byte, 1200)
		rand.Read(b)
		b[0] = byte(i & 1) // half carry memberlist's encryption version 0/1
		msgs[i] = ipv4.Message{Buffers: [][]byte{b}, Addr: to}
	}
	var sent int64
	for time.Since(start) < d && ctx.Err() == nil {
		due := int64(time.Since(start).Seconds() * rate)
		for sent < due {
			batch := msgs[:min(int64(len(msgs)), due-sent)]
			for _, m := range batch {
				seq++
				binary.BigEndian.PutUint64(m.Buffers[0][1:], seq) // a fresh "nonce"
			}
			n, err := pc.WriteBatch(batch, 0)
			if err != nil {
				time.Sleep(time.Millisecond)
				break
			}
			sent += int64(n)
		}
		time.Sleep(200 * time.Microsecond)
	}
	return sent
}

// cpuSeconds is a process's user+system CPU time.
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ
}

// kernelUDPDrops is the host's UDP receive-buffer overflow count.
func kernelUDPDrops() int64 {
	b, err := os.ReadFile("/proc/net/snmp")
	if err != nil {
		return 0
	}
	var head []string
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "Udp: ") {
			continue
		}
		f := strings.Fields(line)
		if head == nil {
			head = f
			continue
		}
		for i, h := range head {
			if h == "RcvbufErrors" && i < len(f) {
				v, _ := strconv.ParseInt(f[i], 10, 64)
				return v
			}
		}
	}
	return 0
}
