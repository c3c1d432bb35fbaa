//go:build linux

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/meshcast/meshcast/internal/testkit"
)

// A small Phoenix v2 WebSocket client for the cluster tests: it moves
// bytes, decodes frames and keeps a presence view; what a test expects of
// the frames is asserted in the test.

// wsClient is one v2 socket. Reads keep a presence view (key → phx_refs)
// up to date from presence_state and presence_diff, as realtime-js does.
type wsClient struct {
	t    *testing.T
	name string
	nc   net.Conn
	rw   io.ReadWriter

	presence map[string]map[string]bool
	recent   []string // the last frames read, for failure messages
}

// quietWriter swallows write errors: wsutil echoes a server's close frame,
// and the server may have closed the socket already.
type quietWriter struct{ w io.Writer }

func (q quietWriter) Write(p []byte) (int, error) {
	q.w.Write(p)
	return len(p), nil
}

// dialWS opens a v2 socket on node n as realtime-js does. It returns an
// error rather than failing the test so it can run on many goroutines.
func dialWS(n *node, name string) (*wsClient, error) {
	d := ws.Dialer{Timeout: msgWait}
	if n.ns != nil {
		d.NetDial = n.ns.dial
	}
	nc, br, _, err := d.Dial(context.Background(), "ws://"+n.httpAddr+"/realtime/v1/websocket?apikey=test&vsn=2.0.0")
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", n.name, err)
	}
	var r io.Reader = nc
	if br != nil {
		r = io.MultiReader(br, nc)
	}
	return &wsClient{
		name: name,
		nc:   nc,
		rw: struct {
			io.Reader
			io.Writer
		}{r, quietWriter{nc}},
		presence: make(map[string]map[string]bool),
	}, nil
}

// connect dials and fails the test on error; the socket is closed in
// t.Cleanup.
func connect(t *testing.T, n *node, name string) *wsClient {
	t.Helper()
	c, err := dialWS(n, name)
	if err != nil {
		t.Fatal(err)
	}
	c.t = t
	t.Cleanup(func() { c.nc.Close() })
	return c
}

// frame is one decoded server message: a v2 array or a kind-4 binary
// broadcast (decoded to the same topic/event/payload shape).
type frame struct {
	JoinRef, Ref *string
	Topic, Event string
	Payload      json.RawMessage
	raw          string
}

func decodeFrame(data []byte, op ws.OpCode) (frame, error) {
	f := frame{raw: string(data)}
	if op == ws.OpBinary {
		// u8 4, u8 len topic, u8 len event, u8 len meta, u8 enc, fields, payload
		if len(data) < 5 || data[0] != 4 {
			return f, fmt.Errorf("unexpected binary frame %x", data)
		}
		lt, le, lm := int(data[1]), int(data[2]), int(data[3])
		rest := data[5:]
		if len(rest) < lt+le+lm {
			return f, errors.New("binary fields overrun the frame")
		}
		event := string(rest[lt : lt+le])
		f.Topic, f.Event = string(rest[:lt]), "broadcast"
		f.Payload, _ = json.Marshal(map[string]any{"type": "broadcast", "event": event, "payload": json.RawMessage(rest[lt+le+lm:])})
		f.raw = fmt.Sprintf("<kind4 %s %s %s>", f.Topic, event, rest[lt+le+lm:])
		return f, nil
	}
	var a []json.RawMessage
	if err := json.Unmarshal(data, &a); err != nil {
		return f, err
	}
	if len(a) != 5 {
		return f, fmt.Errorf("%d elements, want 5: %s", len(a), data)
	}
	if err := errors.Join(json.Unmarshal(a[0], &f.JoinRef), json.Unmarshal(a[1], &f.Ref),
		json.Unmarshal(a[2], &f.Topic), json.Unmarshal(a[3], &f.Event)); err != nil {
		return f, fmt.Errorf("%s: %w", data, err)
	}
	f.Payload = a[4]
	return f, nil
}

