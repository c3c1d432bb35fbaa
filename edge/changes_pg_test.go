package edge

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/jackc/pgx/v5"

	"github.com/meshcast/meshcast/mesh"
	"github.com/meshcast/meshcast/wal"
	"github.com/meshcast/meshcast/wal/pgtest"
)

// End-to-end tests of postgres_changes through a WebSocket client, with a
// real Postgres as the oracle. The client's node is not the database's
// owner: every change crosses the mesh as a Changes frame, as it does for
// most clients of a cluster.

// pairConfig configures startChangesPair.
type pairConfig struct {
	slot   string        // the replication slot
	secret []byte        // JWT secret; nil: open
	tweak  func(*Config) // changes the client node's Config
	// meshDelay delays every packet from the client node to the owner.
	meshDelay time.Duration
}

// startChangesPair starts two nodes in this process: the owner, which
// alone can read pg and so runs the reader, and the node whose clients
// the test uses. With a secret both check JWTs, and the owner filters
// row-level security. Both serve their wal metrics.
func startChangesPair(t *testing.T, pg *pgtest.Server, pc pairConfig) (client, owner *testServer) {
	t.Helper()
	var seed, ownerMesh string
	for i, reads := range []bool{true, false} {
		cfg := DefaultConfig()
		cfg.Logger = slog.New(slog.DiscardHandler)
		cfg.NodeID = mesh.NewID(fmt.Sprintf("pg%d", i))
		cfg.JWTSecret = pc.secret
		if !reads && pc.tweak != nil {
			pc.tweak(&cfg)
		}
		s, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		set := metrics.NewSet()
		s.AddMetrics(set)
		ac := wal.AuthorizerConfig{URL: pg.URL(), Logger: cfg.Logger, Metrics: set}
		if pc.secret != nil {
			ac.OnCatalogChange = s.RecheckChanges
		}
		auth, err := wal.StartAuthorizer(context.Background(), ac)
		if err != nil {
			t.Fatal(err)
		}
		sc := wal.ServiceConfig{DB: "db", Self: cfg.NodeID, Deliver: s.DeliverChange, SettleWait: 200 * time.Millisecond,
			TakeoverWait: time.Second, Logger: cfg.Logger, Metrics: set}
		udp, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		fc := &filterConn{PacketConn: udp, blocked: map[string]bool{}}
		mc := mesh.Config{
			Name: fmt.Sprintf("pg%d", i), ID: cfg.NodeID, Region: "iad", GossipAddr: "127.0.0.1:0", PacketConn: fc,
			ClusterSecret: []byte("test-secret"), Gossip: mesh.GossipConfig{ProbeInterval: 200 * time.Millisecond},
			PeerTimeout: time.Second, Logger: cfg.Logger,
		}
		if reads {
			sc.Reader = &wal.Reader{URL: pg.URL(), Slot: pc.slot, StatusInterval: 50 * time.Millisecond, Logger: cfg.Logger, Metrics: set}
			if pc.secret != nil {
				sc.Authorize, sc.CatalogChanged = auth.Authorize, auth.CatalogChanged
			}
			mc.Database = "db"
			ownerMesh = udp.LocalAddr().String()
		} else {
			mc.Join = []string{seed}
			if pc.meshDelay > 0 {
				fc.delayTo(ownerMesh, pc.meshDelay)
			}
		}
		node, err := mesh.New(mc, s)
		if err != nil {
			t.Fatal(err)
		}
		sc.Bus = walMeshBus{node}
		svc := wal.NewService(sc)
		s.SetChanges(svc, auth)
		if err := s.SetCluster(node); err != nil {
			t.Fatal(err)
		}
		attachWALMesh(node, svc)
		if err := node.Start(); err != nil {
			t.Fatal(err)
		}
		seed = node.GossipAddr()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); svc.Run(ctx) }()
		ts := serve(t, s)
		t.Cleanup(func() {
			ts.stop()
			node.Close()
			cancel()
			<-done
			svc.Close()
			auth.Close()
			udp.Close()
		})
		if reads {
			owner = ts
		} else {
			client = ts
		}
	}
	return client, owner
}

// pgConn is a connection to pg in UTC, closed when t ends: to_jsonb of a
// timestamptz depends on the session's time zone, and the reader's
// sessions are in UTC.
func pgConn(t *testing.T, pg *pgtest.Server) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(pg.URL())
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["timezone"] = "UTC"
	conn, err := pgx.ConnectConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// queryJSON returns the JSON text one row of sql yields.
