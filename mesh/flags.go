package mesh

import (
	"errors"
	"flag"
	"strconv"
	"strings"
)

// RegisterFlags registers the command-line flags of c's fields in fs, with
// c's values as their defaults. The cluster's bounds against peers without
// the secret (--gossip-max-*, --mesh-max-handshakes) cannot be turned
// off: 0 gives them their default, as zero does in Config. Name, ID,
// ClientAddr and Database are the command's to set: they come from other
// flags.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	g := &c.Gossip
	fs.StringVar(&c.Region, "region", c.Region, "region of this node; $FLY_REGION on fly.io")
	fs.StringVar(&c.GossipAddr, "gossip-addr", c.GossipAddr, "cluster: memberlist gossip address `host:port` (TCP+UDP); setting it (or --join) makes this node a cluster member")
	fs.StringVar(&c.GossipAdvertise, "gossip-advertise", c.GossipAdvertise, "cluster: gossip address other nodes reach")
	fs.StringVar(&c.MeshAddr, "mesh-addr", c.MeshAddr, "cluster: QUIC mesh address `host:port` (UDP)")
	fs.StringVar(&c.MeshAdvertise, "mesh-advertise", c.MeshAdvertise, "cluster: mesh address other nodes reach")
	fs.Var((*seedList)(&c.Join), "join", "cluster: comma-separated seeds `host:port,...`; a DNS name means every A/AAAA record of it (e.g. myapp.internal:7946 on fly.io)")
	fs.Var((*secret)(&c.ClusterSecret), "cluster-secret", "cluster: shared secret; encrypts gossip and authenticates mesh peers (required in a cluster)")
	fs.TextVar(&c.Strategy, "mesh-strategy", c.Strategy, "cluster: broadcast routing: interested (once per node with subscribers), all (every node), relay (once per remote region)")
	fs.Var(relayFlag{&c.Strategy}, "region-relay", "cluster: send a broadcast once per remote region to a relay node there (same as --mesh-strategy relay)")
	fs.StringVar(&g.Profile, "gossip-profile", g.Profile, "cluster: memberlist timings: lan or wan")
	fs.DurationVar(&g.ProbeInterval, "gossip-probe-interval", g.ProbeInterval, "cluster: failure-detector probe interval (0: 125ms with --gossip-profile lan, 5s with wan)")
	fs.DurationVar(&g.ProbeTimeout, "gossip-probe-timeout", g.ProbeTimeout, "cluster: how long a direct probe waits before other nodes are asked to probe too; must exceed the round trip to every member (0: half the probe interval with lan, 3s with wan)")
	fs.IntVar(&g.SuspicionMult, "gossip-suspicion-mult", g.SuspicionMult, "cluster: probe intervals a suspected node has to refute before it is declared dead (0: with lan enough for 1.375s, at least 3: 11 at 125ms; 6 with wan); with the lan defaults a crashed node's presence leaves reach the other nodes' clients within 2s")
	fs.IntVar(&g.MaxPendingStreams, "gossip-max-pending-streams", g.MaxPendingStreams, "cluster: inbound gossip streams checked at once before they prove the cluster key; past it the oldest of the address with the most is dropped")
	fs.IntVar(&g.MaxStreamBytes, "gossip-max-stream-bytes", g.MaxStreamBytes, "cluster: largest first message an inbound gossip stream may announce (memberlist push/pull state, ~300 bytes per member)")
	fs.DurationVar(&g.StreamTimeout, "gossip-stream-timeout", g.StreamTimeout, "cluster: time an inbound gossip stream has to deliver its first message, sealed with the cluster key")
	fs.IntVar(&c.MaxHandshakes, "mesh-max-handshakes", c.MaxHandshakes, "cluster: inbound mesh connections whose peer has not authenticated yet; past half of it new ones must validate their address (QUIC Retry), past it they are refused")
}

// MarshalText and UnmarshalText make a Strategy a flag (ParseStrategy's
// names).
func (s Strategy) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

func (s *Strategy) UnmarshalText(b []byte) error {
	v, err := ParseStrategy(string(b))
	if err == nil {
		*s = v
	}
	return err
}

// seedList is --join: comma-separated seeds; a value replaces the list.
type seedList []string

func (l *seedList) String() string { return strings.Join(*l, ",") }
func (l *seedList) Get() any       { return l.String() }

func (l *seedList) Set(v string) error {
	*l = nil
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// secret is --cluster-secret.
type secret []byte

func (s *secret) String() string { return string(*s) }
func (s *secret) Get() any       { return string(*s) }
func (s *secret) Set(v string) error {
	*s = nil // empty: no secret
	if v != "" {
		*s = []byte(v)
	}
	return nil
}

// relayFlag is --region-relay, another way to say --mesh-strategy relay.
type relayFlag struct{ s *Strategy }

func (relayFlag) IsBoolFlag() bool { return true }
func (relayFlag) String() string   { return "false" }
func (relayFlag) Get() any         { return false }

func (f relayFlag) Set(v string) error {
	on, err := strconv.ParseBool(v)
	if err != nil {
		return errors.New("parse error")
	}
	if on {
		*f.s = RegionRelay
	}
	return nil
}
