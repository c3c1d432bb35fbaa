package bench

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Shape is what the subscribers of a WAL run bind to, and so which rows each
// one must receive.
type Shape string

// Shapes of a WAL run.
const (
	// ShapeFanout: every subscriber binds INSERT on the table and gets
	// every row.
	ShapeFanout Shape = "fanout"
	// ShapeFiltered: subscriber i binds UPDATE with filter id=eq.<k>, k
	// = i mod Keys + 1; the writer updates rows 1..Keys in turn, so each
	// change reaches the subscribers of one key.
	ShapeFiltered Shape = "filtered"
	// ShapeRLS: subscribers are distinct users (JWT sub) in Teams teams;
	// a row level security policy lets a user see the rows of its team,
	// 1/Teams of the table. Needs JWTSecret.
	ShapeRLS Shape = "rls"
)

// WALConfig describes one run of the Postgres changes benchmark (meshbench
// wal). Zero fields take the defaults noted.
type WALConfig struct {
	Shape Shape  // default ShapeFanout
	Label string // names the run in results

	// Where. With URL empty the run starts its own Postgres and cluster
	// (Cluster); otherwise URL lists the nodes' WebSocket URLs and
	// DatabaseURL the database they stream.
	URL         string // comma-separated WebSocket URLs; subscribers round-robin over them
	DatabaseURL string // the writer's database (needs CREATE, and to set up RLS, superuser)
	Slot        string // the nodes' replication slot, for the lag reading; default "meshcast"
	Publication string // the nodes' publication; default "supabase_realtime"
	JWTSecret   string // the nodes' --jwt-secret: sockets and joins carry tokens signed with it
	PostgresPID int    // the postmaster, for Postgres's CPU (0: unknown; set when the run starts it)
	Cluster     ClusterConfig

	Subs        int           // subscriber connections; default 1000
	Topics      int           // distinct channel topics the subscribers spread over; default 1
	Keys        int           // filtered: distinct keys (rows); default Subs
	Teams       int           // rls: teams; default 5
	Rate        float64       // rows committed per second; 0 = as fast as Window allows
	Window      int           // rows committed and not yet received by all their subscribers; default 64, <0 = unbounded
	Writers     int           // writer connections (transactions in flight); default 4
	RowsPerTx   int           // rows per transaction; default 1
	Pad         int           // bytes of the pad column; default 64
	Duration    time.Duration // measured writing; default 10s
	Warmup      time.Duration // writing before measuring; default 2s
	Drain       time.Duration // max wait for outstanding deliveries; default 10s
	ConnectRate float64       // subscriber connections per second; default 1000
	// SkipSetup leaves the schema alone (it must exist as a previous run
	// made it); otherwise the run (re)creates WALTable and what the shape
	// needs.
	SkipSetup bool

	// HandshakeTimeout bounds dial + join of one subscriber, including the
	// wait for "Subscribed to PostgreSQL"; default 15s.
	HandshakeTimeout time.Duration

	Logf func(format string, args ...any)
}

// Limits of a WAL run.
const (
	maxWALSubs    = 60000
	maxWALKeys    = 1 << 20
	maxWALWriters = 64
	maxRowsPerTx  = 10000
	maxWALPad     = 1 << 20
)

