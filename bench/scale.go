package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/meshcast/meshcast/bench/client"
	"github.com/meshcast/meshcast/bench/cluster"
	"github.com/meshcast/meshcast/bench/measure"
)

// The scale scenario (meshbench scale, bench/scale.sh): more connections
// than one process may open, held by a cluster. It starts the nodes, then
// worker processes (`meshbench scale-worker`, scaleworker.go) that each
// open a share of the connections from their own loopback source address,
// every connection joined to one of Channels channels and spread over the
// nodes; it holds them for Hold, reading each node's resident memory per
// connection, then publishes Rate broadcasts per second to every channel
// (one publisher per channel, in this process) for Warmup + Duration and
// counts every delivery: latency publish → receive, losses, gaps.

// ScaleConfig configures RunScale. Zero fields take the defaults noted.
type ScaleConfig struct {
	MeshcastBin  string // default bin/meshcast
	MeshbenchBin string // the workers' binary; default this executable
	Nodes        int    // default 3
	BasePort     int    // default 5600 (see cluster.Config)
	NodeFlags    []string
	Pprof        bool // --pprof-addr on every node (base+50+i)
	LogDir       string

	Conns       int           // subscriber connections over the nodes; default 100000
	Channels    int           // default 100
	Workers     int           // worker processes; default enough for 19 000 connections each
	ConnectRate float64       // connections opened per second, all workers; default 2000
	Hold        time.Duration // held idle after the last connection, before publishing; default 60s
	Rate        float64       // broadcasts per second to each channel; default 1
	Duration    time.Duration // measured publishing; default 30s
	Warmup      time.Duration // publishing before measuring; default 2s
	Drain       time.Duration // max wait for outstanding deliveries; default 10s
	PayloadSize int           // default 100
	Logf        func(format string, args ...any)
}

const (
	workerConns = 19000 // per worker process by default; the open-file limit here is 20 000
	fdReserve   = 100   // a process's descriptors other than connections
	maxWorkers  = 200   // source addresses 127.0.0.10 …
)

func (c ScaleConfig) withDefaults() (ScaleConfig, error) {
	orDefault(&c.MeshcastBin, "bin/meshcast")
	if c.MeshbenchBin == "" {
		c.MeshbenchBin, _ = os.Executable()
	}
	orDefault(&c.Nodes, 3)
	orDefault(&c.BasePort, 5600)
	orDefault(&c.Conns, 100000)
	orDefault(&c.Channels, 100)
	orDefault(&c.Workers, (c.Conns+workerConns-1)/workerConns)
	orDefault(&c.ConnectRate, 2000)
	orDefault(&c.Hold, time.Minute)
	orDefault(&c.Rate, 1)
	orDefault(&c.Duration, 30*time.Second)
	orDefault(&c.Warmup, 2*time.Second)
	orDefault(&c.Drain, 10*time.Second)
	orDefault(&c.PayloadSize, 100)
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
	limit := fileLimit()
	var errs checks
	check := errs.ok
	check(c.Nodes >= 1 && c.Nodes <= 9, "nodes must be within [1, 9]")
	check(c.Channels >= 1 && c.Channels <= 10000 && c.Conns >= c.Channels, "channels must be within [1, 10000] and at most the connections")
	check(c.Workers >= 1 && c.Workers <= maxWorkers, "workers must be within [1, %d]", maxWorkers)
	perNode := (c.Conns+c.Nodes-1)/c.Nodes + (c.Channels+c.Nodes-1)/c.Nodes
	check(limit == 0 || perNode+fdReserve <= limit,
		"%d connections per node (subscribers and publishers) exceed what the open-file limit of %d allows a node process: use more nodes or fewer connections", perNode, limit)
	perWorker := (c.Conns + c.Workers - 1) / c.Workers
	check(limit == 0 || perWorker+fdReserve <= limit, "%d connections per worker exceed the open-file limit of %d: use more workers", perWorker, limit)
	check(c.ConnectRate > 0 && c.ConnectRate <= maxConnectRate, "connect rate must be within (0, %d]", maxConnectRate)
	check(c.Rate > 0 && c.Rate*float64(c.Channels) <= 100000, "rate × channels must be within (0, 100000] publications/s")
	check(c.PayloadSize >= measure.MinPayloadSize && c.PayloadSize <= 1<<20, "payload must be within [%d, 1 MiB]", measure.MinPayloadSize)
	for _, d := range []time.Duration{c.Hold, c.Duration, c.Warmup} {
		check(d >= 0 && d <= maxDuration, "durations must be within [0, 1h]")
	}
	check(c.Drain >= 0 && c.Drain <= time.Minute, "drain must be within [0, 1m]")
	return c, errs.err("scale config")
}

