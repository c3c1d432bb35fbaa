// Package edge is the client-facing side of a meshcast node: the HTTP
// server, the WebSocket and WebTransport transports, connection lifecycle
// and heartbeats, channel join/leave, broadcast and presence semantics, JWT
// auth, limits, REST broadcast, /metrics, /healthz, the demo page and the
// clientjs bundle.
//
// Both transports make the same conn (transport.go): channel, presence,
// auth and limit code never knows which carries a client. A WebTransport
// session (webtransport.go) carries the Phoenix frames on one stream with a
// length prefix (wtframe.go) and unreliable broadcasts as datagrams
// (datagram.go); its certificates are configured or self-signed and rotated
// (certs.go).
//
// # WebSocket library
//
// The transport uses github.com/gobwas/ws through its low-level frame API
// rather than a connection object with its own buffers. Memory per idle
// connection and write batching decide a realtime server's capacity, and
// the low-level API lets us own both: an idle WebSocket holds no buffer
// and, on Linux, no goroutine (wspoll.go: edge/netpoll reports readable
// sockets to a few reader workers, which borrow a buffer per read and
// decode frames incrementally, wsread.go), the upgrade reuses net/http's
// hijacked connection, and because server frames are
// unmasked, a broadcast is turned into one complete WebSocket frame once and
// the same bytes are queued for every subscriber. Everything queued for a
// connection then goes out in one writev: first from the write pool's
// non-blocking writes, and from a connection's own blocking writer only
// when its socket is full. gorilla/websocket and
// coder/websocket keep a buffered reader and writer (or more) per
// connection and frame every write per connection; lxzan/gws is close in
// spirit but brings its own event loop and broadcaster.
package edge

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"

	"github.com/meshcast/meshcast/mesh/lograte"
	"github.com/meshcast/meshcast/wire/phx"
)

// Server is one edge node's client-facing server.
type Server struct {
	cfg Config
	log *slog.Logger
	// logLimited is log for lines that one client (or many) can repeat
	// at will: a few per message per interval, the rest counted.
	logLimited *slog.Logger
	auth       *authenticator
	hub        *hub
	metrics    *serverMetrics
	mux        *http.ServeMux
	http       *http.Server
	cluster    Cluster // nil on a single node
	coalesce   *coalescer
	pool       *writePool
	rest       *restLimiter // nil: REST messages are not rate limited
	rec        *recovery    // nil: recovery is off (RecoveryWindow negative)

	// policy decides private channels (the claims rule without
	// Config.ChannelPolicy); policyBlocks: it may block, so callers let
	// their locks go while it answers.
	policy       ChannelPolicy
	policyBlocks bool
	// life ends when Shutdown's deadline passes: policy checks still
	// waiting give up.
	life    context.Context
	endLife context.CancelFunc

	changes    ChangeStream    // nil without a database
	replay     ReplaySource    // nil without a database: replay is refused
	dbStream   DBStream        // nil without a database: the "db" stream is not recovered
	validator  ChangeValidator // nil: bindings are checked by the owner only
	changeSubs *changeSubs

	extraMetrics []MetricsWriter // written at /metrics after the server's own

	conns atomic.Int64 // admitted connections, for the limit and metrics
	// perAddr bounds the admitted connections of one client address.
	perAddr *addrCounts
	// liveByKind counts tracked connections by transport (metrics).
	liveByKind [numKinds]atomic.Int64
	channels   atomic.Int64
	holders    atomic.Uint64
	refs       atomic.Uint64
	// presenceSeq numbers this node's presence deltas across all topics,
	// so a topic's sequence keeps growing even when its state is dropped
	// and made again.
	presenceSeq atomic.Uint64
	draining    atomic.Bool
	// stopping is closed when Shutdown's deadline passes: joins waiting
	// for the cluster give up, so that no connection outlives it.
	stopping     chan struct{}
	stoppingOnce sync.Once

	refPrefix string

	// handler is mux with the Alt-Svc header of the WebTransport
	// listener; TCP and HTTP/3 requests both go through it.
	handler http.Handler
	// wtp is the WebTransport listener once ServeWebTransport runs (set
	// under mu, read without it).
	wtp atomic.Pointer[wtServer]

	mu   sync.Mutex
	live map[*conn]struct{}
	shut bool
	wg   sync.WaitGroup // connection goroutines

	// readers read the WebSockets the poller reports readable (made for
	// the first one; see wsReaders).
	readers     *readPool
	readersMu   sync.Mutex
	readersDone bool
}

