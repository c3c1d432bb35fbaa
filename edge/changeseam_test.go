package edge

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshcast/meshcast/wal"
)

// fakeStream is a ChangeStream in memory: Head is what the test sets, and
// Recover answers what the test queued, after the test lets it go (so that
// live changes can arrive while a join recovers).
type fakeStream struct {
	ids atomic.Uint64

	mu    sync.Mutex
	head  wal.Pos
	subs  map[uint64]*wal.Subscription
	asked []wal.Pos // the positions Recover was called with

	recovering chan struct{} // a Recover started
	answer     chan fakeAnswer
}

type fakeAnswer struct {
	res wal.RecoverResult
	err error
}

func newFakeStream(head wal.Pos) *fakeStream {
	return &fakeStream{head: head, subs: map[uint64]*wal.Subscription{},
		recovering: make(chan struct{}, 8), answer: make(chan fakeAnswer, 1)}
}

func (f *fakeStream) NewID() uint64 { return f.ids.Add(1) }

func (f *fakeStream) Subscribe(_ context.Context, subs []*wal.Subscription) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, s := range subs {
		f.subs[s.ID] = s
	}
	return nil
}

func (f *fakeStream) Unsubscribe(ids []uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, id := range ids {
		delete(f.subs, id)
	}
}

func (f *fakeStream) Head() wal.Pos {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.head
}

func (f *fakeStream) Recover(ctx context.Context, _ []*wal.Subscription, after wal.Pos) (wal.RecoverResult, error) {
	f.mu.Lock()
	f.asked = append(f.asked, after)
	f.mu.Unlock()
	f.recovering <- struct{}{}
	select {
	case a := <-f.answer:
		return a.res, a.err
	case <-ctx.Done():
		return wal.RecoverResult{}, ctx.Err()
	}
}

// subIDs is the IDs of the registered subscriptions, by table.
func (f *fakeStream) subIDs(table string) []uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ids []uint64
	for id, s := range f.subs {
		if s.Table == table {
			ids = append(ids, id)
		}
	}
	return ids
}

// pos is the position of the n-th change of test transactions: commit LSN
// 0/100·n, sequence 1.
func pos(n int) wal.Pos { return wal.Pos{LSN: wal.LSN(0x100 * n), Seq: 1} }

// rowChange is an insert into table t of row {id: n} at pos(n).
func rowChange(n int) *wal.Change {
	p := pos(n)
	return &wal.Change{Kind: wal.Insert, Schema: "public", Table: "t", LSN: p.LSN, Seq: p.Seq,
		Columns: []wal.Column{{Name: "id", Type: "int8", Key: true}, {Name: "body", Type: "text"}},
		Record:  []json.RawMessage{json.RawMessage(fmt.Sprint(n)), json.RawMessage(`"x"`)}}
}

func startSeamServer(t *testing.T, fs *fakeStream, tweaks ...func(*Config)) *testServer {
	ts := startServer(t, func(c *Config) {
		withRecovery(c)
		for _, tw := range tweaks {
			tw(c)
		}
	})
	ts.SetChanges(fs, nil)
	return ts
}

const seamBinding = `[{"event":"INSERT","schema":"public","table":"t"}]`

// seamJoin sends a join of realtime:s with bindings, recovering from
// after when not empty.
func seamJoin(c *wsClient, bindings, after string) {
	cfg := `{"postgres_changes":` + bindings + `}`
	if after != "" {
		cfg = `{"postgres_changes":` + bindings + `,"recover":{"postgres_changes":"` + after + `"}}`
	}
	c.write(joinFrame("1", "realtime:s", cfg))
}

// seamReply reads the join reply and returns its response.
func seamReply(t *testing.T, c *wsClient) []byte {
	t.Helper()
	f := c.next()
	if f.Event != "phx_reply" || jsonField(f.Payload, "status") != `"ok"` {
		t.Fatalf("join reply: %s", f)
	}
	var r struct{ Response json.RawMessage }
	json.Unmarshal(f.Payload, &r)
	return r.Response
}

// readRows reads frames until n postgres_changes and returns each one's
// record id and pos; other frames (system, presence) are skipped.
func readRows(t *testing.T, c *wsClient, n int) (ids []string, poss []string) {
	t.Helper()
	for len(ids) < n {
		f := c.next()
		if f.Event != "postgres_changes" {
			continue
		}
		ids = append(ids, jsonField(f.Payload, "data.record.id"))
		poss = append(poss, strings.Trim(jsonField(f.Payload, "pos"), `"`))
	}
	return ids, poss
}

