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
	"github.com/meshcast/meshcast/internal/flagx"
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

	// cluster: the mesh flags; Name, ID, ClientAddr and Database are
	// set when the node is made (newCluster).
	mesh mesh.Config

	// Postgres changes
	databaseURL string
	// reader is the WAL reader's flags; newChangeStream completes it.
	reader         *wal.Reader
	regexBytes     int
	historyBytes   int // the owner's history of the recovery window
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
func (o *options) clustered() bool { return o.mesh.GossipAddr != "" || len(o.mesh.Join) > 0 }

// parseFlags reads the flags from args and the environment. --help is
// written to help, and returns flag.ErrHelp.
func parseFlags(args []string, help io.Writer) (*options, error) {
	o := newOptions()
	fs := flag.NewFlagSet("meshcast", flag.ContinueOnError)
	// Errors are returned, and help printed below: a mistyped flag gets
	// one line, not the whole help.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	o.flags = fs
	o.register(fs)
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
	if err := o.complete(listenGiven); err != nil {
		return nil, err
	}
	return o, nil
}

// newOptions returns the options before the flags: the packages' defaults,
// and the node's name and region from the host (or fly.io).
func newOptions() *options {
	o := &options{edge: edge.DefaultConfig(), mesh: mesh.Config{
		Gossip: mesh.GossipConfig{Profile: "lan", MaxPendingStreams: gossipnet.DefaultMaxPendingStreams,
			MaxStreamBytes: gossipnet.DefaultMaxStreamBytes, StreamTimeout: gossipnet.DefaultStreamTimeout},
		MaxHandshakes: mesh.DefaultMaxHandshakes,
	}, reader: &wal.Reader{Publication: wal.DefaultPublication, Slot: wal.DefaultSlot,
		MaxSlotLag: wal.DefaultMaxSlotLag, TxMemory: wal.DefaultTxMemory},
		regexBytes: wal.DefaultRegexValueBytes, historyBytes: wal.DefaultHistoryBytes}
	host, _ := os.Hostname()
	if id := os.Getenv("FLY_MACHINE_ID"); id != "" {
		host = id
	}
	if host == "" {
		host = "meshcast"
	}
	o.edge.NodeID = host
	o.mesh.Region = os.Getenv("FLY_REGION")
	if o.mesh.Region == "" {
		o.mesh.Region = "local"
	}
	return o
}

