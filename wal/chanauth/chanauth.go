// Package chanauth decides Supabase private channels by the app's row
// level security policies on realtime.messages, checked exactly as
// Supabase Realtime checks them, so that an app's policies written for
// Supabase decide who may read and write its channels on meshcast too.
//
// A read check inserts one probe row per extension asked (broadcast,
// presence) as the URL's user, then, as the JWT's role with the JWT's
// settings (role, realtime.topic, request.jwt.claims,
// request.jwt.claim.sub, request.jwt.claim.role, request.headers), selects
// them: a probe the role can see is an extension it may read. A write
// check inserts one row per extension as that role: insufficient_privilege
// is an extension it may not write. Nothing is ever committed.
//
// A join storm must not become a query storm, so a Checker shares and
// batches: identical checks in flight (same operation, extensions, topic,
// role, sub, claims and headers) share one query, and the checks waiting
// while a round trip is out go together in the next one (a pipeline of
// one transaction, each check in a savepoint of its own, so that one
// failing policy fails only its check). A small pool (Config.Conns) runs
// the round trips.
package chanauth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Ext is a set of the extensions a check is about.
type Ext uint8

// The extensions, as realtime.messages.extension names them.
const (
	Broadcast Ext = 1 << iota
	Presence
)

var extNames = [...]struct {
	ext  Ext
	name string
}{{Broadcast, "broadcast"}, {Presence, "presence"}}

// Defaults of the Config fields.
const (
	DefaultConns    = 2
	DefaultMaxBatch = 64
	DefaultTimeout  = 5 * time.Second
)

var (
	// ErrUnavailable is a check the database did not answer: it could not
	// be reached, answered too late, or the Checker is closed.
	ErrUnavailable = errors.New("chanauth: database unavailable")
	// ErrMissingPartition is a check whose rows have no partition of
	// realtime.messages to go to (no partition for today).
	ErrMissingPartition = errors.New("chanauth: realtime.messages has no partition for today")
)

// Request is one check.
type Request struct {
	Write bool   // a write check; else a read check
	Ext   Ext    // the extensions asked about
	Topic string // the channel's name, without "realtime:"
	Role  string // the JWT's role, which the check runs as
	Sub   string // the JWT's sub
	// Claims and Headers are JSON objects: the JWT's claims
	// (request.jwt.claims) and request headers (request.headers).
	Claims, Headers string
}

func (r *Request) key() string {
	op := "r"
	if r.Write {
		op = "w"
	}
	return fmt.Sprintf("%s%d\x00%s\x00%s\x00%s\x00%s\x00%s", op, r.Ext, r.Topic, r.Role, r.Sub, r.Claims, r.Headers)
}

// Config configures a Checker.
type Config struct {
	// URL is the database. Its user must be able to insert into
	// realtime.messages past its policies (its owner, or BYPASSRLS) and to
	// SET ROLE to the roles of the JWTs (a member of them).
	URL string
	// Conns is the pool: round trips that run at once. If zero,
	// DefaultConns.
	Conns int
	// MaxBatch bounds the checks of one round trip. If zero,
	// DefaultMaxBatch.
	MaxBatch int
	// Timeout bounds a check, from its arrival to its answer (a round trip
	// that takes longer is cancelled). If zero, DefaultTimeout.
	Timeout time.Duration
	// Logger: if nil, slog.Default().
	Logger *slog.Logger
	// Metrics is where the counters go. If nil, a set of the Checker's own.
	Metrics *metrics.Set
}

// Checker runs checks against one database.
type Checker struct {
	cfg  Config
	pool *pgxpool.Pool
	log  *slog.Logger
	m    checkerMetrics

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
	work   chan struct{} // a kick: the queue has checks

	mu       sync.Mutex
	inflight map[string]*call // checks asked and not answered, by key
	queue    []*call          // checks not sent yet, oldest first
	closed   bool
}

// call is one check in flight, shared by everyone who asked it.
type call struct {
	req     Request
	key     string
	waiters int           // callers still waiting; 0: nobody wants it
	done    chan struct{} // closed once allowed and err are set
	allowed Ext
	err     error
}

type checkerMetrics struct {
	checks, shared, queries, roundTrips, errors, abandoned *metrics.Counter
	roundTrip                                              *metrics.Histogram
}