// deliverWhenAttached waits until the stream registered table's
// subscription and hands it changes.
func deliver(ts *testServer, fs *fakeStream, ns ...int) {
	ids := fs.subIDs("t")
	for _, n := range ns {
		ts.DeliverChange(rowChange(n), ids)
	}
}

// A join without recover is told the seam (Head read as it attaches);
// the change at it is not sent again, later ones are, each with its pos.
func TestChangeSeamPlainJoin(t *testing.T) {
	fs := newFakeStream(pos(10))
	ts := startSeamServer(t, fs)
	c := ts.connect(t)
	seamJoin(c, seamBinding, "")
	resp := seamReply(t, c)
	if got := jsonField(resp, "positions.postgres_changes"); got != `"0/A00:1"` {
		t.Fatalf("positions.postgres_changes = %s, want the Head (0/A00:1): %s", got, resp)
	}
	if jsonField(resp, "recovered") != "" || jsonField(resp, "recovery") != "" {
		t.Fatalf("a join that did not ask says recovered: %s", resp)
	}
	deliver(ts, fs, 10, 11, 12)
	ids, poss := readRows(t, c, 2)
	if strings.Join(ids, ",") != "11,12" || poss[0] != "0/B00:1" || poss[1] != "0/C00:1" {
		t.Fatalf("got rows %v at %v, want 11, 12 at 0/B00:1, 0/C00:1", ids, poss)
	}
}

// A recovering join holds the live changes that arrive while it
// recovers: after the reply come the recovered changes, then the held
// ones after Through, then live; none twice (the live changes at or
// before Through, held or late, are dropped at the seam).
func TestChangeSeamRecovers(t *testing.T) {
	fs := newFakeStream(pos(10))
	ts := startSeamServer(t, fs)
	c := ts.connect(t)
	seamJoin(c, seamBinding, pos(5).String())
	<-fs.recovering
	// Live while it recovers: 11 and 12 are also in the recovery.
	deliver(ts, fs, 11, 12, 13)
	ids := fs.subIDs("t")
	var res wal.RecoverResult
	for n := 6; n <= 12; n++ {
		res.Changes = append(res.Changes, wal.Recovered{Change: rowChange(n), IDs: ids})
	}
	res.Through = pos(12)
	fs.answer <- fakeAnswer{res: res}
	resp := seamReply(t, c)
	if jsonField(resp, "recovered") != "true" || jsonField(resp, "recovery.postgres_changes") != "true" ||
		jsonField(resp, "positions.postgres_changes") != `"0/C00:1"` {
		t.Fatalf("reply %s, want recovered through 0/C00:1", resp)
	}
	if got := fs.asked[0]; got != pos(5) {
		t.Fatalf("Recover asked after %v, want %v", got, pos(5))
	}
	deliver(ts, fs, 12, 14) // 12: delivered late, at or before the seam
	got, poss := readRows(t, c, 9)
	if strings.Join(got, ",") != "6,7,8,9,10,11,12,13,14" {
		t.Fatalf("rows %v, want 6..14 once each in order", got)
	}
	if poss[0] != "0/600:1" || poss[8] != "0/E00:1" {
		t.Fatalf("positions %v", poss)
	}
	c.write(heartbeatFrame) // nothing else came before it
	if f := c.next(); !isHeartbeatReply(f) {
		t.Fatalf("after row 14: %s, want the heartbeat reply", f)
	}
}

