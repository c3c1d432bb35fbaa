package edge

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshcast/meshcast/wal"
	"github.com/meshcast/meshcast/wal/dbcast"
)

// fakeDBStream is a DBStream whose head the test sets and whose Recover
// hands each request to the test, which answers it when it likes.
type fakeDBStream struct {
	mu     sync.Mutex
	head   wal.Pos
	asked  chan dbAsk
	answer chan dbAnswer
}

type dbAsk struct {
	topic          string
	private        bool
	after, atLeast wal.Pos
}

type dbAnswer struct {
	msgs    []dbcast.Message
	through wal.Pos
	err     error
}

func newFakeDBStream(head wal.Pos) *fakeDBStream {
	return &fakeDBStream{head: head, asked: make(chan dbAsk, 1), answer: make(chan dbAnswer, 1)}
}

func (f *fakeDBStream) Head() wal.Pos {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.head
}

// deliver raises the head to m's position and delivers m, as the
// Service does.
func (f *fakeDBStream) deliver(ts *testServer, m *dbcast.Message) {
	f.mu.Lock()
	f.head = m.Pos
	f.mu.Unlock()
	ts.DeliverDB(m)
}

func (f *fakeDBStream) Recover(ctx context.Context, topic string, private bool, after, atLeast wal.Pos) ([]dbcast.Message, wal.Pos, error) {
	f.asked <- dbAsk{topic, private, after, atLeast}
	select {
	case a := <-f.answer:
		return a.msgs, a.through, a.err
	case <-ctx.Done():
		return nil, wal.Pos{}, ctx.Err()
	}
}

// ask waits (bounded) for the next Recover.
func (f *fakeDBStream) ask(t *testing.T) dbAsk {
	t.Helper()
	select {
	case a := <-f.asked:
		return a
	case <-time.After(testWait):
		t.Fatal("no Recover")
	}
	return dbAsk{}
}

func dbPos(lsn uint64) wal.Pos { return wal.Pos{LSN: wal.LSN(lsn), Seq: 1} }

// posMsg is a database broadcast of the private topic at LSN lsn.
func posMsg(topic string, lsn uint64) *dbcast.Message {
	m := dbMsg(topic, fmt.Sprintf("m%X", lsn))
	m.Pos = dbPos(lsn)
	return m
}

// dbSeen are the database broadcasts among frames, as id@meta.pos.
func dbSeen(fs []wsFrame) string {
	var out []string
	for _, f := range fs {
		if f.Event == "broadcast" {
			out = append(out, strings.Trim(jsonField(f.Payload, "payload.id"), `"`)+"@"+strings.Trim(jsonField(f.Payload, "meta.pos"), `"`))
		}
	}
	return strings.Join(out, " ")
}

// TestDBRecoveryThenLive: a join that names the database's stream gets,
// after its reply, the topic's rows after its position (what the stream
// read back, then what arrived live meanwhile past it), each once, oldest
// first, with meta.pos; then live rows, none at or before the seam.
func TestDBRecoveryThenLive(t *testing.T) {
	f := newFakeDBStream(dbPos(0x10))
	ts := startServer(t, withRecovery)
	ts.SetDBStream(f)
	c := ts.connect(t)
	c.write(joinFrame("1", "realtime:r", `{"private":true,"recover":{"broadcast":{"db":"0/10:1"}}}`))
	ask := f.ask(t)
	if ask.topic != "r" || !ask.private || ask.after != dbPos(0x10) || ask.atLeast != dbPos(0x10) {
		t.Fatalf("asked %+v, want the private topic r after 0/10:1, at least through the head 0/10:1", ask)
	}
	// While the stream is read: a row it also returns, and a newer one.
	f.deliver(ts, posMsg("r", 0x30))
	f.deliver(ts, posMsg("r", 0x40))
	f.answer <- dbAnswer{msgs: []dbcast.Message{*posMsg("r", 0x20), *posMsg("r", 0x30)}, through: dbPos(0x30)}
	var reply wsFrame
	c.until("the join reply", func(fr wsFrame) bool { reply = fr; return isReplyTo("1")(fr) })
	if got := jsonField(reply.Payload, "response.recovered"); got != "true" {
		t.Fatalf("recovered = %s in %s", got, reply.Payload)
	}
	if got := jsonField(reply.Payload, "response.positions.broadcast.db"); got != `"0/30:1"` {
		t.Fatalf("positions.broadcast.db = %s, want the stream's Through", got)
	}
	f.deliver(ts, posMsg("r", 0x40)) // late again: at the seam
	f.deliver(ts, posMsg("r", 0x50))
	if got, want := dbSeen(c.barrier()), "m20@db:0/20:1 m30@db:0/30:1 m40@db:0/40:1 m50@db:0/50:1"; got != want {
		t.Fatalf("got %s\nwant %s", got, want)
	}
}

