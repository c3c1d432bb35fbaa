package edge

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshcast/meshcast/wal"
	"github.com/meshcast/meshcast/wal/pgtest"
)

// startChangesServer is a single node streaming pg's changes, with auth
// when secret is set.
func startChangesServer(t *testing.T, pg *pgtest.Server, slot string, secret []byte, tweaks ...func(*Config)) *testServer {
	t.Helper()
	ts := startServer(t, func(c *Config) {
		c.JWTSecret = secret
		for _, tw := range tweaks {
			tw(c)
		}
	})
	auth, err := wal.NewAuthorizer(context.Background(), pg.URL(), "")
	if err != nil {
		t.Fatal(err)
	}
	cfg := wal.ServiceConfig{
		DB: "db", Self: ts.cfg.NodeID,
		Reader:  &wal.Reader{URL: pg.URL(), Slot: slot, StatusInterval: 50 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)},
		Deliver: ts.DeliverChange,
		Logger:  slog.New(slog.DiscardHandler),
	}
	if secret != nil {
		cfg.Authorize = auth.Authorize
	}
	svc := wal.NewService(cfg)
	ts.SetChanges(svc, auth)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); svc.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; svc.Close(); auth.Close() })
	return ts
}

// changeOf is a postgres_changes message's payload (and its frame's
// topic).
type changeOf struct {
	Topic string   `json:"-"`
	IDs   []uint64 `json:"ids"`
	Data  struct {
		Type            string            `json:"type"`
		Schema          string            `json:"schema"`
		Table           string            `json:"table"`
		CommitTimestamp string            `json:"commit_timestamp"`
		Columns         []json.RawMessage `json:"columns"`
		Record          json.RawMessage   `json:"record"`
		OldRecord       json.RawMessage   `json:"old_record"`
		Errors          json.RawMessage   `json:"errors"`
	} `json:"data"`
}

// nextChange reads until a postgres_changes message.
func nextChange(t *testing.T, c peer) (changeOf, wsFrame) {
	t.Helper()
	for {
		f := c.next()
		if f.Event != "postgres_changes" {
			continue
		}
		var ch changeOf
		if err := json.Unmarshal(f.Payload, &ch); err != nil {
			t.Fatalf("postgres_changes payload %s: %v", f.Payload, err)
		}
		return ch, f
	}
}

// joinChanges joins topic with bindings and returns the ids of the reply
// and the system message that follows it.
func joinWithBindings(t *testing.T, c peer, joinRef, topic, bindings string) ([]uint64, string) {
	t.Helper()
	c.write(joinFrame(joinRef, topic, `{"postgres_changes":`+bindings+`}`))
	f := c.next()
	var r struct {
		Status   string `json:"status"`
		Response struct {
			PostgresChanges []struct {
				ID uint64 `json:"id"`
			} `json:"postgres_changes"`
		} `json:"response"`
	}
	if err := json.Unmarshal(f.Payload, &r); err != nil || r.Status != "ok" {
		t.Fatalf("join %s: %s", topic, f)
	}
	var ids []uint64
	for _, b := range r.Response.PostgresChanges {
		ids = append(ids, b.ID)
	}
	sys := c.next()
	if sys.Event != "system" || refOf(sys.JoinRef) != joinRef {
		t.Fatalf("after the join reply: %s, want the system message", sys)
	}
	return ids, jsonField(sys.Payload, "message")
}

