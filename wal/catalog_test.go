package wal

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshcast/meshcast/wal/pgtest"
)

// The event trigger marks, in the replication stream, the transactions
// that change privileges, policies, row level security or columns, and
// only those; nodes starting together create it once.
func TestCatalogTriggerMarksTransactions(t *testing.T) {
	pg := pgtest.Shared(t)
	pg.Exec(`CREATE TABLE items (id int PRIMARY KEY); CREATE PUBLICATION supabase_realtime FOR ALL TABLES`)
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			a, err := NewAuthorizer(context.Background(), pg.URL(), "")
			if err != nil {
				t.Error(err)
				return
			}
			a.Close()
		})
	}
	wg.Wait()
	if n := queryOne[int](t, pg.URL(), "SELECT count(*) FROM pg_event_trigger WHERE evtname = $1", catalogTrigger); n != 1 {
		t.Fatalf("%d event triggers, want 1", n)
	}
	slot := "cat_" + pg.Database()
	pg.Exec("SELECT pg_create_logical_replication_slot('" + slot + "', 'pgoutput')")
	// A transaction with neither a change nor a message (the index) is
	// not sent at all.
	steps := []struct {
		sql  string
		want string // the transaction as the stream has it
	}{
		{"GRANT SELECT ON items TO PUBLIC", "0 catalog"},
		{"CREATE INDEX ON items (id)", ""},
		{"INSERT INTO items VALUES (1)", "1"},
		{"ALTER TABLE items ENABLE ROW LEVEL SECURITY", "0 catalog"},
		{"INSERT INTO items VALUES (2); CREATE POLICY p ON items FOR SELECT USING (true)", "1 catalog"},
		{"ALTER TABLE items ADD COLUMN x text", "0 catalog"},
		{"ALTER PUBLICATION supabase_realtime SET (publish = 'insert')", "0 catalog"},
	}
	var want []string
	for _, s := range steps {
		pg.Exec(s.sql)
		if s.want != "" {
			want = append(want, s.want)
		}
	}
	var got []string
	for _, tx := range slotTransactions(t, connect(t, pg.URL()), slot, "supabase_realtime") {
		s := fmt.Sprint(len(tx.Changes))
		if tx.catalog {
			s += " catalog"
		}
		got = append(got, s)
	}
	if strings.Join(got, "; ") != strings.Join(want, "; ") {
		t.Errorf("transactions (changes, catalog) %q, want %q", got, want)
	}
}

