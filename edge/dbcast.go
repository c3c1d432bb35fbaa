package edge

import (
	"bytes"
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/meshcast/meshcast/wal"
	"github.com/meshcast/meshcast/wal/dbcast"
	"github.com/meshcast/meshcast/wire/phx"
)

// Broadcasts from the database (rows of realtime.messages, wal/dbcast) and
// replay of a private topic's recent ones at join.

// ReplaySource reads the newest broadcasts of a private topic from the
// database (realtime.messages), as id may read them (its role, claims and
// the topic set as for a policy check): at most limit, inserted at or
// after since (epoch ms), oldest first.
type ReplaySource interface {
	Replay(ctx context.Context, id *Identity, topic string, since int64, limit int) ([]dbcast.Message, error)
}

// SetReplay connects the server to the database broadcasts' replay (before
// it serves). Without it a join that asks for replay is refused.
func (s *Server) SetReplay(r ReplaySource) { s.replay = r }

// DeliverDB fans a broadcast row of realtime.messages out to the local
// channels of its topic (public or private by its private column): JSON as
// a text broadcast, bytes as a kind-4 binary frame to v2 clients only, meta
// {"id": …}. A channel that just replayed the row does not get it again. It
// reports how many subscribers took it.
func (s *Server) DeliverDB(m *dbcast.Message) int {
	t := s.hub.lookup(topicKey{name: topicPrefix + m.Topic, private: m.Private})
	if t == nil {
		return 0
	}
	out := dbOut(m, false, s.rec != nil)
	var n deliveries
	t.mu.RLock()
	for _, c := range t.captures {
		c.add(m)
	}
	for _, ch := range t.subs {
		if _, dup := ch.replayed[m.ID]; dup || !ch.dbFloor.Before(m.Pos) && !m.Pos.IsZero() {
			continue // replayed, or at or before the seam of its join
		}
		if ch.deliver(out) {
			n[ch.conn.kind]++
		}
	}
	t.mu.RUnlock()
	s.metrics.fannedOut(n)
	return n.total()
}

// dbOut is the broadcast of a row; positioned when recovery is on.
func dbOut(m *dbcast.Message, replayed, positioned bool) *outMsg {
	var pos wal.Pos
	if positioned {
		pos = m.Pos
	}
	out := &outMsg{topic: topicPrefix + m.Topic, event: m.Event, data: m.Payload, meta: dbMeta(m.ID, replayed, pos), enc: phx.EncJSON}
	if m.Binary {
		out.enc, out.binary = phx.EncBytes, true
	}
	return out
}

// dbMeta is the meta object of a database broadcast: its position in the
// database's stream first, as the positions of other streams are (none
// when pos is zero: recovery off, or a replayed row), then Supabase's.
func dbMeta(id string, replayed bool, pos wal.Pos) []byte {
	b := []byte(`{`)
	if !pos.IsZero() {
		b = append(b, `"pos":"db:`...)
		b = append(b, pos.String()...)
		b = append(b, `",`...)
	}
	if replayed {
		b = append(b, `"replayed":true,`...)
	}
	b = append(b, `"id":`...)
	b = phx.AppendString(b, id)
	return append(b, '}')
}

// replayParams are a join's broadcast.replay, decided.
type replayParams struct {
	since int64 // epoch ms
	limit int   // 1 to maxReplay
}

// maxReplay is Supabase's bound on the messages a join replays.
const maxReplay = 25

var (
	refuseReplayPublic = joinRefusal("UnableToReplayMessages: Replay is not allowed for public channels")
	refuseReplayParams = joinRefusal("UnableToReplayMessages: Replay params are not valid")
	refuseReplayFailed = joinRefusal("UnableToReplayMessages: Realtime was unable to replay messages")
)

