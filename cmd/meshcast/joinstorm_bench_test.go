//go:build linux

package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/golang-jwt/jwt/v5"
	"github.com/jackc/pgx/v5"

	"github.com/meshcast/meshcast/edge"
	"github.com/meshcast/meshcast/wal/pgtest"
	"github.com/meshcast/meshcast/wal/rtschema"
)

// The join storm of private channels decided by an app's policies (issue
// 17 §3): b.N joins at joinStormRate a second, open loop (each join's
// latency counts from when it was due, so a slow server cannot slow the
// load down), from joinStormConns WebSocket clients, each a user joining
// rooms it is a member of and leaving them again, against a node wired as
// main wires it (--database-url, --jwt-secret, the default
// --channel-auth-* flags) and Postgres with Supabase's documented
// membership policy. Run it as README says:
//
//	go test -run '^$' -bench JoinStorm -benchtime 10000x ./cmd/meshcast

const (
	joinStormRate  = 1000 // joins a second
	joinStormConns = 200
	joinStormUsers = 2000 // members; each of joinStormRooms rooms
	joinStormRooms = 10
	joinStormKey   = "join-storm-secret-with-at-least-32-characters"
)

// joinStormSchema is the app: Supabase's roles and auth.uid(), the
// membership table of its docs with joinStormUsers × joinStormRooms rows,
// and the docs' read policy on realtime.messages.
const joinStormSchema = `
DO $$ BEGIN CREATE ROLE anon NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
DO $$ BEGIN CREATE ROLE authenticated NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
DO $$ BEGIN CREATE ROLE service_role NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
CREATE SCHEMA auth;
CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $$
	SELECT nullif(current_setting('request.jwt.claim.sub', true), '')::uuid $$;
GRANT USAGE ON SCHEMA auth TO anon, authenticated;
CREATE TABLE rooms_members (user_id uuid NOT NULL, room text NOT NULL, PRIMARY KEY (user_id, room));
GRANT SELECT ON rooms_members TO authenticated;
`

const joinStormPolicy = `
INSERT INTO rooms_members SELECT u.id, 'room-' || r FROM
	(SELECT ('00000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid AS id, i FROM generate_series(1, %d) i) u,
	generate_series(0, %d) r;
ANALYZE rooms_members;
CREATE POLICY "members read" ON realtime.messages FOR SELECT TO authenticated USING (
	EXISTS (SELECT 1 FROM rooms_members m WHERE m.user_id = auth.uid() AND m.room = realtime.topic())
	AND realtime.messages.extension IN ('broadcast', 'presence'));
`

func BenchmarkJoinStorm(b *testing.B) {
	pg := pgtest.Start(b)
	pg.Exec(joinStormSchema)
	pg.Exec(rtschema.SQL(rtschema.Config{}))
	pg.Exec(fmt.Sprintf(joinStormPolicy, joinStormUsers, joinStormRooms-1))
	addr, timed := startStormNode(b, pg.URL())

	clients := make([]*stormClient, joinStormConns)
	for i := range clients {
		c, err := dialStorm(addr, i+1)
		if err != nil {
			b.Fatal(err)
		}
		defer c.nc.Close()
		clients[i] = c
	}
	b.ReportAllocs()
	b.ResetTimer()
	pgBefore, nodeBefore := backendCPU(b, pg.URL()), processCPU()
	start := time.Now()
	// lat counts from when a join was due (open loop), sent from when its
	// client wrote it: the difference is the clients' own lateness.
	lat, sent := make([][]time.Duration, len(clients)), make([][]time.Duration, len(clients))
	errs := make(chan error, len(clients))
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Join k of the storm is client k % conns's, due at k / rate.
			for k := i; k < b.N; k += len(clients) {
				due := start.Add(time.Duration(k) * time.Second / joinStormRate)
				time.Sleep(time.Until(due))
				at := time.Now()
				if err := c.joinAndLeave(k / len(clients)); err != nil {
					errs <- err
					return
				}
				lat[i] = append(lat[i], time.Since(due))
				sent[i] = append(sent[i], time.Since(at))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	pgCPU, nodeCPU := backendCPU(b, pg.URL())-pgBefore, processCPU()-nodeBefore
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	all := slices.Concat(lat...)
	pct := func(ds []time.Duration, p float64) float64 {
		slices.Sort(ds)
		return float64(ds[int(p*float64(len(ds)-1))].Microseconds()) / 1000
	}
	b.ReportMetric(float64(len(all))/elapsed.Seconds(), "joins/s")
	b.ReportMetric(pct(all, 0.50), "p50-ms")
	b.ReportMetric(pct(all, 0.95), "p95-ms")
	b.ReportMetric(pct(all, 0.99), "p99-ms")
	b.ReportMetric(pct(slices.Concat(sent...), 0.95), "p95-from-send-ms")
	// The policy's part of a join: queueing for a round trip, and the round trip.
	b.ReportMetric(pct(timed.taken, 0.95), "check-p95-ms")
	b.ReportMetric(pgCPU.Seconds()*1e6/float64(b.N), "db-cpu-us/join")
	b.ReportMetric(nodeCPU.Seconds()*1e6/float64(b.N), "node+clients-cpu-us/join")
}

// timedPolicy records how long each check of the policy it wraps takes.
type timedPolicy struct {
	edge.ChannelPolicy
	mu    sync.Mutex
	taken []time.Duration
}

func (p *timedPolicy) CanRead(ctx context.Context, id *edge.Identity, topic string, want edge.Extensions) (edge.Extensions, error) {
	start := time.Now()
	got, err := p.ChannelPolicy.CanRead(ctx, id, topic, want)
	p.mu.Lock()
	p.taken = append(p.taken, time.Since(start))
	p.mu.Unlock()
	return got, err
}

// startStormNode serves a node configured from main's flags until b ends.
func startStormNode(b *testing.B, url string) (string, *timedPolicy) {
	o, err := parseFlags(append([]string{"--database-url", url, "--jwt-secret", joinStormKey}, strings.Fields(os.Getenv("JOINSTORM_FLAGS"))...), io.Discard)
	if err != nil {
		b.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	policy, err := newChannelPolicy(o, log)
	if err != nil {
		b.Fatal(err)
	}
	timed := &timedPolicy{ChannelPolicy: policy}
	o.edge.ChannelPolicy, o.edge.Logger, o.edge.NodeID = timed, log, "storm"
	srv, err := edge.New(o.edge)
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-served
		policy.close()
	})
	return ln.Addr().String(), timed
}

