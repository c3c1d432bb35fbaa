package main

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/meshcast/meshcast/bench"
	"github.com/meshcast/meshcast/bench/cluster"
	"github.com/meshcast/meshcast/bench/report"
)

// meshbench local: start a cluster of meshcast processes on this machine,
// regions apart on an emulated WAN, and run a region scenario on it (once
// per routing strategy). meshbench regions: the same scenarios against
// nodes that run elsewhere (URLs per region). See bench/README.md.

// scenarioFlags are the flags both commands share.
type scenarioFlags struct {
	cfg        bench.RegionConfig
	scenario   string
	pubRegions string
	report     string
	label      string
	quiet      bool
	walShape   string
}

func (s *scenarioFlags) register(fs *flag.FlagSet) {
	c := &s.cfg
	fs.StringVar(&s.scenario, "scenario", "fanout", "fanout, rooms, presence, connect or wal")
	fs.IntVar(&c.Subs, "subs", 0, "fanout: subscribers (300); presence: watchers (60); connect: connections (1000); wal: subscribers (300)")
	fs.IntVar(&c.Channels, "channels", 20, "rooms: channels")
	fs.IntVar(&c.SubsPerChannel, "subs-per-channel", 10, "rooms: subscribers per channel, spread over the regions")
	fs.StringVar(&s.pubRegions, "pub-regions", "", "regions with publishers, comma-separated (fanout: the first region; rooms: every region, one publisher per channel in each)")
	fs.Float64Var(&c.Rate, "rate", 100, "publications/s over all publishers (fanout, rooms; 0 = as fast as -window allows), joins/s (presence), rows/s (wal; 0 = max)")
	fs.IntVar(&c.Window, "window", 32, "with -rate 0: publications in flight")
	fs.IntVar(&c.PayloadSize, "payload", 120, "payload bytes (wal: the rows' pad column)")
	fs.DurationVar(&c.Duration, "duration", 10*time.Second, "measured publishing time")
	fs.DurationVar(&c.Warmup, "warmup", time.Second, "publishing before measuring")
	fs.DurationVar(&c.Drain, "drain", 5*time.Second, "max wait for outstanding deliveries")
	fs.DurationVar(&c.Idle, "idle", 5*time.Second, "connect: hold the connections this long after the ramp")
	fs.Float64Var(&c.ConnectRate, "connect-rate", 1000, "connections opened per second")
	fs.Uint64Var(&c.Seed, "seed", 1, "picks each client's node inside its region and the publishers' order")
	fs.IntVar(&c.Pollers, "pollers", 0, "goroutines holding the subscribers (default GOMAXPROCS)")
	fs.StringVar(&s.walShape, "wal-shape", "fanout", "wal: fanout, filtered or rls (see meshbench wal)")
	fs.StringVar(&s.report, "report", "", "write the report to PATH.txt, PATH.json and PATH.html")
	fs.StringVar(&s.label, "label", "", "names the run (default: the strategy)")
	fs.BoolVar(&s.quiet, "quiet", false, "no progress lines on stderr")
}

func (s *scenarioFlags) finish() {
	s.cfg.Scenario = bench.Scenario(s.scenario)
	s.cfg.Label = s.label
	if s.pubRegions != "" {
		s.cfg.PubRegions = strings.Split(s.pubRegions, ",")
	}
	if s.cfg.Subs == 0 && s.scenario == "wal" {
		s.cfg.Subs = 300
	}
	if !s.quiet {
		s.cfg.Logf = log.Printf
	}
}

