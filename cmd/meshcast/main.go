// Command meshcast runs a meshcast edge node: a realtime server that the
// unmodified @supabase/realtime-js client uses as if it were Supabase
// Realtime.
//
// Every flag can also be set with an environment variable: --max-frame-bytes
// is MESHCAST_MAX_FRAME_BYTES. A flag on the command line wins over the
// environment. Run `meshcast --help` for the list.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/meshcast/meshcast/edge"
	"github.com/meshcast/meshcast/mesh"
	"github.com/meshcast/meshcast/mesh/gossipnet"
	"github.com/meshcast/meshcast/wal"
)

func main() {
	var err error
	if sub := subcommand(os.Args[1:]); sub != nil {
		err = sub(os.Args[2:], os.Stdout, os.Stderr)
	} else {
		err = run(os.Args[1:], os.Stdout, os.Stderr)
	}
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "meshcast:", err)
		if errors.As(err, new(flagError)) {
			fmt.Fprintln(os.Stderr, "meshcast --help lists the flags")
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// flagError is a command line or MESHCAST_* value the flags do not take.
type flagError struct{ error }

func (e flagError) Unwrap() error { return e.error }

// The --listen defaults: in open mode (no --jwt-secret) the node serves
// this machine only, unless --listen (or MESHCAST_LISTEN) asks for more.
const (
	defaultListen = ":4000"
	openListen    = "127.0.0.1:4000"
)

type options struct {
	// version: --version, print it and exit.
	version bool
	// loopbackOnly: open mode moved the default --listen to loopback.
	loopbackOnly bool
	// flags are the flags parsed (help reads their defaults).
	flags *flag.FlagSet

	listen    string
	wtListen  string
	origins   string
	tlsCert   string
	tlsKey    string
	logLevel  string
	logFormat string
	jwtSecret string
	shutdown  time.Duration
	pprofAddr string
	edge      edge.Config

	// cluster
	region        string
	gossipAddr    string
	gossipAdv     string
	meshAddr      string
	meshAdv       string
	join          string
	clusterSecret string
	strategy      string
	regionRelay   bool
	gossipProfile string
	probeInterval time.Duration
	probeTimeout  time.Duration
	suspicionMult int
	// What a peer without the cluster secret may cost (mesh/gossipnet,
	// mesh/quicgate).
	gossipPending       int
	gossipStreamBytes   int
	gossipStreamTimeout time.Duration
	meshHandshakes      int

	// Postgres changes
	databaseURL    string
	publication    string
	slot           string
	maxSlotLag     int64
	txMemory       int64
	spillDir       string
	regexBytes     int
	databaseRegion string
	catalogPoll    time.Duration
	demoTodos      bool
	schema         schemaFlags // the realtime schema (rtschema.go)
	policy         policyFlags // private channels' policy checks (chanpolicy.go)
	dbcast         dbcastFlags // broadcasts from the database (dbcast.go)

	// benchmarks
	emulateWAN string
	wan        *wanEmulation
}

// clustered reports whether the flags ask for a cluster node.
func (o *options) clustered() bool { return o.gossipAddr != "" || o.join != "" }

// parseFlags reads the flags from args and the environment. --help is
// written to help, and returns flag.ErrHelp.
func parseFlags(args []string, help io.Writer) (*options, error) {
	o := &options{edge: edge.DefaultConfig()}
	host, _ := os.Hostname()
	if id := os.Getenv("FLY_MACHINE_ID"); id != "" {
		host = id
	}
	if host == "" {
		host = "meshcast"
	}
	region := os.Getenv("FLY_REGION")
	if region == "" {
		region = "local"
	}
	fs := flag.NewFlagSet("meshcast", flag.ContinueOnError)
	// Errors are returned, and help printed below: a mistyped flag gets
	// one line, not the whole help.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	o.flags = fs
	c := &o.edge
	// A usage string says what 0 or empty means, but not the default:
	// the help adds it (help.go).
	fs.BoolVar(&o.version, "version", false, "print the version and exit")
	fs.StringVar(&o.listen, "listen", defaultListen, "HTTP/WebSocket listen address `host:port`")
	fs.StringVar(&o.wtListen, "webtransport-listen", "", "WebTransport (HTTP/3, UDP) listen address `host:port`, or off")
	fs.StringVar(&c.WebTransportAdvertise, "webtransport-advertise", "", "WebTransport address clients dial, `host:port` or an https URL, published at /realtime/v1/webtransport/cert-hash")
	fs.StringVar(&o.origins, "allowed-origins", "", "comma-separated origins whose pages may connect, over WebSocket or WebTransport (https://app.example.com, https://*.example.com, *); requests without Origin (not browsers) always may; empty allows any")
	fs.StringVar(&o.tlsCert, "tls-cert", "", "PEM certificate chain `file` for WebTransport (with --tls-key); without, the node generates and rotates self-signed certificates and publishes their hashes")
	fs.StringVar(&o.tlsKey, "tls-key", "", "PEM private key `file` of --tls-cert")
	fs.IntVar(&c.DatagramQueue, "datagram-queue", 16, "datagrams waiting per WebTransport session before the oldest is dropped (latest wins); smaller keeps them fresher under overload")
	fs.DurationVar(&c.WebTransportCertValidity, "webtransport-cert-validity", edge.DefaultCertValidity, "validity of a generated WebTransport certificate, under 336h (Chromium's limit for pinned certificates); rotated after half of it")
	fs.StringVar(&c.NodeID, "name", host, "node name (appears in logs and presence entries); $FLY_MACHINE_ID on fly.io, else the host name")
	fs.StringVar(&o.jwtSecret, "jwt-secret", "", "HS256/384/512 secret that apikeys and access tokens must be signed with; empty runs the node open (dev only)")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	fs.IntVar(&c.MaxConnections, "max-connections", c.MaxConnections, "max client connections on this node (0 = off)")
	fs.Float64Var(&c.AddressShare, "address-share", c.AddressShare, "share of --max-connections (and of --webtransport-max-handshakes) one client address, IPv4 or IPv6 /64, may hold; past it its new connections are refused (0 or 1 = no per-address bound)")
	fs.IntVar(&c.MaxHandshakes, "webtransport-max-handshakes", c.MaxHandshakes, "QUIC handshakes in progress on the WebTransport port; past half of it clients must validate their address (QUIC Retry), past it they are refused; a connection counts against --max-connections once its handshake completes (0 = off)")
	fs.IntVar(&c.WebTransportWindow, "webtransport-receive-window", c.WebTransportWindow, "most bytes a WebTransport client may have sent that the node has not read, per connection and per stream; streams start at 64 KiB and grow only as the node reads (0 = quic-go's 15 MiB / 6 MiB)")
	fs.IntVar(&c.MaxFrameBytes, "max-frame-bytes", c.MaxFrameBytes, "max bytes of one WebSocket message or REST body (0 = off)")
	fs.IntVar(&c.MaxPayloadBytes, "max-payload-bytes", c.MaxPayloadBytes, "max bytes of one broadcast payload (0 = off)")
	fs.IntVar(&c.MaxTopicBytes, "max-topic-bytes", c.MaxTopicBytes, "max bytes of a topic, \"realtime:\" included; realtime-js's binary frames carry at most 255 (0 = off)")
	fs.IntVar(&c.MaxChannelsPerConn, "max-channels-per-conn", c.MaxChannelsPerConn, "max joined channels per connection (0 = off)")
	fs.Float64Var(&c.JoinsPerSecond, "joins-per-sec", c.JoinsPerSecond, "max channel joins per second per connection; exceeding closes the socket (0 = off)")
	fs.Float64Var(&c.EventsPerSecond, "events-per-sec", c.EventsPerSecond, "max broadcast+presence pushes per second per connection; exceeding closes the channel (0 = off)")
	fs.Float64Var(&c.BytesPerSecond, "bytes-per-sec", c.BytesPerSecond, "max bytes per second of a connection's broadcast+presence pushes, burst one second but at least one largest message; exceeding closes the channel (0 = off)")
	fs.IntVar(&c.MaxBatchMessages, "max-batch-messages", c.MaxBatchMessages, "max messages in one REST /api/broadcast batch (0 = off)")
	fs.Float64Var(&c.RESTEventsPerSecond, "rest-events-per-sec", c.RESTEventsPerSecond, "max messages per second REST requests from one client address publish; over it a request gets 429 (0 = off)")
	fs.IntVar(&c.QueueBytes, "queue-bytes", c.QueueBytes, "outbound queue bound per connection; a client that falls this far behind is closed as a slow consumer; never below --bytes-per-sec's burst + --max-frame-bytes (0 = off)")
	fs.IntVar(&c.MaxPresenceBytes, "max-presence-bytes", c.MaxPresenceBytes, "max bytes of one presence track payload (0 = off)")
	fs.IntVar(&c.MaxPresenceBytesPerConn, "max-presence-bytes-per-conn", c.MaxPresenceBytesPerConn, "max bytes of the presence payloads one connection tracks over all its channels (0 = off)")
	fs.IntVar(&c.MaxPresenceKeys, "max-presence-keys", c.MaxPresenceKeys, "max presence entries in one channel, one per tracking join (0 = off)")
	fs.Float64Var(&c.PresenceEventsPerSecond, "presence-events-per-sec", c.PresenceEventsPerSecond, "max presence track/untrack events per second on one channel topic on this node; exceeding closes the channel that sent it (0 = off)")
	fs.DurationVar(&c.RecoveryWindow, "recovery-window", c.RecoveryWindow, "how long each node keeps the broadcasts it originates and receives, so that a client rejoining within it gets what it missed (0 = recovery off: no positions, no history)")
	fs.IntVar(&c.RecoveryBytes, "recovery-bytes", c.RecoveryBytes, "max bytes of broadcast history on this node over all topics; the oldest message goes first, and a recovery that needs it fails explicitly (0 = only the window bounds it)")
	fs.DurationVar(&c.IdleTimeout, "idle-timeout", c.IdleTimeout, "close sockets that send nothing (not even heartbeats) for this long (0 = off)")
	fs.DurationVar(&c.WriteTimeout, "write-timeout", c.WriteTimeout, "max time of one write to a client (0 = off)")
	fs.DurationVar(&c.MessageTimeout, "message-timeout", c.MessageTimeout, "max time a client message may take to arrive once begun, fragments included (0 = off)")
	fs.DurationVar(&c.HTTPReadHeaderTimeout, "http-read-header-timeout", c.HTTPReadHeaderTimeout, "max time to read an HTTP request's headers")
	fs.DurationVar(&c.HTTPReadTimeout, "http-read-timeout", c.HTTPReadTimeout, "max time to read a whole HTTP request, body included; not WebSockets once upgraded")
	fs.DurationVar(&c.HTTPWriteTimeout, "http-write-timeout", c.HTTPWriteTimeout, "max time to write an HTTP response; not WebSockets once upgraded")
	fs.DurationVar(&c.HTTPIdleTimeout, "http-idle-timeout", c.HTTPIdleTimeout, "close keep-alive HTTP connections idle this long")
	fs.DurationVar(&c.JWTLeeway, "jwt-leeway", c.JWTLeeway, "clock skew allowed for a JWT's nbf and iat (tokens not valid yet, or issued in the future, are refused beyond it)")
	fs.DurationVar(&c.WriteCoalesce, "write-coalesce", c.WriteCoalesce, "shortest time between two writes to one client: frames for a client written to less than this ago wait at most this long and share one write (0 = write every frame at once)")
	fs.IntVar(&c.ReadWorkers, "read-workers", c.ReadWorkers, "goroutines that read the WebSockets the poller reports readable (Linux's epoll; an idle WebSocket then holds no goroutine): 0 = one per CPU, at least 2; -1 = no poller, a reader goroutine per WebSocket")
	fs.DurationVar(&c.WebTransportCoalesce, "webtransport-write-coalesce", c.WebTransportCoalesce, "--write-coalesce for WebTransport sessions, whose writes cost a QUIC packet each (0 = --write-coalesce applies)")
	fs.StringVar(&o.pprofAddr, "pprof-addr", "", "serve net/http/pprof on this `host:port` (off when empty; keep it private)")
	fs.DurationVar(&o.shutdown, "shutdown-timeout", 10*time.Second, "how long a graceful shutdown waits for clients to leave")

	fs.StringVar(&o.region, "region", region, "region of this node; $FLY_REGION on fly.io")
	fs.StringVar(&o.gossipAddr, "gossip-addr", "", "cluster: memberlist gossip address `host:port` (TCP+UDP); setting it (or --join) makes this node a cluster member")
	fs.StringVar(&o.gossipAdv, "gossip-advertise", "", "cluster: gossip address other nodes reach")
	fs.StringVar(&o.meshAddr, "mesh-addr", "", "cluster: QUIC mesh address `host:port` (UDP)")
	fs.StringVar(&o.meshAdv, "mesh-advertise", "", "cluster: mesh address other nodes reach")
	fs.StringVar(&o.join, "join", "", "cluster: comma-separated seeds `host:port,...`; a DNS name means every A/AAAA record of it (e.g. myapp.internal:7946 on fly.io)")
	fs.StringVar(&o.clusterSecret, "cluster-secret", "", "cluster: shared secret; encrypts gossip and authenticates mesh peers (required in a cluster)")
	fs.StringVar(&o.strategy, "mesh-strategy", "interested", "cluster: broadcast routing: interested (once per node with subscribers), all (every node), relay (once per remote region)")
	fs.BoolVar(&o.regionRelay, "region-relay", false, "cluster: send a broadcast once per remote region to a relay node there (same as --mesh-strategy relay)")
	fs.StringVar(&o.gossipProfile, "gossip-profile", "lan", "cluster: memberlist timings: lan or wan")
	fs.DurationVar(&o.probeInterval, "gossip-probe-interval", 0, "cluster: failure-detector probe interval (0: 125ms with --gossip-profile lan, 5s with wan)")
	fs.DurationVar(&o.probeTimeout, "gossip-probe-timeout", 0, "cluster: how long a direct probe waits before other nodes are asked to probe too; must exceed the round trip to every member (0: half the probe interval with lan, 3s with wan)")
	fs.IntVar(&o.suspicionMult, "gossip-suspicion-mult", 0, "cluster: probe intervals a suspected node has to refute before it is declared dead (0: with lan enough for 1.375s, at least 3: 11 at 125ms; 6 with wan); with the lan defaults a crashed node's presence leaves reach the other nodes' clients within 2s")
	fs.IntVar(&o.gossipPending, "gossip-max-pending-streams", gossipnet.DefaultMaxPendingStreams, "cluster: inbound gossip streams checked at once before they prove the cluster key; past it the oldest of the address with the most is dropped")
	fs.IntVar(&o.gossipStreamBytes, "gossip-max-stream-bytes", gossipnet.DefaultMaxStreamBytes, "cluster: largest first message an inbound gossip stream may announce (memberlist push/pull state, ~300 bytes per member)")
	fs.DurationVar(&o.gossipStreamTimeout, "gossip-stream-timeout", gossipnet.DefaultStreamTimeout, "cluster: time an inbound gossip stream has to deliver its first message, sealed with the cluster key")
	fs.IntVar(&o.meshHandshakes, "mesh-max-handshakes", mesh.DefaultMaxHandshakes, "cluster: inbound mesh connections whose peer has not authenticated yet; past half of it new ones must validate their address (QUIC Retry), past it they are refused")
	fs.StringVar(&o.databaseURL, "database-url", "", "Postgres changes: `postgres://user:pass@host:port/db` to stream changes from (logical replication; see README); empty: no postgres_changes")
	fs.StringVar(&o.publication, "publication", wal.DefaultPublication, "Postgres changes: publication whose tables are streamed (created FOR ALL TABLES when missing)")
	fs.StringVar(&o.slot, "replication-slot", wal.DefaultSlot, "Postgres changes: permanent logical replication slot (created when missing)")
	fs.Int64Var(&o.maxSlotLag, "max-slot-lag", wal.DefaultMaxSlotLag, "Postgres changes: bytes of WAL the slot may hold back for unacknowledged changes before they are confirmed anyway (logged); -1: no bound")
	fs.Int64Var(&o.txMemory, "wal-tx-memory", wal.DefaultTxMemory, "Postgres changes: bytes of decoded changes the reading node holds in memory for transactions not yet routed; a transaction's changes past it wait in a temporary file in --wal-spill-dir, and the reader pauses while half of it is taken; -1: no bound")
	fs.IntVar(&o.regexBytes, "max-regex-value-bytes", wal.DefaultRegexValueBytes, "Postgres changes: bytes of a value a match or imatch filter scans; a longer value does not match it (meshcast_wal_regex_skipped_total); -1: no bound")
	fs.StringVar(&o.spillDir, "wal-spill-dir", "", "Postgres changes: directory of the temporary files of transactions larger than --wal-tx-memory (unlinked at once, gone with the process; default $TMPDIR or /tmp)")
	fs.StringVar(&o.databaseRegion, "database-region", "", "Postgres changes: comma-separated regions preferred for the node that reads the WAL, in order; give every node the same list")
	fs.DurationVar(&o.catalogPoll, "catalog-poll", time.Second, "Postgres changes: how often each node polls the catalog for what no event trigger reports (role membership, BYPASSRLS), and for every grant, policy, publication and column change when the database user cannot create the event trigger (not a superuser; see README)")
	fs.IntVar(&c.MaxBindingsPerJoin, "max-bindings-per-join", c.MaxBindingsPerJoin, "Postgres changes: max postgres_changes bindings in one channel join (0 = off)")
	fs.IntVar(&c.MaxBindingsPerConn, "max-bindings-per-conn", c.MaxBindingsPerConn, "Postgres changes: max postgres_changes bindings of one connection's channels together (0 = off)")
	fs.IntVar(&c.MaxFilterBytes, "max-filter-bytes", c.MaxFilterBytes, "Postgres changes: max bytes of one binding's filter, and of its select's column names together (0 = off)")
	fs.IntVar(&c.MaxPatternBytes, "max-pattern-bytes", c.MaxPatternBytes, "Postgres changes: max bytes of a like, ilike, match or imatch filter value (0 = off)")
	fs.IntVar(&c.MaxRegexInsts, "max-regex-insts", c.MaxRegexInsts, "Postgres changes: max RE2 instructions a match or imatch pattern compiles to, x{n} counting n times (0 = off)")
	fs.BoolVar(&o.demoTodos, "demo-todos", false, "Postgres changes: for make run-pg's demo only: serve /demo/todos, which lists and writes rows of table todos of --database-url without auth, for the demo page's table panel; with --jwt-secret also /demo/todos/token (a token for any name) and /demo/todos/members (room membership) for its private room")
	fs.BoolVar(&o.schema.manage, "manage-realtime-schema", true, "realtime schema: with --database-url, create Supabase's realtime schema (realtime.messages, realtime.send, …) where missing and keep its daily partitions; false: touch nothing (apply the SQL of meshcast "+schemaSQLCommand+" instead; see README)")
	o.schema.register(fs)
	o.policy.register(fs)
	o.dbcast.register(fs)
	fs.StringVar(&o.emulateWAN, "emulate-wan", "", "benchmarks only: emulate a WAN between regions: a JSON `file` (or inline JSON) mapping every node's gossip and mesh address to its region, with the RTT matrix; mesh and gossip traffic to other regions is delayed by RTT/2 (see mesh/wanemu; meshbench local writes it)")
	for name, v := range flyDefaults(os.Getenv) {
		if f := fs.Lookup(name); f != nil {
			f.Value.Set(v)
			f.DefValue = v
		}
	}
	fromEnv, err := applyEnv(fs, os.LookupEnv)
	if err != nil {
		return nil, flagError{err}
	}
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		printUsage(help, fs, o.helpDefaults())
		return nil, err
	} else if err != nil {
		return nil, flagError{explainParseError(fs, err)}
	}
	if fs.NArg() > 0 {
		return nil, flagError{fmt.Errorf("unexpected arguments: %v", fs.Args())}
	}
	if o.version {
		return o, nil
	}
	listenGiven := fromEnv["listen"]
	fs.Visit(func(f *flag.Flag) { listenGiven = listenGiven || f.Name == "listen" })
	if o.jwtSecret == "" && !listenGiven {
		o.listen, o.loopbackOnly = openListen, true
	}
	c.JWTSecret = []byte(o.jwtSecret)
	for _, s := range strings.Split(o.origins, ",") {
		if s = strings.TrimSpace(s); s != "" {
			c.AllowedOrigins = append(c.AllowedOrigins, s)
		}
	}
	if (o.tlsCert == "") != (o.tlsKey == "") {
		return nil, errors.New("--tls-cert and --tls-key go together")
	}
	if o.tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(o.tlsCert, o.tlsKey)
		if err != nil {
			return nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
		}
		c.WebTransportCert = &cert
	}
	if o.demoTodos && o.databaseURL == "" {
		return nil, errors.New("--demo-todos is for make run-pg's demo node: it needs --database-url")
	}
	if err := o.schema.check(); err != nil {
		return nil, err
	}
	if err := o.dbcast.check(); err != nil {
		return nil, err
	}
	if err := o.policy.check(); err != nil {
		return nil, err
	}
	if o.clustered() && o.clusterSecret == "" {
		return nil, errors.New("--cluster-secret is required for a cluster node")
	}
	if o.clustered() && o.gossipAddr == "" {
		o.gossipAddr = ":7946"
	}
	return o, nil
}