// readFrame reads the next data message within d. A close frame from the
// server ends it with wsutil.ClosedError.
func (c *wsClient) readFrame(d time.Duration) (frame, error) {
	c.nc.SetReadDeadline(time.Now().Add(d))
	data, op, err := wsutil.ReadServerData(c.rw)
	if err != nil {
		return frame{}, err
	}
	f, err := decodeFrame(data, op)
	if err != nil {
		return f, err
	}
	c.applyPresence(f)
	if c.recent = append(c.recent, f.raw); len(c.recent) > 8 {
		c.recent = c.recent[1:]
	}
	return f, nil
}

func (c *wsClient) write(text string) error {
	c.nc.SetWriteDeadline(time.Now().Add(msgWait))
	return wsutil.WriteClientMessage(c.nc, ws.OpText, []byte(text))
}

func (c *wsClient) send(text string) {
	c.t.Helper()
	if err := c.write(text); err != nil {
		c.t.Fatalf("%s: write %s: %v", c.name, text, err)
	}
}

// await reads until a frame matches, within d; anything else read on the
// way only updates the presence view.
func (c *wsClient) await(d time.Duration, what string, match func(frame) bool) frame {
	c.t.Helper()
	deadline := time.Now().Add(d)
	for {
		f, err := c.readFrame(time.Until(deadline))
		if err != nil {
			c.t.Fatalf("%s: waiting for %s: %v; last frames: %s", c.name, what, err, strings.Join(c.recent, " "))
		}
		if match(f) {
			return f
		}
	}
}

// awaitPresence waits until key is (or is no longer) in the presence view.
func (c *wsClient) awaitPresence(d time.Duration, key string, present bool) {
	c.t.Helper()
	if (len(c.presence[key]) > 0) == present {
		return
	}
	c.await(d, fmt.Sprintf("presence key %q present=%v", key, present), func(frame) bool {
		return (len(c.presence[key]) > 0) == present
	})
}

type presenceMap map[string]struct {
	Metas []map[string]any `json:"metas"`
}

// applyPresence applies presence_state (replaces the view) and
// presence_diff (joins add refs, then leaves remove them).
func (c *wsClient) applyPresence(f frame) {
	switch f.Event {
	case "presence_state":
		var s presenceMap
		json.Unmarshal(f.Payload, &s)
		c.presence = make(map[string]map[string]bool)
		c.addRefs(s)
	case "presence_diff":
		var d struct{ Joins, Leaves presenceMap }
		json.Unmarshal(f.Payload, &d)
		c.addRefs(d.Joins)
		for key, e := range d.Leaves {
			for _, m := range e.Metas {
				delete(c.presence[key], fmt.Sprint(m["phx_ref"]))
			}
			if len(c.presence[key]) == 0 {
				delete(c.presence, key)
			}
		}
	}
}

func (c *wsClient) addRefs(s presenceMap) {
	for key, e := range s {
		if c.presence[key] == nil {
			c.presence[key] = make(map[string]bool)
		}
		for _, m := range e.Metas {
			c.presence[key][fmt.Sprint(m["phx_ref"])] = true
		}
	}
}

// isReply reports whether f is the phx_reply to ref on topic.
func isReply(f frame, topic, ref string) bool {
	return f.Event == "phx_reply" && f.Topic == topic && f.Ref != nil && *f.Ref == ref
}

func replyStatus(f frame) string { return jsonField(f.Payload, "status") }

// jsonField returns a top-level field of a JSON object: a string's value,
// or any other value's JSON text.
func jsonField(raw []byte, key string) string {
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil {
		return ""
	}
	var s string
	if json.Unmarshal(m[key], &s) == nil {
		return s
	}
	return string(m[key])
}

func jsonEqual(a []byte, b string) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal([]byte(b), &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}

// joinConfig is the join config realtime-js 2.119 sends.
func joinConfig(presenceKey string, presenceEnabled, ack bool) string {
	return fmt.Sprintf(`{"broadcast":{"self":false,"ack":%v},"presence":{"key":%q,"enabled":%v},"postgres_changes":[],"private":false}`,
		ack, presenceKey, presenceEnabled)
}

