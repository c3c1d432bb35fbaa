package bench

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/gobwas/ws"

	"github.com/meshcast/meshcast/bench/client"
	"github.com/meshcast/meshcast/bench/measure"
	"github.com/meshcast/meshcast/wire/phx"
)

// walSub is one subscriber of a WAL run: a WebSocket with one channel
// joined with one postgres_changes binding. The goroutine that reads it
// owns the counts until the holder closed.
type walSub struct {
	r     *walRun
	id    int
	class int // the rows it must receive: see subClass
	topic string
	c     client.Conn
	hist  *measure.Histogram // statement sent → read
	ack   *measure.Histogram // commit acknowledged to the writer → read

	lastSeq   []int64 // per writer, the last seq received
	unique    uint64  // rows received (first time)
	beforeAck uint64  // measured rows read before their commit was acknowledged to the writer
	repeated  uint64  // a writer's seq at or below one received before: a duplicate or reordering
	wrong     uint64  // rows of another class: rows this subscriber must not see
	errorsN   uint64  // changes with errors (e.g. 413, 401)
	tally
	_ [64]byte
}

var (
	walRecordKey    = []byte(`"record":{`)
	walPayloadKey   = []byte(`"payload":{`)
	walErrorsNull   = []byte(`"errors":null`)
	walWriterKey    = []byte(`"writer":`)
	walSeqKey       = []byte(`"seq":`)
	walTeamKey      = []byte(`"team":`)
	walSentKey      = []byte(`"sent_ns":`)
	errNotWALChange = errors.New("bench: not a change of the benchmark's table")
)

// walChange is what a subscriber reads of a change of a WALTable.
type walChange struct {
	writer, team int
	seq, sentNs  int64
	errors       bool // the change's errors are not null
}

// parseWALChange reads a postgres_changes payload (or frame) of a
// WALTable: {"ids":[…],"data":{…,"errors":null,…,"record":{"id":…,"writer":…,…},…}}.
// Keys are found by their text: the record's column names are unique in
// the frame and the pad holds only 'x'.
func parseWALChange(frame []byte) (walChange, error) {
	var c walChange
	var rec []byte
	if i := bytes.Index(frame, walRecordKey); i >= 0 {
		c.errors = !bytes.Contains(frame, walErrorsNull)
		rec = frame[i+len(walRecordKey):]
	} else if i := bytes.Index(frame, walPayloadKey); i >= 0 {
		rec = frame[i+len(walPayloadKey):] // a broadcast from the database (ShapeDBCast)
	} else {
		return c, errNotWALChange
	}
	var err error
	num := func(key []byte) int64 {
		j := bytes.Index(rec, key)
		if j < 0 {
			err = errNotWALChange
			return 0
		}
		v, ok := leadingInt(bytes.TrimLeft(rec[j+len(key):], " "))
		if !ok {
			err = errNotWALChange
		}
		return v
	}
	c.writer, c.seq, c.team, c.sentNs = int(num(walWriterKey)), num(walSeqKey), int(num(walTeamKey)), num(walSentKey)
	return c, err
}

// leadingInt parses the decimal integer b starts with.
func leadingInt(b []byte) (int64, bool) {
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	var v int64
	n := 0
	for ; n < len(b) && n < 19 && b[n] >= '0' && b[n] <= '9'; n++ {
		v = v*10 + int64(b[n]-'0')
	}
	if neg {
		v = -v
	}
	return v, n > 0
}

// subscribed is the end of the join: the "Subscribed to PostgreSQL"
// system message. Other frames are read as they would be later.
func (s *walSub) subscribed(f phx.RawFrame, raw []byte) (bool, error) {
	if string(f.Event) != "system" {
		s.OnMessage(ws.OpText, raw, s.r.now())
		return false, nil
	}
	var p struct{ Extension, Status, Message string }
	if json.Unmarshal(f.Payload, &p) != nil || p.Extension != "postgres_changes" {
		return false, nil
	}
	if p.Status != "ok" {
		return false, fmt.Errorf("postgres_changes: %s", p.Message)
	}
	return true, nil
}

// OnMessage takes one frame: a change, or a heartbeat's reply.
func (s *walSub) OnMessage(op ws.OpCode, b []byte, now int64) {
	f, err := phx.ScanV2(b)
	switch {
	case op != ws.OpText || err != nil:
		s.odd(b)
	case string(f.Event) == "postgres_changes", string(f.Event) == "broadcast":
		s.change(f.Payload, now)
	case string(f.Event) != "phx_reply" || !bytes.Contains(f.Payload, statusOK):
		s.odd(b)
	}
}

func (s *walSub) change(b []byte, now int64) {
	c, err := parseWALChange(b)
	if err != nil || c.writer < 0 || c.writer >= len(s.lastSeq) {
		s.odd(b)
		return
	}
	if c.errors {
		if s.errorsN++; s.firstUnexp == "" {
			s.firstUnexp = string(b[:min(len(b), 300)])
		}
	}
	if c.team != s.class {
		s.wrong++
		return
	}
	if c.seq <= s.lastSeq[c.writer] {
		s.repeated++
		return
	}
	s.lastSeq[c.writer] = c.seq
	s.unique++
	s.r.deliver(s.id)
	if !s.r.measured(c.sentNs) {
		return
	}
	s.measured++
	s.lastRecv = now
	s.hist.Record(now - c.sentNs)
	// Read before the writer heard its commit acknowledged: 0.
	if w := s.r.writer.Load(); w != nil {
		if at, ok := w.ackedAt(c.writer, c.seq); ok {
			if at > 0 {
				s.ack.Record(max(0, now-at))
			} else {
				s.beforeAck++
				s.ack.Record(0)
			}
		}
	}
}
