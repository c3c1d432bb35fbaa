package wal

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/meshcast/meshcast/wal/filtertest"
	"github.com/meshcast/meshcast/wal/pgtest"
)

// TestMatcherAgreesWithPostgres is the differential test: random rows and
// random filters of every operator, negated or not, ANDed; the rows each
// subscription matches, on insert (new values) and on delete (old values),
// are the rows the same predicate selects in SQL.
func TestMatcherAgreesWithPostgres(t *testing.T) {
	pg := pgtest.Shared(t)
	pg.Exec(filtertest.Schema("d") + "CREATE PUBLICATION p FOR TABLE d;")
	pg.Exec("SELECT pg_create_logical_replication_slot('diff', 'pgoutput')")

	r := rand.New(rand.NewPCG(1, 2))
	const nRows, nSubs = 150, 500
	pg.Exec(filtertest.Inserts(r, "d", nRows))
	// The SQL side evaluates on a copy of the rows.
	pg.Exec("CREATE TABLE d2 AS SELECT * FROM d")
	pg.Exec("DELETE FROM d")

	conn := connect(t, pg.URL())
	txs := slotTransactions(t, conn, "diff", "p")
	var changes []*Change
	for _, tx := range txs {
		changes = append(changes, tx.Changes...)
	}
	if len(changes) != 2*nRows {
		t.Fatalf("%d changes, want %d", len(changes), 2*nRows)
	}

	m := NewMatcher()
	subs := make([]filtertest.Filter, nSubs)
	ctx := context.Background()
	for i := range subs {
		subs[i] = filtertest.RandomAnd(r, 3)
		filters, err := ParseFilter(subs[i].Grammar)
		if err != nil {
			t.Fatalf("%s: %v", subs[i].Grammar, err)
		}
		m.Add(&Subscription{ID: uint64(i), Node: "n", Schema: "public", Table: "d", Filters: filters})
	}
	got := make([][2][]int, nSubs) // per subscription: ids matched on insert, on delete
	for _, c := range changes {
		var id int
		row := c.Record
		k := 0
		if c.Kind == Delete {
			row, k = c.OldRecord, 1
		}
		fmt.Sscan(string(row[0]), &id)
		for _, s := range m.Match(c, nil) {
			got[s.ID][k] = append(got[s.ID][k], id)
		}
	}
	fails := 0
	for i, s := range subs {
		rows, err := conn.Query(ctx, "SELECT id FROM d2 WHERE "+s.SQL+" ORDER BY id")
		if err != nil {
			t.Fatalf("%s: %v", s.SQL, err)
		}
		want, err := pgx.CollectRows(rows, pgx.RowTo[int])
		if err != nil {
			t.Fatalf("%s: %v", s.SQL, err)
		}
		for k, kind := range []string{"insert", "delete"} {
			g := got[i][k]
			slices.Sort(g)
			if !slices.Equal(g, want) && fails < 20 {
				fails++
				t.Errorf("%s (%s) on %s:\n got %v\nwant %v", s.Grammar, s.SQL, kind, g, want)
			}
		}
	}
	t.Logf("%d subscriptions, %d changes", nSubs, len(changes))
}
