package bench

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/meshcast/meshcast/bench/measure"

	"github.com/gobwas/ws"
)

// walSub is one subscriber of a WAL run: a WebSocket with one channel
// joined with one postgres_changes binding. Its reader goroutine owns the
// fields below "reader-owned"; the runner reads them after it exited.
type walSub struct {
	r     *walRunner
	id    int
	class int // the rows it must receive: see subClass
	topic string
	c     *wsConn
	hist  *measure.Histogram // statement sent → read
	ack   *measure.Histogram // commit acknowledged to the writer → read
	recv  *atomic.Uint64     // shard of the live count of rows received once

	nextHB atomic.Int64 // runner clock of the next heartbeat
	hbRef  uint64       // owned by the heartbeat goroutine

	// reader-owned
	frameTime   int64
	lastSeq     []int64 // per writer, the last seq received
	unique      uint64  // rows received (first time)
	measured    uint64  // of which sent after measuring started
	lastRecv    int64
	beforeAck   uint64 // measured rows read before their commit was acknowledged to the writer
	repeated    uint64 // a writer's seq at or below one received before: a duplicate or reordering
	wrong       uint64 // rows of another class: rows this subscriber must not see
	errorsN     uint64 // changes with errors (e.g. 413, 401)
	unexpectedN uint64
	firstUnexp  string
	readErr     error

	_ [64]byte
}

const (
	walJoinRef        = "1"
	walHeartbeatEvery = 25 * time.Second
)

var (
	phxChangesEvent = []byte(`"postgres_changes",{`)
	phxSystemEvent  = []byte(`"system",{`)
	walRecordKey    = []byte(`"record":{`)
	walErrorsNull   = []byte(`"errors":null`)
	walWriterKey    = []byte(`"writer":`)
	walSeqKey       = []byte(`"seq":`)
	walTeamKey      = []byte(`"team":`)
	walSentKey      = []byte(`"sent_ns":`)
	errNotWALChange = errors.New("bench: not a change of the benchmark's table")
)

// appendWALJoin appends subscriber's phx_join: one channel, its binding,
// the access token when there is one.
func appendWALJoin(dst []byte, topic, binding, token string) []byte {
	dst = append(dst, `["`+walJoinRef+`","`+walJoinRef+`",`...)
	dst = strconv.AppendQuote(dst, topic)
	dst = append(dst, `,"phx_join",{"config":{"broadcast":{"self":false,"ack":false},"presence":{"key":"","enabled":false},"postgres_changes":[`...)
	dst = append(dst, binding...)
	dst = append(dst, `],"private":false}`...)
	if token != "" {
		dst = append(dst, `,"access_token":`...)
		dst = strconv.AppendQuote(dst, token)
	}
	return append(dst, "}]"...)
}

// walChange is what a subscriber reads of a change of a WALTable.
type walChange struct {
	writer, team int
	seq, sentNs  int64
	errors       bool // the change's errors are not null
}

// parseWALChange reads a postgres_changes frame of a WALTable:
// [null,null,topic,"postgres_changes",{"ids":[…],"data":{…,"errors":null,…,"record":{"id":…,"writer":…,…},…}}].
// Keys are found by their text: the record's column names are unique in
// the frame and the pad holds only 'x'.
func parseWALChange(frame []byte) (walChange, error) {
	var c walChange
	i := bytes.Index(frame, walRecordKey)
	if i < 0 {
		return c, errNotWALChange
	}
	c.errors = !bytes.Contains(frame, walErrorsNull)
	rec := frame[i+len(walRecordKey):]
	var err error
	num := func(key []byte) int64 {
		j := bytes.Index(rec, key)
		if j < 0 {
			err = errNotWALChange
			return 0
		}
		v, ok := leadingInt(rec[j+len(key):])
		if !ok {
			err = errNotWALChange
		}
		return v
	}
	c.writer = int(num(walWriterKey))
	c.seq = num(walSeqKey)
	c.team = int(num(walTeamKey))
	c.sentNs = num(walSentKey)
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
	if n == 0 {
		return 0, false
	}
	if neg {
		v = -v
	}
	return v, true
}