func newLogger(o *options, w io.Writer) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(o.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	ho := &slog.HandlerOptions{Level: lvl}
	switch o.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(w, ho)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, ho)), nil
	}
	return nil, fmt.Errorf("--log-format must be text or json, not %q", o.logFormat)
}

func run(args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stdout)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	if o.version {
		fmt.Fprintln(stdout, versionLine())
		return nil
	}
	log, err := newLogger(o, stderr)
	if err != nil {
		return err
	}
	if limit := flyMemoryLimit(os.Getenv); limit > 0 {
		log.Info("memory limit from FLY_VM_MEMORY_MB", "bytes", limit)
	}
	o.edge.Logger = log
	o.edge.Version = buildVersion()
	if o.demoTodos {
		demo, err := newDemoTable(o.databaseURL, o.jwtSecret, log)
		if err != nil {
			return fmt.Errorf("--demo-todos: %w", err)
		}
		defer demo.close()
		o.edge.DemoTable = demo
	}
	var node *mesh.Node
	name := o.edge.NodeID
	if o.clustered() {
		o.edge.NodeID = mesh.NewID(name)
	}
	policy, err := newChannelPolicy(o, log)
	if err != nil {
		return err
	}
	if policy != nil {
		defer policy.close() // after the server's shutdown
		o.edge.ChannelPolicy = policy
	}
	srv, err := edge.New(o.edge)
	if err != nil {
		return err
	}
	if policy != nil {
		srv.AddMetrics(policy.set)
	}
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return err
	}
	defer ln.Close()
	if o.databaseURL != "" {
		schema, err := newSchemaKeeper(o, srv, log)
		if err != nil {
			return err
		}
		defer schema.close()
	}
	var changes *changeStream
	if o.databaseURL != "" {
		if changes, err = newChangeStream(o, srv, log); err != nil {
			return err
		}
		defer changes.close()
	}
	var udp net.PacketConn
	if o.wtListen != "off" {
		addr := o.wtListen
		if addr == "" {
			// The --listen host and the port TCP got (the same number when
			// --listen names one), over UDP.
			host, _, _ := net.SplitHostPort(o.listen)
			_, port, _ := net.SplitHostPort(ln.Addr().String())
			addr = net.JoinHostPort(host, port)
		}
		if udp, err = net.ListenPacket("udp", addr); err != nil {
			return fmt.Errorf("--webtransport-listen %s: %w (set --webtransport-listen off to run without WebTransport)", addr, err)
		}
		defer udp.Close()
	}
	defer o.wan.close() // after node.Close
	if o.clustered() {
		if node, err = startNode(o, name, srv, ln.Addr().String(), log, changes); err != nil {
			return err
		}
		defer node.Close()
	}
	if changes != nil {
		changes.start()
	}
	logServing(log, o, srv.Open(), ln.Addr().String())

	if o.pprofAddr != "" {
		pln, err := net.Listen("tcp", o.pprofAddr)
		if err != nil {
			return fmt.Errorf("--pprof-addr: %w", err)
		}
		defer pln.Close()
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		go http.Serve(pln, mux) // ends when pln closes
		log.Info("pprof serving", "addr", pln.Addr().String())
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	var wtc chan error // nil, so never ready, without WebTransport
	if udp != nil {
		wtc = make(chan error, 1)
		go func() { wtc <- srv.ServeWebTransport(udp) }()
	}
	select {
	case err := <-errc:
		return err
	case err := <-wtc:
		return fmt.Errorf("webtransport: %w", err)
	case <-ctx.Done():
	}
	stop()
	log.Info("shutting down", "timeout", o.shutdown)
	sctx, cancel := context.WithTimeout(context.Background(), o.shutdown)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Warn("shutdown", "err", err)
	}
	if changes != nil {
		changes.handOver()
	}
	if node != nil {
		node.Leave(5 * time.Second)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	if wtc != nil {
		if err := <-wtc; err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("webtransport: %w", err)
		}
	}
	log.Info("stopped")
	return nil
}

