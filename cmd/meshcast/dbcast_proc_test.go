//go:build linux

package main

import (
	"context"
	"encoding/json"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshcast/meshcast/wal/pgtest"
)

// Broadcasts from the database across processes: three nodes on a
// database that already holds Supabase's realtime schema and policies
// (wal/rtschema's fixture), a WebSocket subscriber on each, and a writer
// calling realtime.send at a steady rate.

// tickStream is what one subscriber received of topic ticks: payload.i of
// each broadcast, in order.
type tickStream struct {
	name string
	mu   sync.Mutex
	is   []int
	at   []time.Time
	err  error
	done chan struct{}
}

func streamTicks(t *testing.T, c *wsClient) *tickStream {
	s := &tickStream{name: c.name, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			f, err := c.readFrame(time.Minute)
			if err != nil {
				s.mu.Lock()
				s.err = err
				s.mu.Unlock()
				return
			}
			if f.Event != "broadcast" {
				continue
			}
			var p struct {
				Payload struct{ I int } `json:"payload"`
				Meta    struct{ ID string }
			}
			json.Unmarshal(f.Payload, &p)
			s.mu.Lock()
			s.is, s.at = append(s.is, p.Payload.I), append(s.at, time.Now())
			s.mu.Unlock()
		}
	}()
	t.Cleanup(func() { c.nc.Close(); <-s.done })
	return s
}

func (s *tickStream) received() ([]int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.is), s.err
}

// check waits until s got i = to, then checks that it got every i of
// from..to at least once, in commit order (a writer's retry of a commit
// whose reply was lost commits i twice: adjacent repeats are allowed).
func (s *tickStream) check(t *testing.T, from, to int, within time.Duration) (dups int) {
	t.Helper()
	var got []int
	var err error
	waitFor(within, func() bool {
		got, err = s.received()
		return err != nil || slices.Contains(got, to)
	})
	var seq []int
	for _, i := range got {
		if i >= from && i <= to {
			seq = append(seq, i)
		}
	}
	want := from
	for _, i := range seq {
		switch {
		case i == want:
			want++
		case i == want-1:
			dups++
		default:
			t.Fatalf("%s received %s (error %v), want every message %d..%d at least once, in commit order", s.name, compactIDs(seq), err, from, to)
		}
	}
	if want != to+1 {
		t.Fatalf("%s received %s (error %v), want every message %d..%d", s.name, compactIDs(seq), err, from, to)
	}
	return dups
}

// gapAround is the longest time s went without a message after since.
func (s *tickStream) gapAround(since time.Time) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	var gap time.Duration
	for i := 1; i < len(s.at); i++ {
		if s.at[i].After(since) {
			gap = max(gap, s.at[i].Sub(s.at[i-1]))
		}
	}
	return gap
}

// sendTicks calls realtime.send for i = from..to, one every interval, one
// transaction each, retrying through a Postgres restart.
func sendTicks(ctx context.Context, url string, from, to int, interval time.Duration, sent *atomic.Int64) error {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for i := from; i <= to; {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		var err error
		if conn == nil {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			conn, err = pgx.Connect(cctx, url)
			cancel()
			if err != nil {
				conn = nil
				continue
			}
		}
		if _, err = conn.Exec(ctx, "SELECT realtime.send(jsonb_build_object('i', $1::int), 'tick', 'ticks', false)", i); err != nil {
			conn.Close(context.Background())
			conn = nil
			continue
		}
		sent.Store(int64(i))
		i++
	}
	return nil
}