// localMain is `meshbench local`.
func localMain(args []string) int {
	fs := flag.NewFlagSet("meshbench local", flag.ExitOnError)
	var sf scenarioFlags
	sf.register(fs)
	var lc bench.LocalConfig
	var regions, rtt, strategies, nodeFlags string
	var rounds int
	fs.StringVar(&regions, "regions", "iad,fra,sin", "regions, comma-separated")
	fs.IntVar(&lc.NodesPerRegion, "nodes-per-region", 2, "meshcast processes per region (at most 9 nodes)")
	fs.StringVar(&rtt, "rtt-matrix", "", "round trips in ms, e.g. iad-fra=87,iad-sin=223,fra-sin=155 (default: Azure's backbone P50s, see README)")
	fs.Float64Var(&lc.JitterMS, "jitter-ms", 0, "add 0…N ms at random to each cross-region one-way delay")
	fs.Float64Var(&lc.Loss, "loss", 0, "drop this fraction of cross-region UDP packets (mesh and gossip)")
	fs.StringVar(&strategies, "strategies", "interested", "routing strategies to compare, one cluster each, in this order: all, interested, relay")
	fs.IntVar(&rounds, "rounds", 1, "run the strategies this many times, interleaved")
	fs.StringVar(&lc.MeshcastBin, "meshcast-bin", "bin/meshcast", "the meshcast binary")
	fs.IntVar(&lc.BasePort, "base-port", 4700, "node i serves on base+i, gossips on base+100+10i (mesh +1)")
	fs.StringVar(&nodeFlags, "node-flags", "", "more meshcast flags for every node (space-separated)")
	fs.StringVar(&lc.LogDir, "logs", "", "directory for the nodes' logs and the WAN file (default: a new temporary one)")
	fs.Parse(args)
	sf.finish()
	lc.Regions = strings.Split(regions, ",")
	lc.Flags = strings.Fields(nodeFlags)
	lc.Logf = sf.cfg.Logf
	var err error
	if lc.RTT, err = cluster.ParseRTTMatrix(rtt); err != nil {
		log.Print(err)
		return 2
	}
	wan, err := lc.WANConfig()
	if err != nil {
		log.Print(err)
		return 2
	}
	if lc.LogDir == "" {
		if lc.LogDir, err = os.MkdirTemp("", "meshbench-local"); err != nil {
			log.Print(err)
			return 1
		}
	}
	rep := report.New("meshbench local: "+sf.scenario, "meshbench local "+strings.Join(args, " "))
	rep.Emulated, rep.RTTMS, rep.JitterMS, rep.Loss = true, wan.RTT, lc.JitterMS, lc.Loss
	checkFileLimit(sf.cfg.Subs + sf.cfg.Channels*sf.cfg.SubsPerChannel)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	failed := false
	for round := 1; round <= max(rounds, 1) && ctx.Err() == nil; round++ {
		for _, strategy := range strings.Split(strategies, ",") {
			lc.Strategy = strings.TrimSpace(strategy)
			label := cmp.Or(sf.label, lc.Strategy)
			if rounds > 1 {
				label = fmt.Sprintf("%s#%d", label, round)
			}
			if err := runLocalOnce(ctx, rep, lc, sf, label); err != nil {
				log.Printf("%s: %v", label, err)
				failed = true
			}
		}
	}
	if err := writeReport(rep, sf.report); err != nil {
		log.Print(err)
		return 1
	}
	if failed {
		return 1
	}
	return 0
}

