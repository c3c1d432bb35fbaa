// Package mesh joins edge nodes into one cluster: memberlist gossip for
// membership, one QUIC connection per peer with a control lane and a data
// lane, the interest table, batched per-node fan-out of broadcasts
// (a message crosses to a node once, however many of its clients listen,
// and only to nodes that listen), region relay, and the transport of
// presence replication. It knows nothing of Phoenix or HTTP: the edge
// plugs in through Handler.
package mesh

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"
)

// Strategy chooses where a broadcast goes.
type Strategy int

const (
	// Interested sends a broadcast once to every node with subscribers of
	// its topic (the default).
	Interested Strategy = iota
	// AllNodes sends every broadcast to every node, as Phoenix PG2 does;
	// kept for comparison.
	AllNodes
	// RegionRelay sends once per remote region, to one interested node
	// there, which forwards it to the other interested nodes of its region.
	RegionRelay
)

// ParseStrategy maps "interested", "all" and "relay" to a Strategy.
func ParseStrategy(s string) (Strategy, error) {
	switch strings.ToLower(s) {
	case "", "interested":
		return Interested, nil
	case "all", "all-nodes":
		return AllNodes, nil
	case "relay", "region-relay":
		return RegionRelay, nil
	}
	return 0, fmt.Errorf("mesh: unknown strategy %q (interested, all, relay)", s)
}

func (s Strategy) String() string {
	switch s {
	case AllNodes:
		return "all"
	case RegionRelay:
		return "relay"
	}
	return "interested"
}

// GossipConfig tunes memberlist's failure detection. Zero values take the
// profile's settings.
//
// A crashed node is probed by every other node in turn; a probe that gets
// no answer, direct or through another node, within ProbeInterval makes
// the node a suspect, and a suspect that does not refute (a live node
// refutes as soon as it hears the suspicion) is declared dead after
// SuspicionMult probe intervals (in clusters of more than
// SuspicionMult-1 nodes, memberlist waits up to three times that for
// SuspicionMult-2 other nodes to confirm). A dead node's presence is
// removed everywhere, so the timeouts trade detection time against false
// deaths of nodes that were only slow: the lan defaults (125 ms, 11) give
// a suspect 1.375 s to refute, which rode out the stalls of a saturated
// 2-core host, and still show a kill -9 to the other nodes' clients within
// 2 s in clusters of 3 and 5 (see README, Running a cluster).
type GossipConfig struct {
	// Profile is "lan" (default) or "wan" (memberlist's WAN timings: 5 s
	// probes, 3 s probe timeout, suspicion multiplier 6, for clusters
	// whose round trips exceed the lan probe timeout).
	Profile string
	// ProbeInterval is the time between two probes of this node and the
	// time a probe may take; default 125 ms (lan), 5 s (wan).
	ProbeInterval time.Duration
	// ProbeTimeout is how long a direct probe waits for its answer before
	// asking other nodes to probe too; it must exceed the round trip to
	// every member. Default half of ProbeInterval (lan), 3 s (wan).
	ProbeTimeout time.Duration
	// SuspicionMult is how many probe intervals a suspect has to refute
	// before it is declared dead; default (lan) enough intervals for
	// DefaultSuspicionWindow, at least 3 (11 at 125 ms); 6 (wan).
	SuspicionMult int
	// DeadGossipTime is how long memberlist keeps gossiping to a member it
	// declared dead (which heals a short partition by itself); default
	// memberlist's 30 s. Past it, the join loop's retries of dead members'
	// addresses merge the sides (see Node.rejoinFailed).
	DeadGossipTime time.Duration

	// What an inbound gossip stream may cost before it proves it holds
	// the key (mesh/gossipnet): MaxPendingStreams streams are checked at
	// once (if zero, 32; past it the oldest of the address with the most
	// is dropped), each must deliver a sealed first message of at most
	// MaxStreamBytes (if zero, 1 MiB: push/pull state of ~3000 members)
	// within StreamTimeout (if zero, 5 s).
	MaxPendingStreams int
	MaxStreamBytes    int
	StreamTimeout     time.Duration
}

// Default lan failure detection (GossipConfig).
const (
	DefaultProbeInterval = 125 * time.Millisecond
	// DefaultSuspicionWindow is the least time a suspect has to refute:
	// the default SuspicionMult is the smallest multiple of the probe
	// interval that reaches it (11 at 125 ms), and at least 3.
	DefaultSuspicionWindow = 1375 * time.Millisecond
)