// An insert committed the moment the join reply arrives reaches the
// client, with Supabase's shape, and its record is what to_jsonb says.
func TestChangesJoinAndShape(t *testing.T) {
	pg := pgtest.Shared(t)
	pg.Exec(`CREATE TABLE todos (id bigint PRIMARY KEY, title text, done boolean, tags text[], meta jsonb, at timestamptz, n numeric);
		CREATE PUBLICATION supabase_realtime FOR ALL TABLES`)
	ts := startChangesServer(t, pg, "edge_shape", nil)
	c := ts.connect(t)
	bindings := `[{"event":"INSERT","schema":"public","table":"todos"},{"event":"*","schema":"public","table":"todos","filter":"id=eq.1"}]`
	ids, sys := joinWithBindings(t, c, "1", "realtime:room1", bindings)
	if sys != `"Subscribed to PostgreSQL"` || len(ids) != 2 || ids[0] == 0 || ids[0] == ids[1] || ids[0] > 1<<53-1 {
		t.Fatalf("join: ids %v, system %s", ids, sys)
	}
	pg.Exec(`INSERT INTO todos VALUES (1, 'a "quoted" é', true, '{x,"y z"}', '{"k":[1,2]}', '2024-05-01 10:00:00.123456+02', 1.50)`)
	ch, f := nextChange(t, c)
	if f.JoinRef != nil || f.Ref != nil || f.Topic != "realtime:room1" {
		t.Errorf("frame refs/topic: %s", f.Raw)
	}
	if fmt.Sprint(ch.IDs) != fmt.Sprint(ids) {
		t.Errorf("ids %v, want both bindings %v", ch.IDs, ids)
	}
	d := ch.Data
	if d.Type != "INSERT" || d.Schema != "public" || d.Table != "todos" || string(d.Errors) != "null" || d.OldRecord != nil {
		t.Errorf("data: %+v", d)
	}
	if _, err := time.Parse("2006-01-02T15:04:05.000Z", d.CommitTimestamp); err != nil {
		t.Errorf("commit_timestamp %q: %v", d.CommitTimestamp, err)
	}
	conn, err := pgx.Connect(context.Background(), pg.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var want []byte
	if _, err := conn.Exec(context.Background(), `SET TIME ZONE 'UTC'`); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(context.Background(), `SELECT to_jsonb(t) FROM todos t WHERE id = 1`).Scan(&want); err != nil {
		t.Fatal(err)
	}
	if !jsonEq(d.Record, string(want)) {
		t.Errorf("record %s\nto_jsonb %s", d.Record, want)
	}
	if !jsonEq(json.RawMessage(`[`+string(d.Columns[0])+`]`), `[{"name":"id","type":"int8"}]`) {
		t.Errorf("columns[0] = %s", d.Columns[0])
	}
	// An update of another row reaches only the INSERT-or-id=1 bindings
	// that match: none here; an update of row 1 reaches the * binding.
	pg.Exec(`UPDATE todos SET done = false WHERE id = 1`)
	ch, _ = nextChange(t, c)
	if ch.Data.Type != "UPDATE" || fmt.Sprint(ch.IDs) != fmt.Sprint(ids[1:]) || ch.Data.OldRecord == nil {
		t.Errorf("update: ids %v (want %v), data %+v", ch.IDs, ids[1:], ch.Data)
	}
	pg.Exec(`DELETE FROM todos WHERE id = 1`)
	ch, _ = nextChange(t, c)
	if ch.Data.Type != "DELETE" || ch.Data.Record != nil || !jsonEq(ch.Data.OldRecord, `{"id":1}`) {
		t.Errorf("delete: %+v", ch.Data)
	}
}

// Bindings Supabase refuses get its error in a system message; the
// channel stays joined.
func TestChangesRefusedBinding(t *testing.T) {
	pg := pgtest.Shared(t)
	pg.Exec(`CREATE TABLE todos (id bigint PRIMARY KEY, title text); CREATE PUBLICATION supabase_realtime FOR ALL TABLES`)
	ts := startChangesServer(t, pg, "edge_refused", nil)
	c := ts.connect(t)
	for i, tc := range []struct{ bindings, want string }{
		{`[{"event":"*","schema":"public","table":"nope"}]`, "Unable to subscribe to changes with given parameters"},
		{`[{"event":"*","schema":"public","table":"todos","filter":"nope=eq.1"}]`, "nope"},
		{`[{"event":"*","schema":"public","table":"todos","filter":"id=eq.x"}]`, "x"},
		{`[{"event":"*","schema":"public","table":"todos","filter":"id=foo.1"}]`, "Error parsing `filter` params"},
	} {
		_, sys := joinWithBindings(t, c, "1", fmt.Sprintf("realtime:refused%d", i), tc.bindings)
		if !strings.Contains(sys, tc.want) {
			t.Errorf("%s: system message %s, want it to say %q", tc.bindings, sys, tc.want)
		}
	}
	c.write(heartbeatFrame)
	if f := c.next(); !isHeartbeatReply(f) {
		t.Errorf("after refused bindings: %s", f)
	}
}