func (cfg WALConfig) withDefaults() (WALConfig, error) {
	if cfg.Shape == "" {
		cfg.Shape = ShapeFanout
	}
	if cfg.Slot == "" {
		cfg.Slot = "meshcast"
	}
	if cfg.Publication == "" {
		cfg.Publication = "supabase_realtime"
	}
	if cfg.Subs == 0 {
		cfg.Subs = 1000
	}
	if cfg.Topics == 0 {
		cfg.Topics = 1
	}
	if cfg.Keys == 0 {
		cfg.Keys = cfg.Subs
	}
	if cfg.Teams == 0 {
		cfg.Teams = 5
	}
	if cfg.Window == 0 {
		cfg.Window = 64
	}
	if cfg.Writers == 0 {
		cfg.Writers = 4
	}
	if cfg.RowsPerTx == 0 {
		cfg.RowsPerTx = 1
	}
	if cfg.Pad == 0 {
		cfg.Pad = 64
	}
	if cfg.Duration == 0 {
		cfg.Duration = 10 * time.Second
	}
	if cfg.Drain == 0 {
		cfg.Drain = 10 * time.Second
	}
	if cfg.ConnectRate == 0 {
		cfg.ConnectRate = 1000
	}
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = 15 * time.Second
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	var errs []error
	switch cfg.Shape {
	case ShapeFanout, ShapeFiltered:
	case ShapeRLS:
		if cfg.JWTSecret == "" {
			errs = append(errs, errors.New("the rls shape needs a JWT secret (the nodes' --jwt-secret)"))
		}
	default:
		errs = append(errs, fmt.Errorf("unknown shape %q (fanout, filtered or rls)", cfg.Shape))
	}
	if cfg.URL != "" && cfg.DatabaseURL == "" {
		errs = append(errs, errors.New("with node URLs, the database URL is needed too"))
	}
	if cfg.URL == "" && cfg.DatabaseURL != "" {
		errs = append(errs, errors.New("with a database URL, the nodes' URLs are needed too (or neither: the run starts its own)"))
	}
	for _, u := range cfg.urls() {
		if p, err := url.Parse(u); err != nil || (p.Scheme != "ws" && p.Scheme != "wss") {
			errs = append(errs, fmt.Errorf("bad node URL %q", u))
		}
	}
	if cfg.Subs < 1 || cfg.Subs > maxWALSubs {
		errs = append(errs, fmt.Errorf("subs %d outside [1, %d]", cfg.Subs, maxWALSubs))
	}
	if cfg.Topics < 1 || cfg.Topics > cfg.Subs {
		errs = append(errs, errors.New("topics must be within [1, subs]"))
	}
	if cfg.Keys < 1 || cfg.Keys > maxWALKeys {
		errs = append(errs, fmt.Errorf("keys outside [1, %d]", maxWALKeys))
	}
	if cfg.Teams < 1 || cfg.Teams > cfg.Subs {
		errs = append(errs, errors.New("teams must be within [1, subs]"))
	}
	if cfg.Writers < 1 || cfg.Writers > maxWALWriters {
		errs = append(errs, fmt.Errorf("writers outside [1, %d]", maxWALWriters))
	}
	if cfg.RowsPerTx < 1 || cfg.RowsPerTx > maxRowsPerTx {
		errs = append(errs, fmt.Errorf("rows per transaction outside [1, %d]", maxRowsPerTx))
	}
	if cfg.Shape == ShapeFiltered && cfg.Writers*cfg.RowsPerTx > cfg.Keys {
		errs = append(errs, errors.New("filtered: writers × rows per transaction must not exceed keys (concurrent updates of one row)"))
	}
	if cfg.Pad < 0 || cfg.Pad > maxWALPad {
		errs = append(errs, fmt.Errorf("pad outside [0, %d]", maxWALPad))
	}
	if cfg.Rate < 0 {
		errs = append(errs, errors.New("rate must be >= 0"))
	}
	if cfg.Duration < 0 || cfg.Duration > maxDuration || cfg.Warmup < 0 || cfg.Warmup > maxDuration {
		errs = append(errs, errors.New("duration and warmup must be within [0, 1h]"))
	}
	if cfg.Drain < 0 || cfg.Drain > time.Minute {
		errs = append(errs, errors.New("drain must be within [0, 1m]"))
	}
	if cfg.ConnectRate <= 0 || cfg.ConnectRate > maxConnectRate {
		errs = append(errs, fmt.Errorf("connect rate must be within (0, %d]", maxConnectRate))
	}
	if !plainJSONString(cfg.Slot) {
		errs = append(errs, errors.New("bad slot name"))
	}
	if cfg.URL == "" {
		c, err := cfg.Cluster.withDefaults()
		if err != nil {
			errs = append(errs, err)
		}
		cfg.Cluster = c
	}
	if err := errors.Join(errs...); err != nil {
		return cfg, fmt.Errorf("bench: invalid wal config: %w", err)
	}
	return cfg, nil
}

// Budget bounds how long RunWAL takes with this config, for a context
// deadline.
func (cfg WALConfig) Budget() time.Duration {
	c, err := cfg.withDefaults()
	if err != nil {
		return time.Minute
	}
	connect := time.Duration(float64(c.Subs)/c.ConnectRate*float64(time.Second)) + 2*c.HandshakeTimeout
	start := time.Duration(0)
	if c.URL == "" {
		start = 2*clusterStartTimeout + postgresStartTimeout + 30*time.Second // start and stop
	}
	return start + connect + c.Warmup + c.Duration + c.Drain + time.Minute
}

func (cfg *WALConfig) urls() []string {
	if cfg.URL == "" {
		return nil
	}
	var out []string
	for _, u := range strings.Split(cfg.URL, ",") {
		if u = strings.TrimSpace(u); u != "" {
			out = append(out, u)
		}
	}
	return out
}
