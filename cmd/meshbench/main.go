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
//
// See bench/README.md.
package main

import (
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

	"github.com/meshcast/meshcast/bench"
)

func main() {
	log.SetFlags(log.Ltime)
	log.SetPrefix("meshbench: ")
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "wal":
			os.Exit(walMain(os.Args[2:]))
		case "local":
			os.Exit(localMain(os.Args[2:]))
		case "regions":
			os.Exit(regionsMain(os.Args[2:]))
		case "detect":
			os.Exit(detectMain(os.Args[2:]))
		case "slow":
			os.Exit(slowMain(os.Args[2:]))
		case "soak":
			os.Exit(soakMain(os.Args[2:]))
		case "junk":
			os.Exit(junkMain(os.Args[2:]))
		}
	}
	var cfg bench.Config
	var mode string
	var jsonOut, quiet bool
	var cpuProfile, table string
	flag.StringVar(&cfg.Target, "target", bench.TargetMeshcast, "server protocol: meshcast or centrifugo")
	flag.StringVar(&cfg.URL, "url", "", "WebSocket URL (default "+bench.DefaultMeshcastURL+" or "+bench.DefaultCentrifugoURL+"); several, comma-separated, spread subscribers over cluster nodes")
	flag.StringVar(&cfg.PubURL, "pub-url", "", "the publisher's WebSocket URL (default: the first -url); another node's URL measures cross-node delivery")
	flag.StringVar(&mode, "mode", string(bench.ModeThroughput), "throughput, latency or idle")
	flag.IntVar(&cfg.Subs, "subs", 1000, "subscriber connections")
	flag.DurationVar(&cfg.Duration, "duration", 10e9, "measured publishing time")
	flag.DurationVar(&cfg.Warmup, "warmup", 0, "publishing time before measuring starts")
	flag.Float64Var(&cfg.Rate, "rate", 0, "publications per second (0 = max; latency mode needs > 0)")
	flag.IntVar(&cfg.Window, "window", 32, "throughput: max publications in flight (-1 = unlimited)")
	flag.IntVar(&cfg.PayloadSize, "payload", 100, "payload size in bytes (JSON object with timestamp and padding)")
	flag.Float64Var(&cfg.ConnectRate, "connect-rate", 2000, "connections opened per second")
	flag.BoolVar(&cfg.Binary, "binary", false, "meshcast: publish realtime-js kind-3 binary frames instead of text")
	flag.StringVar(&cfg.Transport, "transport", bench.TransportWebSocket, "meshcast: websocket or webtransport (sessions where the node's /realtime/v1/webtransport/cert-hash says, certificate pinned by its hash)")
	flag.BoolVar(&cfg.Unreliable, "unreliable", false, "meshcast over webtransport: subscribers join with broadcast.unreliable and the publisher sends datagrams (lost datagrams count as lost)")
	flag.IntVar(&cfg.ServerPID, "server-pid", 0, "server process id for RSS and CPU readings (0 = skip)")
	flag.DurationVar(&cfg.Hold, "hold", 0, "idle: keep the connections open this long after measuring")
	flag.DurationVar(&cfg.Settle, "settle", 5e9, "idle: max wait for the server RSS to settle")
	flag.DurationVar(&cfg.Drain, "drain", 5e9, "max wait for outstanding deliveries after publishing")
	flag.StringVar(&cfg.Topic, "topic", "realtime:bench", "meshcast topic")
	flag.StringVar(&cfg.Channel, "channel", "bench:room", "centrifugo channel")
	flag.BoolVar(&jsonOut, "json", false, "print one JSON object on stdout (the summary line goes to stderr)")
	flag.BoolVar(&quiet, "quiet", false, "no progress lines on stderr")
	flag.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of meshbench itself to this file")
	flag.StringVar(&table, "table", "", "print a side-by-side table of the -json results in this file (one per line) and exit")
	flag.Parse()
	if table != "" {
		if err := printTable(table); err != nil {
			log.Fatal(err)
		}
		return
	}
	cfg.Mode = bench.Mode(mode)
	if !quiet {
		cfg.Logf = log.Printf
	}

	checkFileLimit(cfg.Subs)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, cfg.Budget())
	defer cancel()

	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			log.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Fatal(err)
		}
		defer f.Close()
	}
	res, err := bench.Run(ctx, cfg)
	if cpuProfile != "" {
		pprof.StopCPUProfile()
	}
	if res != nil {
		if jsonOut {
			enc := json.NewEncoder(os.Stdout)
			if err := enc.Encode(res); err != nil {
				log.Fatal(err)
			}
			fmt.Fprintln(os.Stderr, res)
		} else {
			fmt.Println(res)
		}
	}
	if err != nil {
		log.Print(err)
		os.Exit(1)
	}
}

// printTable reads JSON results, one per line, and prints them side by side.
func printTable(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var results []bench.Result
	dec := json.NewDecoder(f)
	for {
		var r bench.Result
		if err := dec.Decode(&r); err == io.EOF {
			break
		} else if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		results = append(results, r)
	}
	return bench.WriteTable(os.Stdout, results)
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