// TestDBSeamWithoutRecovery: a join that does not ask gets the stream's
// head as its seam and only rows after it.
func TestDBSeamWithoutRecovery(t *testing.T) {
	f := newFakeDBStream(dbPos(0x10))
	ts := startServer(t, withRecovery)
	ts.SetDBStream(f)
	c := ts.connect(t)
	resp := recJoin(t, c, "1", "realtime:r", "")
	if got := jsonField(resp, "positions.broadcast.db"); got != `"0/10:1"` || jsonField(resp, "recovered") != "" {
		t.Fatalf("reply %s, want positions.broadcast.db 0/10:1 and no recovered", resp)
	}
	m := posMsg("r", 0x10) // the row at the head, late
	m.Private = false
	ts.DeliverDB(m)
	m = posMsg("r", 0x11)
	m.Private = false
	ts.DeliverDB(m)
	if got := dbSeen(c.barrier()); got != "m11@db:0/11:1" {
		t.Fatalf("got %s, want only the row after the seam", got)
	}
}

// TestDBRecoveryFailures: a position the stream cannot serve, one that is
// no position, and a node without the stream each give recovered:false
// and the broadcast extension's system error; live rows then flow from
// the seam.
func TestDBRecoveryFailures(t *testing.T) {
	f := newFakeDBStream(dbPos(0x10))
	ts := startServer(t, withRecovery)
	ts.SetDBStream(f)
	for i, tc := range []struct {
		vec, reason string
		stream      bool
	}{
		{`{"db":"0/1:1"}`, "the position is older than the recovery window", true},
		{`{"db":7}`, errDBPos.Error(), false},
		{`{"db":"0/01:1"}`, errDBPos.Error(), false},
	} {
		c := ts.connect(t)
		c.write(joinFrame("1", "realtime:r", fmt.Sprintf(`{"recover":{"broadcast":%s}}`, tc.vec)))
		if tc.stream {
			f.ask(t)
			f.answer <- dbAnswer{err: errors.New(tc.reason)}
		}
		checkDBFailure(t, c, fmt.Sprint(i), tc.reason)
		m := posMsg("r", 0x11+uint64(i))
		m.Private = false
		f.deliver(ts, m)
		if got := dbSeen(c.barrier()); got != fmt.Sprintf("m%X@db:0/%X:1", 0x11+i, 0x11+i) {
			t.Fatalf("%s: then %s, want the live row", tc.vec, got)
		}
	}
	ts = startServer(t, withRecovery) // no database
	c := ts.connect(t)
	c.write(joinFrame("1", "realtime:r", `{"recover":{"broadcast":{"db":"0/1:1"}}}`))
	checkDBFailure(t, c, "no stream", errNoDBStream.Error())
}

func checkDBFailure(t *testing.T, c *wsClient, what, reason string) {
	t.Helper()
	var reply wsFrame
	c.until("the join reply", func(fr wsFrame) bool { reply = fr; return isReplyTo("1")(fr) })
	if got := jsonField(reply.Payload, "response.recovered"); got != "false" {
		t.Fatalf("%s: recovered = %s in %s", what, got, reply.Payload)
	}
	var sys wsFrame
	c.until("the system error", func(fr wsFrame) bool { sys = fr; return fr.Event == "system" })
	if jsonField(sys.Payload, "extension") != `"broadcast"` || jsonField(sys.Payload, "status") != `"error"` ||
		jsonField(sys.Payload, "message") != fmt.Sprintf("%q", "recovery failed: "+reason) {
		t.Fatalf("%s: system %s, want the broadcast extension's error %q", what, sys.Payload, reason)
	}
}

// TestDBRecoveryWithReplay: a join that asks both replay and recovery of
// the db stream gets the replayed rows recovery does not send first (they
// are older), then the recovered ones, each once.
func TestDBRecoveryWithReplay(t *testing.T) {
	f := newFakeDBStream(dbPos(0x10))
	r := &fakeReplay{asked: make(chan replayAsk, 1), answer: make(chan replayAnswer, 1)}
	ts := startServer(t, withRecovery)
	ts.SetDBStream(f)
	ts.SetReplay(r)
	c := ts.connect(t)
	c.write(joinFrame("1", "realtime:r", `{"private":true,"broadcast":{"replay":{"since":1}},"recover":{"broadcast":{"db":"0/10:1"}}}`))
	<-r.asked
	r.answer <- replayAnswer{msgs: []dbcast.Message{*dbMsg("r", "m8"), *dbMsg("r", "m20")}} // rows as SQL reads them: no position
	f.ask(t)
	f.answer <- dbAnswer{msgs: []dbcast.Message{*posMsg("r", 0x20), *posMsg("r", 0x30)}, through: dbPos(0x30)}
	c.until("the join reply", isReplyTo("1"))
	if got, want := dbSeen(c.barrier()), "m8@ m20@db:0/20:1 m30@db:0/30:1"; got != want {
		t.Fatalf("got %s\nwant %s", got, want)
	}
}
