package wal

import (
	"context"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/meshcast/meshcast/wal/pgtest"
)

// messagesSchema is realtime.messages in small: partitioned, with a
// partition that takes every row.
const messagesSchema = `CREATE SCHEMA realtime;
CREATE TABLE realtime.messages (id uuid NOT NULL DEFAULT gen_random_uuid(), topic text NOT NULL, extension text NOT NULL,
	payload jsonb, private boolean DEFAULT false, inserted_at timestamp NOT NULL DEFAULT now(), PRIMARY KEY (id, inserted_at))
	PARTITION BY RANGE (inserted_at);
CREATE TABLE realtime.messages_all PARTITION OF realtime.messages DEFAULT;
CREATE TABLE t (id int PRIMARY KEY);
CREATE PUBLICATION supabase_realtime FOR ALL TABLES;`

// nextOf waits for the next transaction that changed table.
func (tr *testReader) nextOf(t *testing.T, table string) *Change {
	t.Helper()
	for {
		tx := tr.next(t)
		for _, c := range tx.Changes {
			if c.Table == table {
				return c
			}
		}
	}
}

// The rows of realtime.messages come on the same slot as the app's
// changes, as the partitioned table's own (not its partition's), inserts
// only; the reader makes the publication, and nodes starting at once both
// find it.
func TestReaderBroadcasts(t *testing.T) {
	pg := pgtest.Shared(t)
	pg.Exec(messagesSchema)
	pub := "b_" + pg.Database()
	ctx := context.Background()
	var wg sync.WaitGroup
	oks := make([]bool, 2)
	errs := make([]error, 2)
	for i := range 2 {
		wg.Go(func() {
			conn, err := pgx.Connect(ctx, pg.URL())
			if err != nil {
				errs[i] = err
				return
			}
			defer conn.Close(ctx)
			oks[i], errs[i] = ensureBroadcasts(ctx, conn, pub)
		})
	}
	wg.Wait()
	if !oks[0] || !oks[1] || errs[0] != nil || errs[1] != nil {
		t.Fatalf("two nodes making the publication at once: %v %v, %v %v", oks[0], errs[0], oks[1], errs[1])
	}
	r := startReader(t, pg.URL(), "s_"+pg.Database(), true, func(r *Reader) { r.Broadcasts = pub })
	r.waitStreaming(t)
	pg.Exec(`INSERT INTO realtime.messages (topic, extension, payload) VALUES ('room', 'broadcast', '{"a": 1}')`)
	pg.Exec(`UPDATE realtime.messages SET payload = '{}'`)
	pg.Exec(`INSERT INTO t VALUES (1)`)
	c := r.nextOf(t, "messages")
	if c.Schema != "realtime" || c.Kind != Insert || string(c.Record[1]) != `"room"` {
		t.Fatalf("got %s of %s.%s %s, want the insert into realtime.messages", c.Kind, c.Schema, c.Table, c.Record)
	}
	if c := r.nextOf(t, "t"); string(c.Record[0]) != "1" {
		t.Fatalf("the app's change: %s", c.Record)
	}
}

// A slot older than the broadcasts' publication (a node upgraded): Postgres
// before 18 cannot decode the changes before the publication was made
// with it, so the reader streams without it until the slot has passed
// that point, then with it; nothing of the app's changes is lost.
func TestReaderBroadcastsAfterAnOlderSlot(t *testing.T) {
	pg := pgtest.Shared(t)
	pg.Exec(messagesSchema)
	slot := "s_" + pg.Database()
	old := startReader(t, pg.URL(), slot, false)
	old.waitStreaming(t)
	pg.Exec(`INSERT INTO t VALUES (1)`) // read, never acked
	old.nextOf(t, "t")
	old.stop()

	r := startReader(t, pg.URL(), slot, true, func(r *Reader) { r.Broadcasts = "b_" + pg.Database() })
	if c := r.nextOf(t, "t"); string(c.Record[0]) != "1" {
		t.Fatalf("the app's change before the publication: %s", c.Record)
	}
	pg.Exec(`INSERT INTO t VALUES (2)`)
	if c := r.nextOf(t, "t"); string(c.Record[0]) != "2" {
		t.Fatalf("the app's change after the publication: %s", c.Record)
	}
	eventually(t, "the reader to stream the broadcasts too", func() bool {
		pg.Exec(`INSERT INTO realtime.messages (topic, extension) VALUES ('room', 'broadcast')`)
		for {
			select {
			case tx := <-r.txs:
				for _, c := range tx.Changes {
					if c.Table == "messages" && c.Schema == "realtime" {
						return true
					}
				}
			default:
				return false
			}
		}
	})
	if v := queryOne[int32](t, pg.URL(), "SELECT current_setting('server_version_num')::int"); v < 180000 &&
		!r.logs.contains("predates the broadcasts' publication") {
		t.Errorf("Postgres %d: the reader did not stream without the publication first; log:\n%s", v, r.logs.buf.String())
	}
}
