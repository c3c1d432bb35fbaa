// Command meshbench is a load generator for meshcast and comparable realtime
// servers. It opens N WebSocket (or, for meshcast, WebTransport) subscribers
// and one publisher against a running server and reports deliveries per
// second and publish→receive latency, or, in idle mode, the server's resident
// memory per connection.
//
// Usage:
//
//	meshbench -target meshcast -mode throughput -subs 1000 -duration 10s
//	meshbench -transport webtransport -mode latency -rate 470 -subs 1000
//	meshbench -transport webtransport -unreliable -mode latency -rate 470
//	meshbench -target centrifugo -mode latency -rate 470 -subs 1000
//	meshbench -target meshcast -mode idle -subs 10000 -server-pid $SERVER_PID
//	meshbench -table results.jsonl   # side-by-side table of -json outputs
//	meshbench wal -shape fanout -subs 1000   # Postgres changes (own Postgres + 3 nodes)
//	meshbench local -regions iad,fra,sin -nodes-per-region 2 -scenario rooms -strategies all,interested,relay
//	meshbench detect -nodes 5 -kills 20   # kill -9 → presence leave latency; -load 3m: false positives
//	meshbench slow -server-pid $PID   # 1000 subscribers' latency with and without one slow reader
//	meshbench soak -duration 10m   # make soak: mixed load on 3 nodes + Postgres, RSS and goroutines flat
//	meshbench junk -rates 25000,50000,100000   # junk datagrams on a gossip port vs the failure detector
//	meshbench regions -node iad=wss://…,fra=wss://… -scenario fanout   # latency by region of running nodes
//	meshbench cluster -nodes 3 -base-port 4100   # nodes for bench/cluster.sh: prints their URLs, SIGTERM stops them
//
// See bench/README.md.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/meshcast/meshcast/bench"
	"github.com/meshcast/meshcast/bench/report"
)

func main() {
	log.SetFlags(log.Ltime)
	log.SetPrefix("meshbench: ")
	commands := map[string]func([]string) int{"wal": walMain, "local": localMain, "regions": regionsMain, "detect": detectMain,
		"slow": slowMain, "soak": soakMain, "cluster": clusterMain, "junk": junkMain, "recover": recoverMain}
	if len(os.Args) > 1 && commands[os.Args[1]] != nil {
		os.Exit(commands[os.Args[1]](os.Args[2:]))
	}
	os.Exit(fanoutMain(os.Args[1:]))
}