// Recovered changes go out as live ones do: a channel whose bindings
// differ in columns gets one message per column set, each with its ids.
func TestChangeSeamRecoversPerBinding(t *testing.T) {
	fs := newFakeStream(pos(1))
	ts := startSeamServer(t, fs)
	c := ts.connect(t)
	seamJoin(c, `[{"event":"INSERT","schema":"public","table":"t","select":"id"},{"event":"*","schema":"public","table":"t"}]`, pos(1).String())
	<-fs.recovering
	ids := fs.subIDs("t")
	fs.answer <- fakeAnswer{res: wal.RecoverResult{Changes: []wal.Recovered{{Change: rowChange(2), IDs: ids}}, Through: pos(2)}}
	resp := seamReply(t, c)
	var frames []wsFrame
	for len(frames) < 2 {
		if f := c.next(); f.Event == "postgres_changes" {
			frames = append(frames, f)
		}
	}
	byIDs := map[string]string{} // ids -> body
	for _, f := range frames {
		if jsonField(f.Payload, "pos") != `"0/200:1"` || jsonField(f.Payload, "data.record.id") != "2" {
			t.Fatalf("recovered %s", f.Payload)
		}
		byIDs[jsonField(f.Payload, "ids")] = jsonField(f.Payload, "data.record.body")
	}
	var r struct {
		PostgresChanges []struct{ ID uint64 } `json:"postgres_changes"`
	}
	if json.Unmarshal(resp, &r); len(r.PostgresChanges) != 2 {
		t.Fatalf("reply %s", resp)
	}
	selectID, allID := fmt.Sprintf("[%d]", r.PostgresChanges[0].ID), fmt.Sprintf("[%d]", r.PostgresChanges[1].ID)
	if body, ok := byIDs[selectID]; !ok || body != "" {
		t.Fatalf("binding %s (select id): %v", selectID, byIDs)
	}
	if body := byIDs[allID]; body != `"x"` {
		t.Fatalf("binding %s (every column): %v", allID, byIDs)
	}
}

// A recovery the stream cannot serve is said: recovered false, the
// system event with its reason; then the live stream from the Head, the
// changes held meanwhile included.
func TestChangeSeamRecoveryFails(t *testing.T) {
	fs := newFakeStream(pos(10))
	ts := startSeamServer(t, fs)
	c := ts.connect(t)
	seamJoin(c, seamBinding, pos(2).String())
	<-fs.recovering
	deliver(ts, fs, 11)
	fs.answer <- fakeAnswer{err: &wal.RecoveryError{Reason: "the position is older than the recovery window"}}
	resp := seamReply(t, c)
	if jsonField(resp, "recovered") != "false" || jsonField(resp, "recovery.postgres_changes") != "false" ||
		jsonField(resp, "positions.postgres_changes") != `"0/A00:1"` {
		t.Fatalf("reply %s, want recovered false and the Head as the seam", resp)
	}
	var sys []wsFrame
	var rows []string
	for len(rows) < 2 {
		f := c.next()
		switch f.Event {
		case "system":
			sys = append(sys, f)
		case "postgres_changes":
			rows = append(rows, jsonField(f.Payload, "data.record.id"))
			if len(rows) == 1 {
				deliver(ts, fs, 12)
			}
		}
	}
	if strings.Join(rows, ",") != "11,12" {
		t.Fatalf("rows %v, want 11, 12", rows)
	}
	var failure string
	for _, f := range sys {
		if jsonField(f.Payload, "extension") == `"postgres_changes"` && jsonField(f.Payload, "status") == `"error"` {
			failure = string(f.Payload)
		}
	}
	want := `{"extension":"postgres_changes","status":"error","message":"recovery failed: the position is older than the recovery window","channel":"s"}`
	if failure != want {
		t.Fatalf("system messages %v, want %s", sys, want)
	}
}

// A position that is not one fails recovery with its own reason, without
// asking the stream.
func TestChangeSeamBadPosition(t *testing.T) {
	fs := newFakeStream(pos(3))
	ts := startSeamServer(t, fs)
	c := ts.connect(t)
	c.write(joinFrame("1", "realtime:s", `{"postgres_changes":`+seamBinding+`,"recover":{"postgres_changes":42}}`))
	resp := seamReply(t, c)
	if jsonField(resp, "recovered") != "false" {
		t.Fatalf("reply %s, want recovered false", resp)
	}
	for {
		f := c.next()
		if f.Event == "system" && strings.Contains(string(f.Payload), "recovery failed: recover.postgres_changes must be a change position") {
			break
		}
	}
	if len(fs.asked) != 0 {
		t.Fatalf("Recover was asked %v", fs.asked)
	}
}

