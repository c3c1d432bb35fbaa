package chanauth

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/meshcast/meshcast/wal/pgtest"
	"github.com/meshcast/meshcast/wal/rtschema"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(pgtest.Main(m)) }

// membersSchema is a Supabase app in small: its roles (cluster-wide, so
// made only when missing) and auth.uid(), the realtime schema, and a
// membership table whose rows say which extensions a user may read and
// write in a room, with the policies an app writes on realtime.messages.
// Topic "boom" makes the read policy fail, "gate" makes both wait for
// advisory lock 42.
const membersSchema = `
DO $$ BEGIN CREATE ROLE anon NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
DO $$ BEGIN CREATE ROLE authenticated NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
DO $$ BEGIN CREATE ROLE service_role NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
CREATE SCHEMA auth;
CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $$
	SELECT nullif(current_setting('request.jwt.claim.sub', true), '')::uuid $$;
GRANT USAGE ON SCHEMA auth TO anon, authenticated;
CREATE TABLE members (user_id uuid, room text, reads text[], writes text[], PRIMARY KEY (user_id, room));
GRANT SELECT ON members TO authenticated;
CREATE FUNCTION gate() RETURNS bool LANGUAGE sql VOLATILE AS $$ SELECT pg_advisory_xact_lock(42); SELECT true $$;
GRANT EXECUTE ON FUNCTION gate() TO authenticated;
`

// membersPolicies run after the realtime schema exists.
const membersPolicies = `
CREATE POLICY "members read" ON realtime.messages FOR SELECT TO authenticated USING (
	(realtime.topic() <> 'gate' OR gate()) AND
	(CASE WHEN realtime.topic() = 'boom' THEN 1/(octet_length(realtime.topic()) - 4) = 1 ELSE true END) AND
	EXISTS (SELECT 1 FROM members m WHERE m.user_id = auth.uid() AND m.room = realtime.topic()
		AND realtime.messages.extension = ANY (m.reads)));
CREATE POLICY "members write" ON realtime.messages FOR INSERT TO authenticated WITH CHECK (
	(realtime.topic() <> 'gate' OR gate()) AND
	EXISTS (SELECT 1 FROM members m WHERE m.user_id = auth.uid() AND m.room = realtime.topic()
		AND realtime.messages.extension = ANY (m.writes)));
CREATE POLICY "team header" ON realtime.messages FOR SELECT TO anon USING (
	current_setting('request.headers', true)::jsonb ->> 'x-team' = realtime.topic() AND
	current_setting('request.jwt.claims', true)::jsonb ->> 'plan' = 'pro' AND
	current_setting('request.jwt.claim.role', true) = 'anon');
`