func queryJSON(t *testing.T, conn *pgx.Conn, sql string, args ...any) []byte {
	t.Helper()
	var b []byte
	if err := conn.QueryRow(context.Background(), sql, args...).Scan(&b); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return b
}

func execSQL(t *testing.T, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := conn.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// collectChanges reads postgres_changes messages until it has n, within
// d; other frames are skipped.
func collectChanges(t *testing.T, c *wsClient, n int, d time.Duration) []changeOf {
	t.Helper()
	deadline := time.Now().Add(d)
	var out []changeOf
	for len(out) < n {
		data, op, err := c.read(time.Until(deadline))
		if err != nil {
			t.Fatalf("after %d of %d changes: %v", len(out), n, err)
		}
		f, err := decodeFrame(data, op, false)
		if err != nil {
			t.Fatalf("decoding %q: %v", data, err)
		}
		if f.Event != "postgres_changes" {
			continue
		}
		var ch changeOf
		if err := json.Unmarshal(f.Payload, &ch); err != nil {
			t.Fatalf("postgres_changes payload %s: %v", f.Payload, err)
		}
		ch.Topic = f.Topic
		out = append(out, ch)
	}
	return out
}

// The join reply waits until the owner holds the binding and streams: a
// row committed the moment the reply arrives reaches the client, even when
// every packet from the client's node to the owner takes 300 ms (a reply
// sent before the owner had the subscription would miss it).
func TestChangesJoinReplyMeansLive(t *testing.T) {
	pg := pgtest.Shared(t)
	pg.Exec(`CREATE TABLE todos (id int PRIMARY KEY); CREATE PUBLICATION supabase_realtime FOR ALL TABLES`)
	const delay = 300 * time.Millisecond
	ts, _ := startChangesPair(t, pg, pairConfig{slot: "edge_live", meshDelay: delay})
	conn := pgConn(t, pg)
	c := ts.connect(t)
	for i := 1; i <= 3; i++ {
		topic := fmt.Sprintf("realtime:live%d", i)
		start := time.Now()
		c.write(joinFrame("1", topic, fmt.Sprintf(`{"postgres_changes":[{"event":"INSERT","schema":"public","table":"todos","filter":"id=eq.%d"}]}`, i)))
		if f := c.next(); f.Event != "phx_reply" || jsonField(f.Payload, "status") != `"ok"` {
			t.Fatalf("join: %s", f)
		}
		execSQL(t, conn, "INSERT INTO todos VALUES ($1)", i)
		took := time.Since(start)
		if took < delay {
			t.Errorf("join %d replied in %v, before its subscription could reach the owner", i, took)
		}
		got := collectChanges(t, c, 1, testWait)
		if got[0].Topic != topic || jsonField(got[0].Data.Record, "id") != fmt.Sprint(i) {
			t.Errorf("join %d: got %s %s", i, got[0].Topic, got[0].Data.Record)
		}
	}
}

// walMeshBus and attachWALMesh connect a wal Service to a mesh node, as
// cmd/meshcast does.
type walMeshBus struct{ n *mesh.Node }

func (b walMeshBus) Send(to string, l wal.Lane, frame []byte) bool {
	return b.n.Send(to, mesh.Lane(l), frame)
}

func attachWALMesh(n *mesh.Node, s *wal.Service) {
	n.SetDatabase("db", s.CanRead())
	for _, t := range wal.FrameTypes {
		n.Handle(t, s.Receive)
	}
	for _, l := range []wal.Lane{wal.LaneControl, wal.LaneChanges} {
		n.OnResync(mesh.Lane(l), func(peer string, emit func([]byte) error) error {
			for _, f := range s.Resync(peer, l) {
				if err := emit(f); err != nil {
					return err
				}
			}
			return nil
		})
	}
	n.Watch(func(self mesh.Member, members []mesh.Member) {
		ms := []wal.Member{{ID: self.ID, Name: self.Name, Region: self.Region, DB: self.DB, Reader: self.Reader, Draining: self.Draining}}
		for _, m := range members {
			ms = append(ms, wal.Member{ID: m.ID, Name: m.Name, Region: m.Region, DB: m.DB, Reader: m.Reader, Draining: m.Draining})
		}
		s.SetMembers(ms)
	})
}