// register registers the flags: the command's own, and each package's
// (edge, mesh, wal) with their defaults.
func (o *options) register(fs *flag.FlagSet) {
	// A usage string says what 0 or empty means, but not the default:
	// the help adds it (help.go).
	fs.BoolVar(&o.version, "version", false, "print the version and exit")
	fs.StringVar(&o.listen, "listen", defaultListen, "HTTP/WebSocket listen address `host:port`")
	fs.StringVar(&o.wtListen, "webtransport-listen", "", "WebTransport (HTTP/3, UDP) listen address `host:port`, or off")
	o.edge.RegisterFlags(fs)
	fs.StringVar(&o.origins, "allowed-origins", "", "comma-separated origins whose pages may connect, over WebSocket or WebTransport (https://app.example.com, https://*.example.com, *); requests without Origin (not browsers) always may; empty allows any")
	fs.StringVar(&o.tlsCert, "tls-cert", "", "PEM certificate chain `file` for WebTransport (with --tls-key); without, the node generates and rotates self-signed certificates and publishes their hashes")
	fs.StringVar(&o.tlsKey, "tls-key", "", "PEM private key `file` of --tls-cert")
	fs.StringVar(&o.edge.NodeID, "name", o.edge.NodeID, "node name (appears in logs and presence entries); $FLY_MACHINE_ID on fly.io, else the host name")
	fs.StringVar(&o.jwtSecret, "jwt-secret", "", "HS256/384/512 secret that apikeys and access tokens must be signed with; empty runs the node open (dev only)")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&o.pprofAddr, "pprof-addr", "", "serve net/http/pprof on this `host:port` (off when empty; keep it private)")
	fs.DurationVar(&o.shutdown, "shutdown-timeout", 10*time.Second, "how long a graceful shutdown waits for clients to leave")

	o.mesh.RegisterFlags(fs)
	fs.StringVar(&o.databaseURL, "database-url", "", "Postgres changes: `postgres://user:pass@host:port/db` to stream changes from (logical replication; see README); empty: no postgres_changes")
	o.reader.RegisterFlags(fs)
	flagx.Limit(fs, &o.regexBytes, "max-regex-value-bytes", "Postgres changes: bytes of a value a match or imatch filter scans; a longer value does not match it (meshcast_wal_regex_skipped_total) (0 = off)")
	flagx.Limit(fs, &o.historyBytes, "changes-recovery-bytes", "Postgres changes: bytes of changes the WAL owner keeps for recovery within --recovery-window (oldest evicted first: recovery from before them fails explicitly) (0 = off: only the window bounds it)")
	fs.StringVar(&o.databaseRegion, "database-region", "", "Postgres changes: comma-separated regions preferred for the node that reads the WAL, in order; give every node the same list")
	fs.DurationVar(&o.catalogPoll, "catalog-poll", time.Second, "Postgres changes: how often each node polls the catalog for what no event trigger reports (role membership, BYPASSRLS), and for every grant, policy, publication and column change when the database user cannot create the event trigger (not a superuser; see README)")
	fs.BoolVar(&o.demoTodos, "demo-todos", false, "Postgres changes: for make run-pg's demo only: serve /demo/todos, which lists and writes rows of table todos of --database-url without auth, for the demo page's table panel; with --jwt-secret also /demo/todos/token (a token for any name) and /demo/todos/members (room membership) for its private room")
	fs.BoolVar(&o.schema.manage, "manage-realtime-schema", true, "realtime schema: with --database-url, create Supabase's realtime schema (realtime.messages, realtime.send, …) where missing and keep its daily partitions; false: touch nothing (apply the SQL of meshcast "+schemaSQLCommand+" instead; see README)")
	o.schema.register(fs)
	o.policy.register(fs)
	o.dbcast.register(fs)
	fs.StringVar(&o.emulateWAN, "emulate-wan", "", "benchmarks only: emulate a WAN between regions: a JSON `file` (or inline JSON) mapping every node's gossip and mesh address to its region, with the RTT matrix; mesh and gossip traffic to other regions is delayed by RTT/2 (see mesh/wanemu; meshbench local writes it)")
}

// complete derives what the flags imply and checks what they cannot
// check one by one; listenGiven reports whether --listen (or its variable)
// was set.
func (o *options) complete(listenGiven bool) error {
	c := &o.edge
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
		return errors.New("--tls-cert and --tls-key go together")
	}
	if o.tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(o.tlsCert, o.tlsKey)
		if err != nil {
			return fmt.Errorf("--tls-cert/--tls-key: %w", err)
		}
		c.WebTransportCert = &cert
	}
	if o.demoTodos && o.databaseURL == "" {
		return errors.New("--demo-todos is for make run-pg's demo node: it needs --database-url")
	}
	if err := o.schema.check(); err != nil {
		return err
	}
	if err := o.policy.check(); err != nil {
		return err
	}
	if err := o.dbcast.check(); err != nil {
		return err
	}
	if o.clustered() && len(o.mesh.ClusterSecret) == 0 {
		return errors.New("--cluster-secret is required for a cluster node")
	}
	if o.clustered() && o.mesh.GossipAddr == "" {
		o.mesh.GossipAddr = ":7946"
	}
	return nil
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
	return runNode(o, log)
}

// runNode runs the node of the flags: it makes the parts in the order
// they depend on each other (policy, listener, cluster, server, database,
// WebTransport), starts the cluster node, and serves until a signal.
func runNode(o *options, log *slog.Logger) error {
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
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return err
	}
	defer ln.Close()
	var cluster *meshCluster // nil on a single node
	if o.clustered() {
		defer func() { o.wan.close() }() // after the node's Close
		if cluster, err = newCluster(o, name, ln.Addr().String(), log); err != nil {
			return err
		}
	}
	srv, err := newServer(o, cluster, policy)
	if err != nil {
		return err
	}
	changes, closeDB, err := startDatabase(o, srv, log)
	if err != nil {
		return err
	}
	defer closeDB()
	udp, err := listenWebTransport(o, ln)
	if err != nil {
		return err
	}
	if udp != nil {
		defer udp.Close()
	}
	var node *mesh.Node
	if cluster != nil {
		node = cluster.node
		if changes != nil {
			changes.attach(node)
		}
		if err := node.Start(); err != nil {
			return err
		}
		defer node.Close()
	}
	if changes != nil {
		changes.start()
	}
	logServing(log, o, srv.Open(), ln.Addr().String())

	if o.pprofAddr != "" {
		pln, err := servePprof(o.pprofAddr, log)
		if err != nil {
			return err
		}
		defer pln.Close()
	}
	return serve(o, log, srv, ln, udp, changes, node)
}

