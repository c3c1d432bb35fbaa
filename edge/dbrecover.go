package edge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/meshcast/meshcast/wal"
	"github.com/meshcast/meshcast/wal/dbcast"
	"github.com/meshcast/meshcast/wire/phx"
)

// Recovery of the database's stream: broadcasts from the database
// (realtime.messages) carry meta.pos "db:<Pos>", a position in the
// Postgres change stream, and a join's recover.broadcast vector may name
// the last one the channel received as "db": "<Pos>". The node then reads
// back the topic's rows after it from the change stream's owner
// (DBStream), sends them after the join reply, as live ones are, and
// drops live rows at or before the seam.

// DBStream is the database's broadcast stream, as recovery needs it
// (dbcast.Recoverer over wal.Service).
type DBStream interface {
	// Head is a position after which every row still reaches DeliverDB.
	Head() wal.Pos
	// Recover returns the topic's broadcasts after `after`, oldest first,
	// complete through the position it returns (at least atLeast); the
	// error's text follows "recovery failed: ".
	Recover(ctx context.Context, topic string, private bool, after, atLeast wal.Pos) ([]dbcast.Message, wal.Pos, error)
}

// SetDBStream connects the server to the database's broadcast stream for
// recovery (before it serves). Without it a join that asks to recover
// "db" is told recovery failed.
func (s *Server) SetDBStream(d DBStream) { s.dbStream = d }

// dbRecoverTimeout bounds a join's read of the database's stream: long
// enough to outlast a request to an owner that just died (wal waits
// RegisterTimeout, 5 s, plus 1 s) and to ask its successor, short of
// realtime-js's 10 s join timeout.
const dbRecoverTimeout = 8 * time.Second

// errNoDBStream fails the recovery of "db" on a node without the stream.
var errNoDBStream = errors.New("this node does not stream the database's broadcasts")

// errDBPos reports a "db" entry that is not a position.
var errDBPos = errors.New(`recover.broadcast.db must be a change position such as "0/16B3748:3"`)

// errDBCaptureFull fails a recovery during which more live rows arrived
// than a capture holds.
var errDBCaptureFull = errors.New("too many database broadcasts arrived while recovering")

// dbJoin is a join's part of the database's stream, from its config to
// its seam. Its fields are set by the joining connection's reader, then
// read under the topic's write lock.
type dbJoin struct {
	after *wal.Pos // the position asked to recover from (nil: not asked)
	err   error    // why recovery of it fails (nil: it does not, yet)

	atLeast wal.Pos // Head read when capture began
	capture *capture
	msgs    []dbcast.Message // recovered, oldest first
	through wal.Pos

	send bool             // the join recovered: msgs and late go out
	late []dbcast.Message // captured rows after through
}

// newDBJoin reads the "db" entry of a join's recover.broadcast vector
// (raw); nil when the node has no positions or the database's stream and
// the join does not ask for it.
func (s *Server) newDBJoin(raw json.RawMessage) *dbJoin {
	if s.rec == nil {
		return nil // recovery off: no positions
	}
	after, err := parseDBEntry(raw)
	if after == nil && err == nil && s.dbStream == nil {
		return nil
	}
	d := &dbJoin{after: after, err: err}
	if d.asked() && d.err == nil && s.dbStream == nil {
		d.err = errNoDBStream
	}
	return d
}

// parseDBEntry reads "db" of a recover.broadcast vector: absent or null is
// nil (other errors of the vector are ParseVector's to report).
func parseDBEntry(raw json.RawMessage) (*wal.Pos, error) {
	var v struct {
		DB json.RawMessage `json:"db"`
	}
	if raw = bytes.TrimSpace(raw); len(raw) == 0 || json.Unmarshal(raw, &v) != nil {
		return nil, nil
	}
	if db := bytes.TrimSpace(v.DB); len(db) == 0 || string(db) == "null" {
		return nil, nil
	}
	var s string
	if json.Unmarshal(v.DB, &s) != nil {
		return nil, errDBPos
	}
	p, err := wal.ParsePos(s)
	if err != nil {
		return nil, errDBPos
	}
	return &p, nil
}

func (d *dbJoin) asked() bool { return d != nil && (d.after != nil || d.err != nil) }

