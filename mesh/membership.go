package mesh

import (
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	stdlog "log"
	"log/slog"
	"net"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/hashicorp/memberlist"

	"github.com/meshcast/meshcast/mesh/gossipnet"
)

// Member is what a node tells the cluster about itself in its memberlist
// metadata.
type Member struct {
	ID         string `json:"i"` // name + incarnation, unique per process start
	Name       string `json:"n"`
	Region     string `json:"r"`
	MeshAddr   string `json:"m"` // QUIC, UDP host:port
	ClientAddr string `json:"c"` // HTTP/WebSocket host:port
	Draining   bool   `json:"d,omitempty"`
	// DB names the database whose changes the node takes part in
	// (Config.Database, or SetDatabase), empty for none; Reader says it can
	// read the database's WAL itself, which makes it a candidate owner.
	DB     string `json:"b,omitempty"`
	Reader bool   `json:"w,omitempty"`
}

// metaVersion prefixes the JSON metadata so that it can evolve.
const metaVersion = 1

func encodeMeta(m Member) []byte {
	b, _ := json.Marshal(m) // a struct of strings cannot fail
	return append([]byte{metaVersion}, b...)
}

func decodeMeta(b []byte) (Member, error) {
	var m Member
	if len(b) < 2 || b[0] != metaVersion {
		return m, fmt.Errorf("mesh: node metadata version %v not understood", b[:min(len(b), 1)])
	}
	if err := json.Unmarshal(b[1:], &m); err != nil {
		return m, fmt.Errorf("mesh: node metadata: %w", err)
	}
	if m.ID == "" || m.MeshAddr == "" {
		return m, fmt.Errorf("mesh: node metadata lacks id or mesh address")
	}
	return m, nil
}

// deriveKey derives a purpose-bound key from the cluster secret, so the
// gossip key and the mesh key are independent.
func deriveKey(secret []byte, purpose string) []byte {
	k, err := hkdf.Key(sha256.New, secret, []byte("meshcast"), purpose, 32)
	if err != nil {
		panic(err) // only for lengths hkdf cannot produce; 32 is fine
	}
	return k
}

// membershipEvents receives membership changes. The callbacks run on
// memberlist's goroutines and must not block.
type membershipEvents interface {
	memberUp(m Member)
	memberDown(id string, left bool)
}

// membership wraps memberlist: node metadata, encryption, join by seeds or
// DNS name, and the events.
type membership struct {
	log      *slog.Logger
	ml       *memberlist.Memberlist
	events   membershipEvents
	resolver *net.Resolver

	mu   sync.Mutex
	self Member
	meta []byte
	// failed holds the gossip addresses of members that died without
	// leaving, and when; the join loop tries them again (see rejoinFailed).
	failed map[string]time.Time
}

// failedAddrs lists the addresses of members that died less than
// failedRetention ago, forgetting older ones.
func (m *membership) failedAddrs(now time.Time) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]string, 0, len(m.failed))
	for a, at := range m.failed {
		if now.Sub(at) > failedRetention {
			delete(m.failed, a)
			continue
		}
		out = append(out, a)
	}
	sort.Strings(out)
	return out
}

// noteFailed remembers addr as a member's that died; up to maxFailedKept,
// the oldest forgotten first.
func (m *membership) noteFailed(addr string, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failed == nil {
		m.failed = make(map[string]time.Time)
	}
	if _, ok := m.failed[addr]; !ok && len(m.failed) >= maxFailedKept {
		oldest, at := "", now
		for a, t := range m.failed {
			if t.Before(at) {
				oldest, at = a, t
			}
		}
		delete(m.failed, oldest)
	}
	m.failed[addr] = now
}

func (m *membership) noteAlive(addr string) {
	m.mu.Lock()
	delete(m.failed, addr)
	m.mu.Unlock()
}

