package main

import (
	"context"
	"flag"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/meshcast/meshcast/bench"
)

// scaleMain is `meshbench scale`: more connections than one process may
// open, held by a local cluster, then a broadcast per second to every
// channel (see bench/README.md). It returns the exit code.
func scaleMain(args []string) int {
	fs := flag.NewFlagSet("meshbench scale", flag.ExitOnError)
	var cfg bench.ScaleConfig
	var nodeFlags string
	fs.StringVar(&cfg.MeshcastBin, "meshcast-bin", "bin/meshcast", "the meshcast binary")
	fs.IntVar(&cfg.Nodes, "nodes", 3, "meshcast processes (each holds connections/nodes; the open-file limit bounds it)")
	fs.IntVar(&cfg.BasePort, "base-port", 5600, "node i serves on base+i, pprof on base+50+i, gossips on base+100+10i (mesh +1)")
	fs.StringVar(&nodeFlags, "node-flags", "", "more meshcast flags for every node (space-separated)")
	fs.BoolVar(&cfg.Pprof, "pprof", false, "--pprof-addr on every node (127.0.0.1:base+50+i)")
	fs.StringVar(&cfg.LogDir, "logs", "", "directory for the nodes' logs (default: a new temporary one)")
	fs.IntVar(&cfg.Conns, "conns", 100000, "subscriber connections over the nodes")
	fs.IntVar(&cfg.Channels, "channels", 100, "channels; connection i joins channel i mod channels")
	fs.IntVar(&cfg.Workers, "workers", 0, "worker processes holding the connections, each from its own source address 127.0.0.10+w (default: 19 000 connections each)")
	fs.Float64Var(&cfg.ConnectRate, "connect-rate", 2000, "connections opened per second, all workers together")
	fs.DurationVar(&cfg.Hold, "hold", time.Minute, "hold every connection idle this long before publishing")
	fs.Float64Var(&cfg.Rate, "rate", 1, "broadcasts per second to each channel")
	fs.DurationVar(&cfg.Duration, "duration", 30*time.Second, "measured publishing time")
	fs.DurationVar(&cfg.Warmup, "warmup", 2*time.Second, "publishing before measuring")
	fs.DurationVar(&cfg.Drain, "drain", 10*time.Second, "max wait for outstanding deliveries")
	fs.IntVar(&cfg.PayloadSize, "payload", 100, "payload bytes")
	out := outputFlags(fs)
	fs.Parse(args)
	cfg.NodeFlags, cfg.Logf = strings.Fields(nodeFlags), out.logf()
	return runScenario(out, cfg.Budget(), func(ctx context.Context) (*bench.ScaleResult, error) { return bench.RunScale(ctx, cfg) })
}

// scaleWorkerMain is `meshbench scale-worker`, started by meshbench scale
// (commands on stdin, progress and result on stdout).
func scaleWorkerMain(args []string) int {
	fs := flag.NewFlagSet("meshbench scale-worker", flag.ExitOnError)
	var cfg bench.ScaleWorkerConfig
	var urls string
	fs.StringVar(&urls, "urls", "", "the nodes' WebSocket URLs, comma-separated")
	fs.IntVar(&cfg.From, "from", 0, "first global connection index")
	fs.IntVar(&cfg.To, "to", 0, "end of the global connection indices")
	fs.IntVar(&cfg.Channels, "channels", 100, "channels")
	fs.StringVar(&cfg.TopicPrefix, "topic-prefix", "realtime:scale-", "channel c is this + c")
	fs.StringVar(&cfg.SourceAddr, "source-addr", "", "source IP of the connections")
	fs.Float64Var(&cfg.ConnectRate, "connect-rate", 500, "connections opened per second")
	fs.IntVar(&cfg.Pollers, "pollers", 0, "goroutines holding the connections (default GOMAXPROCS)")
	fs.Parse(args)
	cfg.URLs = strings.Split(urls, ",")
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := bench.RunScaleWorker(ctx, cfg, os.Stdin, os.Stdout); err != nil {
		os.Stderr.WriteString("meshbench scale-worker: " + err.Error() + "\n")
		return 1
	}
	return 0
}