// recoverDB reads back what the joining channel missed of the database's
// stream, when it asks: live rows are captured from before the read, so
// that the two together miss none. Called with c.mu held, which it lets
// go while it waits on the change stream's owner.
func (c *conn) recoverDB(ch *channel, t *topic) {
	d, s := ch.db, c.srv
	if !d.asked() || d.err != nil {
		return
	}
	c.unlockToWait()
	defer c.mu.Lock()
	d.capture = &capture{}
	t.mu.Lock()
	t.captures = append(t.captures, d.capture)
	d.atLeast = s.dbStream.Head() // under the lock DeliverDB takes: nothing after it is missed
	t.mu.Unlock()
	ctx, cancel := context.WithTimeout(s.life, dbRecoverTimeout)
	defer cancel()
	d.msgs, d.through, d.err = s.dbStream.Recover(ctx, ch.name, ch.key.private, *d.after, d.atLeast)
	if d.err != nil {
		s.logLimited.Warn("recovery of the database's broadcasts failed", "topic", ch.key.name, "remote", c.remote, "err", d.err)
	}
}

// dbSeam is what a join reply says of the database's stream.
type dbSeam struct {
	// pos is positions.broadcast.db when the join recovers (through),
	// floor when it does not (then no recovered row follows): "" without
	// the stream.
	pos, floor string
	asked      bool
	failed     string // why its recovery failed ("" when it did not)
}

// entry is positions.broadcast.db of a reply whose recovery succeeded (ok)
// or not.
func (d dbSeam) entry(ok bool) string {
	if ok {
		return d.pos
	}
	return d.floor
}

// dbSeamLocked decides the seam of the channel's database stream, under
// the topic's write lock: the position the reply gives and below which
// live rows are dropped. The rows the recovery read and those captured
// since wait in ch.db until ok says whether the join's broadcast recovery
// succeeded as a whole.
func (s *Server) dbSeamLocked(ch *channel) dbSeam {
	d := ch.db
	if d == nil {
		return dbSeam{}
	}
	var captured []dbcast.Message
	if d.capture != nil {
		ch.t.endCaptureLocked(d.capture)
		d.capture.mu.Lock()
		captured, d.capture.msgs = d.capture.msgs, nil
		if d.capture.overflow && d.err == nil {
			d.err = errDBCaptureFull
		}
		d.capture.mu.Unlock()
	}
	seam := dbSeam{asked: d.asked()}
	if s.dbStream == nil {
		seam.failed = d.err.Error() // asked: newDBJoin set err
		return seam
	}
	floor := s.dbStream.Head()
	if d.asked() && d.err == nil {
		// Sent if the join recovers: then the client holds what it
		// asked from, and each row raises it.
		if floor.Before(d.through) {
			floor = d.through
		}
		for _, m := range captured {
			if d.through.Before(m.Pos) {
				d.late = append(d.late, m)
				floor = maxPos(floor, m.Pos)
			}
		}
		seam.pos = d.through.String()
	} else {
		for _, m := range captured {
			floor = maxPos(floor, m.Pos)
		}
		seam.pos = floor.String()
	}
	seam.floor = floor.String()
	if d.err != nil {
		seam.failed = d.err.Error()
	}
	ch.dbFloor = floor
	return seam
}

func maxPos(p, q wal.Pos) wal.Pos {
	if p.Before(q) {
		return q
	}
	return p
}

// sendDBLocked sends a joined channel, under the topic's write lock and
// after everything else of its join, its replay (captured: the rows that
// arrived while the replay was read; nil when it asked none) and, when
// its recovery succeeded, the database rows it missed: oldest first, none
// twice, none the replay sent.
func (ch *channel) sendDBLocked(t *topic, replayed []dbcast.Message, captured *capture) {
	d := ch.db
	if d == nil || !d.send {
		if captured != nil {
			ch.sendReplayLocked(t, replayed, captured)
		}
		return
	}
	recovered := make(map[string]bool, len(d.msgs)+len(d.late))
	for _, m := range d.msgs {
		recovered[m.ID] = true
	}
	for _, m := range d.late {
		recovered[m.ID] = true
	}
	if captured != nil {
		// The replay's rows that recovery does not send are older than
		// what it asked from: they go first. What arrived meanwhile is
		// recovery's.
		var older []dbcast.Message
		for _, m := range replayed {
			if !recovered[m.ID] {
				older = append(older, m)
			}
		}
		t.endCaptureLocked(captured)
		ch.sendReplayLocked(t, older, &capture{})
	}
	for _, batch := range [][]dbcast.Message{d.msgs, d.late} {
		for i := range batch {
			ch.deliver(dbOut(&batch[i], false, true))
		}
	}
	ch.conn.srv.rec.m.resent.Add(len(d.msgs) + len(d.late))
	d.msgs, d.late = nil, nil
}

// appendDBEntry adds "db": pos to the vector object that ends dst.
func appendDBEntry(dst []byte, pos string) []byte {
	dst = dst[:len(dst)-1]
	if dst[len(dst)-1] != '{' {
		dst = append(dst, ',')
	}
	dst = append(dst, `"db":`...)
	dst = phx.AppendString(dst, pos)
	return append(dst, '}')
}
