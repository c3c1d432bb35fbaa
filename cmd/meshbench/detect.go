package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/meshcast/meshcast/bench"
	"github.com/meshcast/meshcast/bench/cluster"
)

// detectMain is `meshbench detect`: kill -9 → presence leave latency of the
// failure detector, or with -load its false positives under load.
func detectMain(args []string) int {
	fs := flag.NewFlagSet("meshbench detect", flag.ExitOnError)
	var c bench.DetectConfig
	var nodeFlags string
	fs.StringVar(&c.MeshcastBin, "meshcast-bin", "bin/meshcast", "the meshcast binary")
	fs.IntVar(&c.Nodes, "nodes", 3, "meshcast processes (2-9)")
	fs.IntVar(&c.Kills, "kills", 20, "kill rounds (the victim rotates over the nodes; each is restarted)")
	fs.IntVar(&c.BasePort, "base-port", 4900, "node i serves on base+i, gossips on base+100+10i (mesh +1)")
	fs.StringVar(&nodeFlags, "node-flags", "", "more meshcast flags for every node (space-separated), e.g. \"--gossip-probe-interval 1s\"")
	fs.DurationVar(&c.Settle, "settle", time.Second, "after a restarted node is back, wait this plus up to this at random before the next kill")
	fs.DurationVar(&c.Timeout, "timeout", 30*time.Second, "a leave not seen this long after the kill counts as missed")
	fs.DurationVar(&c.Load, "load", 0, "false-positive run instead of kills: broadcast load (throughput mode) for this long")
	fs.IntVar(&c.LoadSubs, "load-subs", 1000, "-load: subscribers spread over the nodes")
	fs.IntVar(&c.GOGC, "gogc", 25, "-load: the nodes' GOGC (-1: Go's default)")
	fs.StringVar(&c.LogDir, "logs", "", "directory for the nodes' logs (default: a new temporary one)")
	fs.Uint64Var(&c.Seed, "seed", 1, "the settle jitter")
	out := outputFlags(fs)
	fs.Parse(args)
	c.Flags = strings.Fields(nodeFlags)
	if c.Load > 0 {
		c.Kills = 0
	}
	c.Logf = out.logf()
	if c.Load > 0 {
		checkFileLimit(2 * c.LoadSubs)
	}
	return runScenario(out, c.Budget(), func(ctx context.Context) (*bench.DetectResult, error) { return bench.RunDetect(ctx, c) })
}

// slowMain is `meshbench slow`: the others' latency with and without one
// slow subscriber, rounds alternating.
func slowMain(args []string) int {
	fs := flag.NewFlagSet("meshbench slow", flag.ExitOnError)
	var c bench.SlowConfig
	fs.StringVar(&c.URL, "url", bench.DefaultMeshcastURL, "the node's WebSocket URL")
	fs.IntVar(&c.ServerPID, "server-pid", 0, "the node's process id, for server CPU (0 = skip)")
	fs.IntVar(&c.Subs, "subs", 1000, "subscribers that keep up")
	fs.Float64Var(&c.Rate, "rate", 100, "publications per second")
	fs.IntVar(&c.PayloadSize, "payload", 1000, "payload bytes")
	fs.DurationVar(&c.Duration, "duration", 40*time.Second, "measured publishing time of a round")
	fs.IntVar(&c.Rounds, "rounds", 2, "A/B pairs (A: without the slow subscriber, B: with it)")
	fs.IntVar(&c.SlowBytesPerSec, "slow-read", 1024, "bytes per second the slow subscriber reads")
	fs.IntVar(&c.SlowRcvBuf, "slow-rcvbuf", 4096, "the slow subscriber's SO_RCVBUF")
	out := outputFlags(fs)
	fs.Parse(args)
	c.Logf = out.logf()
	checkFileLimit(c.Subs + 1)
	return runScenario(out, c.Budget(), func(ctx context.Context) (*bench.SlowResult, error) { return bench.RunSlow(ctx, c) })
}

// soakMain is `meshbench soak` (make soak): a bounded soak of a cluster.
func soakMain(args []string) int {
	fs := flag.NewFlagSet("meshbench soak", flag.ExitOnError)
	var c bench.SoakConfig
	fs.StringVar(&c.MeshcastBin, "meshcast-bin", "bin/meshcast", "the meshcast binary")
	fs.IntVar(&c.Nodes, "nodes", 3, "meshcast processes")
	fs.IntVar(&c.BasePort, "base-port", 5400, "node i serves on base+i, gossips on base+100+10i (mesh +1)")
	fs.DurationVar(&c.Duration, "duration", 10*time.Minute, "how long the load runs")
	fs.DurationVar(&c.Sample, "sample", 5*time.Second, "how often every node's goroutines and RSS are read")
	fs.IntVar(&c.Subs, "subs", 300, "broadcast subscribers, spread over the nodes")
	fs.Float64Var(&c.Rate, "rate", 100, "broadcasts per second")
	fs.IntVar(&c.WALSubs, "wal-subs", 30, "postgres_changes subscribers")
	fs.Float64Var(&c.WALRate, "wal-rate", 20, "rows committed per second")
	fs.IntVar(&c.Churners, "churners", 12, "clients that connect, join with presence, track and leave, over and over")
	fs.StringVar(&c.LogDir, "logs", "", "directory for the nodes' logs (default: a new temporary one)")
	out := outputFlags(fs)
	fs.Parse(args)
	c.Logf = out.logf()
	checkFileLimit(c.Subs + c.WALSubs + c.Churners)
	return runScenario(out, c.Budget(), func(ctx context.Context) (*bench.SoakResult, error) { return bench.RunSoak(ctx, c) })
}

// clusterMain is `meshbench cluster`: meshcast nodes on this machine for
// the scripts (bench/cluster.sh, bench/strategies.sh). It starts them,
// prints their WebSocket URLs, n1's first, once every node has every other
// as a peer, and stops them on SIGINT or SIGTERM.
func clusterMain(args []string) int {
	fs := flag.NewFlagSet("meshbench cluster", flag.ExitOnError)
	var c cluster.Config
	var regions, nodeFlags string
	var nodes int
	fs.StringVar(&c.Bin, "meshcast-bin", "bin/meshcast", "the meshcast binary")
	fs.IntVar(&nodes, "nodes", 3, "meshcast processes (at most 9)")
	fs.StringVar(&regions, "regions", "iad,fra,sin", "the nodes' regions, cycled")
	fs.IntVar(&c.BasePort, "base-port", 4100, "node i serves on base+i, gossips on base+100+10i (mesh +1)")
	fs.StringVar(&nodeFlags, "node-flags", "", "more meshcast flags for every node (space-separated)")
	fs.StringVar(&c.LogDir, "logs", "", "directory for the nodes' logs (default: a new temporary one)")
	fs.Parse(args)
	c.Regions, c.Flags = cluster.Cycle(strings.Split(regions, ","), nodes), strings.Fields(nodeFlags)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cl, err := cluster.Start(ctx, c)
	if err != nil {
		log.Print(err)
		return 1
	}
	defer cl.Stop()
	fmt.Println(strings.Join(cl.URLs("bench"), "\n"))
	log.Printf("%d nodes up (logs in %s); SIGTERM stops them", len(cl.Nodes), cl.LogDir)
	<-ctx.Done()
	return 0
}