// New returns a Checker for cfg, with the defaults filled in. It connects
// on the first check.
func New(cfg Config) (*Checker, error) {
	if cfg.Conns <= 0 {
		cfg.Conns = DefaultConns
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = DefaultMaxBatch
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	pc, err := pgxpool.ParseConfig(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("chanauth: database URL: %w", err)
	}
	pc.MaxConns = int32(cfg.Conns)
	pc.MaxConnIdleTime = time.Minute
	// realtime.messages is partitioned by UTC day, filled by now().
	pc.ConnConfig.RuntimeParams["timezone"] = "UTC"
	pc.ConnConfig.RuntimeParams["plan_cache_mode"] = "force_generic_plan"
	pc.ConnConfig.RuntimeParams["application_name"] = "meshcast-chanauth"
	pool, err := pgxpool.NewWithConfig(context.Background(), pc)
	if err != nil {
		return nil, fmt.Errorf("chanauth: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	set := cfg.Metrics
	if set == nil {
		set = metrics.NewSet()
	}
	c := &Checker{cfg: cfg, pool: pool, log: log.With("component", "chanauth"),
		work: make(chan struct{}, cfg.Conns), inflight: map[string]*call{},
		m: checkerMetrics{
			checks:     set.GetOrCreateCounter("meshcast_channel_auth_db_checks_total"),
			shared:     set.GetOrCreateCounter("meshcast_channel_auth_db_shared_total"),
			queries:    set.GetOrCreateCounter("meshcast_channel_auth_db_queries_total"),
			roundTrips: set.GetOrCreateCounter("meshcast_channel_auth_db_round_trips_total"),
			errors:     set.GetOrCreateCounter("meshcast_channel_auth_db_errors_total"),
			abandoned:  set.GetOrCreateCounter("meshcast_channel_auth_db_abandoned_total"),
			roundTrip:  set.GetOrCreateHistogram("meshcast_channel_auth_db_round_trip_seconds"),
		}}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.wg.Add(cfg.Conns)
	for range cfg.Conns {
		go c.worker()
	}
	return c, nil
}

// Close stops the workers, fails the checks not answered yet with
// ErrUnavailable, and closes the pool.
func (c *Checker) Close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()
	c.mu.Lock()
	for _, k := range c.queue {
		c.finishLocked(k, 0, ErrUnavailable)
	}
	c.queue = nil
	c.mu.Unlock()
	c.pool.Close()
}

// Check answers which of req.Ext the role may read (or write) on
// req.Topic. An error is no answer: ErrUnavailable, ErrMissingPartition,
// or the error of the app's policy (its SQL failed).
func (c *Checker) Check(ctx context.Context, req Request) (Ext, error) {
	if req.Ext == 0 {
		return 0, nil
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	k := c.join(req)
	if k == nil {
		return 0, ErrUnavailable
	}
	select {
	case <-k.done:
		return k.allowed, k.err
	case <-ctx.Done():
		c.mu.Lock()
		k.waiters--
		c.mu.Unlock()
		return 0, fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
	}
}

// join finds the call of req in flight, or queues a new one; nil when
// the Checker is closed.
func (c *Checker) join(req Request) *call {
	key := req.key()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.m.checks.Inc()
	if k := c.inflight[key]; k != nil {
		k.waiters++
		c.m.shared.Inc()
		return k
	}
	k := &call{req: req, key: key, waiters: 1, done: make(chan struct{})}
	c.inflight[key] = k
	c.queue = append(c.queue, k)
	select {
	case c.work <- struct{}{}:
	default: // every worker has a kick waiting already
	}
	return k
}

// finishLocked answers a call. Called with c.mu held.
func (c *Checker) finishLocked(k *call, allowed Ext, err error) {
	k.allowed, k.err = allowed, err
	delete(c.inflight, k.key)
	close(k.done)
}

// worker runs round trips while there are checks, until Close.
func (c *Checker) worker() {
	defer c.wg.Done()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-c.work:
		}
		for batch := c.take(); len(batch) > 0; batch = c.take() {
			c.run(batch)
		}
	}
}

// take removes the next batch from the queue: up to MaxBatch checks that
// someone still waits for.
func (c *Checker) take() []*call {
	c.mu.Lock()
	defer c.mu.Unlock()
	var batch []*call
	n := 0
	for ; n < len(c.queue) && len(batch) < c.cfg.MaxBatch; n++ {
		k := c.queue[n]
		if k.waiters <= 0 {
			c.m.abandoned.Inc()
			c.finishLocked(k, 0, ErrUnavailable)
			continue
		}
		batch = append(batch, k)
	}
	c.queue = c.queue[n:]
	if len(c.queue) == 0 {
		c.queue = nil
	}
	return batch
}

// run sends one batch and answers its calls.
func (c *Checker) run(batch []*call) {
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.Timeout)
	defer cancel()
	start := time.Now()
	res, err := c.roundTrip(ctx, batch)
	c.m.roundTrips.Inc()
	c.m.queries.Add(len(batch))
	c.m.roundTrip.UpdateDuration(start)
	if err != nil {
		c.log.Warn("channel policy checks failed", "checks", len(batch), "err", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var refused *refusedError
	if err != nil && !errors.As(err, &refused) {
		err = fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	for i, k := range batch {
		if err != nil {
			c.m.errors.Inc()
			c.finishLocked(k, 0, err)
			continue
		}
		if res[i].err != nil {
			c.m.errors.Inc()
		}
		c.finishLocked(k, res[i].allowed, res[i].err)
	}
}