// fileLimit is this process's open-file limit (nodes and workers inherit
// it); 0 if unknown.
func fileLimit() int {
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) != nil || lim.Max > 1<<30 {
		return 0
	}
	return int(lim.Max)
}

// Budget bounds RunScale.
func (c ScaleConfig) Budget() time.Duration {
	c, err := c.withDefaults()
	if err != nil {
		return time.Minute
	}
	connect := time.Duration(float64(c.Conns)/c.ConnectRate*float64(time.Second)) + time.Minute
	return cluster.StartTimeout + connect + c.Hold + c.Warmup + c.Duration + c.Drain + 2*time.Minute
}

// scaleWorkerProc is one running worker and what it last said.
type scaleWorkerProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	mu     sync.Mutex
	last   scaleProgress
	result *scaleWorkerResult
	err    error
	done   chan struct{} // closed when its stdout ended
}

// RunScale runs the scale scenario; it returns an error only when nothing
// could be measured.
func RunScale(ctx context.Context, cfg ScaleConfig) (*ScaleResult, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	cl, err := cluster.Start(ctx, cluster.Config{Bin: cfg.MeshcastBin, Regions: cluster.Cycle([]string{"iad", "fra", "sin"}, cfg.Nodes),
		BasePort: cfg.BasePort, Flags: cfg.NodeFlags, Pprof: cfg.Pprof, LogDir: cfg.LogDir})
	if err != nil {
		return nil, err
	}
	defer cl.Stop()
	cfg.Logf("scale: %d nodes up (logs in %s)", cfg.Nodes, cl.LogDir)
	s := &scaleRun{run: newRun(cfg.Logf), cfg: cfg, cl: cl, res: &ScaleResult{Config: cfg}}
	s.rss0 = s.nodeRSS()
	s.res.Load1Before, _ = measure.ReadLoad1()
	if err := s.startWorkers(ctx); err != nil {
		s.stopWorkers()
		return nil, err
	}
	err = s.scenario(ctx)
	s.stopWorkers()
	s.collect()
	if err != nil && s.res.Connected == 0 {
		return nil, err
	}
	return s.res, err
}

type scaleRun struct {
	*run
	cfg     ScaleConfig
	cl      *cluster.Cluster
	res     *ScaleResult
	workers []*scaleWorkerProc
	rss0    []int64
	pubs    []*scalePub
}

type scalePub struct {
	c     *client.WS
	topic string
	sent  uint64
}

// topicPrefix names the run's channels: realtime:scale-<nonce>-<c>.
func (s *scaleRun) topicPrefix() string {
	return "realtime:scale-" + strconv.FormatInt(s.baseUnix/1e6%1e8, 36) + "-"
}

// startWorkers starts the worker processes, each with its share of the
// connections and its own source address.
func (s *scaleRun) startWorkers(ctx context.Context) error {
	cfg := &s.cfg
	urls := strings.Join(s.cl.URLs("meshbench"), ",")
	per := (cfg.Conns + cfg.Workers - 1) / cfg.Workers
	for w := range cfg.Workers {
		from, to := w*per, min((w+1)*per, cfg.Conns)
		if from >= to {
			break
		}
		cmd := exec.CommandContext(ctx, cfg.MeshbenchBin, "scale-worker", "-urls", urls, "-from", strconv.Itoa(from), "-to", strconv.Itoa(to),
			"-channels", strconv.Itoa(cfg.Channels), "-topic-prefix", s.topicPrefix(), "-source-addr", "127.0.0."+strconv.Itoa(10+w),
			"-connect-rate", strconv.FormatFloat(cfg.ConnectRate/float64(cfg.Workers), 'f', 1, 64))
		cmd.Stderr = os.Stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		wp := &scaleWorkerProc{cmd: cmd, done: make(chan struct{})}
		stdout, err := cmd.StdoutPipe()
		if err == nil {
			wp.stdin, err = cmd.StdinPipe()
		}
		if err == nil {
			err = cmd.Start()
		}
		if err != nil {
			return fmt.Errorf("bench: start worker %s: %w", cfg.MeshbenchBin, err)
		}
		s.workers = append(s.workers, wp)
		go wp.read(stdout)
	}
	return nil
}

