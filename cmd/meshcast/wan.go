package main

import (
	"fmt"
	"log/slog"
	"net"

	"github.com/hashicorp/memberlist"

	"github.com/meshcast/meshcast/mesh"
	"github.com/meshcast/meshcast/mesh/wanemu"
)

// --emulate-wan (benchmarks only): the node's traffic to nodes of other
// regions — QUIC mesh packets and memberlist gossip, UDP and TCP — is held
// for the one-way delay between the regions (mesh/wanemu), so that a
// cluster of processes on one machine behaves like one spread over
// regions. `meshbench local` writes the file (every node's gossip and mesh
// address → region, and the RTT matrix) and starts the nodes with it.
// Client connections are never delayed. The counters appear on /metrics as
// meshcast_wanemu_* (newServer adds them).

// wanEmulation is what --emulate-wan set up, closed after the mesh node.
type wanEmulation struct {
	e  *wanemu.Emulator
	pc net.PacketConn
}

// emulateWAN wraps cfg's mesh socket and gossip transport when
// --emulate-wan is set; it returns nil otherwise.
func emulateWAN(o *options, cfg *mesh.Config, log *slog.Logger) (*wanEmulation, error) {
	if o.emulateWAN == "" {
		return nil, nil
	}
	wc, err := wanemu.Load(o.emulateWAN)
	if err != nil {
		return nil, fmt.Errorf("--emulate-wan: %w", err)
	}
	e, err := wanemu.New(wc, cfg.Region)
	if err != nil {
		return nil, fmt.Errorf("--emulate-wan: %w", err)
	}
	udp, err := net.ListenPacket("udp", cfg.MeshAddr)
	if err != nil {
		e.Close()
		return nil, fmt.Errorf("mesh: listen %s: %w", cfg.MeshAddr, err)
	}
	cfg.PacketConn = e.PacketConn(udp)
	cfg.WrapGossip = func(t memberlist.NodeAwareTransport) memberlist.NodeAwareTransport { return e.Transport(t) }
	log.Warn("emulating a WAN between regions (benchmark only): mesh and gossip traffic to other regions is delayed",
		"region", cfg.Region, "rtt_ms", wc.RTT, "jitter_ms", wc.JitterMS, "loss", wc.Loss, "addresses", len(wc.Nodes))
	return &wanEmulation{e: e, pc: udp}, nil
}

// close releases the socket and the delay line; nil does nothing.
func (w *wanEmulation) close() {
	if w == nil {
		return
	}
	w.pc.Close()
	w.e.Close()
}