// More live changes than the bound while the join recovers: what was
// held is dropped, the seam moves past it, and the reply says recovery
// failed — never a silent gap.
func TestChangeSeamOverflowFails(t *testing.T) {
	fs := newFakeStream(pos(10))
	ts := startSeamServer(t, fs, func(c *Config) { c.QueueBytes, c.BytesPerSecond = 2048, -1 })
	c := ts.connect(t)
	seamJoin(c, seamBinding, pos(5).String())
	<-fs.recovering
	var ns []int
	for n := 11; n <= 30; n++ {
		ns = append(ns, n)
	}
	deliver(ts, fs, ns...)
	fs.answer <- fakeAnswer{res: wal.RecoverResult{Through: pos(12)}}
	resp := seamReply(t, c)
	if jsonField(resp, "recovered") != "false" {
		t.Fatalf("reply %s, want recovered false", resp)
	}
	seam, _ := wal.ParsePos(strings.Trim(jsonField(resp, "positions.postgres_changes"), `"`))
	if !pos(12).Before(seam) {
		t.Fatalf("seam %v, want past the dropped changes", seam)
	}
	deliver(ts, fs, 31)
	got, _ := readRows(t, c, 1)
	for i, id := range got {
		if seamPos := seam; id == "" || !seamPos.Before(pos(atoi(t, id))) {
			t.Fatalf("row %d: %s at or before the seam %v", i, id, seam)
		}
	}
}

func atoi(t *testing.T, s string) int {
	var n int
	if _, err := fmt.Sscan(s, &n); err != nil {
		t.Fatal(err)
	}
	return n
}

// A join that leaves while it recovers holds nothing and leaks nothing:
// the stream's answer after the client went is dropped.
func TestChangeSeamClientGoneWhileRecovering(t *testing.T) {
	fs := newFakeStream(pos(1))
	ts := startSeamServer(t, fs)
	c := ts.connect(t)
	seamJoin(c, seamBinding, pos(1).String())
	<-fs.recovering
	c.nc.Close()
	fs.answer <- fakeAnswer{res: wal.RecoverResult{Through: pos(1)}}
	if !waitFor(5*time.Second, func() bool { return len(fs.subIDs("t")) == 0 }) {
		t.Fatal("the subscription outlived its only client")
	}
}

// A recovery larger than the connection's share of changes goes out
// paced, from a goroutine of the connection: the reader answers the
// client meanwhile (a heartbeat is not stuck behind the recovery), and
// every change arrives once, in order.
func TestChangeSeamPacedRecoveryKeepsReading(t *testing.T) {
	fs := newFakeStream(pos(1))
	ts := startSeamServer(t, fs, func(c *Config) { c.QueueBytes, c.BytesPerSecond = 16<<10, -1 })
	c := ts.connect(t)
	seamJoin(c, seamBinding, pos(1).String())
	<-fs.recovering
	ids := fs.subIDs("t")
	// More than the socket's buffers hold: the recovery must wait for the
	// client to read.
	const n = 600
	body := json.RawMessage(`"` + strings.Repeat("x", 16<<10) + `"`)
	var res wal.RecoverResult
	for i := 2; i < 2+n; i++ {
		rc := rowChange(i)
		rc.Record[1] = body
		res.Changes = append(res.Changes, wal.Recovered{Change: rc, IDs: ids})
	}
	res.Through = pos(1 + n)
	fs.answer <- fakeAnswer{res: res}
	if resp := seamReply(t, c); jsonField(resp, "recovered") != "true" {
		t.Fatalf("reply %s", resp)
	}
	// The client reads nothing until the recovery waits for room, then
	// sends a heartbeat: it is answered while the recovery still waits.
	if !waitFor(testWait, func() bool { return ts.metrics.changeWaits.Get() >= 1 }) {
		t.Fatal("the recovery never waited for room")
	}
	before := ts.metrics.messagesOut.Get()
	c.write(heartbeatFrame)
	if !waitFor(testWait, func() bool { return ts.metrics.messagesOut.Get() > before }) {
		t.Fatal("a heartbeat sent during the recovery was not answered: the reader waits for the recovery")
	}
	var rows []string
	answered := false
	for len(rows) < n || !answered {
		f := c.next()
		switch {
		case isHeartbeatReply(f):
			answered = true
		case f.Event == "postgres_changes":
			rows = append(rows, jsonField(f.Payload, "data.record.id"))
		}
	}
	for i, id := range rows {
		if id != fmt.Sprint(i+2) {
			t.Fatalf("row %d is %s, want %d (in order, once)", i, id, i+2)
		}
	}
}

func TestAppendJoinPositionsPerExtension(t *testing.T) {
	jp := joinPositions{changes: "0/A0:1", asked: true, ok: false,
		each: []extRecovery{{"broadcast", true}, {"postgres_changes", false}}}
	want := `{"postgres_changes":[],"positions":{"broadcast":{},"postgres_changes":"0/A0:1"},"recovered":false,"recovery":{"broadcast":true,"postgres_changes":false}}`
	if got := string(appendJoinPositions(joinOK, jp)); got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}
