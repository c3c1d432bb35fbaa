package wal

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/meshcast/meshcast/wal/pgtest"
)

// insertedIDs returns the id column of the recovered inserts that reach
// subscription id, in the order Recover returned them.
func insertedIDs(res RecoverResult, id uint64) []int {
	var out []int
	for _, r := range res.Changes {
		if r.Change.Kind != Insert || !slices.Contains(r.IDs, id) {
			continue
		}
		for i, col := range r.Change.Columns {
			if col.Name == "id" {
				n, _ := strconv.Atoi(string(r.Change.Record[i]))
				out = append(out, n)
			}
		}
	}
	return out
}

// visibleIDs is the oracle of row-level security: the ids of table's rows
// above from that role, with claims, may SELECT.
func visibleIDs(t *testing.T, url, role, claims, table string, from int) []int {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "SELECT set_config('role', $1, true), set_config('request.jwt.claims', $2, true)", role, claims); err != nil {
		t.Fatal(err)
	}
	rows, err := tx.Query(ctx, "SELECT id FROM "+table+" WHERE id > $1 ORDER BY id", from)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

func seq(from, to int) []int {
	var out []int
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}

// withRecovery turns recovery on with window w.
func withRecovery(w time.Duration, budget int) func(*ServiceConfig) {
	return func(c *ServiceConfig) {
		c.RecoveryWindow, c.HistoryBytes, c.RegisterTimeout = w, budget, 2*time.Second
	}
}

// rlsSchema makes table notes, whose rows role may see only when they are
// its JWT's subject's, in the publication.
func rlsSchema(pg *pgtest.Server, role string) {
	pg.Exec(fmt.Sprintf(`
		CREATE SCHEMA auth;
		CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $$
			SELECT (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')::uuid $$;
		DROP ROLE IF EXISTS %[1]s; CREATE ROLE %[1]s; GRANT USAGE ON SCHEMA auth TO %[1]s;
		CREATE TABLE notes (id int PRIMARY KEY, user_id uuid, body text);
		CREATE TABLE other (id int PRIMARY KEY);
		GRANT SELECT ON notes TO %[1]s;
		ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
		CREATE POLICY own ON notes FOR SELECT TO %[1]s USING (user_id = auth.uid());
		CREATE PUBLICATION supabase_realtime FOR ALL TABLES`, role))
}

const (
	userA = "00000000-0000-0000-0000-00000000000a"
	userB = "00000000-0000-0000-0000-00000000000b"
)

