package edge

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshcast/meshcast/wal/filtertest"
	"github.com/meshcast/meshcast/wal/pgtest"
)

// The differential test end to end: random rows and random filters of
// every operator (negated or not, ANDed), each filter joined on a channel
// of its own by a WebSocket client. The rows each channel receives, on
// insert (new values) and on delete (old values), are the rows the same
// predicate selects as an SQL WHERE. Unlike the matcher's differential
// test in wal, the filters go through the join (the Authorizer's casts
// and normalization), the owner's matcher, the mesh and the edge's
// mapping of ids to channels.
func TestChangesFiltersAgreeWithPostgres(t *testing.T) {
	pg := pgtest.Shared(t)
	pg.Exec(filtertest.Schema("d") + `CREATE TABLE marker (id int PRIMARY KEY);
		CREATE PUBLICATION supabase_realtime FOR TABLE d, marker;`)
	ts, _ := startChangesPair(t, pg, pairConfig{slot: "edge_filters", tweak: func(c *Config) {
		c.MaxChannelsPerConn, c.JoinsPerSecond = -1, -1
	}})
	r := rand.New(rand.NewPCG(7, 8))
	const nRows, nSubs = 100, 160
	c := ts.connect(t)
	filters := make([]filtertest.Filter, nSubs)
	ids := make([]uint64, nSubs)
	start := time.Now()
	for i := range filters {
		filters[i] = filtertest.RandomAnd(r, 3)
		b, _ := json.Marshal(map[string]string{"event": "*", "schema": "public", "table": "d", "filter": filters[i].Grammar})
		got, sys := joinWithBindings(t, c, "1", fmt.Sprintf("realtime:f%d", i), "["+string(b)+"]")
		if sys != `"Subscribed to PostgreSQL"` {
			t.Fatalf("filter %s refused: %s", filters[i].Grammar, sys)
		}
		ids[i] = got[0]
	}
	joinWithBindings(t, c, "1", "realtime:marker", `[{"event":"INSERT","schema":"public","table":"marker"}]`)
	t.Logf("%d channels joined in %v", nSubs, time.Since(start).Round(time.Millisecond))

	// The client reads while the database writes: a client that did not
	// would be closed as a slow consumer.
	type delivery struct {
		topic, kind string
		id          int
		ids         []uint64
	}
	got := make(chan []delivery, 1)
	errc := make(chan error, 1)
	go func() {
		var ds []delivery
		for {
			data, op, err := c.read(30 * time.Second)
			if err != nil {
				errc <- fmt.Errorf("after %d deliveries: %v", len(ds), err)
				return
			}
			f, err := decodeFrame(data, op, false)
			if err != nil || f.Event != "postgres_changes" {
				continue
			}
			var ch changeOf
			if err := json.Unmarshal(f.Payload, &ch); err != nil {
				errc <- err
				return
			}
			if f.Topic == "realtime:marker" {
				got <- ds
				return
			}
			row := ch.Data.Record
			if ch.Data.Type == "DELETE" {
				row = ch.Data.OldRecord
			}
			var key struct{ ID int }
			json.Unmarshal(row, &key)
			ds = append(ds, delivery{f.Topic, ch.Data.Type, key.ID, ch.IDs})
		}
	}()
	pg.Exec(filtertest.Inserts(r, "d", nRows))
	pg.Exec("CREATE TABLE d2 AS SELECT * FROM d")
	pg.Exec("DELETE FROM d")
	// Changes arrive in commit order: once the marker is in, so is
	// everything committed before it.
	pg.Exec("INSERT INTO marker VALUES (1)")
	var ds []delivery
	select {
	case ds = <-got:
	case err := <-errc:
		t.Fatal(err)
	}

	recv := make([][2][]int, nSubs) // per channel: ids received on insert, on delete
	for _, d := range ds {
		var i int
		if _, err := fmt.Sscanf(d.topic, "realtime:f%d", &i); err != nil || i < 0 || i >= nSubs {
			t.Fatalf("a change on %s", d.topic)
		}
		if len(d.ids) != 1 || d.ids[0] != ids[i] {
			t.Errorf("%s: ids %v, want [%d]", d.topic, d.ids, ids[i])
		}
		switch d.kind {
		case "INSERT":
			recv[i][0] = append(recv[i][0], d.id)
		case "DELETE":
			recv[i][1] = append(recv[i][1], d.id)
		default:
			t.Errorf("%s: a %s", d.topic, d.kind)
		}
	}
	conn := pgConn(t, pg)
	fails, nonEmpty := 0, 0
	for i, f := range filters {
		rows, err := conn.Query(context.Background(), "SELECT id FROM d2 WHERE "+f.SQL+" ORDER BY id")
		if err != nil {
			t.Fatalf("%s: %v", f.SQL, err)
		}
		want, err := pgx.CollectRows(rows, pgx.RowTo[int])
		if err != nil {
			t.Fatalf("%s: %v", f.SQL, err)
		}
		if len(want) > 0 {
			nonEmpty++
		}
		for k, kind := range []string{"insert", "delete"} {
			// Commit order is the order of ids here: each kind is one
			// transaction of ascending ids.
			if g := recv[i][k]; !slices.Equal(g, want) && fails < 20 {
				fails++
				t.Errorf("%s (%s) on %s:\n got %v\nwant %v", f.Grammar, f.SQL, kind, g, want)
			}
		}
	}
	// A differential test whose predicates select nothing proves nothing.
	if nonEmpty < nSubs/4 {
		t.Errorf("only %d of %d filters select any row", nonEmpty, nSubs)
	}
	t.Logf("%d filters (%d selecting rows), %d deliveries", nSubs, nonEmpty, len(ds))
}
