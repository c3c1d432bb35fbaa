//go:build linux

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshcast/meshcast/wal/pgtest"
)

// Postgres changes across processes: three meshcast nodes reading one real
// Postgres (wal_level=logical, a throwaway server of the test's own), with
// WebSocket subscribers on every node.

// changesConfig is a join config with one postgres_changes binding: the
// inserts of table.
func changesConfig(table string) string {
	return `{"broadcast":{"self":false,"ack":false},"presence":{"key":"","enabled":false},` +
		`"postgres_changes":[{"event":"INSERT","schema":"public","table":"` + table + `"}],"private":false}`
}

// subscribeChanges joins topic with changesConfig(table) and waits for the
// system message "Subscribed to PostgreSQL".
func (c *wsClient) subscribeChanges(topic, table string) {
	c.t.Helper()
	c.join(topic, "1", changesConfig(table))
	f := c.await(msgWait+5*time.Second, "the postgres_changes system message", func(f frame) bool {
		return f.Event == "system" && f.Topic == topic
	})
	if jsonField(f.Payload, "status") != "ok" || jsonField(f.Payload, "message") != "Subscribed to PostgreSQL" {
		c.t.Fatalf("%s: subscribing to %s: %s", c.name, table, f.raw)
	}
}

// rowStream is what one subscriber received: the id of each inserted row,
// and when it arrived. Its reader goroutine runs until the socket closes.
type rowStream struct {
	name string
	mu   sync.Mutex
	ids  []int
	at   []time.Time
	err  error
	done chan struct{}
}

// streamRows reads c's postgres_changes on its own goroutine, which ends
// (and is waited for) in t.Cleanup, or after a minute without a frame.
func streamRows(t *testing.T, c *wsClient) *rowStream { return streamRowsIdle(t, c, time.Minute) }

// streamRowsIdle is streamRows ending after idle without a frame.
func streamRowsIdle(t *testing.T, c *wsClient, idle time.Duration) *rowStream {
	s := &rowStream{name: c.name, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			f, err := c.readFrame(idle)
			if err != nil {
				s.mu.Lock()
				s.err = err
				s.mu.Unlock()
				return
			}
			if f.Event != "postgres_changes" {
				continue
			}
			var p struct {
				Data struct {
					Record struct{ ID *int } `json:"record"`
				} `json:"data"`
			}
			if json.Unmarshal(f.Payload, &p) != nil || p.Data.Record.ID == nil {
				s.mu.Lock()
				s.err = fmt.Errorf("unexpected change %s", f.raw)
				s.mu.Unlock()
				return
			}
			now := time.Now()
			s.mu.Lock()
			s.ids, s.at = append(s.ids, *p.Data.Record.ID), append(s.at, now)
			s.mu.Unlock()
		}
	}()
	t.Cleanup(func() { c.nc.Close(); <-s.done })
	return s
}

// received returns the ids received so far and the socket's error, if any.
func (s *rowStream) received() ([]int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.ids), s.err
}

// waitRows waits until s has received rows from..to, and checks it got
// each exactly once, in commit order, after what it had before.
func (s *rowStream) waitRows(t *testing.T, before, from, to int, within time.Duration) {
	t.Helper()
	var ids []int
	var err error
	waitFor(within, func() bool {
		ids, err = s.received()
		return err != nil || len(ids) > before && ids[len(ids)-1] >= to
	})
	var want []int
	for id := from; id <= to; id++ {
		want = append(want, id)
	}
	got := ids[min(before, len(ids)):]
	if !slices.Equal(got, want) {
		t.Fatalf("%s received %s (error %v), want every row %d..%d once, in commit order", s.name, compactIDs(got), err, from, to)
	}
}