// fanoutMain is meshbench's default command: the fan-out against a
// running server.
func fanoutMain(args []string) int {
	fs := flag.NewFlagSet("meshbench", flag.ExitOnError)
	var cfg bench.Config
	var mode, cpuProfile, table string
	fs.StringVar(&cfg.Target, "target", bench.TargetMeshcast, "server protocol: meshcast or centrifugo")
	fs.StringVar(&cfg.URL, "url", "", "WebSocket URL (default "+bench.DefaultMeshcastURL+" or "+bench.DefaultCentrifugoURL+"); several, comma-separated, spread subscribers over cluster nodes")
	fs.StringVar(&cfg.PubURL, "pub-url", "", "the publisher's WebSocket URL (default: the first -url); another node's URL measures cross-node delivery")
	fs.StringVar(&mode, "mode", string(bench.ModeThroughput), "throughput, latency or idle")
	fs.IntVar(&cfg.Subs, "subs", 1000, "subscriber connections")
	fs.DurationVar(&cfg.Duration, "duration", 10e9, "measured publishing time")
	fs.DurationVar(&cfg.Warmup, "warmup", 0, "publishing time before measuring starts")
	fs.Float64Var(&cfg.Rate, "rate", 0, "publications per second (0 = max; latency mode needs > 0)")
	fs.IntVar(&cfg.Window, "window", 32, "throughput: max publications in flight (-1 = unlimited)")
	fs.IntVar(&cfg.PayloadSize, "payload", 100, "payload size in bytes (JSON object with timestamp and padding)")
	fs.Float64Var(&cfg.ConnectRate, "connect-rate", 2000, "connections opened per second")
	fs.BoolVar(&cfg.Binary, "binary", false, "meshcast: publish realtime-js kind-3 binary frames instead of text")
	fs.StringVar(&cfg.Transport, "transport", bench.TransportWebSocket, "meshcast: websocket or webtransport (sessions where the node's /realtime/v1/webtransport/cert-hash says, certificate pinned by its hash)")
	fs.BoolVar(&cfg.Unreliable, "unreliable", false, "meshcast over webtransport: subscribers join with broadcast.unreliable and the publisher sends datagrams (lost datagrams count as lost)")
	fs.IntVar(&cfg.ServerPID, "server-pid", 0, "server process id for RSS and CPU readings (0 = skip)")
	fs.DurationVar(&cfg.Hold, "hold", 0, "idle: keep the connections open this long after measuring")
	fs.DurationVar(&cfg.Settle, "settle", 5e9, "idle: max wait for the server RSS to settle")
	fs.DurationVar(&cfg.Drain, "drain", 5e9, "max wait for outstanding deliveries after publishing")
	fs.StringVar(&cfg.Topic, "topic", "realtime:bench", "meshcast topic")
	fs.StringVar(&cfg.Channel, "channel", "bench:room", "centrifugo channel")
	fs.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of meshbench itself to this file")
	fs.StringVar(&table, "table", "", "print a side-by-side table of the -json results in this file (one per line) and exit")
	out := outputFlags(fs)
	fs.Parse(args)
	if table != "" {
		return printTable(table, report.WriteTable)
	}
	cfg.Mode, cfg.Logf = bench.Mode(mode), out.logf()
	checkFileLimit(cfg.Subs)
	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			log.Print(err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Print(err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	return runScenario(out, cfg.Budget(), func(ctx context.Context) (*bench.Result, error) { return bench.Run(ctx, cfg) })
}

// output is what every command prints: with -json one JSON object on
// stdout and the summary on stderr, else the summary on stdout; progress
// lines on stderr unless -quiet.
type output struct{ json, quiet bool }

func outputFlags(fs *flag.FlagSet) *output {
	o := &output{}
	fs.BoolVar(&o.json, "json", false, "print the result as one JSON object on stdout (the summary goes to stderr)")
	fs.BoolVar(&o.quiet, "quiet", false, "no progress lines on stderr")
	return o
}

// logf is where progress lines go: nil with -quiet.
func (o *output) logf() func(string, ...any) {
	if o.quiet {
		return nil
	}
	return log.Printf
}

// runScenario runs one scenario within budget (SIGINT/SIGTERM end it
// early) and prints its result as o says. It returns the exit code.
func runScenario[R any](o *output, budget time.Duration, run func(context.Context) (*R, error)) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	res, err := run(ctx)
	if res != nil {
		if o.json {
			if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
				log.Print(err)
				return 1
			}
			fmt.Fprintln(os.Stderr, res)
		} else {
			fmt.Println(res)
		}
	}
	if err != nil {
		log.Print(err)
		return 1
	}
	return 0
}

// printTable reads results, one JSON object per line, and prints them with
// write. It returns the exit code.
func printTable[R any](path string, write func(io.Writer, []R) error) int {
	b, err := os.ReadFile(path)
	if err != nil {
		log.Print(err)
		return 1
	}
	var results []R
	dec := json.NewDecoder(bytes.NewReader(b))
	for dec.More() {
		var r R
		if err := dec.Decode(&r); err != nil {
			log.Printf("%s: %v", path, err)
			return 1
		}
		results = append(results, r)
	}
	if err := write(os.Stdout, results); err != nil {
		log.Print(err)
		return 1
	}
	return 0
}

// checkFileLimit warns when the process cannot hold subs sockets. Go raises
// the soft RLIMIT_NOFILE to the hard limit at startup, so only the hard limit
// matters.
func checkFileLimit(subs int) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return
	}
	if need := uint64(subs) + 64; lim.Cur < need {
		log.Printf("warning: RLIMIT_NOFILE is %d, below the %d sockets needed; raise it (ulimit -n)", lim.Cur, need)
	}
}