// read follows a worker's lines until its stdout ends.
func (wp *scaleWorkerProc) read(r io.Reader) {
	defer close(wp.done)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		var p scaleProgress
		if err := json.Unmarshal(sc.Bytes(), &p); err != nil {
			continue
		}
		wp.mu.Lock()
		if p.Ev == "result" {
			var res scaleWorkerResult
			if wp.err = json.Unmarshal(sc.Bytes(), &res); wp.err == nil {
				wp.result = &res
			}
		} else {
			wp.last = p
		}
		wp.mu.Unlock()
	}
}

// progress sums the workers' last progress lines; done is true once every
// worker finished connecting (or ended).
func (s *scaleRun) progress() (p scaleProgress, done bool) {
	done = true
	for _, wp := range s.workers {
		wp.mu.Lock()
		l := wp.last
		wp.mu.Unlock()
		select {
		case <-wp.done:
			l.Done = true
		default:
		}
		p.Connected += l.Connected
		p.Failed += l.Failed
		p.Recv += l.Recv
		p.Disconnects += l.Disconnects
		done = done && l.Done
	}
	return p, done
}

// tell writes a command line to every worker.
func (s *scaleRun) tell(line string) {
	for _, wp := range s.workers {
		io.WriteString(wp.stdin, line+"\n")
	}
}

// stopWorkers asks every worker for its result and waits (at most 30 s,
// then kills it).
func (s *scaleRun) stopWorkers() {
	s.tell("stop")
	deadline := time.After(30 * time.Second)
	for _, wp := range s.workers {
		select {
		case <-wp.done:
		case <-deadline:
			wp.cmd.Process.Kill()
			<-wp.done
		}
		wp.stdin.Close()
		wp.cmd.Wait()
	}
}

// scenario connects, holds, publishes and drains.
func (s *scaleRun) scenario(ctx context.Context) error {
	cfg, res := &s.cfg, s.res
	t0 := time.Now()
	for last := time.Now(); ; time.Sleep(100 * time.Millisecond) {
		p, done := s.progress()
		if done || ctx.Err() != nil {
			res.ConnectSeconds = time.Since(t0).Seconds()
			cfg.Logf("scale: %d/%d connected in %.1fs (%d failed)", p.Connected, cfg.Conns, res.ConnectSeconds, p.Failed)
			break
		}
		if time.Since(last) >= 2*time.Second {
			last = time.Now()
			cfg.Logf("scale: connecting: %d/%d, %d failed", p.Connected, cfg.Conns, p.Failed)
		}
	}
	if p, _ := s.progress(); p.Connected == 0 {
		return errors.New("bench: scale: no connection")
	}
	cfg.Logf("scale: holding for %s", cfg.Hold)
	sleepCtx(ctx, cfg.Hold)
	s.readNodes(&res.Held, s.rss0)
	if err := s.connectPubs(ctx); err != nil {
		return err
	}
	return s.publish(ctx)
}

// connectPubs opens one publisher per channel, channel c's on node c mod
// nodes, read and dropped by a holder.
func (s *scaleRun) connectPubs(ctx context.Context) error {
	urls := s.cl.URLs("meshbench")
	for ch := range s.cfg.Channels {
		topic := s.topicPrefix() + strconv.Itoa(ch)
		c, err := client.DialWS(ctx, urls[ch%len(urls)], client.Options{})
		if err == nil {
			if err = client.JoinChannel(c, topic, client.Join{}, 10*time.Second, nil); err != nil {
				c.Close()
			}
		}
		if err != nil {
			return fmt.Errorf("bench: scale: publisher of %s: %w", topic, err)
		}
		s.pubs = append(s.pubs, &scalePub{c: c, topic: topic})
	}
	return nil
}