// A node's subscriptions leave while its client is away and rows are
// committed; the client's new subscriptions recover what they missed from
// the owner's history (on another node): every row, once, in commit
// order, and of a table with row-level security only the rows the role
// may SELECT. A node that delivered nothing still has a Head: the owner's.
func TestRecoverMissedChangesWithRLS(t *testing.T) {
	pg := pgtest.Shared(t)
	role := "rec_" + pg.Database()
	rlsSchema(pg, role)
	t.Cleanup(func() { pg.Exec(fmt.Sprintf("DROP OWNED BY %[1]s; DROP ROLE %[1]s", role)) })
	a := newAuthorizer(t, pg)
	hub := NewMemHub()
	t.Cleanup(hub.Close)
	rec := withRecovery(time.Minute, 0)
	ms := []Member{{ID: "o", Name: "o", DB: "db", Reader: true}, {ID: "n1", Name: "n1", DB: "db"}, {ID: "n2", Name: "n2", DB: "db"}}
	o := startMemNode(t, hub, ms[0], pg.URL(), "rec_rls", func(c *ServiceConfig) {
		rec(c)
		c.Authorize, c.CatalogChanged = a.Authorize, a.CatalogChanged
	})
	n1 := startMemNode(t, hub, ms[1], "", "", rec)
	n2 := startMemNode(t, hub, ms[2], "", "", rec)
	hub.SetMembers(ms)
	_ = o

	claims := fmt.Sprintf(`{"sub":%q,"role":%q}`, userA, role)
	bindings := func() []*Subscription {
		return []*Subscription{
			{ID: n1.svc.NewID(), Schema: "public", Table: "notes", Role: role, Claims: claims},
			{ID: n1.svc.NewID(), Schema: "public", Table: "notes", Role: "postgres", Claims: `{"role":"postgres"}`},
		}
	}
	ctx := context.Background()
	first := bindings()
	if err := n1.svc.Subscribe(ctx, first); err != nil {
		t.Fatal(err)
	}
	pg.Exec(`INSERT INTO notes VALUES (1, $1, 'x')`, userA)
	n1.d.waitRows(t, first[1].ID, 1, 10*time.Second)
	seen := n1.svc.Head()

	// The client goes: its channel's subscriptions with it.
	n1.svc.Unsubscribe([]uint64{first[0].ID, first[1].ID})
	for i := 2; i <= 9; i++ {
		user := userA
		if i%3 == 0 {
			user = userB
		}
		pg.Exec(fmt.Sprintf(`INSERT INTO notes VALUES (%[1]d, '%[2]s', 'x'); INSERT INTO other VALUES (%[1]d)`, i, user))
	}
	// Back: new subscriptions of the same bindings, then recovery.
	again := bindings()
	if err := n1.svc.Subscribe(ctx, again); err != nil {
		t.Fatal(err)
	}
	head := n1.svc.Head()
	res, err := n1.svc.Recover(ctx, again, seen)
	if err != nil {
		t.Fatal(err)
	}
	if res.Through.Before(head) {
		t.Errorf("Through %v is before Head %v", res.Through, head)
	}
	// What Recover returned, then what came live after Through (the
	// seam): every row once, in order.
	got := func(id uint64, n int) []int {
		var out []int
		deadline := time.Now().Add(10 * time.Second)
		for len(out) < n && time.Now().Before(deadline) {
			out = append(insertedIDs(res, id), n1.d.after(id, res.Through)...)
			time.Sleep(10 * time.Millisecond)
		}
		return out
	}
	if got := got(again[1].ID, 8); !slices.Equal(got, seq(2, 9)) {
		t.Errorf("the unrestricted binding recovered, then got live, rows %v; want 2..9 once in order", got)
	}
	want := visibleIDs(t, pg.URL(), role, claims, "notes", 1)
	if got := got(again[0].ID, len(want)); !slices.Equal(got, want) || len(want) == 0 || len(want) == 8 {
		t.Errorf("the role's binding recovered, then got live, rows %v; want what it may SELECT: %v", got, want)
	}
	for i := 1; i < len(res.Changes); i++ {
		if !res.Changes[i-1].Change.Pos().Before(res.Changes[i].Change.Pos()) {
			t.Fatalf("recovered changes out of commit order at %d", i)
		}
	}

	// n2 delivered nothing; once its subscription is acknowledged its
	// Head is the owner's, past every row above.
	quiet := &Subscription{ID: n2.svc.NewID(), Schema: "public", Table: "nothing"}
	if err := n2.svc.Subscribe(ctx, []*Subscription{quiet}); err != nil {
		t.Fatal(err)
	}
	if h := n2.svc.Head(); h.Before(res.Changes[len(res.Changes)-1].Change.Pos()) {
		t.Errorf("a node that delivered nothing has Head %v, before the last change %v", h, res.Changes[len(res.Changes)-1].Change.Pos())
	}
}

