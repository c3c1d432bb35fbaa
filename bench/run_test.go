package bench

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"go.uber.org/goleak"

	"github.com/meshcast/meshcast/bench/measure"
	"github.com/meshcast/meshcast/wire/phx"
)

// fakeServer is a tiny in-process broadcast server speaking just enough of
// the Phoenix v2 or Centrifugo protocol for the runner: it checks the runner
// end to end without a real server.
type fakeServer struct {
	t     *testing.T
	proto string
	ln    net.Listener
	srv   *http.Server

	mu    sync.Mutex
	subs  map[*fakeConn]bool
	pongs int
}

type fakeConn struct {
	nc net.Conn
	mu sync.Mutex
}

func (c *fakeConn) write(op ws.OpCode, p []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	_ = wsutil.WriteServerMessage(c.nc, op, p)
}

func startFake(t *testing.T, proto string) *fakeServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeServer{t: t, proto: proto, ln: ln, subs: map[*fakeConn]bool{}}
	f.srv = &http.Server{Handler: http.HandlerFunc(f.serve), ReadHeaderTimeout: 5 * time.Second}
	go f.srv.Serve(ln)
	t.Cleanup(func() { f.srv.Close() })
	return f
}

func (f *fakeServer) url() string {
	if f.proto == TargetCentrifugo {
		return "ws://" + f.ln.Addr().String() + "/connection/websocket"
	}
	return "ws://" + f.ln.Addr().String() + "/realtime/v1/websocket?apikey=bench&vsn=2.0.0"
}

func (f *fakeServer) serve(w http.ResponseWriter, r *http.Request) {
	nc, _, _, err := ws.UpgradeHTTP(r, w)
	if err != nil {
		return
	}
	c := &fakeConn{nc: nc}
	defer func() {
		f.mu.Lock()
		delete(f.subs, c)
		f.mu.Unlock()
		nc.Close()
	}()
	for {
		msg, op, err := wsutil.ReadClientData(nc)
		if err != nil {
			return
		}
		if f.proto == TargetCentrifugo {
			forEachLine(msg, func(line []byte) { f.centrifugo(c, line) })
		} else {
			f.phoenix(c, op, msg)
		}
	}
}

func (f *fakeServer) fanout(from *fakeConn, op ws.OpCode, p []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for c := range f.subs {
		if c != from {
			c.write(op, p)
		}
	}
}

func (f *fakeServer) phoenix(c *fakeConn, op ws.OpCode, msg []byte) {
	if op == ws.OpBinary { // kind 3 → kind 4
		m, err := phx.DecodeBinary(msg)
		if err != nil {
			f.t.Errorf("fake phoenix: %v", err)
			return
		}
		f.fanout(c, ws.OpBinary, phx.AppendUserBroadcast(nil, m.Topic, m.UserEvent, m.Meta, m.Enc, m.Payload))
		return
	}
	r, err := phx.DecodeText(phx.V2, msg)
	if err != nil {
		f.t.Errorf("fake phoenix: %v", err)
		return
	}
	switch r.Event {
	case "phx_join":
		f.mu.Lock()
		f.subs[c] = true
		f.mu.Unlock()
		c.write(ws.OpText, fmt.Appendf(nil, `["1",%q,%q,"phx_reply",{"status":"ok","response":{"postgres_changes":[]}}]`, r.Ref, r.Topic))
	case "heartbeat":
		c.write(ws.OpText, fmt.Appendf(nil, `[null,%q,"phoenix","phx_reply",{"status":"ok","response":{}}]`, r.Ref))
	case "broadcast":
		i := bytes.Index(msg, []byte(`"realtime:`))
		f.fanout(c, ws.OpText, append([]byte(`[null,null,`), msg[i:]...))
	}
}

