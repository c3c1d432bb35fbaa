package edge

import (
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
)

// A client leaving is no error: whether it sends its close frame and
// closes the session (clientjs's disconnect()), closes the session alone
// (a browser tab closing) or its whole QUIC connection, and whether or not
// the server was writing to it then, nothing is counted in errors_total.
// WebSocket clients leaving, the control, count nothing either.
func TestWebTransportNormalCloseIsNoError(t *testing.T) {
	ts := startWTServer(t, nil)
	leave := map[string]func(c *wtClient){
		"close frame, then session": func(c *wtClient) {
			c.writeRaw(wtFrame(wtOpClose, binary.BigEndian.AppendUint16(nil, 1000)))
			c.sess.CloseWithError(1000, "client disconnect")
		},
		"session closed":         func(c *wtClient) { c.sess.CloseWithError(0, "") },
		"QUIC connection closed": func(c *wtClient) { c.qc.CloseWithError(0, "") },
	}
	const topic = "realtime:leaving"
	pub := ts.connect(t)
	mustJoin(t, pub, "1", topic, `{"broadcast":{"self":false}}`)
	for name, close := range leave {
		for _, busy := range []bool{false, true} {
			c := ts.connectWT(t)
			mustJoin(t, c, "1", topic, `{"broadcast":{"self":false}}`)
			if busy {
				// Broadcasts on their way to the client while it leaves.
				for i := range 50 {
					pub.write(fmt.Sprintf(`["1","%d","%s","broadcast",{"type":"broadcast","event":"e","payload":{"i":%d}}]`, i+2, topic, i))
				}
				expectFrame(t, c, "a broadcast", func(f wsFrame) bool { return f.Event == "broadcast" })
			}
			close(c)
			if !waitFor(testWait, func() bool {
				v, _ := ts.metric(`meshcast_connections{transport="webtransport"}`)
				return v == "0"
			}) {
				t.Fatalf("%s: the session is still counted", name)
			}
			if errs := errorMetrics(t, ts.testServer); errs != "" {
				t.Errorf("%s (busy %v): counted %s", name, busy, errs)
			}
		}
	}
	ws := ts.connect(t)
	mustJoin(t, ws, "1", topic, `{"broadcast":{"self":false}}`)
	ws.nc.Close()
	if !waitFor(testWait, func() bool { v, _ := ts.metric(`meshcast_connections{transport="websocket"}`); return v == "1" }) {
		t.Fatal("the WebSocket is still counted")
	}
	if errs := errorMetrics(t, ts.testServer); errs != "" {
		t.Errorf("a WebSocket leaving: counted %s", errs)
	}
}

// errorMetrics is every meshcast_errors_total series of ts, "" if none.
func errorMetrics(t *testing.T, ts *testServer) string {
	t.Helper()
	r, err := ts.do("GET", "/metrics", "", "")
	if err != nil {
		t.Fatal(err)
	}
	var errs []string
	for _, line := range strings.Split(r.body, "\n") {
		if strings.HasPrefix(line, "meshcast_errors_total") {
			errs = append(errs, line)
		}
	}
	return strings.Join(errs, ", ")
}
