package edge

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// TestFullSocketKeepsFramesWhole fills a subscriber's socket (it does not
// read) so that the non-blocking writes of the write pool stop in the
// middle of a frame and a blocking writer finishes the rest. When the
// subscriber reads at last, every frame must be there, whole and in order.
func TestFullSocketKeepsFramesWhole(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.QueueBytes, c.BytesPerSecond = 256<<20, -1 })
	pub, sub := ts.connect(t), ts.connect(t)
	for _, r := range joinAll("realtime:full", `{}`, pub, sub) {
		if jsonField(r.Payload, "status") != `"ok"` {
			t.Fatalf("join: %s", r)
		}
	}
	const n = 400
	payload := bytes.Repeat([]byte{'y'}, 61<<10) // odd size: frame ends fall anywhere in the socket buffer
	for i := 0; i < n; i++ {
		binary.BigEndian.PutUint64(payload, uint64(i))
		pub.writeBinary(kind3("1", "", "realtime:full", "e", 0, payload))
	}
	// A heartbeat is answered after the server has queued all of the above.
	pub.write(heartbeatFrame)
	for f := pub.next(); !isHeartbeatReply(f); f = pub.next() {
	}
	for i := 0; i < n; i++ {
		data, op, err := sub.read(20 * time.Second)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		f, err := decodeFrame(data, op, false)
		if err != nil || op != ws.OpBinary || f.Kind != 4 || len(f.Data) != len(payload) {
			t.Fatalf("frame %d damaged: op %v kind %d len %d err %v", i, op, f.Kind, len(f.Data), err)
		}
		if got := binary.BigEndian.Uint64(f.Data); got != uint64(i) {
			t.Fatalf("frame %d carries message %d", i, got)
		}
	}
}