func (f *fakeServer) centrifugo(c *fakeConn, line []byte) {
	var id int
	switch {
	case bytes.Equal(line, centPing):
		f.mu.Lock()
		f.pongs++
		f.mu.Unlock()
	case bytes.Contains(line, []byte(`"connect"`)):
		fmt.Sscanf(string(line), `{"id":%d`, &id)
		c.write(ws.OpText, fmt.Appendf(nil, `{"id":%d,"connect":{"client":"x","ping":25,"pong":true}}`, id))
	case bytes.Contains(line, []byte(`"subscribe"`)):
		fmt.Sscanf(string(line), `{"id":%d`, &id)
		f.mu.Lock()
		f.subs[c] = true
		f.mu.Unlock()
		// A ping batched with the reply checks that the client pongs.
		c.write(ws.OpText, fmt.Appendf(nil, "{\"id\":%d,\"subscribe\":{}}\n{}", id))
	case bytes.Contains(line, []byte(`"publish"`)):
		fmt.Sscanf(string(line), `{"id":%d`, &id)
		i := bytes.Index(line, []byte(`"data":`))
		data := line[i+len(`"data":`) : len(line)-2]
		push := fmt.Appendf(nil, `{"push":{"channel":"bench:room","pub":{"data":%s,"offset":%d}}}`, data, id)
		// Every tenth push shares its frame with a ping, as Centrifugo may
		// batch several messages into one frame.
		if id%10 == 0 {
			push = append([]byte("{}\n"), push...)
		}
		f.fanout(c, ws.OpText, push)
		c.write(ws.OpText, fmt.Appendf(nil, `{"id":%d,"publish":{}}`, id))
	}
}

func checkClean(t *testing.T, res *Result) {
	t.Helper()
	if res.Connected != res.Subs || res.ConnectErrors != 0 || res.Disconnects != 0 || res.Unexpected != 0 ||
		res.PublishErrors != 0 || res.Gaps != 0 || res.OutOfOrder != 0 || res.WindowStalls != 0 {
		t.Fatalf("unclean run: %s", res)
	}
}

func TestRunAgainstFakes(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end runner test; -short runs only the pure parts")
	}
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	for _, tc := range []struct {
		name, target string
		mode         Mode
		binary       bool
		rate         float64
	}{
		{"phoenix text throughput", TargetMeshcast, ModeThroughput, false, 0},
		{"phoenix binary throughput", TargetMeshcast, ModeThroughput, true, 0},
		{"phoenix latency", TargetMeshcast, ModeLatency, false, 300},
		{"centrifugo throughput", TargetCentrifugo, ModeThroughput, false, 0},
		{"centrifugo latency", TargetCentrifugo, ModeLatency, false, 300},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := startFake(t, tc.target)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			res, err := Run(ctx, Config{
				Target: tc.target, URL: f.url(), Mode: tc.mode, Binary: tc.binary, Rate: tc.rate,
				Subs: 20, Duration: 300 * time.Millisecond, Warmup: 100 * time.Millisecond, Window: 4,
				ServerPID: os.Getpid(), Drain: 2 * time.Second,
			})
			if err != nil {
				t.Fatal(err)
			}
			checkClean(t, res)
			if res.Lost != 0 || res.Delivered == 0 || res.Delivered != res.Expected || res.Published <= res.PublishedMeasured {
				t.Fatalf("deliveries: %s", res)
			}
			if res.P50 <= 0 || res.P99 < res.P50 || res.Max < res.P99 || res.DeliveriesPerSec <= 0 {
				t.Fatalf("latency/throughput figures: %+v", res)
			}
			if tc.mode == ModeLatency {
				// The pacer never runs ahead of its schedule; it may fall
				// behind only on a host too busy to run it (a lag it
				// reports), so too few is a failure only when it says it
				// was on time.
				want := tc.rate * 0.3
				got := float64(res.PublishedMeasured)
				if got > want*1.2 || (got < want*0.8 && res.PublisherLagMax < 50) {
					t.Fatalf("published %v in 300ms at %v/s: %s lag %v late %v", got, tc.rate, res, res.PublisherLagMax, res.PublisherLate)
				}
			}
			if res.ServerCPU < 0 || res.ClientCPU < 0 {
				t.Fatalf("cpu not measured: %s", res)
			}
			if tc.target == TargetCentrifugo {
				f.mu.Lock()
				pongs := f.pongs
				f.mu.Unlock()
				if pongs < res.Connected {
					t.Fatalf("server got %d pongs, want >= %d", pongs, res.Connected)
				}
			}
		})
	}
}