// stormClient is one user's socket.
type stormClient struct {
	nc   net.Conn
	user int
	ref  int
}

func dialStorm(addr string, user int) (*stormClient, error) {
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"role": "authenticated",
		"sub": fmt.Sprintf("00000000-0000-0000-0000-%012d", user), "exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte(joinStormKey))
	if err != nil {
		return nil, err
	}
	nc, _, _, err := ws.Dial(context.Background(), "ws://"+addr+"/realtime/v1/websocket?vsn=2.0.0&apikey="+tok)
	if err != nil {
		return nil, err
	}
	return &stormClient{nc: nc, user: user}, nil
}

// joinAndLeave joins room n of the user's rooms (private), waits for the
// ok, and leaves it again.
func (c *stormClient) joinAndLeave(n int) error {
	c.ref++
	ref := fmt.Sprint(c.ref)
	topic := fmt.Sprintf("realtime:room-%d", n%joinStormRooms)
	join := fmt.Sprintf(`[%q,%q,%q,"phx_join",{"config":{"private":true,"broadcast":{"self":false,"ack":false},"presence":{"enabled":false}}}]`, ref, ref, topic)
	c.nc.SetDeadline(time.Now().Add(30 * time.Second))
	if err := c.write(join); err != nil {
		return err
	}
	for {
		data, err := wsutil.ReadServerText(c.nc)
		if err != nil {
			return err
		}
		if !bytes.HasPrefix(data, []byte(`["`+ref+`","`+ref+`"`)) {
			continue // the previous leave's reply and phx_close
		}
		if !bytes.Contains(data, []byte(`"status":"ok"`)) {
			return fmt.Errorf("user %d joining %s: %s", c.user, topic, data)
		}
		break
	}
	return c.write(fmt.Sprintf(`[%q,"l%s",%q,"phx_leave",{}]`, ref, ref, topic))
}

// write sends a masked text frame in one write (wsutil's writers make two:
// header, then payload), so the clients cost the box less.
func (c *stormClient) write(text string) error {
	f := ws.MaskFrameInPlace(ws.NewTextFrame([]byte(text)))
	var buf bytes.Buffer
	if err := ws.WriteFrame(&buf, f); err != nil {
		return err
	}
	_, err := c.nc.Write(buf.Bytes())
	return err
}

// backendCPU is the CPU time the node's policy connections to url used so
// far (their backends' utime+stime).
func backendCPU(b *testing.B, url string) time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, _ := conn.Query(ctx, "SELECT pid FROM pg_stat_activity WHERE application_name = 'meshcast-chanauth'")
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		b.Fatal(err)
	}
	var ticks int
	for _, pid := range pids {
		stat, err := os.ReadFile("/proc/" + strconv.Itoa(int(pid)) + "/stat")
		if err != nil {
			continue
		}
		// Fields after "(comm) ": state is the 1st, utime the 12th, stime the 13th.
		f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+2:]))
		u, _ := strconv.Atoi(f[11])
		s, _ := strconv.Atoi(f[12])
		ticks += u + s
	}
	return time.Duration(ticks) * time.Second / 100 // USER_HZ
}

// processCPU is the CPU time of this process: the node and the clients.
func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