// A database user that may not create event triggers (not a superuser)
// still gets its caches emptied: the catalog poll sees a REVOKE within its
// interval, and Authorize then hides what the role may no longer read.
func TestCatalogPollWithoutEventTrigger(t *testing.T) {
	pg := pgtest.Shared(t)
	weak, viewer, reader := "weak_"+pg.Database(), "viewer_"+pg.Database(), "reader_"+pg.Database()
	pg.Exec(fmt.Sprintf(`DROP ROLE IF EXISTS %[1]s; DROP ROLE IF EXISTS %[2]s; DROP ROLE IF EXISTS %[3]s;
		CREATE ROLE %[1]s LOGIN; CREATE ROLE %[2]s; CREATE ROLE %[3]s; GRANT %[2]s TO %[1]s;
		CREATE TABLE items (id int PRIMARY KEY); GRANT SELECT ON items TO %[2]s, %[3]s;
		CREATE PUBLICATION supabase_realtime FOR ALL TABLES`, weak, viewer, reader))
	t.Cleanup(func() {
		pg.Exec(fmt.Sprintf("DROP OWNED BY %[1]s, %[2]s, %[3]s; DROP ROLE %[1]s; DROP ROLE %[2]s; DROP ROLE %[3]s", weak, viewer, reader))
	})
	slot := "poll_" + pg.Database()
	pg.Exec("SELECT pg_create_logical_replication_slot('" + slot + "', 'pgoutput')")
	pg.Exec(`INSERT INTO items VALUES (1)`)
	change := slotTransactions(t, connect(t, pg.URL()), slot, "supabase_realtime")[0].Changes[0]

	var changes atomic.Int64
	url := strings.Replace(pg.URL(), "postgres://postgres@", "postgres://"+weak+"@", 1)
	a, err := StartAuthorizer(context.Background(), AuthorizerConfig{URL: url, CatalogPoll: 50 * time.Millisecond,
		OnCatalogChange: func(context.Context) { changes.Add(1) }, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	sub := &Subscription{ID: 1, Node: "n", Schema: "public", Table: "items", Role: viewer, Claims: "{}"}
	visible := func() bool {
		hits := [][]*Subscription{{sub}}
		a.Authorize(context.Background(), []*Change{change}, hits)
		return len(hits[0]) == 1
	}
	eventually(t, "the first poll", a.triggerKnown.Load)
	if a.triggered.Load() {
		t.Fatal("a user that is not a superuser created the event trigger")
	}
	if !visible() {
		t.Fatal("hidden before the revoke")
	}
	pg.Exec("REVOKE SELECT ON items FROM " + viewer)
	eventually(t, "the poll to notice the revoke", func() bool { return changes.Load() > 0 })
	if visible() {
		t.Error("still visible after the poll noticed the revoke")
	}
	// Role membership fires no event trigger at all; the poll notices it.
	n := changes.Load()
	pg.Exec(fmt.Sprintf("GRANT %s TO %s", reader, viewer))
	eventually(t, "the poll to notice the membership", func() bool { return changes.Load() > n })
	if !visible() {
		t.Error("still hidden after the poll noticed the membership that grants it")
	}
}

// A transaction that changed the catalog splits the owner's batch: the
// transactions before it are authorized together, then CatalogChanged is
// called, then it and those after are authorized, never mixed.
func TestServiceSplitsBatchAtCatalogChange(t *testing.T) {
	pg := pgtest.Shared(t)
	pg.Exec(`CREATE TABLE items (id int PRIMARY KEY, note text)`)
	if _, err := installCatalogTrigger(context.Background(), connect(t, pg.URL())); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var log []string
	release := make(chan struct{})
	hooks := func(c *ServiceConfig) {
		c.Authorize = func(ctx context.Context, cs []*Change, hits [][]*Subscription) error {
			var ids []string
			for _, ch := range cs {
				var id int
				json.Unmarshal(ch.Record[0], &id)
				ids = append(ids, fmt.Sprint(id))
			}
			mu.Lock()
			first := len(log) == 0
			log = append(log, strings.Join(ids, ","))
			mu.Unlock()
			if first {
				select { // the first check is slow: the rest queues up
				case <-release:
				case <-ctx.Done():
				}
			}
			return nil
		}
		c.CatalogChanged = func(ctx context.Context, tx *Transaction) error {
			mu.Lock()
			log = append(log, "catalog")
			mu.Unlock()
			return nil
		}
	}
	n1 := startServiceNode(t, "n1", pg.URL(), "svc_catalog", nil, hooks)
	sub := subscribeAll(t, []*clusterService{n1})[n1]
	for i := 1; i <= 4; i++ {
		pg.Exec(`INSERT INTO items VALUES ($1, 'x')`, i)
	}
	pg.Exec(`GRANT SELECT ON items TO PUBLIC`)
	for i := 5; i <= 8; i++ {
		pg.Exec(`INSERT INTO items VALUES ($1, 'x')`, i)
	}
	eventually(t, "the reader to read every row", func() bool { return n1.svc.reader.m.changes.Get() >= 8 })
	close(release)
	n1.d.waitRows(t, sub.ID, 8, 10*time.Second)
	mu.Lock()
	defer mu.Unlock()
	// Rows 1 to 4 in one or more calls (the first may take more than row
	// 1), then the catalog change, then the rest of what queued behind the
	// slow first check, in one call.
	i := slices.Index(log, "catalog")
	if i < 0 || strings.Join(log[:i], ",") != "1,2,3,4" || strings.Join(log[i+1:], " ") != "5,6,7,8" {
		t.Errorf("owner's calls: %q, want rows 1 to 4, then catalog, then 5,6,7,8 in one call", log)
	}
}