// The owner is killed (stopped without leaving) after it read rows a
// client missed; the next owner reads the window again from the slot,
// which the first held back, and the client recovers them from the new
// owner's history.
func TestRecoverAfterOwnerFailover(t *testing.T) {
	pg := pgtest.Shared(t)
	pg.Exec(`CREATE TABLE items (id int PRIMARY KEY, note text)`)
	const slot = "rec_failover"
	hub := NewMemHub()
	t.Cleanup(hub.Close)
	rec := withRecovery(time.Minute, 0)
	ms := []Member{{ID: "o", Name: "o", DB: "db", Reader: true}, {ID: "p", Name: "p", DB: "db", Reader: true}, {ID: "n1", Name: "n1", DB: "db"}}
	var readers []*memNode
	for _, m := range ms[:2] {
		readers = append(readers, startMemNode(t, hub, m, pg.URL(), slot, rec))
	}
	n1 := startMemNode(t, hub, ms[2], "", "", rec)
	hub.SetMembers(ms)
	ctx := context.Background()
	sub := &Subscription{ID: n1.svc.NewID(), Schema: "public", Table: "items"}
	if err := n1.svc.Subscribe(ctx, []*Subscription{sub}); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		pg.Exec(`INSERT INTO items VALUES ($1, 'x')`, i)
	}
	n1.d.waitRows(t, sub.ID, 3, 10*time.Second)
	seen := n1.svc.Head()
	n1.svc.Unsubscribe([]uint64{sub.ID})
	for i := 4; i <= 8; i++ {
		pg.Exec(`INSERT INTO items VALUES ($1, 'x')`, i)
	}
	victim, heir := readers[0], readers[1]
	if !victim.svc.Owns() {
		victim, heir = heir, victim
	}
	eventually(t, "the owner to read every row", func() bool { _, n := victim.svc.store.stats(); return n >= 8 })
	// The reader reports its position every 50 ms: without the hold the
	// slot would be confirmed past the rows by now.
	time.Sleep(300 * time.Millisecond)
	if c := confirmedLSN(t, pg, slot); c >= seen.LSN {
		t.Fatalf("the slot was confirmed to %v, past the window's rows (%v)", c, seen)
	}

	stopService(t, victim)
	hub.SetMembers([]Member{heir.m, ms[2]})
	again := &Subscription{ID: n1.svc.NewID(), Schema: "public", Table: "items"}
	deadline := time.Now().Add(20 * time.Second)
	for n1.svc.Subscribe(ctx, []*Subscription{again}) != nil {
		if time.Now().After(deadline) {
			t.Fatal("the new owner never acknowledged the subscription")
		}
	}
	// No waiting for the new owner to read the window again: its
	// acknowledgement raised this node's Head past the rows, and
	// recovery waits for its history to reach that.
	var res RecoverResult
	var err error
	for {
		res, err = n1.svc.Recover(ctx, []*Subscription{again}, seen)
		var re *RecoveryError
		if err == nil || !errors.As(err, &re) || re.Reason != ReasonNoAnswer || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	if got := insertedIDs(res, again.ID); !slices.Equal(got, seq(4, 8)) {
		t.Fatalf("recovered rows %v from the new owner, want 4..8", got)
	}
	// The new owner acknowledged with a head past everything committed
	// before it began reading: a channel joining now drops the window's
	// changes it reads again (they are before its seam).
	if h, last := n1.svc.Head(), res.Changes[len(res.Changes)-1].Change.Pos(); h.Before(last) {
		t.Errorf("Head %v after the new owner's acknowledgement is before row 8 (%v)", h, last)
	}
}

// stopService stops n's Service as a crash would: no draining.
func stopService(t *testing.T, n *memNode) {
	t.Helper()
	n.stop()
}