// setup makes a database with the app's schema and returns it.
func setup(t testing.TB) *pgtest.Server {
	t.Helper()
	pg := pgtest.Shared(t)
	pg.Exec(membersSchema)
	pg.Exec(rtschema.SQL(rtschema.Config{}))
	pg.Exec(membersPolicies)
	return pg
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newChecker(t testing.TB, cfg Config) (*Checker, *metrics.Set) {
	t.Helper()
	set := metrics.NewSet()
	cfg.Logger, cfg.Metrics = quiet(), set
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c, set
}

func user(n int) string { return fmt.Sprintf("00000000-0000-0000-0000-%012d", n) }

func request(write bool, ext Ext, topic, sub string) Request {
	return Request{Write: write, Ext: ext, Topic: topic, Role: "authenticated", Sub: sub,
		Claims: `{"role":"authenticated","sub":"` + sub + `"}`, Headers: "{}"}
}

func counter(set *metrics.Set, name string) uint64 { return set.GetOrCreateCounter(name).Get() }

// Every combination of read and write of broadcast and presence, each
// allowed or denied by membership rows; the rows are the oracle. Nothing
// the checks insert stays.
func TestPolicyMatrix(t *testing.T) {
	pg := setup(t)
	c, _ := newChecker(t, Config{URL: pg.URL()})
	sets := [][]string{{}, {"broadcast"}, {"presence"}, {"broadcast", "presence"}}
	type want struct{ read, write Ext }
	cases := map[string]want{}
	n := 0
	var subs []string
	var readSets, writeSets [][]string
	for _, reads := range sets {
		for _, writes := range sets {
			n++
			sub := user(n)
			subs, readSets, writeSets = append(subs, sub), append(readSets, reads), append(writeSets, writes)
			cases[sub] = want{extOf(reads), extOf(writes)}
		}
	}
	pg.Exec(`INSERT INTO members SELECT s::uuid, 'room', string_to_array(r, ',', ''), string_to_array(w, ',', '')
		FROM unnest($1::text[], $2::text[], $3::text[]) AS m(s, r, w)`, subs, joinAll(readSets), joinAll(writeSets))
	cases[user(999)] = want{} // not a member
	// All at once: they go in a few round trips.
	var wg sync.WaitGroup
	expect := func(req Request, want Ext) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if got, err := c.Check(t.Context(), req); err != nil || got != want {
				t.Errorf("%s write %v %v of %s = %v, %v; want %v", req.Sub, req.Write, req.Ext, req.Topic, got, err, want)
			}
		}()
	}
	for sub, w := range cases {
		for _, ext := range []Ext{Broadcast, Presence, Broadcast | Presence} {
			expect(request(false, ext, "room", sub), w.read&ext)
			expect(request(true, ext, "room", sub), w.write&ext)
		}
		// Another topic is another room.
		expect(request(false, Broadcast|Presence, "other", sub), 0)
	}
	wg.Wait()
	var left int
	if err := pgxQueryRow(t, pg.URL(), "SELECT count(*) FROM realtime.messages", &left); err != nil || left != 0 {
		t.Errorf("realtime.messages holds %d rows after the checks (%v)", left, err)
	}
}

func joinAll(sets [][]string) []string {
	var out []string
	for _, s := range sets {
		out = append(out, strings.Join(s, ","))
	}
	return out
}

func extOf(names []string) Ext {
	var e Ext
	for _, n := range names {
		for _, x := range extNames {
			if x.name == n {
				e |= x.ext
			}
		}
	}
	return e
}

func pgxQueryRow(t testing.TB, url, sql string, dst ...any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return conn.QueryRow(ctx, sql).Scan(dst...)
}

// The checks see the JWT's claims and role and the request's headers as
// Supabase sets them.
func TestSettings(t *testing.T) {
	pg := setup(t)
	c, _ := newChecker(t, Config{URL: pg.URL()})
	req := Request{Ext: Broadcast, Topic: "blue", Role: "anon", Claims: `{"role":"anon","plan":"pro"}`, Headers: `{"x-team":"blue"}`}
	if got, err := c.Check(t.Context(), req); err != nil || got != Broadcast {
		t.Errorf("with the claims and headers the policy asks for: %v, %v", got, err)
	}
	req.Headers = `{"x-team":"red"}`
	if got, err := c.Check(t.Context(), req); err != nil || got != 0 {
		t.Errorf("with another team's header: %v, %v", got, err)
	}
	req.Headers, req.Claims = `{"x-team":"blue"}`, `{"role":"anon","plan":"free"}`
	if got, err := c.Check(t.Context(), req); err != nil || got != 0 {
		t.Errorf("with other claims: %v, %v", got, err)
	}
}

