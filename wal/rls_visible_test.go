package wal

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/meshcast/meshcast/wal/pgtest"
)

func TestSnapshotSees(t *testing.T) {
	const epoch = uint64(1) << 32
	for _, tc := range []struct {
		snap string
		xid  uint32
		want bool
	}{
		{"100:105:", 99, true},  // before xmin
		{"100:105:", 104, true}, // between, not running
		{"100:105:102,103", 102, false},
		{"100:105:102,103", 101, true},
		{"100:105:", 105, false}, // not completed when the snapshot was taken
		{"100:100:", 100, false}, // ditto, nothing running
		{"100:105:", 110, false}, // later
		// Across an epoch boundary: xmax in epoch 1, xid of epoch 0 or 1.
		{fmt.Sprintf("%d:%d:", epoch-10, epoch+5), 4294967290, true},
		{fmt.Sprintf("%d:%d:%d", epoch-10, epoch+5, epoch-6), 4294967290, false},
		{fmt.Sprintf("%d:%d:", epoch-10, epoch+5), 3, true},
		{fmt.Sprintf("%d:%d:", epoch-10, epoch+5), 7, false},
	} {
		got, err := snapshotSees(tc.snap, tc.xid)
		if err != nil || got != tc.want {
			t.Errorf("snapshotSees(%q, %d) = %v, %v; want %v", tc.snap, tc.xid, got, err, tc.want)
		}
	}
	if _, err := snapshotSees("bad", 1); err == nil {
		t.Error("a bad snapshot parsed")
	}
}

// TestAuthorizeWaitsForVisibility: Postgres streams a commit a moment
// before other sessions see the transaction. A change checked in that
// moment must not look invisible: here its transaction commits 200 ms
// after Authorize starts, and the subscriber who may see the row still
// gets it.
func TestAuthorizeWaitsForVisibility(t *testing.T) {
	pg := pgtest.Shared(t)
	role := "vis_" + pg.Database()
	pg.Exec(fmt.Sprintf(`
		DROP ROLE IF EXISTS %[1]s; CREATE ROLE %[1]s;
		CREATE TABLE notes (id int PRIMARY KEY, owner text);
		GRANT SELECT ON notes TO %[1]s;
		ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
		CREATE POLICY own ON notes FOR SELECT TO %[1]s
			USING (owner = current_setting('request.jwt.claims', true)::jsonb ->> 'sub');
		CREATE PUBLICATION supabase_realtime FOR ALL TABLES`, role))
	t.Cleanup(func() { pg.Exec(fmt.Sprintf("DROP OWNED BY %[1]s; DROP ROLE %[1]s", role)) })
	slot := "vis_" + pg.Database()
	pg.Exec("SELECT pg_create_logical_replication_slot('" + slot + "', 'pgoutput')")
	pg.Exec(`INSERT INTO notes VALUES (2, 'alice')`)
	ctx := context.Background()
	c := slotTransactions(t, connect(t, pg.URL()), slot, "supabase_realtime")[0].Changes[0]

	// Row 1 is inserted by a transaction still open: c stands for its
	// change, as the stream hands it over the moment before it is visible.
	open := connect(t, pg.URL())
	tx, err := open.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var xid string
	if err := tx.QueryRow(ctx, `INSERT INTO notes VALUES (1, 'alice') RETURNING pg_current_xact_id()::text`).Scan(&xid); err != nil {
		t.Fatal(err)
	}
	full, _ := strconv.ParseUint(xid, 10, 64)
	c.XID = uint32(full)
	c.Record = append([]json.RawMessage{json.RawMessage("1")}, c.Record[1:]...)

	a := newAuthorizer(t, pg)
	sub, err := a.Check(ctx, Binding{Table: "notes"}, role, `{"sub":"alice"}`)
	if err != nil {
		t.Fatal(err)
	}
	committed := make(chan error, 1)
	go func() {
		time.Sleep(200 * time.Millisecond)
		committed <- tx.Commit(ctx)
	}()
	start := time.Now()
	hits := [][]*Subscription{{sub}}
	err = a.Authorize(ctx, []*Change{c}, hits)
	took := time.Since(start)
	if cerr := <-committed; cerr != nil {
		t.Fatal(cerr)
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(hits[0]) != 1 {
		t.Fatalf("the row's owner lost it: checked before its transaction was visible (Authorize took %v)", took)
	}
	if took < 150*time.Millisecond {
		t.Errorf("Authorize took %v: it did not wait for the transaction", took)
	}
}
