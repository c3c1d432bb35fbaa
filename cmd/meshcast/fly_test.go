package main

import (
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

// A fly.io machine's flags come from its environment.
func TestFlyEnvironmentDefaults(t *testing.T) {
	t.Setenv("FLY_APP_NAME", "meshcast-test")
	t.Setenv("FLY_PRIVATE_IP", "fdaa:0:1:a7b:1f6:1234:5678:2")
	t.Setenv("FLY_REGION", "fra")
	t.Setenv("FLY_MACHINE_ID", "3d8d9e1b")
	t.Setenv("MESHCAST_CLUSTER_SECRET", "s")
	o, err := parseFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"name":             "3d8d9e1b",
		"region":           "fra",
		"gossip-addr":      "[::]:7946",
		"gossip-advertise": "[fdaa:0:1:a7b:1f6:1234:5678:2]:7946",
		"mesh-addr":        "[::]:7947",
		"mesh-advertise":   "[fdaa:0:1:a7b:1f6:1234:5678:2]:7947",
		"join":             "meshcast-test.internal:7946",
	}
	got := map[string]string{
		"name": o.edge.NodeID, "region": o.mesh.Region, "gossip-addr": o.mesh.GossipAddr, "gossip-advertise": o.mesh.GossipAdvertise,
		"mesh-addr": o.mesh.MeshAddr, "mesh-advertise": o.mesh.MeshAdvertise, "join": strings.Join(o.mesh.Join, ","),
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("--%s = %q, want %q", k, got[k], v)
		}
	}
	if !o.clustered() {
		t.Error("a fly machine is not a cluster member")
	}
	// A flag still wins.
	o, err = parseFlags([]string{"--join", "other:1"}, io.Discard)
	if err != nil || strings.Join(o.mesh.Join, ",") != "other:1" {
		t.Errorf("--join given: %q %v", o.mesh.Join, err)
	}
	if limit := flyMemoryLimit(func(k string) string { return map[string]string{"FLY_VM_MEMORY_MB": "1024"}[k] }); limit != 1024<<20*9/10 {
		t.Errorf("memory limit %d", limit)
	}
}

type flyConfig struct {
	App         string            `toml:"app"`
	KillSignal  string            `toml:"kill_signal"`
	KillTimeout int               `toml:"kill_timeout"`
	Env         map[string]string `toml:"env"`
	Services    []struct {
		Protocol     string `toml:"protocol"`
		InternalPort int    `toml:"internal_port"`
		Ports        []struct {
			Port     int      `toml:"port"`
			Handlers []string `toml:"handlers"`
		} `toml:"ports"`
		HTTPChecks []struct {
			Path string `toml:"path"`
		} `toml:"http_checks"`
	} `toml:"services"`
}

