package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/meshcast/meshcast/bench"
	"github.com/meshcast/meshcast/edge"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// startNode runs a real edge server on loopback: WebSocket on TCP and
// WebTransport on UDP, until the test ends.
func startNode(t *testing.T) string {
	t.Helper()
	cfg := edge.DefaultConfig()
	cfg.Logger = slog.New(slog.DiscardHandler)
	s, err := edge.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	pc, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		ln.Close()
		t.Skipf("UDP port %d taken: %v", port, err)
	}
	served, wtServed := make(chan error, 1), make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	go func() { wtServed <- s.ServeWebTransport(pc) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		for _, c := range []chan error{served, wtServed} {
			if err := <-c; !errors.Is(err, http.ErrServerClosed) {
				t.Errorf("serve: %v", err)
			}
		}
	})
	url := "ws://" + ln.Addr().String() + "/realtime/v1/websocket?apikey=bench&vsn=2.0.0"
	for range 100 {
		if r, err := http.Get("http://" + ln.Addr().String() + "/realtime/v1/webtransport/cert-hash"); err == nil {
			b, _ := io.ReadAll(r.Body)
			r.Body.Close()
			if r.StatusCode == 200 && strings.Contains(string(b), `"enabled":true`) {
				return url
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("WebTransport never started")
	return ""
}

// TestWebTransportRuns drives a real node over WebTransport in every mode
// meshbench has for it: the stream (throughput and latency), datagrams,
// and idle sessions.
func TestWebTransportRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a node")
	}
	url := startNode(t)
	base := bench.Config{URL: url, Transport: bench.TransportWebTransport, Subs: 20, Duration: time.Second, Drain: 2 * time.Second, Settle: time.Second}
	for _, tc := range []struct {
		name string
		mod  func(*bench.Config)
	}{
		{"throughput", func(c *bench.Config) { c.Mode = bench.ModeThroughput }},
		{"latency", func(c *bench.Config) { c.Mode, c.Rate = bench.ModeLatency, 50 }},
		{"binary", func(c *bench.Config) { c.Mode, c.Rate, c.Binary = bench.ModeLatency, 50, true }},
		{"datagrams", func(c *bench.Config) { c.Mode, c.Rate, c.Unreliable = bench.ModeLatency, 50, true }},
		{"idle", func(c *bench.Config) { c.Mode = bench.ModeIdle }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := base
			tc.mod(&cfg)
			ctx, cancel := context.WithTimeout(context.Background(), cfg.Budget())
			defer cancel()
			res, err := bench.Run(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Log(res)
			if res.Connected != cfg.Subs || res.Disconnects != 0 || res.Unexpected != 0 || res.PublishErrors != 0 {
				t.Fatalf("%s", res)
			}
			if cfg.Mode == bench.ModeIdle {
				return
			}
			if res.Delivered == 0 || res.P50 <= 0 {
				t.Fatalf("nothing measured: %s", res)
			}
			if cfg.Unreliable {
				// Loopback at 50/s loses nothing in practice, but datagrams
				// may be lost: only the server's count is exact.
				if res.ServerDatagramsSent <= 0 || res.ServerDatagramsDropped != 0 {
					t.Fatalf("server datagrams: %s", res)
				}
			} else if res.Lost != 0 || res.Gaps != 0 || res.OutOfOrder != 0 {
				t.Fatalf("the stream lost or reordered: %s", res)
			}
		})
	}
}