func gossipConfig(cfg *Config, self Member, events *gossipEvents) (*memberlist.Config, error) {
	mc := memberlist.DefaultLANConfig()
	if cfg.Gossip.Profile == "wan" {
		mc = memberlist.DefaultWANConfig()
	}
	host, portStr, err := net.SplitHostPort(cfg.GossipAddr)
	if err != nil {
		return nil, fmt.Errorf("mesh: gossip address %q: %w", cfg.GossipAddr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("mesh: gossip port %q: %w", portStr, err)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	mc.Name = self.ID
	mc.BindAddr, mc.BindPort = host, port
	mc.AdvertisePort = port
	if cfg.GossipAdvertise != "" {
		ah, ap, err := net.SplitHostPort(cfg.GossipAdvertise)
		if err != nil {
			return nil, fmt.Errorf("mesh: gossip advertise address: %w", err)
		}
		mc.AdvertiseAddr = ah
		if mc.AdvertisePort, err = strconv.Atoi(ap); err != nil {
			return nil, fmt.Errorf("mesh: gossip advertise port: %w", err)
		}
	}
	mc.SecretKey = deriveKey(cfg.ClusterSecret, "gossip")
	mc.GossipVerifyIncoming, mc.GossipVerifyOutgoing = true, true
	applyGossipTimings(mc, cfg.Gossip)
	mc.Logger = stdlog.New(events, "", 0)
	return mc, nil
}

// applyGossipTimings sets memberlist's failure detection from g (see
// GossipConfig for the defaults and what they trade).
func applyGossipTimings(mc *memberlist.Config, g GossipConfig) {
	wan := g.Profile == "wan"
	if !wan {
		mc.ProbeInterval = DefaultProbeInterval
		// Where memberlist expects confirmations (more nodes than
		// SuspicionMult-1), a suspicion nobody confirms waits up to three
		// times longer.
		mc.SuspicionMaxTimeoutMult = 3
	}
	if g.ProbeInterval > 0 {
		mc.ProbeInterval = g.ProbeInterval
	}
	if !wan {
		mc.SuspicionMult = max(3, int((DefaultSuspicionWindow+mc.ProbeInterval-1)/mc.ProbeInterval))
	}
	if !wan || g.ProbeInterval > 0 {
		mc.ProbeTimeout = mc.ProbeInterval / 2
		mc.GossipInterval = mc.ProbeInterval / 5
		mc.PushPullInterval = max(10*mc.ProbeInterval, 2*time.Second)
	}
	if g.ProbeTimeout > 0 {
		mc.ProbeTimeout = min(g.ProbeTimeout, mc.ProbeInterval)
	}
	if g.SuspicionMult > 0 {
		mc.SuspicionMult = g.SuspicionMult
	}
	if g.DeadGossipTime > 0 {
		mc.GossipToTheDeadTime = g.DeadGossipTime
	}
}

func startMembership(cfg *Config, self Member, events membershipEvents, gev *gossipEvents, log, limited *slog.Logger, ms *metrics.Set) (*membership, error) {
	m := &membership{log: log, events: events, self: self, meta: encodeMeta(self), resolver: cfg.Resolver}
	mc, err := gossipConfig(cfg, self, gev)
	if err != nil {
		return nil, err
	}
	// Our transport, not memberlist's: nothing reaches memberlist that is
	// not sealed with the gossip key (see mesh/gossipnet).
	nt, err := gossipnet.New(gossipnet.Config{
		BindAddr:          net.JoinHostPort(mc.BindAddr, strconv.Itoa(mc.BindPort)),
		Key:               mc.SecretKey,
		MaxPendingStreams: cfg.Gossip.MaxPendingStreams,
		MaxStreamBytes:    cfg.Gossip.MaxStreamBytes,
		StreamTimeout:     cfg.Gossip.StreamTimeout,
		Metrics:           ms,
		Log:               limited,
	})
	if err != nil {
		return nil, fmt.Errorf("mesh: start gossip on %s: %w", cfg.GossipAddr, err)
	}
	mc.Transport = nt
	if cfg.WrapGossip != nil {
		mc.Transport = cfg.WrapGossip(nt)
	}
	mc.Delegate = (*metaDelegate)(m)
	mc.Events = (*eventDelegate)(m)
	mc.Ping = pingDelegate{events}
	ml, err := memberlist.Create(mc)
	if err != nil {
		nt.Shutdown()
		return nil, fmt.Errorf("mesh: start gossip on %s: %w", cfg.GossipAddr, err)
	}
	m.ml = ml
	return m, nil
}

// join tries the seeds (host:port, or DNS names whose every A/AAAA record
// is a seed) and reports how many nodes answered.
func (m *membership) join(seeds []string) (int, error) {
	if len(seeds) == 0 {
		return 0, nil
	}
	addrs := resolveSeeds(m.resolver, seeds, m.log)
	if len(addrs) == 0 {
		return 0, fmt.Errorf("mesh: no address for the seeds %v", seeds)
	}
	return m.ml.Join(addrs)
}

// resolveSeeds turns seeds into host:port addresses: an IP stays, a name
// becomes every A and AAAA record of it (fly.io's <app>.internal lists
// every machine of the app). Names that do not resolve are skipped.
func resolveSeeds(r *net.Resolver, seeds []string, log *slog.Logger) []string {
	if r == nil {
		r = net.DefaultResolver
	}
	var out []string
	for _, seed := range seeds {
		host, port, err := net.SplitHostPort(seed)
		if err != nil {
			log.Warn("cluster seed is not host:port", "seed", seed, "err", err)
			continue
		}
		if net.ParseIP(host) != nil {
			out = append(out, seed)
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		ips, err := r.LookupIPAddr(ctx, host)
		cancel()
		if err != nil {
			log.Debug("cluster seed does not resolve", "seed", seed, "err", err)
			continue
		}
		for _, ip := range ips {
			out = append(out, net.JoinHostPort(ip.IP.String(), port))
		}
	}
	return out
}

// setDraining updates this node's metadata and gossips it.
func (m *membership) setDraining(timeout time.Duration) {
	m.mu.Lock()
	m.self.Draining = true
	m.meta = encodeMeta(m.self)
	m.mu.Unlock()
	if err := m.ml.UpdateNode(timeout); err != nil {
		m.log.Debug("gossip metadata update", "err", err)
	}
}

func (m *membership) alive() int { return m.ml.NumMembers() }

// healthScore is memberlist's Lifeguard awareness of this node: 0 when
// healthy, up to 7 when its probes keep failing in ways that point at
// itself; probe timeouts are stretched by score+1.
func (m *membership) healthScore() int { return m.ml.GetHealthScore() }

func (m *membership) leave(timeout time.Duration) {
	if err := m.ml.Leave(timeout); err != nil {
		m.log.Warn("gossip leave", "err", err)
	}
	if err := m.ml.Shutdown(); err != nil {
		m.log.Warn("gossip shutdown", "err", err)
	}
}

type metaDelegate membership

func (d *metaDelegate) NodeMeta(limit int) []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.meta) > limit {
		return nil
	}
	return d.meta
}
func (d *metaDelegate) NotifyMsg([]byte)                           {}
func (d *metaDelegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *metaDelegate) LocalState(join bool) []byte                { return nil }
func (d *metaDelegate) MergeRemoteState(buf []byte, join bool)     {}

type eventDelegate membership

func (d *eventDelegate) NotifyJoin(n *memberlist.Node) { d.up(n) }

func (d *eventDelegate) NotifyUpdate(n *memberlist.Node) { d.up(n) }

func (d *eventDelegate) NotifyLeave(n *memberlist.Node) {
	if n.Name == d.self.ID {
		return
	}
	// memberlist does not say here whether the node left or died; a node
	// that leaves gracefully marks itself draining first.
	m, err := decodeMeta(n.Meta)
	left := err == nil && m.Draining
	if !left && n.State != memberlist.StateLeft {
		(*membership)(d).noteFailed(n.Address(), time.Now())
	}
	d.events.memberDown(n.Name, left)
}

func (d *eventDelegate) up(n *memberlist.Node) {
	if n.Name == d.self.ID {
		return
	}
	(*membership)(d).noteAlive(n.Address())
	m, err := decodeMeta(n.Meta)
	if err != nil {
		d.log.Warn("ignoring cluster member", "member", n.Name, "err", err)
		return
	}
	d.events.memberUp(m)
}
