package main

import (
	"context"
	"flag"
	"time"

	"github.com/meshcast/meshcast/bench"
)

// recoverMain is `meshbench recover`: subscribers lose their node (kill -9
// with -kill-pid), miss -missed broadcasts, and reconnect at once to -url
// with their positions (README, Recovery after reconnect).
func recoverMain(args []string) int {
	fs := flag.NewFlagSet("meshbench recover", flag.ExitOnError)
	var cfg bench.RecoverConfig
	fs.StringVar(&cfg.URL, "url", bench.DefaultMeshcastURL, "WebSocket URL the subscribers reconnect to")
	fs.StringVar(&cfg.FirstURL, "first-url", "", "WebSocket URL the subscribers are on first (default -url)")
	fs.StringVar(&cfg.PubURL, "pub-url", "", "the publisher's WebSocket URL (default -first-url)")
	fs.IntVar(&cfg.Subs, "subs", 1000, "subscribers")
	fs.IntVar(&cfg.Missed, "missed", 1000, "broadcasts published while they are away")
	fs.IntVar(&cfg.KillPID, "kill-pid", 0, "kill -9 this process (the -first-url node) once the subscribers are live (0: they drop their connections)")
	fs.IntVar(&cfg.ServerPID, "server-pid", 0, "the -url node's process id, for its CPU and RSS while they recover (0 = skip)")
	fs.StringVar(&cfg.Topic, "topic", "realtime:recover", "topic")
	out := outputFlags(fs)
	fs.Parse(args)
	cfg.Logf = out.logf()
	checkFileLimit(2 * cfg.Subs)
	budget := 5*time.Minute + time.Duration(cfg.Subs)*time.Duration(cfg.Missed)*time.Microsecond
	return runScenario(out, budget, func(ctx context.Context) (*bench.RecoverResult, error) { return bench.RunRecover(ctx, cfg) })
}
