package edge

import (
	"strconv"
	"testing"
)

// TestTransportLabeledMetrics: the unlabeled counters stay the node's
// totals, and a WebSocket's traffic also shows under transport="websocket".
func TestTransportLabeledMetrics(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.connect(t)
	c.write(heartbeatFrame)
	if f := c.next(); !isHeartbeatReply(f) {
		t.Fatalf("got %s, want the heartbeat reply", f)
	}
	want := map[string]string{
		`meshcast_connections`:                                   "1",
		`meshcast_connections{transport="websocket"}`:            "1",
		`meshcast_connections{transport="webtransport"}`:         "0",
		`meshcast_connections_total`:                             "1",
		`meshcast_connections_total{transport="websocket"}`:      "1",
		`meshcast_messages_in_total`:                             "1",
		`meshcast_messages_in_total{transport="websocket"}`:      "1",
		`meshcast_messages_in_total{transport="webtransport"}`:   "0",
		`meshcast_messages_out_total{transport="websocket"}`:     "1",
		`meshcast_bytes_in_total{transport="websocket"}`:         strconv.Itoa(len(heartbeatFrame)),
		`meshcast_socket_writes_total{transport="webtransport"}`: "0",
	}
	for name, v := range want {
		// The reply may be counted as written a moment after it arrived.
		if !waitFor(testWait, func() bool { got, _ := ts.metric(name); return got == v }) {
			got, err := ts.metric(name)
			t.Errorf("%s = %q (%v), want %s", name, got, err, v)
		}
	}
}
