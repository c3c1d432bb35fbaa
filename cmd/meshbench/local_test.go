package main

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshcast/meshcast/bench/cluster"
	"github.com/meshcast/meshcast/bench/report"
)

// TestRegionsCommand runs `meshbench regions` against a running node, as
// against a remote deployment: two "regions" whose clients both go to it.
func TestRegionsCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a node")
	}
	url := startNode(t)
	out := filepath.Join(t.TempDir(), "r")
	for _, sc := range []string{"fanout", "rooms", "presence", "connect"} {
		if code := regionsMain([]string{"-quiet", "-node", "iad=" + url + ",fra=" + url, "-scenario", sc, "-subs", "20",
			"-channels", "4", "-subs-per-channel", "4", "-rate", "20", "-duration", "1s", "-warmup", "200ms", "-idle", "500ms", "-report", out + sc}); code != 0 {
			t.Fatalf("%s: exit %d", sc, code)
		}
		rep := readReport(t, out+sc+".json")
		res := rep.Runs[0]
		if res.Connected != res.Subs || res.Lost != 0 || res.Unexpected != 0 || res.Disconnects != 0 {
			t.Errorf("%s: %s", sc, res)
		}
		// fanout publishes from the first region only
		if want := map[string]int{"fanout": 2, "rooms": 4, "presence": 4}[sc]; len(res.Pairs) != want {
			t.Errorf("%s: %d pairs, want %d", sc, len(res.Pairs), want)
		}
		if len(res.Server.Nodes) != 2 || res.ClientRTTMS["fra"] <= 0 {
			t.Errorf("%s: no server figures or client RTT: %+v %v", sc, res.Server, res.ClientRTTMS)
		}
	}
}

// TestLocalCommand runs `meshbench local` end to end with the meshcast
// binary: a strategy comparison on 2 regions, and the Postgres changes
// scenario on the same emulated WAN where PostgreSQL is installed.
func TestLocalCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("starts meshcast processes")
	}
	bin := filepath.Join(t.TempDir(), "meshcast")
	bctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(bctx, "go", "build", "-o", bin, "../meshcast").CombinedOutput(); err != nil {
		t.Fatalf("build meshcast: %v\n%s", err, out)
	}
	out := filepath.Join(t.TempDir(), "report")
	base := strconv.Itoa(freeBase(t, 2))
	if code := localMain([]string{"-quiet", "-meshcast-bin", bin, "-base-port", base, "-regions", "iad,fra", "-nodes-per-region", "1",
		"-rtt-matrix", "iad-fra=40", "-strategies", "all,relay", "-scenario", "rooms", "-channels", "4", "-subs-per-channel", "4",
		"-rate", "40", "-duration", "1s", "-warmup", "200ms", "-report", out}); code != 0 {
		t.Fatalf("exit %d", code)
	}
	rep := readReport(t, out+".json")
	if len(rep.Runs) != 2 || rep.Runs[0].Label != "all" || rep.Runs[1].Label != "relay" || rep.RTTMS["iad-fra"] != 40 {
		t.Fatalf("report: %+v", rep)
	}
	for _, r := range rep.Runs {
		p := r.Pair("iad", "fra")
		if p == nil || p.Min < 20 || r.Lost != 0 {
			t.Errorf("%s: %s, iad → fra %+v (one-way 20 ms)", r.Label, r, p)
		}
	}
	page, err := os.ReadFile(out + ".html")
	if err != nil || !strings.Contains(string(page), "<svg") {
		t.Fatalf("html: %v", err)
	}
	if _, err := os.Stat(filepath.Join(cluster.DefaultPostgresBinDir, "initdb")); err != nil {
		t.Log("no PostgreSQL 15: the wal scenario is not run")
		return
	}
	if code := localMain([]string{"-quiet", "-meshcast-bin", bin, "-base-port", base, "-regions", "iad,fra", "-nodes-per-region", "1",
		"-rtt-matrix", "iad-fra=40", "-scenario", "wal", "-subs", "20", "-rate", "50", "-duration", "1s", "-warmup", "500ms", "-report", out + "wal"}); code != 0 {
		t.Fatalf("wal: exit %d", code)
	}
	rep = readReport(t, out+"wal.json")
	if len(rep.WAL) != 1 || rep.WAL[0].Received == 0 || rep.WAL[0].Lost != 0 {
		t.Fatalf("wal: %+v", rep.WAL)
	}
}

func readReport(t *testing.T, path string) *report.Report {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rep report.Report
	if err := json.Unmarshal(b, &rep); err != nil || len(rep.Runs)+len(rep.WAL) == 0 {
		t.Fatalf("%s: %v", path, err)
	}
	return &rep
}

// freeBase finds a base port whose node ports for n nodes were free (the
// layout of meshbench local: base+i, base+50+i, base+100+10i and +1).
func freeBase(t *testing.T, n int) int {
	t.Helper()
	for range 50 {
		base := 20000 + rand.IntN(30000)
		ok := true
		var closers []func()
		for i := 1; i <= n && ok; i++ {
			for _, p := range []struct {
				network string
				port    int
			}{{"tcp", base + i}, {"udp", base + i}, {"tcp", base + 50 + i}, {"tcp", base + 100 + 10*i}, {"udp", base + 100 + 10*i}, {"udp", base + 101 + 10*i}} {
				addr := "127.0.0.1:" + strconv.Itoa(p.port)
				if p.network == "udp" {
					c, err := net.ListenPacket("udp", addr)
					if err != nil {
						ok = false
						break
					}
					closers = append(closers, func() { c.Close() })
				} else {
					l, err := net.Listen("tcp", addr)
					if err != nil {
						ok = false
						break
					}
					closers = append(closers, func() { l.Close() })
				}
			}
		}
		for _, c := range closers {
			c()
		}
		if ok {
			return base
		}
	}
	t.Fatal("no free base port")
	return 0
}