// handshake joins and waits for the join reply and the "Subscribed to
// PostgreSQL" system message. Frames other than those are handled as the
// read loop would.
func (s *walSub) handshake(join []byte, timeout time.Duration) error {
	c := s.c
	if err := c.nc.SetDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	defer c.nc.SetDeadline(time.Time{})
	if err := c.WriteFrame(ws.OpText, join); err != nil {
		return fmt.Errorf("send phx_join: %w", err)
	}
	replied := false
	for range 64 {
		op, b, err := c.ReadFrame()
		if err != nil {
			if replied {
				return fmt.Errorf("await the postgres_changes system message: %w", err)
			}
			return fmt.Errorf("await join reply: %w", err)
		}
		if op != ws.OpText {
			s.unexpected(b)
			continue
		}
		switch {
		case !replied && bytes.Contains(b, phxReplyEvent):
			r, err := parsePhxFrame(b)
			if err != nil {
				return err
			}
			if r.Ref == nil || *r.Ref != walJoinRef || r.Topic != s.topic {
				continue
			}
			if r.Status != "ok" {
				return fmt.Errorf("join refused: %.300s", r.Raw)
			}
			replied = true
		case replied && bytes.Contains(b, phxSystemEvent):
			r, err := parsePhxFrame(b)
			if err != nil {
				return err
			}
			var p struct{ Extension, Status, Message string }
			json.Unmarshal(r.Raw, &p)
			if p.Extension != "postgres_changes" {
				continue
			}
			if p.Status != "ok" {
				return fmt.Errorf("postgres_changes: %s", p.Message)
			}
			return nil
		default:
			s.frameTime = s.r.now()
			s.handle(b)
		}
	}
	return errors.New("no join reply and system message within 64 frames")
}

// readLoop reads until the connection fails or the runner closes it.
func (s *walSub) readLoop() {
	for {
		op, b, err := s.c.ReadFrame()
		if err != nil {
			if !s.r.stopping.Load() {
				s.readErr = err
			}
			return
		}
		s.frameTime = s.r.now()
		if op != ws.OpText {
			s.unexpected(b)
			continue
		}
		s.handle(b)
	}
}

// handle takes one text frame.
func (s *walSub) handle(b []byte) {
	switch {
	case bytes.Contains(b, phxChangesEvent):
		s.change(b)
	case bytes.Contains(b, phxReplyEvent) && bytes.Contains(b, phxStatusOK):
		// heartbeat reply
	default:
		s.unexpected(b)
	}
}

func (s *walSub) change(b []byte) {
	c, err := parseWALChange(b)
	if err != nil || c.writer < 0 || c.writer >= len(s.lastSeq) {
		s.unexpected(b)
		return
	}
	if c.errors {
		s.errorsN++
		if s.errorsN == 1 {
			s.noteUnexpected(b)
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
	s.recv.Add(1)
	if c.sentNs >= s.r.measureStart.Load() {
		s.measured++
		s.lastRecv = s.frameTime
		s.hist.Record(s.frameTime - c.sentNs)
		// Read before the writer heard its commit acknowledged: 0.
		if w := s.r.writer.Load(); w != nil {
			if at, ok := w.ackedAt(c.writer, c.seq); ok {
				d := int64(0) // at 0: not acknowledged yet
				if at > 0 {
					d = max(0, s.frameTime-at)
				} else {
					s.beforeAck++
				}
				s.ack.Record(d)
			}
		}
	}
}

func (s *walSub) unexpected(frame []byte) {
	s.unexpectedN++
	s.noteUnexpected(frame)
}

func (s *walSub) noteUnexpected(frame []byte) {
	if s.firstUnexp == "" {
		s.firstUnexp = string(frame[:min(len(frame), 300)])
	}
}

// heartbeat sends the Phoenix heartbeat if it is due at now.
func (s *walSub) heartbeat(now int64, buf []byte) []byte {
	due := s.nextHB.Load()
	if due == 0 || due > now {
		return buf
	}
	s.nextHB.Store(now + int64(walHeartbeatEvery))
	s.hbRef++
	buf = AppendPhxHeartbeat(buf[:0], s.hbRef+1) // ref 1 was the join
	_ = s.c.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_ = s.c.WriteFrame(ws.OpText, buf)
	return buf
}
