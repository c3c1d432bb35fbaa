// Package wanemu emulates a wide-area network between the regions of a
// cluster that runs on one machine, in user space: it delays (and
// optionally jitters and drops) every packet and stream byte a node sends
// to a node of another region, by the round-trip time between the two
// regions. It exists for benchmarks and tests (meshbench local), because
// this project's machines have no netem qdisc and should not need root.
//
// A node wraps the two sockets that carry inter-node traffic: the QUIC
// mesh's UDP socket (PacketConn) and memberlist's transport (Transport:
// gossip over UDP and push-pull/fallback streams over TCP). Client
// connections never go through it. Who is where comes from a table of
// addresses (every node's gossip and mesh host:port → region), so the
// emulator needs no cooperation from the peer: the sender delays a UDP
// packet by the one-way delay to its destination; a TCP stream is delayed
// by its dialer in both directions (its writes on the way out, its reads
// on the way in), so the accepting side needs no table entry for the
// dialer's ephemeral port.
package wanemu

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

// Config is the emulated WAN, the same for every node of a cluster; each
// node adds its own region when it builds an Emulator. Its JSON form is
// what meshcast's --emulate-wan takes:
//
//	{"nodes":{"127.0.0.1:4711":"iad","127.0.0.1:4712":"iad","127.0.0.1:4721":"fra",…},
//	 "rtt_ms":{"iad-fra":87,"iad-sin":223,"fra-sin":155},
//	 "jitter_ms":2,"loss":0.001}
type Config struct {
	// Nodes maps every gossip and mesh address (host:port, numeric IP) of
	// the cluster to its node's region.
	Nodes map[string]string `json:"nodes"`
	// RTT is the round-trip time in milliseconds between two regions,
	// keyed "a-b" in either order; "a-a" sets a delay inside region a
	// (default 0). A pair of different regions missing here is an error.
	RTT map[string]float64 `json:"rtt_ms"`
	// JitterMS adds a uniformly random 0…JitterMS to each one-way delay
	// across regions (never subtracts: the delay is a floor). Streams stay
	// in order.
	JitterMS float64 `json:"jitter_ms,omitempty"`
	// Loss drops this fraction of UDP packets across regions (QUIC
	// retransmits, memberlist tolerates it). TCP streams are not lossy.
	Loss float64 `json:"loss,omitempty"`
}

// Load reads a Config from s: inline JSON when s starts with '{', else
// the name of a file holding it.
func Load(s string) (Config, error) {
	var c Config
	b := []byte(s)
	if !strings.HasPrefix(strings.TrimSpace(s), "{") {
		var err error
		if b, err = os.ReadFile(s); err != nil {
			return c, fmt.Errorf("wanemu: %w", err)
		}
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("wanemu: %w", err)
	}
	return c, c.Validate()
}

// Validate checks that addresses are host:port with a numeric IP, that
// every pair of regions has an RTT, and that the numbers are sane.
func (c *Config) Validate() error {
	var errs []error
	regions := map[string]bool{}
	for a, r := range c.Nodes {
		if _, err := normAddr(a); err != nil {
			errs = append(errs, err)
		}
		if r == "" {
			errs = append(errs, fmt.Errorf("wanemu: address %s has no region", a))
		}
		regions[r] = true
	}
	for k, v := range c.RTT {
		if _, _, ok := strings.Cut(k, "-"); !ok {
			errs = append(errs, fmt.Errorf("wanemu: rtt key %q is not region-region", k))
		}
		if v < 0 || v > 10000 {
			errs = append(errs, fmt.Errorf("wanemu: rtt %s = %v ms outside [0, 10000]", k, v))
		}
	}
	for a := range regions {
		for b := range regions {
			if a < b {
				if _, ok := c.rtt(a, b); !ok {
					errs = append(errs, fmt.Errorf("wanemu: no rtt between %s and %s", a, b))
				}
			}
		}
	}
	if c.JitterMS < 0 || c.JitterMS > 10000 {
		errs = append(errs, errors.New("wanemu: jitter_ms outside [0, 10000]"))
	}
	if c.Loss < 0 || c.Loss >= 1 {
		errs = append(errs, errors.New("wanemu: loss outside [0, 1)"))
	}
	return errors.Join(errs...)
}

// rtt looks a region pair up in either order.
func (c *Config) rtt(a, b string) (float64, bool) {
	if v, ok := c.RTT[a+"-"+b]; ok {
		return v, true
	}
	v, ok := c.RTT[b+"-"+a]
	return v, ok
}

// OneWay is the base one-way delay from region a to region b: half the
// round trip. Unknown pairs have none.
func (c *Config) OneWay(a, b string) time.Duration {
	v, ok := c.rtt(a, b)
	if !ok {
		return 0
	}
	return time.Duration(v * float64(time.Millisecond) / 2)
}

// normAddr returns the canonical host:port of a numeric address, so that
// "127.0.0.1:80" and "[::ffff:127.0.0.1]:80" compare equal.
func normAddr(a string) (string, error) {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return "", fmt.Errorf("wanemu: address %q: %w", a, err)
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return "", fmt.Errorf("wanemu: address %q is not a numeric IP", a)
	}
	if v4 := ip.To4(); v4 != nil {
		ip = v4
	}
	return net.JoinHostPort(ip.String(), port), nil
}
