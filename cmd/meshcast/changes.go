package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/meshcast/meshcast/edge"
	"github.com/meshcast/meshcast/mesh"
	"github.com/meshcast/meshcast/wal"
	"github.com/meshcast/meshcast/wal/dbcast"
)

// changeStream wires the Postgres changes of --database-url: the wal
// Service (registration, the owner's reader), the Authorizer (join checks,
// row-level security) and the edge.
type changeStream struct {
	cfg    wal.ServiceConfig // the Service's, but for its Bus
	srv    *edge.Server
	svc    *wal.Service // made by attach (clustered) or start
	auth   *wal.Authorizer
	db     string
	log    *slog.Logger
	bc     *dbBroadcasts // broadcasts from the database (dbcast.go)
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// databaseKey names the database the URL points at, without credentials:
// nodes configured with the same host, port and database are candidate
// owners of its reader.
func databaseKey(url string) (string, error) {
	cfg, err := pgconn.ParseConfig(url)
	if err != nil {
		return "", fmt.Errorf("--database-url: %w", err)
	}
	return fmt.Sprintf("%s:%d/%s", cfg.Host, cfg.Port, cfg.Database), nil
}

func newChangeStream(o *options, srv *edge.Server, log *slog.Logger) (*changeStream, error) {
	key, err := databaseKey(o.databaseURL)
	if err != nil {
		return nil, err
	}
	set := metrics.NewSet()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ac := wal.AuthorizerConfig{URL: o.databaseURL, Publication: o.reader.Publication, CatalogPoll: o.catalogPoll, Logger: log, Metrics: set}
	if !srv.Open() {
		// A REVOKE closes the channels it cuts off, with the reason.
		ac.OnCatalogChange = srv.RecheckChanges
	}
	auth, err := wal.StartAuthorizer(ctx, ac)
	if err != nil {
		return nil, err
	}
	// Every node must compute the same owner, so the preference is the
	// same list on every node: a default of each node's own region would
	// make each node of a multi-region cluster pick one of its own.
	var regions []string
	for _, r := range strings.Split(o.databaseRegion, ",") {
		if r = strings.TrimSpace(r); r != "" {
			regions = append(regions, r)
		}
	}
	o.reader.URL, o.reader.Broadcasts, o.reader.Logger, o.reader.Metrics = o.databaseURL, dbcast.Publication, log, set
	cfg := wal.ServiceConfig{
		DB:              key,
		Self:            o.edge.NodeID,
		Regions:         regions,
		Reader:          o.reader,
		Deliver:         srv.DeliverChange,
		RegexValueBytes: o.regexBytes,
		RecoveryWindow:  max(o.edge.RecoveryWindow, 0), // negative: recovery off
		HistoryBytes:    o.historyBytes,
		Logger:          log,
		Metrics:         set,
	}
	if !srv.Open() {
		cfg.Authorize = auth.Authorize
		cfg.CatalogChanged = auth.CatalogChanged
	} else {
		log.Warn("postgres_changes run open: without --jwt-secret every subscriber gets every change of the tables it subscribes to (no privileges, no row-level security)")
	}
	bc, err := newDBBroadcasts(o, srv, &cfg, set, log)
	if err != nil {
		auth.Close()
		return nil, err
	}
	c := &changeStream{cfg: cfg, srv: srv, auth: auth, db: key, log: log, bc: bc}
	srv.AddMetrics(set)
	log.Info("postgres changes", "database", key, "publication", o.reader.Publication, "slot", o.reader.Slot)
	return c, nil
}

// build makes the Service, on bus (nil: a node alone), and connects the
// edge to it.
func (c *changeStream) build(bus wal.Bus) {
	cfg := c.cfg
	cfg.Bus = bus
	c.svc = wal.NewService(cfg)
	c.srv.SetChanges(c.svc, c.auth)
	c.bc.bind(c.svc, c.srv)
}

// attach makes the Service of a clustered node, on node (before its
// Start).
func (c *changeStream) attach(node *mesh.Node) {
	c.build(meshBus{node})
	attachWAL(node, c.db, c.svc)
}

func (c *changeStream) start() {
	if c.svc == nil {
		c.build(nil)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	c.wg.Add(1)
	go func() { defer c.wg.Done(); c.svc.Run(ctx) }()
	c.wg.Add(1)
	go func() { defer c.wg.Done(); c.bc.subscribe(ctx, c.svc, c.log) }()
}

// handOver gives the reader to another node before this one leaves.
func (c *changeStream) handOver() {
	if c.svc != nil {
		c.svc.SetDraining()
	}
}

func (c *changeStream) close() {
	if c.cancel != nil {
		c.cancel()
	}
	c.wg.Wait()
	if c.svc != nil {
		c.svc.Close()
	}
	c.auth.Close()
	c.bc.close()
}
