package mesh

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/quic-go/quic-go"

	"github.com/meshcast/meshcast/mesh/lograte"
	"github.com/meshcast/meshcast/mesh/presence"
	"github.com/meshcast/meshcast/mesh/quicgate"
	"github.com/meshcast/meshcast/mesh/route"
	"github.com/meshcast/meshcast/wire/meshproto"
)

// Handler is the edge's side of the mesh: what a node does with what other
// nodes send. Calls come from the mesh's goroutines, never while the mesh
// holds a lock, so a Handler may call back into the Node.
type Handler interface {
	// Deliver hands a broadcast from another node to local subscribers.
	Deliver(b *meshproto.Broadcast)
	// ApplyPresence applies another owner's delta for topic; false reports
	// a gap, and the mesh asks the owner for a snapshot.
	ApplyPresence(topic string, d presence.Delta) bool
	// ApplyPresenceSnapshot replaces everything held for an owner in topic.
	ApplyPresenceSnapshot(topic string, s presence.Snapshot)
	// OwnPresence returns this node's own entries of topic.
	OwnPresence(topic string) presence.Snapshot
	// NodeDown drops what a dead or departed node owned.
	NodeDown(id string)
}

// Node is this process's membership of the cluster.
type Node struct {
	cfg         Config
	log         *slog.Logger
	logLimited  *slog.Logger // for lines a peer or a storm can repeat at will
	h           Handler
	self        Member
	incarnation uint64
	meshKey     []byte

	ms        *membership
	tr        *quic.Transport
	ln        *quic.Listener
	tlsClient *tls.Config
	ownsConn  bool

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	metrics      *metrics.Set
	authFailures *metrics.Counter
	badFrames    *metrics.Counter
	connects     *metrics.Counter
	published    *metrics.Counter
	gossipEv     *gossipEvents
	failed       *metrics.Counter // members removed as failed
	departed     *metrics.Counter // members that left gracefully
	returned     *metrics.Counter // members declared dead that were alive

	// Set before Start (ext.go).
	handlers map[meshproto.Type]func(from string, f meshproto.Frame)
	resyncs  map[Lane][]func(peer string, emit func([]byte) error) error
	watchers []func(self Member, members []Member)
	// topicHooks add frames before each presence snapshot (OnTopicSnapshot).
	topicHooks []func(peer, topic string, emit func([]byte) error) error

	// in feeds the driver goroutine, the only one that changes core
	// (driver.go).
	in *inbox

	// Lock order: mu, then a lane's mu (frames are queued under mu);
	// in.mu is taken alone. The edge calls Subscribe and Unsubscribe
	// under its hub lock (they take in.mu), Publish and SendPresence under
	// a topic lock (mu's read lock, then lanes'); the mesh never calls the
	// Handler with a lock held.
	mu      sync.RWMutex
	closed  bool
	peers   map[string]*peer
	inbound map[string][]*quic.Conn
	dead    map[string]bool // IDs declared dead: frames from them are dropped
	// core holds the local topics, the remote nodes' interests and the
	// snapshot waits; the driver changes it under mu, others read it under
	// mu's read lock.
	core *route.Core
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// New validates cfg and returns a Node; Start brings it up.
func New(cfg Config, h Handler) (*Node, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	id := cfg.ID
	if id == "" {
		id = NewID(cfg.Name)
	}
	inc := incarnationOf(id)
	meshAddr := cfg.MeshAdvertise
	if meshAddr == "" {
		meshAddr = cfg.MeshAddr
		if cfg.PacketConn != nil {
			meshAddr = cfg.PacketConn.LocalAddr().String()
		}
	}
	set := metrics.NewSet()
	n := &Node{
		cfg:          cfg,
		log:          cfg.Logger.With("node", id),
		logLimited:   lograte.Logger(cfg.Logger.With("node", id), 10*time.Second, 5),
		h:            h,
		self:         Member{ID: id, Name: cfg.Name, Region: cfg.Region, MeshAddr: meshAddr, ClientAddr: cfg.ClientAddr, DB: cfg.Database, Reader: cfg.Database != ""},
		resyncs:      make(map[Lane][]func(string, func([]byte) error) error),
		incarnation:  inc,
		meshKey:      deriveKey(cfg.ClusterSecret, "mesh"),
		metrics:      set,
		authFailures: set.NewCounter("meshcast_mesh_auth_failures_total"),
		badFrames:    set.NewCounter("meshcast_mesh_bad_frames_total"),
		connects:     set.NewCounter("meshcast_mesh_connects_total"),
		published:    set.NewCounter("meshcast_mesh_broadcasts_published_total"),
		failed:       set.NewCounter("meshcast_mesh_members_failed_total"),
		departed:     set.NewCounter("meshcast_mesh_members_left_total"),
		returned:     set.NewCounter("meshcast_mesh_members_returned_total"),
		peers:        make(map[string]*peer),
		inbound:      make(map[string][]*quic.Conn),
		dead:         make(map[string]bool),
		in:           newInbox(),
		core:         route.New(route.Config{Linger: cfg.InterestLinger, SnapshotWait: cfg.SnapshotWait}),
	}
	n.gossipEv = newGossipEvents(set, n.log, n.logLimited)
	set.NewGauge("meshcast_gossip_health_score", func() float64 {
		n.mu.RLock()
		m := n.ms
		n.mu.RUnlock()
		if m == nil {
			return 0
		}
		return float64(m.healthScore())
	})
	// Who this node is, so that a scraper can tell which peers of
	// meshcast_mesh_*{peer} are in another region (cross-region bytes).
	set.NewGauge(fmt.Sprintf(`meshcast_mesh_node_info{node=%q,region=%q}`, id, cfg.Region), func() float64 { return 1 })
	set.NewGauge("meshcast_mesh_members", func() float64 {
		n.mu.RLock()
		defer n.mu.RUnlock()
		return float64(len(n.peers) + 1)
	})
	set.NewGauge("meshcast_mesh_peers_connected", func() float64 {
		n.mu.RLock()
		defer n.mu.RUnlock()
		c := 0
		for _, p := range n.peers {
			if p.connected.Load() {
				c++
			}
		}
		return float64(c)
	})
	return n, nil
}

// NewID returns a node ID for name: the name plus an incarnation that is
// new at every process start, so that a restarted node is a new member
// whose presence never mixes with its previous life's.
func NewID(name string) string {
	return name + "-" + strconv.FormatUint(uint64(time.Now().UnixNano())%(1<<40), 36)
}

// incarnationOf derives the incarnation number carried in Hellos from an ID.
func incarnationOf(id string) uint64 {
	if i := strings.LastIndexByte(id, '-'); i >= 0 {
		if v, err := strconv.ParseUint(id[i+1:], 36, 64); err == nil {
			return v
		}
	}
	return 0
}

// ID returns this node's cluster ID (name + incarnation).
func (n *Node) ID() string { return n.self.ID }

// Region returns this node's region.
func (n *Node) Region() string { return n.self.Region }

// Start binds the mesh and gossip sockets, joins the seeds (retrying in the
// background until a member answers) and starts serving peers.
func (n *Node) Start() error {
	n.ctx, n.cancel = context.WithCancel(context.Background())
	server, client, err := meshTLS(n.cfg.ClusterSecret, func(remote net.Addr, err error) {
		n.log.Debug("mesh TLS handshake refused", "remote", addrString(remote), "err", err)
	})
	if err != nil {
		return err
	}
	n.tlsClient = client
	pc := n.cfg.PacketConn
	if pc == nil {
		udp, err := net.ListenPacket("udp", n.cfg.MeshAddr)
		if err != nil {
			return fmt.Errorf("mesh: listen %s: %w", n.cfg.MeshAddr, err)
		}
		pc, n.ownsConn = udp, true
		if n.cfg.MeshAdvertise == "" {
			n.self.MeshAddr = advertiseAddr(udp.LocalAddr())
		}
	}
	n.tr = &quic.Transport{Conn: pc}
	// Every inbound connection counts until its peer has authenticated
	// (TLS with the mesh key, then a valid Hello on each lane): bounded in
	// number, and each that never does is an auth failure.
	quicgate.New(quicgate.Config{
		Max:       n.cfg.MaxHandshakes,
		Metrics:   n.metrics,
		Name:      "meshcast_mesh_handshakes",
		OnAbandon: n.unauthenticated,
	}).Install(n.tr)
	n.ln, err = n.tr.Listen(server, n.quicConfig())
	if err != nil {
		n.closeTransport()
		return fmt.Errorf("mesh: quic listen: %w", err)
	}
	ms, err := startMembership(&n.cfg, n.self, n, n.gossipEv, n.log, n.logLimited, n.metrics)
	n.mu.Lock()
	n.ms = ms
	n.mu.Unlock()
	if err != nil {
		n.ln.Close()
		n.closeTransport()
		return err
	}
	n.notifyWatchers()
	n.wg.Add(3)
	go func() { defer n.wg.Done(); n.acceptLoop() }()
	go func() { defer n.wg.Done(); n.joinLoop() }()
	go func() { defer n.wg.Done(); n.drive() }()
	n.log.Info("mesh started", "gossip", n.cfg.GossipAddr, "mesh", n.self.MeshAddr, "region", n.self.Region, "strategy", n.cfg.Strategy.String())
	return nil
}

// unauthenticated counts and logs an inbound connection that ended before
// its peer authenticated.
func (n *Node) unauthenticated(remote net.Addr) {
	n.authFailures.Inc()
	n.logLimited.Warn("mesh peer refused: did not authenticate", "remote", addrString(remote))
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

func advertiseAddr(a net.Addr) string {
	u, ok := a.(*net.UDPAddr)
	if !ok || !u.IP.IsUnspecified() {
		return a.String()
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(u.Port))
}

func (n *Node) quicConfig() *quic.Config {
	return &quic.Config{
		KeepAlivePeriod:      n.cfg.PeerTimeout / 4,
		MaxIdleTimeout:       n.cfg.PeerTimeout,
		HandshakeIdleTimeout: handshakeTimeout,
		MaxIncomingStreams:   numLanes + 1,
	}
}

func (n *Node) closeTransport() {
	if n.tr != nil {
		n.tr.Close()
	}
	if n.ownsConn && n.tr != nil {
		n.tr.Conn.Close()
	}
}

// joinLoop joins the seeds with backoff until another member is known, and
// afterwards rejoins them whenever this node finds itself alone (a
// partition that outlived memberlist's gossip to the dead). It also keeps
// knocking at members that died without leaving (rejoinFailed): memberlist
// alone never merges two sides of a partition that both stayed larger than
// one node once each has given the other up.
func (n *Node) joinLoop() {
	backoff := joinBackoffMin
	nextFailed := time.Now().Add(failedRetryEvery)
	for {
		if len(n.cfg.Join) > 0 && n.ms.alive() <= 1 {
			if k, err := n.ms.join(n.cfg.Join); err != nil || k == 0 {
				n.log.Debug("cluster join: no seed answered yet", "seeds", n.cfg.Join, "err", err)
			} else {
				n.log.Info("joined cluster", "contacted", k)
				backoff = joinBackoffMin
			}
		}
		if time.Now().After(nextFailed) {
			n.rejoinFailed()
			nextFailed = time.Now().Add(failedRetryEvery)
		}
		wait := aloneCheckEvery
		if n.ms.alive() <= 1 {
			wait, backoff = backoff, min(2*backoff, joinBackoffMax)
		} else {
			backoff = joinBackoffMin
		}
		select {
		case <-n.ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

const (
	// A node alone retries its seeds from joinBackoffMin, doubling up to
	// joinBackoffMax; in a cluster it checks every aloneCheckEvery.
	joinBackoffMin  = 200 * time.Millisecond
	joinBackoffMax  = 2 * time.Second
	aloneCheckEvery = time.Second
	// failedRetryEvery is how often members that died without leaving are
	// tried again, for failedRetention after their death.
	failedRetryEvery = 5 * time.Second
	failedRetention  = time.Hour
	maxFailedKept    = 256
)

// rejoinFailed tries the gossip addresses of members declared dead: one
// that was only cut off answers, and the two sides merge (each refutes the
// other's death). A member that really died refuses or times out.
func (n *Node) rejoinFailed() {
	addrs := n.ms.failedAddrs(time.Now())
	if len(addrs) == 0 || n.ctx.Err() != nil {
		return
	}
	if k, err := n.ms.ml.Join(addrs); k > 0 {
		n.log.Info("rejoined members declared dead", "contacted", k, "tried", len(addrs))
	} else {
		n.log.Debug("members declared dead still unreachable", "addrs", addrs, "err", err)
	}
}

func (n *Node) Members() []Member {
	n.mu.RLock()
	defer n.mu.RUnlock()
	out := make([]Member, 0, len(n.peers))
	for _, p := range n.peers {
		out = append(out, p.m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Connected reports whether this node's connection to member id is up.
func (n *Node) Connected(id string) bool {
	n.mu.RLock()
	defer n.mu.RUnlock()
	p := n.peers[id]
	return p != nil && p.connected.Load()
}

// GossipAddr returns the address other nodes join this node's gossip on.
func (n *Node) GossipAddr() string { return n.ms.ml.LocalNode().Address() }

// InterestedNodes returns the other nodes that have subscribers of topic,
// sorted.
func (n *Node) InterestedNodes(topic string) []string {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return append([]string(nil), n.core.Nodes(topic)...)
}

// WritePrometheus writes the mesh metrics.
func (n *Node) WritePrometheus(w io.Writer) { n.metrics.WritePrometheus(w) }

// Leave drains this node out of the cluster: it marks itself draining,
// leaves memberlist (peers see a graceful leave at once) and closes the
// mesh.
func (n *Node) Leave(timeout time.Duration) {
	if n.ms != nil {
		n.ms.setDraining(timeout / 2)
		n.ms.leave(timeout / 2)
	}
	n.Close()
}

// Close stops the node without a graceful leave (peers detect it as failed).
func (n *Node) Close() {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return
	}
	n.closed = true
	n.mu.Unlock()
	n.in.close() // joins still waiting are let go
	if n.cancel == nil {
		return // never started: nothing runs, nothing is bound
	}
	n.cancel()
	if n.ln != nil {
		n.ln.Close()
	}
	n.mu.Lock()
	for _, conns := range n.inbound {
		for _, c := range conns {
			c.CloseWithError(errCodeShutdown, "node shutting down")
		}
	}
	n.mu.Unlock()
	n.wg.Wait()
	if n.ms != nil {
		n.ms.ml.Shutdown()
	}
	n.closeTransport()
}
