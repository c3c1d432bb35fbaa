package edge

import (
	"bytes"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// The hostile-listener tests attack one node while ordinary clients use
// it. The bystanders are those clients: a publisher that broadcasts a
// numbered tick every few milliseconds on its own topic, and a WebSocket
// and a WebTransport subscriber that count the ticks and check their
// order. A test ends its attack, stops the bystanders and asserts that
// every tick sent reached both subscribers, in order, on connections
// that stayed open; then that the node's goroutines went back to what
// they were before the attack and its heap did not grow beyond a
// generous bound.

const (
	bystanderTopic = "realtime:bystanders"
	tickEvery      = 10 * time.Millisecond
	// goroutineSlack is how many goroutines more than before the attack
	// the process may keep: runtime and net/http helpers that come and go
	// (timers, a listener's accept goroutine between two connections).
	goroutineSlack = 3
	// heapSlack bounds the heap's growth over an attack, after GC: far
	// above what the bystanders keep, far below what one attacker could
	// make a node hold if a limit were missing (a 5 MiB frame per socket).
	heapSlack = 32 << 20
)

// tickCounter counts the ticks one subscriber received.
type tickCounter struct {
	name string
	got  atomic.Int64
	mu   sync.Mutex
	err  error // the first read error or out-of-order tick
	done chan struct{}
}

func (tc *tickCounter) fail(err error) {
	tc.mu.Lock()
	if tc.err == nil {
		tc.err = err
	}
	tc.mu.Unlock()
}

// count handles one frame read: a tick must be the next in order.
func (tc *tickCounter) count(data []byte, op ws.OpCode) {
	f, err := decodeFrame(data, op, false)
	if err != nil || f.Event != "broadcast" || jsonField(f.Payload, "event") != `"tick"` {
		return
	}
	n, _ := strconv.ParseInt(jsonField(f.Payload, "payload.n"), 10, 64)
	if want := tc.got.Load(); n != want {
		tc.fail(fmt.Errorf("%s: tick %d arrived, expected %d", tc.name, n, want))
	}
	tc.got.Store(n + 1)
}

// bystanders are the clients an attack must not disturb.
type bystanders struct {
	t      *testing.T
	pub    *wsClient
	subs   []*tickCounter
	sent   atomic.Int64
	stop   chan struct{}
	pubErr chan error
	stopMu sync.Once

	goroutines int
	heap       uint64
}

// startBystanders joins a publisher and two subscribers (one over
// WebSocket, one over WebTransport) on ts, starts the ticks, and records
// the goroutine count and the heap after GC as the baseline.
func startBystanders(t *testing.T, ts *wtTestServer) *bystanders {
	t.Helper()
	b := &bystanders{t: t, stop: make(chan struct{}), pubErr: make(chan error, 1)}
	b.pub = ts.connect(t)
	mustJoin(t, b.pub, "1", bystanderTopic, `{}`)

	wsSub := ts.connect(t)
	mustJoin(t, wsSub, "1", bystanderTopic, `{}`)
	wsCount := &tickCounter{name: "WebSocket subscriber", done: make(chan struct{})}
	go func() {
		defer close(wsCount.done)
		for {
			data, op, err := wsSub.read(time.Minute)
			if err != nil {
				wsCount.fail(fmt.Errorf("%s: %w", wsCount.name, err))
				return
			}
			wsCount.count(data, op)
		}
	}()
	wtSub := ts.connectWT(t)
	mustJoin(t, wtSub, "1", bystanderTopic, `{}`)
	wtCount := &tickCounter{name: "WebTransport subscriber", done: make(chan struct{})}
	go func() {
		defer close(wtCount.done)
		for {
			data, op, err := wtSub.read(time.Minute)
			if err != nil {
				wtCount.fail(fmt.Errorf("%s: %w", wtCount.name, err))
				return
			}
			wtCount.count(data, ws.OpCode(op))
		}
	}()
	b.subs = []*tickCounter{wsCount, wtCount}
	// Closing the subscribers ends their readers; the error that gives
	// is the test's own doing.
	t.Cleanup(func() {
		wsSub.nc.Close()
		wtSub.sess.CloseWithError(0, "")
		<-wsCount.done
		<-wtCount.done
	})

	go func() {
		tick := time.NewTicker(tickEvery)
		defer tick.Stop()
		for n := 0; ; n++ {
			select {
			case <-b.stop:
				b.pubErr <- nil
				return
			case <-tick.C:
			}
			if n%100 == 99 {
				// The subscribers heartbeat, as realtime-js does: a slow
				// run must not end them at the idle timeout.
				wsSub.writeErr(ws.OpText, []byte(heartbeatFrame))
				wtSub.writeRaw(wtFrame(wtOpText, []byte(heartbeatFrame)))
				b.pub.writeErr(ws.OpText, []byte(heartbeatFrame))
			}
			err := b.pub.writeErr(ws.OpText, []byte(broadcastFrame("1", "t", bystanderTopic, "tick", `{"n":`+strconv.Itoa(n)+`}`)))
			if err != nil {
				b.pubErr <- fmt.Errorf("publisher: %w", err)
				return
			}
			b.sent.Add(1)
		}
	}()
	t.Cleanup(b.halt)
	// Ticks flowing to both is the state the baseline is taken in.
	if !waitFor(testWait, func() bool { return wsCount.got.Load() > 2 && wtCount.got.Load() > 2 }) {
		t.Fatal("the bystanders' ticks do not flow")
	}
	b.goroutines, b.heap = settledGoroutines(), heapAfterGC()
	return b
}

func (b *bystanders) halt() { b.stopMu.Do(func() { close(b.stop) }) }

// alone waits until the bystanders' three connections (one of them over
// QUIC) are all the node holds: what earlier attacks opened is gone, so a
// limit is reached where a test expects it.
func (b *bystanders) alone(t *testing.T, ts *wtTestServer) {
	t.Helper()
	if !waitFor(testWait, func() bool { return ts.conns.Load() == 3 && ts.webTransport().quicConns.Load() == 1 }) {
		t.Fatalf("%d connections and %d QUIC connections held beside the bystanders' 3 and 1", ts.conns.Load(), ts.webTransport().quicConns.Load())
	}
}

// received is the fewest ticks a subscriber has received so far.
func (b *bystanders) received() int64 {
	least := b.subs[0].got.Load()
	for _, s := range b.subs[1:] {
		least = min(least, s.got.Load())
	}
	return least
}

// progress waits until every subscriber has received n more ticks than
// now: the node kept serving them while the attack went on.
func (b *bystanders) progress(t *testing.T, what string) {
	t.Helper()
	from := b.received()
	if !waitFor(testWait, func() bool { return b.received() >= from+5 }) {
		t.Errorf("during %s, the bystanders' ticks stalled at %d", what, b.received())
	}
}

// check stops the ticks and asserts that both subscribers got every one,
// in order, on connections that stayed open; then that goroutines are
// back to the baseline and the heap within heapSlack of it. Attackers
// must be closed before.
func (b *bystanders) check(t *testing.T) {
	t.Helper()
	b.halt()
	if err := <-b.pubErr; err != nil {
		t.Errorf("bystander %v", err)
	}
	sent := b.sent.Load()
	for _, s := range b.subs {
		if !waitFor(testWait, func() bool { return s.got.Load() >= sent }) {
			t.Errorf("%s received %d of %d ticks", s.name, s.got.Load(), sent)
		}
		s.mu.Lock()
		if s.err != nil {
			t.Errorf("bystander %v", s.err)
		}
		s.mu.Unlock()
	}
	t.Logf("bystanders: %d ticks each to %d subscribers", sent, len(b.subs))
	// The publisher is still connected: a heartbeat is answered.
	// (It may have an attacker's broadcasts to read first.)
	b.pub.write(heartbeatFrame)
	for i := 0; ; i++ {
		data, op, err := b.pub.read(testWait)
		if err != nil || i == 10000 {
			t.Errorf("the bystanders' publisher got no heartbeat reply: %v", err)
			break
		}
		if f, _ := decodeFrame(data, op, false); isHeartbeatReply(f) {
			break
		}
	}

	var n int
	if !waitFor(10*time.Second, func() bool { n = runtime.NumGoroutine(); return n <= b.goroutines+goroutineSlack }) {
		t.Errorf("%d goroutines after the attack, %d before:\n%s", n, b.goroutines, goroutineDump())
	}
	if h := heapAfterGC(); h > b.heap+heapSlack {
		t.Errorf("heap after GC %d MiB after the attack, %d MiB before", h>>20, b.heap>>20)
	}
}

// settledGoroutines is the goroutine count once it has stopped falling
// (goroutines of connections just closed finish within a moment).
func settledGoroutines() int {
	n := runtime.NumGoroutine()
	for range 20 {
		time.Sleep(20 * time.Millisecond)
		m := runtime.NumGoroutine()
		if m >= n {
			return n
		}
		n = m
	}
	return n
}

func heapAfterGC() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// goroutineDump is every goroutine's stack, for a failed leak check.
func goroutineDump() string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	if len(buf) > 64<<10 {
		buf = append(buf[:64<<10], "\n…"...)
	}
	return string(bytes.TrimSpace(buf))
}

// awaitFrame reads frames until one satisfies ok: a client joined on the
// bystanders' topic has their ticks to skip on the way.
func awaitFrame(t *testing.T, c peer, what string, ok func(wsFrame) bool) wsFrame {
	t.Helper()
	for range 5000 {
		if f := c.next(); ok(f) {
			return f
		}
	}
	t.Fatalf("no %s in the next 5000 frames", what)
	return wsFrame{}
}

// notTick is a frame other than a bystanders' tick.
func notTick(f wsFrame) bool { return jsonField(f.Payload, "event") != `"tick"` }