// logServing says the node is up, and what an open node lets anyone do
// and whom it serves.
func logServing(log *slog.Logger, o *options, open bool, addr string) {
	if open {
		log.Warn("running open: no --jwt-secret, so every apikey and token is accepted and private channels are not protected; set --jwt-secret in production")
	}
	if o.loopbackOnly {
		log.Warn("open mode serves this machine only: listening on loopback; set --jwt-secret, or an explicit --listen such as " + defaultListen + " to serve other hosts open")
	}
	log.Info("meshcast serving", "version", o.edge.Version, "addr", addr, "node", o.edge.NodeID, "demo", "http://"+addr+"/")
}

// startNode joins the cluster with the cluster flags.
func startNode(o *options, name string, srv *edge.Server, clientAddr string, log *slog.Logger, changes *changeStream) (*mesh.Node, error) {
	strategy, err := mesh.ParseStrategy(o.strategy)
	if err != nil {
		return nil, err
	}
	if o.regionRelay {
		strategy = mesh.RegionRelay
	}
	meshAddr := o.meshAddr
	if meshAddr == "" {
		host, port, err := net.SplitHostPort(o.gossipAddr)
		if err != nil {
			return nil, fmt.Errorf("--gossip-addr: %w", err)
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return nil, fmt.Errorf("--gossip-addr port: %w", err)
		}
		meshAddr = net.JoinHostPort(host, strconv.Itoa(p+1))
	}
	var seeds []string
	for _, s := range strings.Split(o.join, ",") {
		if s = strings.TrimSpace(s); s != "" {
			seeds = append(seeds, s)
		}
	}
	mcfg := mesh.Config{
		Name:            name,
		ID:              o.edge.NodeID,
		Region:          o.region,
		GossipAddr:      o.gossipAddr,
		GossipAdvertise: o.gossipAdv,
		MeshAddr:        meshAddr,
		MeshAdvertise:   o.meshAdv,
		ClientAddr:      clientAddr,
		Join:            seeds,
		ClusterSecret:   []byte(o.clusterSecret),
		Strategy:        strategy,
		Gossip:          mesh.GossipConfig{Profile: o.gossipProfile, ProbeInterval: o.probeInterval, ProbeTimeout: o.probeTimeout, SuspicionMult: o.suspicionMult},
		MaxHandshakes:   o.meshHandshakes,
		Database:        changes.database(),
		Logger:          log,
	}
	mcfg.Gossip.MaxPendingStreams, mcfg.Gossip.MaxStreamBytes, mcfg.Gossip.StreamTimeout = o.gossipPending, o.gossipStreamBytes, o.gossipStreamTimeout
	if o.wan, err = emulateWAN(o, &mcfg, srv, log); err != nil {
		return nil, err
	}
	node, err := mesh.New(mcfg, srv)
	if err != nil {
		return nil, err
	}
	if err := srv.SetCluster(node); err != nil {
		return nil, err
	}
	if changes != nil {
		changes.attach(node)
	}
	if err := node.Start(); err != nil {
		return nil, err
	}
	return node, nil
}
