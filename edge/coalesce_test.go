package edge

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"
)

// TestWriteCoalescing checks that frames for a connection written to a
// moment ago share one write, and that nothing is lost or reordered.
func TestWriteCoalescing(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.WriteCoalesce = 300 * time.Millisecond })
	const topic = "realtime:coalesce"
	sub, pub := ts.connect(t), ts.connect(t)
	for _, c := range []*wsClient{sub, pub} {
		c.write(joinFrame("1", topic, `{}`))
		if f := c.next(); jsonField(f.Payload, "status") != `"ok"` {
			t.Fatalf("join: %s", f)
		}
	}
	writes := func() int {
		v, err := ts.metric("meshcast_socket_writes_total")
		if err != nil {
			t.Fatal(err)
		}
		n, _ := strconv.Atoi(v)
		return n
	}
	// The subscriber's join reply was written just now, so these ten
	// broadcasts find it recently written and wait for one shared write.
	before := writes()
	for i := 0; i < 10; i++ {
		pub.write(broadcastFrame("1", strconv.Itoa(i+2), topic, "e", fmt.Sprintf(`{"i":%d}`, i)))
	}
	for i := 0; i < 10; i++ {
		if f := sub.next(); jsonField(f.Payload, "payload.i") != strconv.Itoa(i) {
			t.Fatalf("message %d: %s", i, f)
		}
	}
	if got := writes() - before; got > 2 {
		t.Fatalf("10 frames to a recently written connection took %d writes, want them coalesced into 1 or 2", got)
	}
}

// TestShutdownWithCoalescedFrames checks that a connection waiting for the
// coalescer still gets its close frame promptly at shutdown.
func TestShutdownWithCoalescedFrames(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.WriteCoalesce = time.Hour })
	const topic = "realtime:coalesce-shutdown"
	sub, pub := ts.connect(t), ts.connect(t)
	for _, c := range []*wsClient{sub, pub} {
		c.write(joinFrame("1", topic, `{}`))
		c.next()
	}
	pub.write(broadcastFrame("1", "2", topic, "e", `{}`)) // held back for an hour
	if err := ts.stop(); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	code, _, _, err := sub.closed(testWait)
	if err != nil || code != 1001 {
		t.Fatalf("close frame: code %d, err %v; want 1001", code, err)
	}
	// A second Shutdown (a second signal, say) returns and does not panic.
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	ts.Shutdown(ctx)
}