// joinFrame and broadcastFrame are internal/testkit's, topic first.
func joinFrame(topic, joinRef, config string) string {
	return testkit.JoinFrame(joinRef, topic, config)
}

// join joins topic and waits for the ok reply (presence_state, if any,
// follows it).
func (c *wsClient) join(topic, joinRef, config string) {
	c.t.Helper()
	c.send(joinFrame(topic, joinRef, config))
	f := c.await(msgWait, "join reply "+joinRef, func(f frame) bool { return isReply(f, topic, joinRef) })
	if replyStatus(f) != "ok" {
		c.t.Fatalf("%s: join %s refused: %s", c.name, topic, f.raw)
	}
}

// track tracks meta on a joined topic and waits for the ok reply.
func (c *wsClient) track(topic, joinRef, ref, meta string) {
	c.t.Helper()
	c.send(fmt.Sprintf(`[%q,%q,%q,"presence",{"type":"presence","event":"track","payload":%s}]`, joinRef, ref, topic, meta))
	f := c.await(msgWait, "track reply "+ref, func(f frame) bool { return isReply(f, topic, ref) })
	if replyStatus(f) != "ok" {
		c.t.Fatalf("%s: track refused: %s", c.name, f.raw)
	}
}

func broadcastFrame(topic, joinRef, ref, event, payload string) string {
	return testkit.BroadcastFrame(joinRef, ref, topic, event, payload)
}

// isBroadcast reports whether f is a broadcast of event on topic and
// returns its user payload.
func isBroadcast(f frame, topic, event string) (json.RawMessage, bool) {
	if f.Event != "broadcast" || f.Topic != topic {
		return nil, false
	}
	var b struct {
		Type    string          `json:"type"`
		Event   string          `json:"event"`
		Payload json.RawMessage `json:"payload"`
	}
	if json.Unmarshal(f.Payload, &b) != nil || b.Type != "broadcast" || b.Event != event {
		return nil, false
	}
	return b.Payload, true
}

// hasLeave reports whether f is a presence_diff whose leaves hold key.
func hasLeave(f frame, key string) bool {
	if f.Event != "presence_diff" {
		return false
	}
	var d struct{ Leaves presenceMap }
	json.Unmarshal(f.Payload, &d)
	_, ok := d.Leaves[key]
	return ok
}

// joinQuiet is join for goroutines: it returns an error instead of
// failing the test.
func (c *wsClient) joinQuiet(topic, joinRef, config string) error {
	if err := c.write(joinFrame(topic, joinRef, config)); err != nil {
		return err
	}
	deadline := time.Now().Add(msgWait)
	for {
		f, err := c.readFrame(time.Until(deadline))
		if err != nil {
			return fmt.Errorf("%s: join reply: %w", c.name, err)
		}
		if isReply(f, topic, joinRef) {
			if replyStatus(f) != "ok" {
				return fmt.Errorf("%s: join refused: %s", c.name, f.raw)
			}
			return nil
		}
	}
}

// readSequence reads broadcasts of event "m" until it has m of them and
// checks they are {"seq":0} … {"seq":m-1} in order.
func (c *wsClient) readSequence(topic string, m int, d time.Duration) error {
	deadline := time.Now().Add(d)
	for want := 0; want < m; {
		f, err := c.readFrame(time.Until(deadline))
		if err != nil {
			return fmt.Errorf("%s: after %d of %d messages: %w", c.name, want, m, err)
		}
		p, ok := isBroadcast(f, topic, "m")
		if !ok {
			continue
		}
		var got struct{ Seq *int }
		if json.Unmarshal(p, &got) != nil || got.Seq == nil || *got.Seq != want {
			return fmt.Errorf("%s: message %d is %s, want {\"seq\":%d}", c.name, want, p, want)
		}
		want++
	}
	return nil
}
