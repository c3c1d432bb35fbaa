package main

import (
	"context"
	"flag"
	"strings"

	"github.com/meshcast/meshcast/bench"
	"github.com/meshcast/meshcast/bench/cluster"
	"github.com/meshcast/meshcast/bench/report"
)

// walMain is `meshbench wal`: the Postgres changes benchmark (see
// bench/README.md). It returns the exit code.
func walMain(args []string) int {
	fs := flag.NewFlagSet("meshbench wal", flag.ExitOnError)
	var cfg bench.WALConfig
	var shape, regions, nodeFlags string
	var table string
	fs.StringVar(&shape, "shape", string(bench.ShapeFanout), "fanout (every subscriber gets every row), filtered (id=eq.<k>, one key per subscriber), rls (distinct users, each sees 1/teams of the rows) or dbcast (realtime.send to topic row mod -topics: broadcasts from the database)")
	fs.StringVar(&cfg.URL, "url", "", "the nodes' WebSocket URLs, comma-separated (subscribers round-robin); empty: start Postgres and a cluster")
	fs.StringVar(&cfg.DatabaseURL, "database-url", "", "with -url: the database the nodes stream (the writer's; needs CREATE, superuser for -shape rls)")
	fs.StringVar(&cfg.Slot, "replication-slot", "meshcast", "with -url: the nodes' replication slot (for the lag reading)")
	fs.StringVar(&cfg.Publication, "publication", "supabase_realtime", "the publication the table is added to")
	fs.StringVar(&cfg.JWTSecret, "jwt-secret", "", "the nodes' --jwt-secret: sockets get an anon apikey, joins a user token (needed by -shape rls)")
	fs.IntVar(&cfg.PostgresPID, "postgres-pid", 0, "with -url: the postmaster's pid, for Postgres's CPU (0: not measured)")
	fs.BoolVar(&cfg.SkipSetup, "skip-setup", false, "with -url: do not (re)create the shape's table (meshbench_wal_<shape>) and schema")
	fs.IntVar(&cfg.Subs, "subs", 1000, "subscriber connections")
	fs.IntVar(&cfg.Topics, "topics", 1, "channel topics the subscribers spread over")
	fs.IntVar(&cfg.Keys, "keys", 0, "filtered: distinct keys (default -subs)")
	fs.IntVar(&cfg.Teams, "teams", 5, "rls: teams (each user sees 1/teams of the rows)")
	fs.Float64Var(&cfg.Rate, "rate", 0, "rows committed per second (0 = as fast as -window allows)")
	fs.IntVar(&cfg.Window, "window", 64, "rows committed and not yet received by all their subscribers (-1 = unbounded)")
	fs.IntVar(&cfg.Writers, "writers", 4, "writer connections")
	fs.IntVar(&cfg.RowsPerTx, "rows-per-tx", 1, "rows per transaction")
	fs.IntVar(&cfg.Pad, "pad", 64, "bytes of each row's pad column")
	fs.DurationVar(&cfg.Duration, "duration", 10e9, "measured writing time")
	fs.DurationVar(&cfg.Warmup, "warmup", 2e9, "writing before measuring")
	fs.DurationVar(&cfg.Drain, "drain", 10e9, "max wait for outstanding deliveries after writing")
	fs.Float64Var(&cfg.ConnectRate, "connect-rate", 1000, "subscriber connections opened per second")
	cl := &cfg.Cluster
	var nodes int
	fs.StringVar(&cl.Bin, "meshcast-bin", "bin/meshcast", "without -url: the meshcast binary")
	fs.IntVar(&nodes, "nodes", 3, "without -url: cluster nodes")
	fs.IntVar(&cl.BasePort, "base-port", 4400, "without -url: node i serves on base+i, gossips on base+100+10i (mesh +1), pprof on base+50+i")
	fs.StringVar(&regions, "regions", "iad,fra,sin", "without -url: the nodes' regions, cycled")
	fs.StringVar(&nodeFlags, "node-flags", "", "without -url: more meshcast flags for every node (space-separated)")
	fs.BoolVar(&cl.Pprof, "pprof", false, "without -url: --pprof-addr on every node (127.0.0.1:base+50+i)")
	fs.StringVar(&cl.LogDir, "logs", "", "without -url: directory for the nodes' logs (default: a new temporary one)")
	fs.StringVar(&cfg.Postgres.BinDir, "pg-bindir", cluster.DefaultPostgresBinDir, "without -url: PostgreSQL's binaries")
	fs.BoolVar(&cfg.Postgres.Fsync, "pg-fsync", false, "without -url: keep Postgres's fsync (commits wait for the disk)")
	fs.StringVar(&cfg.Label, "label", "", "names the run in its result")
	fs.StringVar(&table, "table", "", "print the -json results in this file (one per line) as a table and exit")
	out := outputFlags(fs)
	fs.Parse(args)
	if table != "" {
		return printTable(table, report.WriteWALTable)
	}
	cfg.Shape = bench.Shape(shape)
	cl.Regions = cluster.Cycle(strings.Split(regions, ","), nodes)
	cl.Flags = strings.Fields(nodeFlags)
	cfg.Logf = out.logf()
	checkFileLimit(cfg.Subs)
	return runScenario(out, cfg.Budget(), func(ctx context.Context) (*bench.WALResult, error) { return bench.RunWAL(ctx, cfg) })
}
