package main

import (
	"context"
	"errors"
	"flag"
	"log/slog"

	"github.com/VictoriaMetrics/metrics"

	"github.com/meshcast/meshcast/edge"
	"github.com/meshcast/meshcast/wal"
	"github.com/meshcast/meshcast/wal/dbcast"
)

// dbcastFlags are the flags of broadcasts from the database.
type dbcastFlags struct {
	dedupe      int
	replayConns int
}

func (f *dbcastFlags) register(fs *flag.FlagSet) {
	fs.IntVar(&f.dedupe, "db-broadcast-dedupe", dbcast.DefaultDedupe, "broadcasts from the database: row IDs of realtime.messages each node remembers to deliver each row once (about 100 bytes each)")
	fs.IntVar(&f.replayConns, "replay-conns", dbcast.DefaultReplayConns, "broadcast replay: connections to --database-url that read the replays of joining private channels")
}

func (f *dbcastFlags) check() error {
	if f.dedupe < 1 || f.replayConns < 1 {
		return errors.New("--db-broadcast-dedupe and --replay-conns must be at least 1")
	}
	return nil
}

// dbBroadcasts wires the rows of realtime.messages to the edge: the
// Deliverer on the change stream, the node's subscription, and replay.
type dbBroadcasts struct {
	d        *dbcast.Deliverer
	replayer *dbcast.Replayer
	sub      *wal.Subscription // set by bind
	// maxPayload and set are the Recoverer's (bind).
	maxPayload int
	set        *metrics.Set
}

// newDBBroadcasts hooks the broadcasts into cfg (before the Service is
// made) and replay into srv.
func newDBBroadcasts(o *options, srv *edge.Server, cfg *wal.ServiceConfig, set *metrics.Set, log *slog.Logger) (*dbBroadcasts, error) {
	d := dbcast.NewDeliverer(dbcast.Config{Fanout: srv, MaxPayloadBytes: o.edge.MaxPayloadBytes, Dedupe: o.dbcast.dedupe,
		Logger: log, Metrics: set})
	cfg.Deliver = d.Wrap(cfg.Deliver)
	cfg.Authorize = dbcast.Authorize(cfg.Authorize) // nil inside on a node without a JWT secret
	r, err := dbcast.NewReplayer(o.databaseURL, o.dbcast.replayConns, set)
	if err != nil {
		return nil, err
	}
	srv.SetReplay(replaySource{r})
	return &dbBroadcasts{d: d, replayer: r, maxPayload: o.edge.MaxPayloadBytes, set: set}, nil
}

// bind makes the node's subscription to realtime.messages on svc (once it
// exists) and gives the edge its recovery: the "db" stream.
func (b *dbBroadcasts) bind(svc *wal.Service, srv *edge.Server) {
	b.sub = dbcast.Subscription(svc.NewID())
	b.d.Own(b.sub)
	srv.SetDBStream(dbcast.NewRecoverer(svc, b.sub, b.maxPayload, b.set))
}

// subscribe registers the node's subscription to realtime.messages with
// the database's owner; it stays registered (and goes to every new owner)
// even when the owner does not confirm it in time.
func (b *dbBroadcasts) subscribe(ctx context.Context, svc *wal.Service, log *slog.Logger) {
	if err := svc.Subscribe(ctx, []*wal.Subscription{b.sub}); err != nil && ctx.Err() == nil {
		log.Warn("broadcasts from the database: the owner has not confirmed this node's subscription yet", "err", err)
	}
}

func (b *dbBroadcasts) close() {
	if b != nil {
		b.replayer.Close()
	}
}

// replaySource is edge's ReplaySource over a dbcast.Replayer.
type replaySource struct{ r *dbcast.Replayer }

func (s replaySource) Replay(ctx context.Context, id *edge.Identity, topic string, since int64, limit int) ([]dbcast.Message, error) {
	return s.r.Replay(ctx, dbcast.Identity{Role: id.Role, Sub: id.Sub, Claims: string(id.Claims), Headers: string(id.Headers)},
		topic, since, limit)
}