func TestRunIdleAgainstFake(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end runner test; -short runs only the pure parts")
	}
	f := startFake(t, TargetMeshcast)
	res, err := Run(context.Background(), Config{
		URL: f.url(), Mode: ModeIdle, Subs: 50, ServerPID: os.Getpid(), Settle: 1500 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	checkClean(t, res)
	if res.RSSBeforeKiB <= 0 || res.RSSAfterKiB <= 0 {
		t.Fatalf("rss not measured: %s", res)
	}
}

func TestRunConnectFailure(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	res, err := Run(context.Background(), Config{URL: "ws://" + addr + "/x", Subs: 3, HandshakeTimeout: time.Second})
	if err == nil || res == nil || res.ConnectErrors != 3 || res.FirstConnectError == "" {
		t.Fatalf("want a connect failure, got %v %+v", err, res)
	}
}

func TestConfigValidation(t *testing.T) {
	for name, cfg := range map[string]Config{
		"latency without rate": {Mode: ModeLatency},
		"bad mode":             {Mode: "x"},
		"bad target":           {Target: "x"},
		"tiny payload":         {PayloadSize: 10},
		"quote in topic":       {Topic: `a"b`},
		"binary centrifugo":    {Target: TargetCentrifugo, Binary: true},
		"too many subs":        {Subs: maxSubs + 1},
	} {
		if _, err := Run(context.Background(), cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestCentrifugoFrames(t *testing.T) {
	c := &centrifugo{channel: "bench:room"}
	if s, op := c.appendPublish(nil, 2, []byte(`{"t":1}`)); string(s) != `{"id":3,"publish":{"channel":"bench:room","data":{"t":1}}}` || op != ws.OpText {
		t.Fatal(string(s))
	}
	var lines []string
	forEachLine([]byte("{}\n{\"push\":{}}\n\n  {\"id\":3}  \n"), func(l []byte) { lines = append(lines, string(l)) })
	if len(lines) != 3 || lines[0] != "{}" || lines[2] != `{"id":3}` {
		t.Fatalf("lines %q", lines)
	}
}

// recorder is a visitor that remembers what scan found.
type recorder struct{ samples, unexpected, replies []string }

func (r *recorder) sample(b []byte)    { r.samples = append(r.samples, string(b)) }
func (r *recorder) odd(frame []byte)   { r.unexpected = append(r.unexpected, string(frame)) }
func (r *recorder) reply(frame []byte) { r.replies = append(r.replies, string(frame)) }

func TestScan(t *testing.T) {
	phoenix := &phoenix{topic: "realtime:bench", event: "m"}
	var rec recorder
	phoenix.scan(1, []byte(`[null,null,"realtime:bench","broadcast",{"type":"broadcast","event":"m","payload":{"t":1,"s":1}}]`), &rec)
	phoenix.scan(1, []byte(`[null,"2","phoenix","phx_reply",{"status":"ok","response":{}}]`), &rec)
	phoenix.scan(1, []byte(`["1","1","realtime:bench","phx_close",{}]`), &rec)
	phoenix.scan(2, append([]byte{4, 14, 1, 0, 1}, `realtime:benchm{"t":1,"s":2}`...), &rec)
	if len(rec.samples) != 2 || rec.samples[1] != `{"t":1,"s":2}` || len(rec.unexpected) != 1 {
		t.Fatalf("phoenix scan: %+v", rec)
	}

	cent := &centrifugo{channel: "bench:room"}
	rec = recorder{}
	cent.scan(1, []byte("{}"), &rec)
	cent.scan(1, []byte(`{"push":{"channel":"bench:room","pub":{"data":{"t":1,"s":1}}}}`+"\n"+`{"push":{"channel":"bench:room","pub":{"data":{"t":2,"s":2}}}}`), &rec)
	cent.scan(1, []byte(`{"id":5,"publish":{}}`), &rec)
	cent.scan(1, []byte(`{"id":6,"error":{"code":103,"message":"permission denied"}}`), &rec)
	if len(rec.replies) != 1 || len(rec.samples) != 2 || len(rec.unexpected) != 1 {
		t.Fatalf("centrifugo scan: %+v", rec)
	}
}

// BenchmarkSubscriberHandle is what a fan-out subscriber does with each
// broadcast it reads (client.BenchmarkWSReadFrame is the read itself): find
// the event, the payload's stamp and sequence, count and record it.
func BenchmarkSubscriberHandle(b *testing.B) {
	payload := []byte(`{"t":1764000000123456789,"s":12345,"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}`)
	msg := []byte(`[null,null,"realtime:bench","broadcast",{"type":"broadcast","event":"m","payload":` + string(payload) + `}]`)
	cfg, _ := Config{}.withDefaults()
	f := &fanout{run: newRun(nil), cfg: cfg, target: newTarget(&cfg)}
	f.measureStart.Store(0)
	s := &fanSub{f: f, hist: measure.NewHistogram(), next: 1}
	b.ReportAllocs()
	for b.Loop() {
		s.OnMessage(ws.OpText, msg, f.now())
	}
}

// TestPacerSchedule: the rate schedule restarts only for the first
// publication of the measured window, and only when it is late; a stall
// after that is caught up.
func TestPacerSchedule(t *testing.T) {
	newPacer := func(warmup int64) *pacer {
		return &pacer{interval: 10, start: 0, warmEnd: warmup, end: 1000}
	}
	p := newPacer(100)
	for _, c := range []struct{ i, now, want int64 }{
		{9, 85, 90},    // warmup, on time
		{10, 92, 100},  // the first measured one, on time: no restart
		{11, 150, 110}, // stalled after: caught up, not skipped
		{12, 151, 120},
	} {
		if got := p.schedule(uint64(c.i), c.now); got != c.want {
			t.Errorf("on time: publication %d at %d due %d, want %d", c.i, c.now, got, c.want)
		}
	}
	p = newPacer(100)
	for _, c := range []struct{ i, now, want int64 }{
		{5, 130, 130}, // fell behind in the warmup: the schedule restarts now
		{6, 131, 140},
		{7, 300, 150}, // late again: caught up
	} {
		if got := p.schedule(uint64(c.i), c.now); got != c.want {
			t.Errorf("late: publication %d at %d due %d, want %d", c.i, c.now, got, c.want)
		}
	}
	p = newPacer(0) // no warmup: nothing restarts
	if got := p.schedule(3, 100); got != 30 {
		t.Errorf("without warmup: due %d, want 30", got)
	}
}

// BenchmarkWALHandle is what a postgres_changes subscriber does with each
// change it reads.
func BenchmarkWALHandle(b *testing.B) {
	frame := []byte(`[null,null,"realtime:meshbench-wal-0","postgres_changes",{"ids":[12],"data":{"columns":[{"name":"id","type":"int8"},{"name":"writer","type":"int4"},{"name":"seq","type":"int8"},{"name":"team","type":"int4"},{"name":"sent_ns","type":"int8"},{"name":"pad","type":"text"}],"commit_timestamp":"2026-01-01T00:00:00.000Z","errors":null,"record":{"id":7,"writer":1,"seq":41,"team":0,"sent_ns":1767225600123456789,"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"},"schema":"public","table":"meshbench_wal_fanout","type":"INSERT"}}]`)
	r := &walRun{run: newRun(nil)}
	r.measureStart.Store(0)
	s := &walSub{r: r, hist: measure.NewHistogram(), ack: measure.NewHistogram(), lastSeq: make([]int64, 4)}
	b.ReportAllocs()
	for b.Loop() {
		s.lastSeq[1] = 0
		s.OnMessage(ws.OpText, frame, r.now())
	}
}