// serve serves clients on ln (and WebTransport on udp, if set) until a
// signal, then drains: the server shuts down, the changes' reader is
// handed over, and the node leaves its cluster.
func serve(o *options, log *slog.Logger, srv *edge.Server, ln net.Listener, udp net.PacketConn, changes *changeStream, node *mesh.Node) error {
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

// startDatabase starts what --database-url asks for: the realtime
// schema's keeper and the changes' stream (nil without a database). close
// stops both, the stream first.
func startDatabase(o *options, srv *edge.Server, log *slog.Logger) (changes *changeStream, close func(), err error) {
	if o.databaseURL == "" {
		return nil, func() {}, nil
	}
	schema, err := newSchemaKeeper(o, srv, log)
	if err != nil {
		return nil, nil, err
	}
	if changes, err = newChangeStream(o, srv, log); err != nil {
		schema.close()
		return nil, nil, err
	}
	return changes, func() { changes.close(); schema.close() }, nil
}

// listenWebTransport opens the UDP socket of --webtransport-listen; nil
// when it is off.
func listenWebTransport(o *options, ln net.Listener) (net.PacketConn, error) {
	if o.wtListen == "off" {
		return nil, nil
	}
	addr := o.wtListen
	if addr == "" {
		// The --listen host and the port TCP got (the same number when
		// --listen names one), over UDP.
		host, _, _ := net.SplitHostPort(o.listen)
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		addr = net.JoinHostPort(host, port)
	}
	udp, err := net.ListenPacket("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("--webtransport-listen %s: %w (set --webtransport-listen off to run without WebTransport)", addr, err)
	}
	return udp, nil
}

// servePprof serves net/http/pprof on addr until the listener it returns
// is closed.
func servePprof(addr string, log *slog.Logger) (net.Listener, error) {
	pln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--pprof-addr: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	go http.Serve(pln, mux) // ends when pln closes
	log.Info("pprof serving", "addr", pln.Addr().String())
	return pln, nil
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

// newServer makes the edge server of the flags, with what the node has
// made before it: the cluster (nil on a single node) and the private
// channels' policy (nil without one).
func newServer(o *options, cluster *meshCluster, policy *dbPolicy) (*edge.Server, error) {
	var deps edge.Deps
	if cluster != nil {
		deps.Cluster = cluster
	}
	srv, err := edge.NewServer(o.edge, deps)
	if err != nil {
		return nil, err
	}
	if policy != nil {
		srv.AddMetrics(policy.set)
	}
	if cluster != nil {
		srv.AddMetrics(cluster.node)
	}
	if o.wan != nil {
		srv.AddMetrics(o.wan.e.Metrics())
	}
	return srv, nil
}

// newCluster makes this node's member of the cluster of the cluster
// flags; it joins when its node starts.
func newCluster(o *options, name, clientAddr string, log *slog.Logger) (*meshCluster, error) {
	mcfg := o.mesh
	mcfg.Name, mcfg.ID, mcfg.ClientAddr, mcfg.Logger = name, o.edge.NodeID, clientAddr, log
	if mcfg.MeshAddr == "" {
		host, port, err := net.SplitHostPort(mcfg.GossipAddr)
		if err != nil {
			return nil, fmt.Errorf("--gossip-addr: %w", err)
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return nil, fmt.Errorf("--gossip-addr port: %w", err)
		}
		mcfg.MeshAddr = net.JoinHostPort(host, strconv.Itoa(p+1))
	}
	if o.databaseURL != "" {
		// The database whose changes this node takes part in.
		db, err := databaseKey(o.databaseURL)
		if err != nil {
			return nil, err
		}
		mcfg.Database = db
	}
	var err error
	if o.wan, err = emulateWAN(o, &mcfg, log); err != nil {
		return nil, err
	}
	return newMeshCluster(mcfg)
}
