package wal

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/meshcast/meshcast/wal/pgtest"
)

// logBuffer collects a reader's log lines for tests to wait on.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.buf.String(), s)
}

func (l *logBuffer) contains(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Contains(l.buf.String(), s)
}

// testReader runs a Reader on pg until t ends. Its transactions arrive on
// txs; with autoAck each is acked as it is received.
type testReader struct {
	*Reader
	txs  chan *Transaction
	logs *logBuffer
	stop func()
}

func startReader(t *testing.T, url, slot string, autoAck bool, opts ...func(*Reader)) *testReader {
	t.Helper()
	tr := &testReader{txs: make(chan *Transaction, 1000), logs: &logBuffer{}}
	tr.Reader = &Reader{
		URL:            url,
		Slot:           slot,
		StatusInterval: 50 * time.Millisecond,
		MaxBackoff:     200 * time.Millisecond,
		Logger:         slog.New(slog.NewTextHandler(tr.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Handler: HandlerFunc(func(ctx context.Context, tx *Transaction) {
			tr.txs <- tx
			if autoAck {
				tr.Ack(tx.LSN)
			}
		}),
	}
	for _, o := range opts {
		o(tr.Reader)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tr.Run(ctx) }()
	var once sync.Once
	tr.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Errorf("Run did not return after cancel")
			}
		})
	}
	t.Cleanup(tr.stop)
	return tr
}