// What recovery cannot prove complete fails explicitly: a position older
// than the window (a table whose changes left it), history evicted for
// the byte budget, a catalog change after the position, a position the
// owner never reached; recovery off. A table with nothing evicted after
// an old position still recovers (nothing was missed).
func TestRecoverFailsExplicitly(t *testing.T) {
	pg := pgtest.Shared(t)
	role := "recf_" + pg.Database()
	rlsSchema(pg, role)
	t.Cleanup(func() { pg.Exec(fmt.Sprintf("DROP OWNED BY %[1]s; DROP ROLE %[1]s", role)) })
	pg.Exec(`CREATE TABLE items (id int PRIMARY KEY, note text)`)
	a := newAuthorizer(t, pg)
	const window = 500 * time.Millisecond
	d := newDeliveries()
	s := NewService(ServiceConfig{DB: "db", Self: "n1", Reader: testReaderFor(pg.URL(), "rec_fail"), Deliver: d.deliver,
		RecoveryWindow: window, HistoryBytes: 64 << 10, RegisterTimeout: time.Second,
		Authorize: a.Authorize, CatalogChanged: a.CatalogChanged, Logger: slog.New(slog.DiscardHandler)})
	runService(t, s)
	ctx := context.Background()
	items := &Subscription{ID: s.NewID(), Schema: "public", Table: "items"}
	others := &Subscription{ID: s.NewID(), Schema: "public", Table: "other"}
	if err := s.Subscribe(ctx, []*Subscription{items, others}); err != nil {
		t.Fatal(err)
	}
	reason := func(err error) string {
		var re *RecoveryError
		if errors.As(err, &re) {
			return re.Reason
		}
		return fmt.Sprint(err)
	}

	// Before any change the Head is the reader's start: a channel cut
	// then recovers from it.
	start := s.Head()
	pg.Exec(`INSERT INTO items VALUES (1, 'x'); INSERT INTO other VALUES (1)`)
	d.waitRows(t, items.ID, 1, 10*time.Second)
	d.waitRows(t, others.ID, 1, 10*time.Second)
	if res, err := s.Recover(ctx, []*Subscription{items}, start); err != nil || !slices.Equal(insertedIDs(res, items.ID), []int{1}) {
		t.Fatalf("recovery from the Head before any change (%v): %v, %v; want row 1", start, err, insertedIDs(res, items.ID))
	}
	old := s.Head()
	if _, err := s.Recover(ctx, []*Subscription{others}, old); err != nil {
		t.Fatalf("recovery from the head: %v", err)
	}
	// Window: items changes after old leave the window; other's do not
	// change at all.
	pg.Exec(`INSERT INTO items VALUES (2, 'x')`)
	d.waitRows(t, items.ID, 2, 10*time.Second)
	eventually(t, "the window to pass", func() bool { _, n := s.store.stats(); return n == 0 })
	if _, err := s.Recover(ctx, []*Subscription{items}, old); reason(err) != ReasonWindow {
		t.Errorf("recovery from before the window: %v, want %q", err, ReasonWindow)
	}
	if res, err := s.Recover(ctx, []*Subscription{others}, old); err != nil || len(res.Changes) != 0 {
		t.Errorf("recovery of a quiet table from before the window: %v, %v; want nothing to recover", res.Changes, err)
	}

	// Byte budget: a transaction larger than the history.
	mid := s.Head()
	pg.Exec(`INSERT INTO items SELECT i, repeat('y', 100) FROM generate_series(3, 1000) i`)
	d.waitRows(t, items.ID, 1000, 20*time.Second)
	if _, err := s.Recover(ctx, []*Subscription{items}, mid); reason(err) != ReasonEvicted {
		t.Errorf("recovery across an evicted transaction: %v, want %q", err, ReasonEvicted)
	}

	// Catalog: a grant after the position.
	here := s.Head()
	pg.Exec(fmt.Sprintf(`GRANT SELECT ON other TO %s; INSERT INTO items VALUES (1001, 'x')`, role))
	d.waitRows(t, items.ID, 1001, 10*time.Second)
	if _, err := s.Recover(ctx, []*Subscription{items}, here); reason(err) != ReasonCatalog {
		t.Errorf("recovery across a catalog change: %v, want %q", err, ReasonCatalog)
	}

	// A position the owner never reached.
	if _, err := s.Recover(ctx, []*Subscription{items}, Pos{LSN: 1 << 60}); reason(err) != ReasonUnknown {
		t.Errorf("recovery from an unknown position: %v, want %q", err, ReasonUnknown)
	}
	// Off.
	off := NewService(ServiceConfig{DB: "db", Self: "x"})
	if _, err := off.Recover(ctx, nil, old); reason(err) != ReasonOff {
		t.Errorf("recovery without a window: %v, want %q", err, ReasonOff)
	}
}

// Over the mesh (QUIC on loopback): the request and the answer's parts
// cross real lanes.
func TestRecoverOverMesh(t *testing.T) {
	pg := pgtest.Shared(t)
	pg.Exec(`CREATE TABLE items (id int PRIMARY KEY, note text)`)
	rec := withRecovery(time.Minute, 0)
	n1 := startServiceNode(t, "n1", pg.URL(), "rec_mesh", nil, rec)
	n2 := startServiceNode(t, "n2", "", "", []string{n1.node.GossipAddr()}, func(c *ServiceConfig) { rec(c); c.Reader = nil })
	nodes := []*clusterService{n1, n2}
	subs := subscribeAll(t, nodes)
	if !n1.svc.Owns() {
		t.Fatal("the only reader does not own the database")
	}
	pg.Exec(`INSERT INTO items VALUES (1, 'x')`)
	n2.d.waitRows(t, subs[n2].ID, 1, 10*time.Second)
	seen := n2.svc.Head()
	n2.svc.Unsubscribe([]uint64{subs[n2].ID})
	// Enough rows of 2 KB for the answer to come in parts of 1 MiB.
	pg.Exec(`INSERT INTO items SELECT i, repeat('z', 2000) FROM generate_series(2, 1200) i`)
	n1.d.waitRows(t, subs[n1].ID, 1200, 20*time.Second)
	again := &Subscription{ID: n2.svc.NewID(), Schema: "public", Table: "items"}
	if err := n2.svc.Subscribe(context.Background(), []*Subscription{again}); err != nil {
		t.Fatal(err)
	}
	res, err := n2.svc.Recover(context.Background(), []*Subscription{again}, seen)
	if err != nil {
		t.Fatal(err)
	}
	if got := insertedIDs(res, again.ID); !slices.Equal(got, seq(2, 1200)) {
		t.Errorf("recovered %d rows over the mesh (%v…), want 2..1200", len(got), got[:min(len(got), 5)])
	}
}