// Identical checks in flight share one query, and the checks that arrive
// while a round trip is out go together in the next one; a policy that
// fails fails only its own check.
func TestSharedAndBatched(t *testing.T) {
	pg := setup(t)
	pg.Exec(`INSERT INTO members SELECT ('00000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid, 'room', '{broadcast}', '{}'
		FROM generate_series(1, 20) i`)
	c, set := newChecker(t, Config{URL: pg.URL(), Conns: 1})
	// Hold the only connection in a round trip that waits for lock 42.
	lock, err := pgx.Connect(t.Context(), pg.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close(context.Background())
	if _, err := lock.Exec(t.Context(), "SELECT pg_advisory_lock(42)"); err != nil {
		t.Fatal(err)
	}
	type result struct {
		sub        string
		got        Ext
		err        error
		boom, gate bool
	}
	results := make(chan result, 100)
	var wg sync.WaitGroup
	ask := func(req Request, boom bool) {
		defer wg.Done()
		got, err := c.Check(context.Background(), req)
		results <- result{req.Sub, got, err, boom, req.Topic == "gate"}
	}
	wg.Add(1)
	go ask(request(false, Broadcast, "gate", user(1)), false)
	waitFor(t, "the gated check is out", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.inflight) == 1 && len(c.queue) == 0
	})
	// 20 users, each asking 3 times, and one check whose policy fails.
	for i := 1; i <= 20; i++ {
		for range 3 {
			wg.Add(1)
			go ask(request(false, Broadcast, "room", user(i)), false)
		}
	}
	wg.Add(1)
	go ask(request(false, Broadcast, "boom", user(1)), true)
	waitFor(t, "every check asked", func() bool { return counter(set, "meshcast_channel_auth_db_checks_total") == 62 })
	if _, err := lock.Exec(t.Context(), "SELECT pg_advisory_unlock(42)"); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(results)
	for r := range results {
		switch {
		case r.boom:
			if r.err == nil || errors.Is(r.err, ErrUnavailable) {
				t.Errorf("the failing policy's check: %v, %v", r.got, r.err)
			}
		case r.gate:
			if r.err != nil || r.got != 0 {
				t.Errorf("the gated check (not a member of gate): %v, %v", r.got, r.err)
			}
		case r.err != nil || r.got != Broadcast:
			t.Errorf("%s: %v, %v", r.sub, r.got, r.err)
		}
	}
	if rt, q, sh := counter(set, "meshcast_channel_auth_db_round_trips_total"), counter(set, "meshcast_channel_auth_db_queries_total"),
		counter(set, "meshcast_channel_auth_db_shared_total"); rt != 2 || q != 22 || sh != 40 {
		t.Errorf("round trips %d, queries %d, shared %d; want 2 (the gate, then all the rest), 22, 40", rt, q, sh)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A day without a partition, a database that cannot be reached, and a
// role that does not exist are errors, not answers.
func TestErrors(t *testing.T) {
	pg := setup(t)
	pg.Exec("INSERT INTO members VALUES ($1, 'room', '{broadcast}', '{broadcast}')", user(1))
	c, _ := newChecker(t, Config{URL: pg.URL()})
	req := request(false, Broadcast, "room", user(1))
	req.Role = "no_such_role"
	if _, err := c.Check(t.Context(), req); err == nil || errors.Is(err, ErrUnavailable) {
		t.Errorf("a role that does not exist: %v", err)
	}
	today := "realtime.messages_" + time.Now().UTC().Format("2006_01_02")
	pg.Exec("DROP TABLE " + today)
	for _, write := range []bool{false, true} {
		if _, err := c.Check(t.Context(), request(write, Broadcast, "room", user(1))); !errors.Is(err, ErrMissingPartition) {
			t.Errorf("write %v without today's partition: %v", write, err)
		}
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	down, _ := newChecker(t, Config{URL: "postgres://postgres@" + addr + "/x?sslmode=disable&connect_timeout=2"})
	if _, err := down.Check(t.Context(), request(false, Broadcast, "room", user(1))); !errors.Is(err, ErrUnavailable) {
		t.Errorf("an unreachable database: %v", err)
	}
	down.Close()
	if _, err := down.Check(t.Context(), request(false, Broadcast, "room", user(1))); !errors.Is(err, ErrUnavailable) {
		t.Errorf("a closed checker: %v", err)
	}
}

// BenchmarkCheck: read checks of distinct users against the membership
// policy, 64 at a time.
func BenchmarkCheck(b *testing.B) {
	pg := setup(b)
	pg.Exec(`INSERT INTO members SELECT ('00000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid, 'room', '{broadcast}', '{}'
		FROM generate_series(1, 2000) i`)
	c, set := newChecker(b, Config{URL: pg.URL()})
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i := range b.N {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if got, err := c.Check(context.Background(), request(false, Broadcast, "room", user(i%2000+1))); err != nil || got != Broadcast {
				b.Errorf("check: %v %v", got, err)
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(counter(set, "meshcast_channel_auth_db_queries_total"))/float64(counter(set, "meshcast_channel_auth_db_round_trips_total")), "checks/round-trip")
}