// compactIDs shows a list of ids with runs collapsed: 1-50 52 51 53-60.
func compactIDs(ids []int) string {
	var parts []string
	for i := 0; i < len(ids); {
		j := i
		for j+1 < len(ids) && ids[j+1] == ids[j]+1 {
			j++
		}
		if j > i {
			parts = append(parts, fmt.Sprintf("%d-%d", ids[i], ids[j]))
		} else {
			parts = append(parts, fmt.Sprint(ids[i]))
		}
		i = j + 1
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// gapAround is the longest time s went without a row, among rows received
// after since: the outage a failover or a restart caused.
func (s *rowStream) gapAround(since time.Time) (gap time.Duration, last, next int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := 1; i < len(s.at); i++ {
		if s.at[i].After(since) && s.at[i].Sub(s.at[i-1]) > gap {
			gap, last, next = s.at[i].Sub(s.at[i-1]), s.ids[i-1], s.ids[i]
		}
	}
	return gap, last, next
}

// writer inserts rows into ticks at a steady rate, one transaction each,
// riding out a Postgres restart: a failed insert is retried (ON CONFLICT
// makes a retry of a commit that did happen a no-op, which sends nothing).
type writer struct {
	url   string
	mu    sync.Mutex
	wrote int // the last id committed
}

func (w *writer) last() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.wrote
}

// run inserts ids from..to, one every interval, and returns when done or
// ctx ends.
func (w *writer) run(ctx context.Context, from, to int, interval time.Duration) error {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for id := from; id <= to; {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		var err error
		if conn == nil {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			conn, err = pgx.Connect(cctx, w.url)
			cancel()
			if err != nil {
				conn = nil
				continue // Postgres is restarting
			}
		}
		if _, err = conn.Exec(ctx, "INSERT INTO ticks VALUES ($1) ON CONFLICT DO NOTHING", id); err != nil {
			conn.Close(context.Background())
			conn = nil
			continue
		}
		w.mu.Lock()
		w.wrote = id
		w.mu.Unlock()
		id++
	}
	return nil
}

// logTime returns the time of n's first log line after since that holds
// text (the zero time if none does).
func logTime(n *node, text string, since time.Time) time.Time {
	for _, line := range strings.Split(n.log.String(), "\n") {
		at, ok := strings.CutPrefix(line, "time=")
		if !ok || !strings.Contains(line, text) {
			continue
		}
		at, _, _ = strings.Cut(at, " ")
		if ts, err := time.Parse(time.RFC3339Nano, at); err == nil && ts.After(since) {
			return ts
		}
	}
	return time.Time{}
}

// ownerOf returns the node whose meshcast_wal_owner is 1, failing the test
// unless exactly one of nodes has it.
func ownerOf(t *testing.T, nodes []*node) *node {
	t.Helper()
	var owners []*node
	var seen []string
	for _, n := range nodes {
		v := mustScrape(t, n)["meshcast_wal_owner"]
		seen = append(seen, fmt.Sprintf("%s=%v", n.name, v))
		if v == 1 {
			owners = append(owners, n)
		}
	}
	if len(owners) != 1 {
		t.Fatalf("meshcast_wal_owner: %s; want exactly one node owning the database", strings.Join(seen, " "))
	}
	return owners[0]
}

// Subscribers on all three nodes; a writer inserts 50 rows a second; the
// owner is killed (-9), then Postgres itself is killed and restarted, then
// the next owner stops gracefully, all mid-stream. Every surviving
// subscriber gets every row exactly once (duplicates of the redelivered
// tail are dropped by its node), in commit order, and the stream resumes
// within the bound. MESHCAST_FAILOVER_PROBE_INTERVAL (e.g. 1s,
// the default of --gossip-probe-interval) measures it at another speed of
// failure detection.
func TestClusterChangesFailover(t *testing.T) {
	pg := pgtest.Start(t)
	pg.Exec(`CREATE TABLE ticks (id int PRIMARY KEY); CREATE PUBLICATION supabase_realtime FOR ALL TABLES`)
	args := []string{"--database-url", pg.URL()}
	probe := probeInterval
	if v := os.Getenv("MESHCAST_FAILOVER_PROBE_INTERVAL"); v != "" {
		var err error
		if probe, err = time.ParseDuration(v); err != nil {
			t.Fatalf("MESHCAST_FAILOVER_PROBE_INTERVAL: %v", err)
		}
		args = append(args, "--gossip-probe-interval", v) // after spawnNode's: it wins
	}
	c := startCluster(t, "s3cret", args...)
	const topic = "realtime:ticks"
	streams := map[*node]*rowStream{}
	for _, n := range c.nodes {
		cl := connect(t, n, "sub@"+n.name)
		cl.subscribeChanges(topic, "ticks")
		streams[n] = streamRows(t, cl)
	}
	owner := ownerOf(t, c.nodes)
	var survivors []*node
	for _, n := range c.nodes {
		if n != owner {
			survivors = append(survivors, n)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := &writer{url: pg.URL()}
	const interval, rows = 20 * time.Millisecond, 150
	writeAll := func(from, to int) chan error {
		done := make(chan error, 1)
		go func() { done <- w.run(ctx, from, to, interval) }()
		return done
	}

	// The owner dies a third of the way in.
	wrote := writeAll(1, rows)
	if !waitFor(30*time.Second, func() bool { return w.last() >= rows/3 }) {
		t.Fatalf("the writer is stuck at %d", w.last())
	}
	owner.cmd.Process.Kill()
	killed := time.Now()
	if !owner.exited(5 * time.Second) {
		t.Fatal("the owner did not die")
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	for _, n := range survivors {
		streams[n].waitRows(t, 0, 1, rows, crashDetectWait+10*probe+20*time.Second)
	}
	newOwner := ownerOf(t, survivors)
	detected, streaming := logTime(newOwner, `msg="database owner"`, killed), logTime(newOwner, `msg="wal: streaming"`, killed)
	t.Logf("failover: %s took over %v after the kill and streamed %v after that", newOwner.name,
		detected.Sub(killed).Round(time.Millisecond), streaming.Sub(detected).Round(time.Millisecond))
	for _, n := range survivors {
		gap, last, next := streams[n].gapAround(killed)
		t.Logf("failover (probe interval %v): on %s no row for %v, between rows %d and %d (a row every %v); %v duplicates dropped",
			probe, n.name, gap.Round(time.Millisecond), last, next, interval, mustScrape(t, n)["meshcast_wal_duplicates_dropped_total"])
		// Detection takes about 4-7 probe intervals; the issue asks for
		// streaming again within 5 s of it.
		if gap > 10*probe+5*time.Second {
			t.Errorf("%s: the stream stopped for %v after the owner died", n.name, gap)
		}
	}

	// Postgres crashes (immediate shutdown) and comes back mid-stream.
	before := map[*node]int{}
	for _, n := range survivors {
		ids, _ := streams[n].received()
		before[n] = len(ids)
	}
	wrote = writeAll(rows+1, 2*rows)
	if !waitFor(30*time.Second, func() bool { return w.last() >= rows+rows/3 }) {
		t.Fatalf("the writer is stuck at %d", w.last())
	}
	restarted := time.Now()
	pg.Restart()
	t.Logf("Postgres restarted in %v", time.Since(restarted).Round(time.Millisecond))
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	for _, n := range survivors {
		streams[n].waitRows(t, before[n], rows+1, 2*rows, 30*time.Second)
		gap, last, next := streams[n].gapAround(restarted)
		t.Logf("Postgres restart: on %s no row for %v, between rows %d and %d", n.name, gap.Round(time.Millisecond), last, next)
	}

	// The owner stops gracefully (SIGTERM): it hands the reader over to
	// the last node, whose subscriber loses nothing either.
	leaving := ownerOf(t, survivors)
	var last *node
	for _, n := range survivors {
		if n != leaving {
			last = n
		}
	}
	ids, _ := streams[last].received()
	wrote = writeAll(2*rows+1, 3*rows)
	if !waitFor(30*time.Second, func() bool { return w.last() >= 2*rows+rows/3 }) {
		t.Fatalf("the writer is stuck at %d", w.last())
	}
	leaving.signal(t, syscall.SIGTERM)
	stopped := time.Now()
	if !leaving.exited(15 * time.Second) {
		t.Fatal("the owner did not stop on SIGTERM")
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	streams[last].waitRows(t, len(ids), 2*rows+1, 3*rows, 30*time.Second)
	gap, from, to := streams[last].gapAround(stopped)
	t.Logf("graceful handover from %s: on %s no row for %v, between rows %d and %d", leaving.name, last.name, gap.Round(time.Millisecond), from, to)
}
