package edge

import (
	"context"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/gobwas/ws"

	"github.com/meshcast/meshcast/wal"
)

// testReadWorkers is Config.ReadWorkers of the servers startServer starts
// (TestGoroutineReaders runs tests with -1).
var testReadWorkers int

// TestIdleWebSocketsHoldNoGoroutine: with the poller, connections that
// have nothing to say hold no goroutine; without it, each holds one.
func TestIdleWebSocketsHoldNoGoroutine(t *testing.T) {
	const n = 50
	for _, tc := range []struct {
		name    string
		workers int
		perConn bool
	}{{"poller", 0, false}, {"goroutine per connection", -1, true}} {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, func(c *Config) { c.ReadWorkers = tc.workers })
			heartbeat := func(c *wsClient) {
				c.write(heartbeatFrame)
				if f := c.next(); !isHeartbeatReply(f) {
					t.Fatalf("got %s, want the heartbeat reply", f)
				}
			}
			heartbeat(ts.connect(t)) // the first WebSocket starts the workers
			before := runtime.NumGoroutine()
			for range n {
				heartbeat(ts.connect(t))
			}
			// net/http's goroutine of each upgrade request is on its way
			// out (the first one's may have been counted in before): wait
			// for the count to settle where it should.
			var grown int
			ok := waitFor(testWait, func() bool {
				grown = runtime.NumGoroutine() - before
				return tc.perConn && grown >= n-n/10 || !tc.perConn && grown <= n/10
			})
			if !ok {
				t.Errorf("%d goroutines more for %d idle connections", grown, n)
			}
		})
	}
}

// blockingChanges is a change stream whose Subscribe waits until released,
// as one waits for the database's owner.
type blockingChanges struct {
	ids        atomic.Uint64
	subscribed chan struct{}
	release    chan struct{}
	once       sync.Once
}

func (b *blockingChanges) NewID() uint64 { return b.ids.Add(1) }

func (b *blockingChanges) Subscribe(ctx context.Context, subs []*wal.Subscription) error {
	b.subscribed <- struct{}{}
	<-b.release
	return nil
}

func (b *blockingChanges) Unsubscribe([]uint64) {}

func (b *blockingChanges) Head() wal.Pos { return wal.Pos{} }

func (b *blockingChanges) Recover(context.Context, []*wal.Subscription, wal.Pos) (wal.RecoverResult, error) {
	return wal.RecoverResult{}, nil
}

func (b *blockingChanges) free() { b.once.Do(func() { close(b.release) }) }

// TestJoinWaitFreesReader: with a single reader worker, a join that waits
// for the database does not hold the other connections up: the worker
// hands its place to another for the wait.
func TestJoinWaitFreesReader(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.ReadWorkers = 1 })
	bc := &blockingChanges{subscribed: make(chan struct{}, 1), release: make(chan struct{})}
	ts.SetChanges(bc, nil)
	t.Cleanup(bc.free) // before the server's shutdown, whatever happens
	a := ts.connect(t)
	a.write(joinFrame("1", "realtime:waits", `{"postgres_changes":[{"event":"*","schema":"public","table":"todos"}]}`))
	<-bc.subscribed
	for range 3 {
		b := ts.connect(t)
		b.write(heartbeatFrame)
		if f := b.next(); !isHeartbeatReply(f) {
			t.Fatalf("another client, while a join waits: %s, want the heartbeat reply", f)
		}
	}
	bc.free()
	if f := a.next(); f.Event != "phx_reply" || jsonField(f.Payload, "status") != `"ok"` {
		t.Fatalf("the join after its wait: %s", f)
	}
	ts.metricIs(t, `meshcast_read_handoffs_total{reason="wait"}`, "1")
	if v, _ := ts.metric(`meshcast_read_handoffs_total{reason="stall"}`); v != "" {
		t.Errorf("stall handoffs %s: the wait was not handed off when it began", v)
	}
}

// TestInterleavedPartialFrames: twenty clients send their frames a byte
// at a time, taking turns, so that every connection holds part of a frame
// between the workers' visits; each gets its answers, in order.
func TestInterleavedPartialFrames(t *testing.T) {
	ts := startServer(t, func(c *Config) {
		if c.ReadWorkers == 0 {
			c.ReadWorkers = 1
		}
	})
	const clients = 20
	var cs []*wsClient
	var frames [][]byte
	for i := range clients {
		cs = append(cs, ts.connect(t))
		a := maskedText(`[null,"a` + strconv.Itoa(i) + `","phoenix","heartbeat",{}]`)
		b := []byte(`[null,"b` + strconv.Itoa(i) + `","phoenix","heartbeat",{}]`)
		frames = append(frames, slices.Concat(a, masked(ws.OpText, false, b[:7]), masked(ws.OpPing, true, []byte("p")),
			masked(ws.OpContinuation, true, b[7:]), maskedText(heartbeatFrame)))
	}
	for at := 0; ; at++ {
		wrote := false
		for i, c := range cs {
			if at < len(frames[i]) {
				if _, err := c.nc.Write(frames[i][at : at+1]); err != nil {
					t.Fatal(err)
				}
				wrote = true
			}
		}
		if !wrote {
			break
		}
	}
	for i, c := range cs {
		if f := c.next(); f.Event != "phx_reply" || refOf(f.Ref) != "a"+strconv.Itoa(i) {
			t.Fatalf("client %d: first answer %s", i, f)
		}
		if f := c.next(); f.Event != "phx_reply" || refOf(f.Ref) != "b"+strconv.Itoa(i) {
			t.Fatalf("client %d: second answer %s", i, f)
		}
		if f := c.next(); !isHeartbeatReply(f) {
			t.Fatalf("client %d: last answer %s", i, f)
		}
	}
}

// TestGoroutineReaders runs the WebSocket tests of framing, timeouts,
// closes and shutdown with a reader goroutine per connection, the path of
// systems without a poller (the rest of the suite runs with the poller).
func TestGoroutineReaders(t *testing.T) {
	testReadWorkers = -1
	defer func() { testReadWorkers = 0 }()
	for name, test := range map[string]func(*testing.T){
		"Heartbeat":             TestHeartbeatV2,
		"BadInput":              TestBadInputClosesSocket,
		"FragmentsAndPing":      TestFragmentsAndPing,
		"ClientClose":           TestClientClose,
		"IdleTimeout":           TestIdleTimeout,
		"CloseCodes":            TestCloseCodes,
		"UnfinishedFragments":   TestUnfinishedFragmentsBounded,
		"HugeDeclaredLength":    TestHugeDeclaredLengthWithoutLimit,
		"ShutdownGoingAway":     TestShutdownGoingAway,
		"ShutdownSilentClient":  TestShutdownSilentClient,
		"InterleavedPartial":    TestInterleavedPartialFrames,
		"DeclaredNotAllocated":  TestDeclaredLengthNotPreallocated,
		"InvalidUTF8NeverRelay": TestInvalidUTF8NeverRelayed,
	} {
		t.Run(name, test)
	}
}