// decideReplay decides a join's broadcast.replay as Supabase does: only
// on private channels; since an integer (epoch ms); limit an integer,
// 25 when absent, held to 1…25.
func decideReplay(raw json.RawMessage, private bool) (*replayParams, *refusal) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	if !private {
		return nil, refuseReplayPublic
	}
	var p struct {
		Since, Limit json.RawMessage
	}
	if json.Unmarshal(raw, &p) != nil {
		return nil, refuseReplayParams
	}
	since, ok := integer(p.Since)
	if !ok {
		return nil, refuseReplayParams
	}
	limit := int64(maxReplay)
	if l := bytes.TrimSpace(p.Limit); len(l) > 0 && string(l) != "null" {
		if limit, ok = integer(l); !ok {
			return nil, refuseReplayParams
		}
	}
	return &replayParams{since: since, limit: int(min(max(limit, 1), maxReplay))}, nil
}

// integer decodes a JSON integer (not 1.5, not "1").
func integer(raw json.RawMessage) (int64, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '-' && (raw[0] < '0' || raw[0] > '9') {
		return 0, false // json.Number would take "1"
	}
	var n json.Number
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	if d.Decode(&n) != nil {
		return 0, false
	}
	v, err := n.Int64()
	return v, err == nil
}

// capture gathers the database broadcasts of a topic that arrive while a
// joining channel's replay is read: those committed after the replay's
// snapshot reach the channel once it joins, so none falls between the two.
type capture struct {
	mu   sync.Mutex
	msgs []dbcast.Message
	// overflow: more arrived than maxCaptured (a recovery that relies on
	// the capture fails).
	overflow bool
}

// maxCaptured bounds what one capture holds: a topic busier than that
// during one replay query delivers the joining channel only the first
// maxCaptured of what arrived meanwhile.
const maxCaptured = 4096

func (c *capture) add(m *dbcast.Message) {
	c.mu.Lock()
	if len(c.msgs) < maxCaptured {
		c.msgs = append(c.msgs, *m)
	} else {
		c.overflow = true
	}
	c.mu.Unlock()
}

// startCapture begins capturing t's database broadcasts.
func (t *topic) startCapture() *capture {
	c := &capture{}
	t.mu.Lock()
	t.captures = append(t.captures, c)
	t.mu.Unlock()
	return c
}

// endCaptureLocked stops c; called with t.mu held.
func (t *topic) endCaptureLocked(c *capture) {
	for i, x := range t.captures {
		if x == c {
			t.captures = append(t.captures[:i], t.captures[i+1:]...)
			break
		}
	}
}

// replayFor reads the replay of a joining channel, with c.mu let go.
func (c *conn) replayFor(ch *channel, p *replayParams) ([]dbcast.Message, error) {
	s := c.srv
	id := identity(ch.claims, c.headers)
	ctx, cancel := context.WithTimeout(s.life, replayTimeout)
	defer cancel()
	msgs, err := s.replay.Replay(ctx, id, ch.name, p.since, p.limit)
	if err != nil {
		s.logLimited.Warn("replay failed", "code", "UnableToReplayMessages", "topic", ch.key.name, "remote", c.remote, "err", err)
	}
	return msgs, err
}

// sendReplayLocked sends a joined channel its replayed broadcasts, then
// what was captured meanwhile that it did not replay, and remembers the
// replayed IDs so that the live stream does not repeat them. Called under
// the topic's write lock, right after the join reply.
func (ch *channel) sendReplayLocked(t *topic, msgs []dbcast.Message, c *capture) {
	t.endCaptureLocked(c)
	if len(msgs) > 0 {
		ch.replayed = make(map[string]struct{}, len(msgs))
	}
	for i := range msgs {
		ch.replayed[msgs[i].ID] = struct{}{}
		ch.deliver(dbOut(&msgs[i], true, false))
	}
	c.mu.Lock()
	captured := c.msgs
	c.msgs = nil
	c.mu.Unlock()
	for i := range captured {
		if _, dup := ch.replayed[captured[i].ID]; !dup {
			ch.deliver(dbOut(&captured[i], false, ch.conn.srv.rec != nil))
		}
	}
}

// replayTimeout bounds a join's replay query.
const replayTimeout = 5 * time.Second