// Deps are what a Server uses of the rest of the node. Each is an
// interface the edge declares (the consumer's seam); cmd/meshcast adapts
// the mesh and the wal packages to them. The zero value is a single node
// without a cluster.
type Deps struct {
	// Cluster connects the server to the other nodes of its cluster; nil
	// on a single node. Its ID must be Config.NodeID. NewServer registers
	// the server's ClusterHandler with it.
	Cluster Cluster
}

// MetricsWriter is a source of metrics a Server writes at /metrics after
// its own, in the Prometheus text format (*metrics.Set is one).
type MetricsWriter interface {
	WritePrometheus(w io.Writer)
}

// New returns a single node's Server for cfg: NewServer(cfg, Deps{}).
func New(cfg Config) (*Server, error) { return NewServer(cfg, Deps{}) }

// NewServer returns a Server for cfg that uses deps. It registers the
// server with deps.Cluster, which may call it as soon as NewServer
// returns.
func NewServer(cfg Config, deps Deps) (*Server, error) {
	if cfg.NodeID == "" {
		return nil, errors.New("edge: NodeID is required")
	}
	cfg = cfg.withDefaults()
	if deps.Cluster != nil && deps.Cluster.ID() != cfg.NodeID {
		// The node's presence entries carry its cluster ID.
		return nil, errors.New("edge: the cluster's node ID differs from Config.NodeID")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Server{
		cfg:        cfg,
		log:        log,
		logLimited: lograte.Logger(log, 10*time.Second, 5),
		stopping:   make(chan struct{}),
		changeSubs: newChangeSubs(),
		auth:       newAuthenticator(cfg.JWTSecret, cfg.JWTLeeway),
		hub:        newHub(cfg.NodeID, cfg.PresenceEventsPerSecond),
		refPrefix:  newRefPrefix(),
		live:       make(map[*conn]struct{}),
		coalesce:   newCoalescer(cfg.WriteCoalesce),
		pool:       newWritePool(),
		rest:       newRESTLimiter(cfg.RESTEventsPerSecond, cfg.MaxBatchMessages),
		cluster:    deps.Cluster,
		perAddr:    newAddrCounts(cfg.MaxConnections, cfg.AddressShare),
	}
	s.hub.cluster = deps.Cluster
	s.policy, s.policyBlocks = cfg.ChannelPolicy, cfg.ChannelPolicy != nil
	if s.policy == nil {
		s.policy = claimsRule{}
	}
	s.life, s.endLife = context.WithCancel(context.Background())
	s.metrics = newServerMetrics(s)
	s.rec = newRecovery(cfg, s.metrics.set)
	s.mux = s.routes()
	s.handler = s.withAltSvc(s.mux)
	s.http = &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: cfg.HTTPReadHeaderTimeout,
		ReadTimeout:       cfg.HTTPReadTimeout,
		WriteTimeout:      cfg.HTTPWriteTimeout,
		IdleTimeout:       cfg.HTTPIdleTimeout,
		ErrorLog:          slog.NewLogLogger(lograte.New(log.Handler(), 10*time.Second, 5), slog.LevelDebug),
	}
	if s.http.IdleTimeout <= 0 && s.http.ReadTimeout <= 0 {
		// net/http falls back to ReadTimeout for idle connections; with
		// both off, keep-alive connections would be held forever.
		s.http.IdleTimeout = 2 * time.Minute
	}
	if deps.Cluster != nil {
		deps.Cluster.Register(peerSide{s})
	}
	return s, nil
}

// AddMetrics adds a source of metrics to /metrics (before Serve): the
// mesh's, the wal's, a policy's.
func (s *Server) AddMetrics(m MetricsWriter) { s.extraMetrics = append(s.extraMetrics, m) }

// Open reports whether the server runs without auth.
func (s *Server) Open() bool { return s.auth.open() }

// Handler returns the HTTP handler (WebSocket, REST, metrics, demo).
func (s *Server) Handler() http.Handler { return s.handler }

// Serve accepts connections on ln until Shutdown. It returns
// http.ErrServerClosed after Shutdown.
func (s *Server) Serve(ln net.Listener) error { return s.http.Serve(ln) }

// Shutdown stops accepting, tells every client the server is going away
// (system message, then a close frame with 1001 so that clients reconnect
// elsewhere) and waits for connections to finish until ctx is done, when
// the rest are cut. WebSocket and WebTransport clients are drained alike;
// the WebTransport listener closes last.
func (s *Server) Shutdown(ctx context.Context) error {
	s.draining.Store(true)
	err := s.http.Shutdown(ctx)

	s.mu.Lock()
	s.shut = true
	w := s.wtp.Load()
	conns := make([]*conn, 0, len(s.live))
	for c := range s.live {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	if w != nil {
		w.drain()
	}
	for _, c := range conns {
		c.goAway()
	}
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		if w != nil {
			w.sessions.Wait()
		}
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		s.stoppingOnce.Do(func() { close(s.stopping); s.endLife() })
		s.mu.Lock()
		for c := range s.live {
			c.tr.kill()
		}
		s.mu.Unlock()
		if w != nil {
			// Closing the QUIC connections ends what a reset stream does
			// not (a writer waiting for room in a datagram queue).
			w.close()
		}
		<-done
		if err == nil {
			err = ctx.Err()
		}
	}
	if w != nil {
		w.close()
	}
	s.coalesce.close()
	s.pool.close()
	s.closeReaders()
	return err
}