// DefaultMaxHandshakes is Config.MaxHandshakes's default.
const DefaultMaxHandshakes = 64

// Config configures a Node.
type Config struct {
	Name   string // human name; the node ID adds an incarnation to it
	ID     string // optional: the node ID (NewID(Name) when empty)
	Region string

	GossipAddr      string // memberlist bind, TCP+UDP host:port
	GossipAdvertise string // optional address others reach the gossip on
	MeshAddr        string // QUIC bind, UDP host:port
	MeshAdvertise   string // optional address others reach the mesh on
	ClientAddr      string // advertised HTTP/WebSocket address
	// Database names the database whose changes this node takes part in
	// (advertised as Member.DB, with Member.Reader set: it can read the
	// WAL); empty for none. SetDatabase sets both before Start.
	Database string

	Join []string // seeds: host:port, or DNS names (every A/AAAA record)
	// Resolver looks the seeds' names up (default net.DefaultResolver).
	Resolver      *net.Resolver
	ClusterSecret []byte // required: encrypts gossip, authenticates peers
	Strategy      Strategy
	Gossip        GossipConfig

	QueueBytes    int // per peer and lane; default 8 MiB
	MaxFrameBytes int // largest mesh frame accepted and sent; default 16 MiB
	// MaxSnapshotBytes bounds the unfinished snapshots (sent in parts)
	// held from one peer at once; default 1 GiB.
	MaxSnapshotBytes int
	InterestLinger   time.Duration // debounce before InterestRemove; default 2s
	SnapshotWait     time.Duration // how long a first join waits for presence snapshots; default 2s
	PingInterval     time.Duration // RTT probes on the control lane; default 2s
	PeerTimeout      time.Duration // a silent mesh connection is dropped and redialed; default 5s
	// MaxHandshakes bounds the inbound mesh connections whose peer has not
	// authenticated yet (TLS, then Hellos); past half of it new ones must
	// validate their address (QUIC Retry), past it they are refused. If
	// zero, 64.
	MaxHandshakes int

	// PacketConn, if set, carries the QUIC mesh instead of a socket bound
	// to MeshAddr (tests wrap it to drop traffic, as a partition would).
	PacketConn net.PacketConn
	// WrapGossip, if set, wraps the gossip transport (mesh/gossipnet, bound to
	// GossipAddr) before memberlist uses it: the WAN emulation of
	// meshbench local (mesh/wanemu) delays gossip across regions with it.
	WrapGossip func(memberlist.NodeAwareTransport) memberlist.NodeAwareTransport

	Logger *slog.Logger
}

func (c *Config) setDefaults() error {
	if c.Name == "" {
		return errors.New("mesh: Name is required")
	}
	if len(c.ClusterSecret) == 0 {
		return errors.New("mesh: ClusterSecret is required")
	}
	if c.GossipAddr == "" || (c.MeshAddr == "" && c.PacketConn == nil) {
		return errors.New("mesh: GossipAddr and MeshAddr are required")
	}
	switch c.Gossip.Profile {
	case "", "lan", "wan":
	default:
		return fmt.Errorf("mesh: gossip profile %q (lan or wan)", c.Gossip.Profile)
	}
	if c.Gossip.ProbeInterval < 0 || c.Gossip.ProbeTimeout < 0 || c.Gossip.SuspicionMult < 0 {
		return errors.New("mesh: negative gossip timings")
	}
	if c.Region == "" {
		c.Region = "local"
	}
	if c.QueueBytes == 0 {
		c.QueueBytes = 8 << 20
	}
	if c.MaxFrameBytes == 0 {
		c.MaxFrameBytes = 16 << 20
	}
	if c.MaxSnapshotBytes == 0 {
		c.MaxSnapshotBytes = 1 << 30
	}
	if c.InterestLinger == 0 {
		c.InterestLinger = 2 * time.Second
	}
	if c.SnapshotWait == 0 {
		c.SnapshotWait = 2 * time.Second
	}
	if c.PingInterval == 0 {
		c.PingInterval = 2 * time.Second
	}
	if c.PeerTimeout == 0 {
		c.PeerTimeout = 5 * time.Second
	}
	if c.MaxHandshakes == 0 {
		c.MaxHandshakes = DefaultMaxHandshakes
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}