// next waits for the next transaction.
func (tr *testReader) next(t *testing.T) *Transaction {
	t.Helper()
	select {
	case tx := <-tr.txs:
		return tx
	case <-time.After(15 * time.Second):
		t.Fatalf("no transaction; log:\n%s", tr.logs.buf.String())
		return nil
	}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func queryOne[T any](t *testing.T, url, sql string, args ...any) T {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var v T
	if err := conn.QueryRow(ctx, sql, args...).Scan(&v); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return v
}

// waitStreaming waits until tr streams. (An active slot is not enough: a
// slot being created is active too, and dropped if its creator goes.)
func (tr *testReader) waitStreaming(t *testing.T) {
	t.Helper()
	eventually(t, "the reader to stream", func() bool { return tr.logs.contains(`msg="wal: streaming"`) })
}

// data decodes a change's data object.
func data(t *testing.T, c *Change) map[string]any {
	t.Helper()
	var m map[string]any
	b := c.AppendData(nil, nil)
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	return m
}

func jsonOf(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestReaderChanges(t *testing.T) {
	pg := pgtest.Shared(t)
	pg.Exec(`CREATE TABLE todos (id bigint PRIMARY KEY, title text, done bool, body text);
		ALTER TABLE todos ALTER COLUMN body SET STORAGE EXTERNAL`)
	slot := "s_" + pg.Database()
	set := metrics.NewSet()
	r := startReader(t, pg.URL(), slot, true, func(r *Reader) { r.Metrics = set })
	r.waitStreaming(t)
	if !r.logs.contains("created the missing publication FOR ALL TABLES") {
		t.Errorf("no log of the publication's creation:\n%s", r.logs.buf.String())
	}

	check := func(c *Change, key, want string) {
		t.Helper()
		d := data(t, c)
		if got := jsonOf(d[key]); got != want {
			t.Errorf("%v %s = %s, want %s", c.Kind, key, got, want)
		}
	}
	pg.Exec("INSERT INTO todos VALUES (1, 'a', false, 'x')")
	tx := r.next(t)
	c := tx.Changes[0]
	if c.Kind != Insert || c.Schema != "public" || c.Table != "todos" {
		t.Fatalf("got %v %s.%s", c.Kind, c.Schema, c.Table)
	}
	check(c, "record", `{"body":"x","done":false,"id":1,"title":"a"}`)
	check(c, "columns", `[{"name":"id","type":"int8"},{"name":"title","type":"text"},{"name":"done","type":"bool"},{"name":"body","type":"text"}]`)
	check(c, "errors", "null")
	check(c, "type", `"INSERT"`)
	if _, ok := data(t, c)["old_record"]; ok {
		t.Error("INSERT has old_record")
	}
	ts := data(t, c)["commit_timestamp"].(string)
	if ct, err := time.Parse("2006-01-02T15:04:05.000Z", ts); err != nil || time.Since(ct) > time.Minute {
		t.Errorf("commit_timestamp %q: %v", ts, err)
	}

	// Default replica identity: old_record is the key.
	pg.Exec("UPDATE todos SET title = 'b' WHERE id = 1")
	c = r.next(t).Changes[0]
	check(c, "record", `{"body":"x","done":false,"id":1,"title":"b"}`)
	check(c, "old_record", `{"id":1}`)
	pg.Exec("UPDATE todos SET id = 2 WHERE id = 1") // the key changes: its old value
	c = r.next(t).Changes[0]
	check(c, "old_record", `{"id":1}`)
	pg.Exec("DELETE FROM todos WHERE id = 2")
	c = r.next(t).Changes[0]
	check(c, "old_record", `{"id":2}`)
	if _, ok := data(t, c)["record"]; ok {
		t.Error("DELETE has record")
	}

	// Unchanged TOAST: a large value not updated is not sent.
	big := make([]byte, 8000)
	rand.Read(big)
	pg.Exec("INSERT INTO todos VALUES (3, 'a', false, $1)", hex.EncodeToString(big))
	r.next(t)
	pg.Exec("UPDATE todos SET done = true WHERE id = 3")
	c = r.next(t).Changes[0]
	check(c, "record", `{"done":true,"id":3,"title":"a"}`)

	// REPLICA IDENTITY FULL: old_record is the whole old row, and the
	// TOASTed value comes from it.
	pg.Exec("ALTER TABLE todos REPLICA IDENTITY FULL")
	pg.Exec("UPDATE todos SET title = 'c' WHERE id = 3")
	c = r.next(t).Changes[0]
	rec := data(t, c)["record"].(map[string]any)
	old := data(t, c)["old_record"].(map[string]any)
	if rec["title"] != "c" || old["title"] != "a" || rec["body"] != hex.EncodeToString(big) || old["body"] != rec["body"] {
		t.Errorf("FULL update: record %.80v old %.80v", rec, old)
	}
	pg.Exec("DELETE FROM todos WHERE id = 3")
	c = r.next(t).Changes[0]
	if old := data(t, c)["old_record"].(map[string]any); old["title"] != "c" || old["done"] != true {
		t.Errorf("FULL delete: old_record %.80v", old)
	}

	pg.Exec("INSERT INTO todos VALUES (4, 'a', false, 'x'); TRUNCATE todos") // one transaction
	tx = r.next(t)
	if len(tx.Changes) != 2 || tx.Changes[0].Kind != Insert || tx.Changes[1].Kind != Truncate || tx.Changes[1].Table != "todos" {
		t.Errorf("got %d changes, %v", len(tx.Changes), tx.Changes[len(tx.Changes)-1].Kind)
	}
	// A table without a primary key: Supabase's 400 error.
	pg.Exec("CREATE TABLE nokey (x int); INSERT INTO nokey VALUES (1)")
	c = r.next(t).Changes[0]
	check(c, "errors", `["Error 400: Bad Request, no primary key"]`)
	check(c, "record", `{}`)

	var m string
	defer func() {
		if t.Failed() {
			t.Log(m)
		}
	}()
	eventually(t, "metrics", func() bool {
		var b bytes.Buffer
		set.WritePrometheus(&b)
		m = b.String()
		return strings.Contains(m, "meshcast_wal_reader_running 1\n") && strings.Contains(m, "meshcast_wal_changes_total 11\n") &&
			strings.Contains(m, "meshcast_wal_transactions_total 10\n") && strings.Contains(m, "meshcast_wal_lag_bytes 0\n") &&
			!strings.Contains(m, "meshcast_wal_confirmed_lsn 0\n")
	})
}

func TestReaderTransactionsInCommitOrder(t *testing.T) {
	pg := pgtest.Shared(t)
	pg.Exec("CREATE TABLE t (id int PRIMARY KEY, v text)")
	slot := "s_" + pg.Database()
	r := startReader(t, pg.URL(), slot, true)
	r.waitStreaming(t)

	pg.Exec("BEGIN; INSERT INTO t VALUES (1, 'a'); UPDATE t SET v = 'b' WHERE id = 1; INSERT INTO t VALUES (2, 'c'); DELETE FROM t WHERE id = 1; COMMIT")
	tx := r.next(t)
	var got []string
	for _, c := range tx.Changes {
		got = append(got, fmt.Sprintf("%v:%d", c.Kind, c.Seq))
		if c.LSN != tx.LSN || !c.CommitTime.Equal(tx.CommitTime) {
			t.Errorf("change %d: LSN %v time %v, transaction %v %v", c.Seq, c.LSN, c.CommitTime, tx.LSN, tx.CommitTime)
		}
	}
	if s := strings.Join(got, " "); s != "INSERT:0 UPDATE:1 INSERT:2 DELETE:3" {
		t.Errorf("changes %s", s)
	}

	// Interleaved: A starts first, B commits first.
	ctx := context.Background()
	a, b := connect(t, pg.URL()), connect(t, pg.URL())
	txA, _ := a.Begin(ctx)
	txB, _ := b.Begin(ctx)
	for i := range 3 {
		if _, err := txA.Exec(ctx, "INSERT INTO t VALUES ($1, 'a')", 10+i); err != nil {
			t.Fatal(err)
		}
		if _, err := txB.Exec(ctx, "INSERT INTO t VALUES ($1, 'b')", 20+i); err != nil {
			t.Fatal(err)
		}
	}
	if err := txB.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := txA.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	first, second := r.next(t), r.next(t)
	if len(first.Changes) != 3 || len(second.Changes) != 3 || string(first.Changes[0].Record[0]) != "20" ||
		string(second.Changes[0].Record[0]) != "10" || first.LSN >= second.LSN {
		t.Errorf("interleaved: first %v %s, second %v %s", first.LSN, first.Changes[0].Record[0], second.LSN, second.Changes[0].Record[0])
	}
}

// confirmedLSN is the slot's confirmed_flush_lsn.
func confirmedLSN(t *testing.T, pg *pgtest.Server, slot string) LSN {
	t.Helper()
	return parseLSN(queryOne[string](t, pg.URL(), "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", slot))
}

func parseLSN(s string) LSN {
	var hi, lo uint32
	fmt.Sscanf(s, "%X/%X", &hi, &lo)
	return LSN(uint64(hi)<<32 | uint64(lo))
}

func TestReaderResumesAfterLastAck(t *testing.T) {
	pg := pgtest.Shared(t)
	pg.Exec("CREATE TABLE t (id int PRIMARY KEY)")
	slot := "s_" + pg.Database()
	r := startReader(t, pg.URL(), slot, false)
	r.waitStreaming(t)
	for i := range 10 {
		pg.Exec("INSERT INTO t VALUES ($1)", i)
	}
	var txs []*Transaction
	for range 10 {
		txs = append(txs, r.next(t))
	}
	r.Ack(txs[5].LSN) // 0..5 accepted; 6..9 not
	r.Ack(txs[2].LSN) // going back is ignored
	r.stop()
	// The walsender takes the final report after the reader has gone: the
	// slot reaches the last ack a moment later, and nothing beyond it.
	var got LSN
	deadline := time.Now().Add(5 * time.Second)
	for got = confirmedLSN(t, pg, slot); got < txs[5].LSN && time.Now().Before(deadline); got = confirmedLSN(t, pg, slot) {
		time.Sleep(10 * time.Millisecond)
	}
	if got != txs[5].LSN {
		t.Fatalf("confirmed %v, want %v (the last ack)", got, txs[5].LSN)
	}

	r2 := startReader(t, pg.URL(), slot, true)
	for i := 6; i < 10; i++ {
		tx := r2.next(t)
		if got := string(tx.Changes[0].Record[0]); got != fmt.Sprint(i) || tx.LSN != txs[i].LSN {
			t.Fatalf("after restart got row %s at %v, want %d at %v", got, tx.LSN, i, txs[i].LSN)
		}
	}
	pg.Exec("INSERT INTO t VALUES (10)")
	if got := string(r2.next(t).Changes[0].Record[0]); got != "10" {
		t.Fatalf("got row %s, want 10", got)
	}
}

func TestReaderConfirmsWhenIdle(t *testing.T) {
	pg := pgtest.Shared(t)
	pg.Exec("CREATE TABLE watched (id int PRIMARY KEY); CREATE TABLE other (id int PRIMARY KEY)")
	pg.Exec("CREATE PUBLICATION only_watched FOR TABLE watched")
	slot := "s_" + pg.Database()
	r := startReader(t, pg.URL(), slot, false, func(r *Reader) { r.Publication = "only_watched" })
	r.waitStreaming(t)
	// Writes the publication does not carry: nothing is delivered, and
	// the slot still advances past them.
	pg.Exec("INSERT INTO other SELECT generate_series(1, 1000)")
	end := parseLSN(queryOne[string](t, pg.URL(), "SELECT pg_current_wal_lsn()::text"))
	eventually(t, "slot confirmed past unpublished writes", func() bool { return confirmedLSN(t, pg, slot) >= end })

	// A delivered transaction not acked holds the slot back, however many
	// status reports the reader sends.
	pg.Exec("INSERT INTO watched VALUES (1)")
	tx := r.next(t)
	pg.Exec("INSERT INTO other VALUES (1001)")
	since := queryOne[time.Time](t, pg.URL(), "SELECT now()")
	eventually(t, "status reports after the insert", func() bool {
		return queryOne[bool](t, pg.URL(), `SELECT coalesce(r.reply_time > $1::timestamptz + interval '200 ms', false)
			FROM pg_stat_replication r JOIN pg_replication_slots s ON s.active_pid = r.pid WHERE s.slot_name = $2`, since, slot)
	})
	if got := confirmedLSN(t, pg, slot); got >= tx.LSN {
		t.Fatalf("confirmed %v past the unacked transaction at %v", got, tx.LSN)
	}
	r.Ack(tx.LSN)
	eventually(t, "ack confirmed", func() bool { return confirmedLSN(t, pg, slot) >= tx.LSN })
}

func TestReaderMaxSlotLag(t *testing.T) {
	pg := pgtest.Shared(t)
	pg.Exec("CREATE TABLE t (id int PRIMARY KEY, v text)")
	slot := "s_" + pg.Database()
	r := startReader(t, pg.URL(), slot, false, func(r *Reader) { r.MaxSlotLag = 64 << 10 })
	r.waitStreaming(t)
	pg.Exec("INSERT INTO t SELECT i, repeat('x', 100) FROM generate_series(1, 2000) i")
	tx := r.next(t)
	eventually(t, "forced confirmation", func() bool { return confirmedLSN(t, pg, slot) >= tx.LSN })
	if !r.logs.contains("slot lag exceeds MaxSlotLag") {
		t.Errorf("no log line:\n%s", r.logs.buf.String())
	}
}

func TestReaderSecondConsumerTakesOverWhenFirstStops(t *testing.T) {
	pg := pgtest.Shared(t)
	pg.Exec("CREATE TABLE t (id int PRIMARY KEY)")
	slot := "s_" + pg.Database()
	first := startReader(t, pg.URL(), slot, true)
	first.waitStreaming(t)
	second := startReader(t, pg.URL(), slot, true)
	eventually(t, "the second reader to report the busy slot", func() bool {
		return second.logs.contains("replication slot is in use by another consumer")
	})
	pg.Exec("INSERT INTO t VALUES (1)")
	if got := string(first.next(t).Changes[0].Record[0]); got != "1" {
		t.Fatalf("first got %s", got)
	}
	first.stop()
	pg.Exec("INSERT INTO t VALUES (2)")
	if got := string(second.next(t).Changes[0].Record[0]); got != "2" {
		t.Fatalf("second got %s", got)
	}
	select {
	case tx := <-second.txs:
		t.Fatalf("second also got %s", tx.Changes[0].Record[0])
	default:
	}
}

// A consumer that still reports its position is alive (the old owner on
// the other side of a partition): TakeOver leaves it the slot, and the
// two never take it from each other in turn.
func TestReaderTakeOverLeavesALiveConsumer(t *testing.T) {
	pg := pgtest.Shared(t)
	pg.Exec("CREATE TABLE t (id int PRIMARY KEY)")
	slot := "s_" + pg.Database()
	first := startReader(t, pg.URL(), slot, true)
	first.waitStreaming(t)
	second := startReader(t, pg.URL(), slot, true, func(r *Reader) { r.TakeOver = true; r.TakeOverSilence = 500 * time.Millisecond })
	deadline := time.Now().Add(15 * time.Second)
	for second.logs.count("not taking it over") < 3 { // over more than TakeOverSilence
		if time.Now().After(deadline) {
			t.Fatalf("the second reader did not find the slot's consumer alive 3 times:\n%s", second.logs.buf.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	pg.Exec("INSERT INTO t VALUES (1)")
	if got := string(first.next(t).Changes[0].Record[0]); got != "1" {
		t.Fatalf("first got %s", got)
	}
	if first.logs.contains("replication stream failed") || second.logs.contains("took the replication slot over") {
		t.Fatalf("the live consumer was terminated:\n%s\n%s", first.logs.buf.String(), second.logs.buf.String())
	}
	first.stop()
	pg.Exec("INSERT INTO t VALUES (2)")
	if got := string(second.next(t).Changes[0].Record[0]); got != "2" {
		t.Fatalf("second got %s", got)
	}
}

// A consumer that holds the slot and reports nothing (a node that died
// with its connection left open) is terminated after TakeOverSilence.
func TestReaderTakeOverASilentConsumer(t *testing.T) {
	pg := pgtest.Shared(t)
	pg.Exec("CREATE TABLE t (id int PRIMARY KEY)")
	slot := "s_" + pg.Database()
	pg.Exec("CREATE PUBLICATION supabase_realtime FOR ALL TABLES")
	pg.Exec("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", slot)
	cfg, err := pgconn.ParseConfig(pg.URL())
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["replication"] = "database"
	ctx := context.Background()
	silent, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close(ctx)
	if err := pglogrepl.StartReplication(ctx, silent, slot, 0, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '1'", "publication_names 'supabase_realtime'"},
	}); err != nil {
		t.Fatal(err)
	}
	second := startReader(t, pg.URL(), slot, true, func(r *Reader) { r.TakeOver = true; r.TakeOverSilence = 500 * time.Millisecond })
	waitLog(t, second, "took the replication slot over")
	second.waitStreaming(t)
	pg.Exec("INSERT INTO t VALUES (1)")
	if got := string(second.next(t).Changes[0].Record[0]); got != "1" {
		t.Fatalf("second got %s", got)
	}
}

func TestReaderSurvivesPostgresRestart(t *testing.T) {
	pg := pgtest.Start(t)
	pg.Exec("CREATE TABLE t (id int PRIMARY KEY)")
	r := startReader(t, pg.URL(), "meshcast", true)
	r.waitStreaming(t)

	// A writer inserts steadily; it records what committed.
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	committed := map[int]bool{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ctx.Err() == nil; i++ {
			if err := pgExec(ctx, pg.URL(), "INSERT INTO t VALUES ($1)", i); err == nil {
				mu.Lock()
				committed[i] = true
				mu.Unlock()
			}
		}
	}()
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(committed) }
	eventually(t, "some rows", func() bool { return count() > 50 })
	pg.Restart()
	before := count()
	eventually(t, "rows after the restart", func() bool { return count() > before+50 })
	cancel()
	<-done

	got := map[int]bool{}
	for len(got) < count() {
		for _, c := range r.next(t).Changes {
			var id int
			json.Unmarshal(c.Record[0], &id)
			got[id] = true
		}
	}
	for id := range committed {
		if !got[id] {
			t.Errorf("row %d committed but not received", id)
		}
	}
	if !r.logs.contains("retrying") {
		t.Error("no reconnection logged")
	}
}

func pgExec(ctx context.Context, url, sql string, args ...any) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql, args...)
	return err
}

// A slot Postgres invalidated (max_slot_wal_keep_size) while no reader ran
// is recreated, loudly, and streaming resumes.
func TestReaderRecreatesInvalidatedSlot(t *testing.T) {
	pg := pgtest.Start(t, pgtest.WithSetting("max_slot_wal_keep_size", "1MB"), pgtest.WithSetting("min_wal_size", "32MB"),
		pgtest.WithSetting("max_wal_size", "32MB"))
	pg.Exec("CREATE TABLE t (id int PRIMARY KEY, v text)")
	r := startReader(t, pg.URL(), "meshcast", true)
	r.waitStreaming(t)
	r.stop()
	eventually(t, "the slot to be lost", func() bool {
		pg.Exec("INSERT INTO t SELECT i, repeat('x', 200) FROM generate_series(1, 20000) i ON CONFLICT (id) DO UPDATE SET v = excluded.v")
		pg.Exec("SELECT pg_switch_wal()")
		pg.Exec("CHECKPOINT")
		return queryOne[string](t, pg.URL(), "SELECT coalesce(wal_status, '') FROM pg_replication_slots WHERE slot_name = 'meshcast'") == "lost"
	})
	r2 := startReader(t, pg.URL(), "meshcast", true)
	r2.waitStreaming(t)
	if !r2.logs.contains("recreating the slot") {
		t.Errorf("no log of the recreation:\n%s", r2.logs.buf.String())
	}
	pg.Exec("INSERT INTO t VALUES (-1, 'after')")
	if got := string(r2.next(t).Changes[0].Record[0]); got != "-1" {
		t.Fatalf("got row %s", got)
	}
}

// waitLog waits for a line of r's log that holds text, showing the log
// when none comes.
func waitLog(t *testing.T, r *testReader, text string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !r.logs.contains(text) {
		if time.Now().After(deadline) {
			t.Fatalf("no log line %q within 15s:\n%s", text, r.logs.buf.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