// goAway tells the client the server is going away and closes.
func (c *conn) goAway() {
	c.mu.Lock()
	for _, ch := range c.channels {
		c.send("", "", ch.key.name, "system", systemPayload("system", "ok", "Server requested disconnect", ""))
	}
	c.mu.Unlock()
	c.closeAfterFlush(ws.StatusGoingAway, "server shutting down")
}

// admit counts a connection from remote (host:port) against
// MaxConnections and its address's share of it; on a refusal it counts
// nothing and says which limit refused.
func (s *Server) admit(remote string) (ok bool, reason string) {
	n := s.conns.Add(1)
	if max := s.cfg.MaxConnections; max > 0 && n > int64(max) {
		s.conns.Add(-1)
		return false, "too_many_connections"
	}
	if !s.perAddr.take(remote) {
		s.conns.Add(-1)
		return false, "too_many_from_address"
	}
	return true, ""
}

// release returns what admit counted for remote.
func (s *Server) release(remote string) {
	s.perAddr.give(remote)
	s.conns.Add(-1)
}

// track registers a live connection; false once shutdown has begun.
func (s *Server) track(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shut {
		return false
	}
	s.live[c] = struct{}{}
	s.liveByKind[c.kind].Add(1)
	s.metrics.connected(c.tm)
	// Added under s.mu, so that Shutdown (which sets shut under s.mu
	// before waiting) always waits for this connection's reader, which
	// itself waits for the connection's last writer.
	s.wg.Add(1)
	return true
}

func (s *Server) untrack(c *conn) {
	s.mu.Lock()
	_, ok := s.live[c]
	delete(s.live, c)
	s.mu.Unlock()
	if ok {
		s.liveByKind[c.kind].Add(-1)
		s.release(c.remote)
	}
}

func (s *Server) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /realtime/v1/websocket", s.serveWebSocket)
	mux.HandleFunc("GET /socket/websocket", s.serveWebSocket)
	mux.HandleFunc("GET /healthz", s.serveHealth)
	mux.HandleFunc("GET /version", s.serveVersion)
	mux.HandleFunc("GET "+certHashPath, s.serveCertHash)
	mux.HandleFunc("GET "+clientJSPath, serveClientJS)
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		s.metrics.write(w)
		for _, set := range s.extraMetrics {
			set.WritePrometheus(w)
		}
	})
	for _, base := range []string{"/api", "/realtime/v1/api"} {
		mux.HandleFunc("POST "+base+"/broadcast", s.serveBatchBroadcast)
		mux.HandleFunc("POST "+base+"/broadcast/{topic}/events/{event}", s.serveSingleBroadcast)
		mux.HandleFunc("OPTIONS "+base+"/broadcast", serveCORSPreflight)
		mux.HandleFunc("OPTIONS "+base+"/broadcast/{topic}/events/{event}", serveCORSPreflight)
	}
	if s.cfg.DemoTable != nil {
		// By method: a pattern for every method would conflict with GET /.
		for _, m := range []string{"GET", "POST", "PATCH", "DELETE"} {
			mux.Handle(m+" "+demoTablePath, s.cfg.DemoTable)
			mux.Handle(m+" "+demoTablePath+"/", s.cfg.DemoTable)
		}
	} else {
		// The demo page asks for a token first (make run-pg's private
		// room): none here, without an error in the browser's console.
		mux.HandleFunc("GET "+demoTablePath+"/token", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	}
	mux.Handle("GET /", demoHandler())
	return mux
}

func (s *Server) serveHealth(w http.ResponseWriter, r *http.Request) {
	if s.draining.Load() {
		http.Error(w, "draining", http.StatusServiceUnavailable)
		return
	}
	w.Write([]byte("ok\n"))
}

// serveVersion answers GET /version: {"version":"…","go":"go1.…"}.
func (s *Server) serveVersion(w http.ResponseWriter, r *http.Request) {
	v := s.cfg.Version
	if v == "" {
		v = "unknown"
	}
	b := append(phx.AppendString([]byte(`{"version":`), v), `,"go":`...)
	b = append(phx.AppendString(b, runtime.Version()), '}')
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(b)
}