// Three nodes start at once on a database with Supabase's realtime schema
// and policies; a writer calls realtime.send 50 times a second; the
// owner is killed (-9), then Postgres restarts, both mid-stream. Every
// surviving subscriber gets every message at least once, in commit order,
// and the database's own rows say every one was committed.
func TestClusterDBBroadcastFailover(t *testing.T) {
	pg := supabasePostgres(t)
	c := startCluster(t, "s3cret", "--database-url", pg.URL())
	streams := map[*node]*tickStream{}
	for _, n := range c.nodes {
		cl := connect(t, n, "sub@"+n.name)
		cl.join("realtime:ticks", "1", `{"broadcast":{"self":false},"private":false}`)
		streams[n] = streamTicks(t, cl)
	}
	// Every node's subscription is with the owner once a probe reaches all.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var probe atomic.Int64
	if !waitFor(30*time.Second, func() bool {
		sendTicks(ctx, pg.URL(), 0, 0, time.Millisecond, &probe)
		for _, s := range streams {
			if got, _ := s.received(); len(got) == 0 {
				return false
			}
		}
		return true
	}) {
		t.Fatal("no broadcast from the database reached every node")
	}
	owner := ownerOf(t, c.nodes)
	var survivors []*node
	for _, n := range c.nodes {
		if n != owner {
			survivors = append(survivors, n)
		}
	}
	const interval, count = 20 * time.Millisecond, 150
	var sent atomic.Int64
	write := func(from, to int) chan error {
		done := make(chan error, 1)
		go func() { done <- sendTicks(ctx, pg.URL(), from, to, interval, &sent) }()
		return done
	}
	wrote := write(1, count)
	if !waitFor(30*time.Second, func() bool { return sent.Load() >= count/3 }) {
		t.Fatalf("the writer is stuck at %d", sent.Load())
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
		dups := streams[n].check(t, 1, count, crashDetectWait+10*probeInterval+20*time.Second)
		t.Logf("owner killed: on %s no message for %v; %d repeats received, %v dropped by position, %v by id", n.name,
			streams[n].gapAround(killed).Round(time.Millisecond), dups, mustScrape(t, n)["meshcast_wal_duplicates_dropped_total"],
			mustScrape(t, n)["meshcast_db_broadcasts_duplicate_total"])
	}

	wrote = write(count+1, 2*count)
	if !waitFor(30*time.Second, func() bool { return sent.Load() >= count+count/3 }) {
		t.Fatalf("the writer is stuck at %d", sent.Load())
	}
	restarted := time.Now()
	pg.Restart()
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	for _, n := range survivors {
		dups := streams[n].check(t, count+1, 2*count, 30*time.Second)
		t.Logf("Postgres restarted: on %s no message for %v; %d repeats", n.name, streams[n].gapAround(restarted).Round(time.Millisecond), dups)
	}

	// The database's word: every i was committed (realtime.send turns an
	// error into a warning, so a lost insert would not fail the writer).
	var committed int
	conn, err := pgx.Connect(ctx, pg.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if err := conn.QueryRow(ctx, `SELECT count(DISTINCT (payload->>'i')::int) FROM realtime.messages
		WHERE topic = 'ticks' AND (payload->>'i')::int BETWEEN 1 AND $1`, 2*count).Scan(&committed); err != nil || committed != 2*count {
		t.Fatalf("realtime.messages holds %d of the %d messages (%v)", committed, 2*count, err)
	}
	for _, n := range c.nodes {
		if log := n.log.String(); strings.Contains(log, "streaming without the broadcasts") {
			t.Errorf("%s streamed without the broadcasts' publication:\n%s", n.name, log)
		}
	}
}

// supabasePostgres starts a throwaway Postgres with Supabase's realtime
// schema and policies (the fixture rtschema's tests read), its roles and
// the supabase_realtime publication.
func supabasePostgres(t *testing.T) *pgtest.Server {
	fixture, err := os.ReadFile("../../wal/rtschema/testdata/supabase.sql")
	if err != nil {
		t.Fatal(err)
	}
	pg := pgtest.Start(t)
	pg.Exec(`CREATE ROLE anon NOLOGIN; CREATE ROLE authenticated NOLOGIN; CREATE ROLE service_role NOLOGIN;
		CREATE ROLE supabase_realtime_admin NOLOGIN`)
	pg.Exec(string(fixture))
	pg.Exec(`CREATE PUBLICATION supabase_realtime FOR ALL TABLES`)
	return pg
}