// runLocalOnce starts a cluster with lc.Strategy, runs the scenario on it
// (the wal scenario: meshbench wal's, with its own Postgres beside the
// nodes) and stops it.
func runLocalOnce(ctx context.Context, rep *report.Report, lc bench.LocalConfig, sf scenarioFlags, label string) error {
	lc.LogDir = filepath.Join(lc.LogDir, strings.ReplaceAll(label, "#", "-"))
	if sf.scenario == "wal" {
		c := sf.cfg
		cc, err := lc.Cluster()
		if err != nil {
			return err
		}
		wc := bench.WALConfig{Shape: bench.Shape(sf.walShape), Label: label, Subs: c.Subs, Rate: c.Rate, Pad: c.PayloadSize,
			Duration: c.Duration, Warmup: c.Warmup, Drain: c.Drain, ConnectRate: c.ConnectRate, Logf: c.Logf,
			JWTSecret: "meshbench-secret", Cluster: cc}
		if c.Rate == 0 {
			wc.Window = c.Window
		}
		ctx, cancel := context.WithTimeout(ctx, wc.Budget())
		defer cancel()
		res, err := bench.RunWAL(ctx, wc)
		if res != nil {
			rep.WAL = append(rep.WAL, res)
			fmt.Fprintln(os.Stderr, res)
		}
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	c, err := bench.StartLocal(cctx, lc)
	cancel()
	if err != nil {
		return err
	}
	defer c.Stop()
	cfg := sf.cfg
	cfg.Sites, cfg.Label, cfg.OneWay = c.Sites, label, c.OneWay
	ctx, cancel = context.WithTimeout(ctx, cfg.Budget())
	defer cancel()
	res, err := bench.RunRegions(ctx, cfg)
	if res != nil {
		rep.Runs = append(rep.Runs, res)
		fmt.Fprintln(os.Stderr, res)
	}
	return err
}

// regionsMain is `meshbench regions`: the scenarios against running nodes.
func regionsMain(args []string) int {
	fs := flag.NewFlagSet("meshbench regions", flag.ExitOnError)
	var sf scenarioFlags
	sf.register(fs)
	var nodes nodeList
	fs.Var(&nodes, "node", "REGION=URL of a node (WebSocket URL with apikey and vsn), repeatable or comma-separated")
	fs.StringVar(&sf.cfg.RegionHeader, "region-header", "", "send this header with the client's region on every connection (fly.io: Fly-Prefer-Region)")
	jwtSecret := fs.String("jwt-secret", "", "the nodes' --jwt-secret: every URL's apikey becomes an anon token signed with it")
	fs.Parse(args)
	sf.finish()
	if *jwtSecret != "" {
		for i := range nodes.sites {
			for j, u := range nodes.sites[i].URLs {
				signed, err := bench.WithAPIKey(u, *jwtSecret, sf.cfg.Budget()+time.Hour)
				if err != nil {
					log.Print(err)
					return 2
				}
				nodes.sites[i].URLs[j] = signed
			}
		}
	}
	if sf.scenario == "wal" {
		log.Print("against running nodes, use meshbench wal -url URL,URL… -database-url …")
		return 2
	}
	cfg := sf.cfg
	cfg.Sites = nodes.sites
	if len(cfg.Sites) == 0 {
		log.Print("give the nodes with -node REGION=URL")
		return 2
	}
	rep := report.New("meshbench regions: "+sf.scenario, "meshbench regions "+strings.Join(args, " "))
	checkFileLimit(cfg.Subs + cfg.Channels*cfg.SubsPerChannel)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, cfg.Budget())
	defer cancel()
	res, err := bench.RunRegions(ctx, cfg)
	if res != nil {
		rep.Runs = append(rep.Runs, res)
	}
	if werr := writeReport(rep, sf.report); werr != nil {
		log.Print(werr)
		return 1
	}
	if err != nil {
		log.Print(err)
		return 1
	}
	return 0
}

// nodeList is -node REGION=URL, in the order regions first appear.
type nodeList struct{ sites []bench.Site }

func (n *nodeList) String() string { return "" }

func (n *nodeList) Set(v string) error {
	for _, kv := range strings.Split(v, ",") {
		region, url, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok || region == "" || url == "" {
			return errors.New("want REGION=URL")
		}
		i := 0
		for i < len(n.sites) && n.sites[i].Region != region {
			i++
		}
		if i == len(n.sites) {
			n.sites = append(n.sites, bench.Site{Region: region})
		}
		n.sites[i].URLs = append(n.sites[i].URLs, url)
	}
	return nil
}

// writeReport prints the text report and writes PATH.{txt,json,html}.
func writeReport(rep *report.Report, path string) error {
	var txt bytes.Buffer
	if err := rep.WriteText(&txt); err != nil {
		return err
	}
	os.Stdout.Write(txt.Bytes())
	if path == "" {
		return nil
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	var js, html bytes.Buffer
	if err := rep.WriteJSON(&js); err != nil {
		return err
	}
	if err := rep.WriteHTML(&html); err != nil {
		return err
	}
	for ext, b := range map[string][]byte{".txt": txt.Bytes(), ".json": js.Bytes(), ".html": html.Bytes()} {
		if err := os.WriteFile(path+ext, b, 0o644); err != nil {
			return err
		}
	}
	log.Printf("report in %s.{txt,json,html}", path)
	return nil
}