// fly.toml holds true of the binary: every MESHCAST_ variable is a flag,
// the TCP service's internal port is where the node listens, the UDP
// service's is where WebTransport listens, the health check is an endpoint
// it serves, and fly waits longer than the node's graceful shutdown.
func TestFlyTomlMatchesTheBinary(t *testing.T) {
	var cfg flyConfig
	if _, err := toml.DecodeFile(filepath.Join("..", "..", "deploy", "fly", "fly.toml"), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.KillSignal != "SIGTERM" {
		t.Errorf("kill_signal %q: the node drains on SIGTERM", cfg.KillSignal)
	}
	var args []string
	for k, v := range cfg.Env {
		name, ok := strings.CutPrefix(k, "MESHCAST_")
		if !ok {
			continue
		}
		args = append(args, "--"+strings.ToLower(strings.ReplaceAll(name, "_", "-")), v)
	}
	o, err := parseFlags(args, io.Discard)
	if err != nil {
		t.Fatalf("fly.toml's [env] is not a valid configuration: %v", err)
	}
	if d := time.Duration(cfg.KillTimeout) * time.Second; d <= o.shutdown {
		t.Errorf("kill_timeout %v does not leave the node its --shutdown-timeout %v", d, o.shutdown)
	}
	_, listenPort, err := net.SplitHostPort(o.listen)
	if err != nil {
		t.Fatal(err)
	}
	var tcp bool
	for _, s := range cfg.Services {
		if s.Protocol != "tcp" {
			continue
		}
		tcp = true
		if s.InternalPort == 0 || strconv.Itoa(s.InternalPort) != listenPort {
			t.Errorf("TCP service internal_port %d, but the node listens on %s", s.InternalPort, o.listen)
		}
		for _, c := range s.HTTPChecks {
			if c.Path != "/healthz" {
				t.Errorf("health check on %s; the node serves /healthz", c.Path)
			}
		}
	}
	if !tcp {
		t.Error("no TCP service for WebSocket and HTTP")
	}
	checkFlyWebTransport(t, &cfg, o)
}

// checkFlyWebTransport: the UDP service carries WebTransport as fly routes
// UDP (shared/fly.md §2): the node binds fly-global-services on the
// service's internal port, fly forwards the same port number it receives,
// clients are told to dial that port, and the image's user may bind it.
func checkFlyWebTransport(t *testing.T, cfg *flyConfig, o *options) {
	t.Helper()
	if o.wtListen == "off" {
		return
	}
	host, port, err := net.SplitHostPort(o.wtListen)
	if err != nil {
		t.Fatalf("--webtransport-listen %q: fly.toml must name fly-global-services:PORT (%v)", o.wtListen, err)
	}
	if host != "fly-global-services" {
		t.Errorf("--webtransport-listen %s: fly delivers UDP only to fly-global-services", o.wtListen)
	}
	var udp int
	for _, s := range cfg.Services {
		if s.Protocol != "udp" {
			continue
		}
		udp++
		if strconv.Itoa(s.InternalPort) != port {
			t.Errorf("UDP service internal_port %d, but WebTransport listens on %s", s.InternalPort, o.wtListen)
		}
		if len(s.Ports) == 0 {
			t.Error("UDP service without ports")
		}
		for _, p := range s.Ports {
			if p.Port != s.InternalPort {
				t.Errorf("UDP port %d to internal_port %d: fly rewrites addresses, never ports", p.Port, s.InternalPort)
			}
			if len(p.Handlers) > 0 {
				t.Errorf("UDP port %d has handlers %v; QUIC needs raw UDP", p.Port, p.Handlers)
			}
		}
	}
	if udp != 1 {
		t.Errorf("%d UDP services; WebTransport needs one", udp)
	}
	// The advertised address is what browsers dial: its port must be the
	// one fly receives UDP on, and it must be a name, not the bound
	// fly-global-services address (a private one).
	adv := o.edge.WebTransportAdvertise
	if adv == "" {
		t.Error("no MESHCAST_WEBTRANSPORT_ADVERTISE: clients would be sent to fly-global-services' private address")
	} else if advHost, advPort, err := net.SplitHostPort(adv); err != nil || advPort != port || advHost == "fly-global-services" {
		t.Errorf("--webtransport-advertise %q: want the WebTransport host name with port %s (%v)", adv, port, err)
	}
	// The image runs as non-root: a port under 1024 would not bind.
	docker, err := os.ReadFile(filepath.Join("..", "..", "deploy", "fly", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := strconv.Atoi(port); n < 1024 && !strings.Contains(string(docker), "USER root") {
		t.Errorf("WebTransport port %d is privileged, and the image does not run as root", n)
	}
	if !strings.Contains(string(docker), " "+port+"/udp") {
		t.Errorf("the Dockerfile does not EXPOSE %s/udp", port)
	}
}

// The image builds where a Docker engine runs; this machine has only the
// client, so the test says so and skips.
func TestDockerImageBuilds(t *testing.T) {
	if _, err := exec.LookPath("docker"); err != nil {
		t.Skip("docker is not installed: the image build is not checked here")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := exec.CommandContext(ctx, "docker", "info").Run(); err != nil {
		t.Skipf("no Docker engine here (docker info: %v): the image build is not checked", err)
	}
	if os.Getenv("MESHCAST_DOCKER_BUILD") == "" {
		t.Skip("set MESHCAST_DOCKER_BUILD=1 to build the image (it downloads base images)")
	}
	build := exec.Command("docker", "build", "-f", "deploy/fly/Dockerfile", "-t", "meshcast:test", ".")
	build.Dir = filepath.Join("..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("docker build: %v\n%s", err, out)
	}
}
