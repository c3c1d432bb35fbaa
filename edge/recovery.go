package edge

import (
	"hash/maphash"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/VictoriaMetrics/metrics"

	"github.com/meshcast/meshcast/edge/history"
	"github.com/meshcast/meshcast/wire/meshproto"
	"github.com/meshcast/meshcast/wire/phx"
)

// recovery drives this node's broadcast history (package history, issue
// 18): it numbers what this node originates (meta.pos), keeps replicas of
// what other nodes send, decides each join's seam under the topic's lock
// and fetches what the node lacks from the peers that hold it.
//
// Lock order: a stripe lock (originate only), then topic.mu, then mu.
// Fan-out to a topic's subscribers and the history's record of the
// message happen under one hold of the topic's read lock, and a join plans
// under its write lock: a message is either in the join's plan or fanned
// out to it, never both, never neither.
type recovery struct {
	epoch uint64
	// stripes order the broadcasts this node originates on one topic:
	// offset, fan-out and hand-off to the mesh happen in one order.
	stripes [64]stripe
	seed    maphash.Seed

	mu   sync.Mutex
	core *history.Core[*outMsg]

	fetchMu sync.Mutex
	nextID  uint64
	pending map[uint64]chan *meshproto.HistoryReply
	// flights are the fetches under way, shared by the joins that need
	// the same range (clients of one channel moving nodes together).
	flights map[fetchKey]*flight

	m recoveryMetrics
}

// stripe numbers the broadcasts this node originates on the topics that
// hash to it. heads is the last offset given per topic, never forgotten
// while the process lives (offsets are not reused); the history's own
// stream follows it, recorded under the same hold of mu.
type stripe struct {
	mu    sync.Mutex
	heads map[string]uint64
}

type recoveryMetrics struct {
	ok, failed, notAsked *metrics.Counter
	resent               *metrics.Counter
	fetchOK, fetchFailed *metrics.Counter
	duplicates           *metrics.Counter
}

// fetchTimeout bounds one HistoryRequest's round trip.
const fetchTimeout = 3 * time.Second

// fetchReplyBytes bounds one HistoryReply: a larger range takes several.
const fetchReplyBytes = 256 << 10

func newRecovery(cfg Config, set *metrics.Set) *recovery {
	if cfg.RecoveryWindow <= 0 {
		return nil
	}
	r := &recovery{epoch: rand.Uint64(), seed: maphash.MakeSeed(), pending: make(map[uint64]chan *meshproto.HistoryReply),
		flights: make(map[fetchKey]*flight)}
	r.core = history.New[*outMsg](history.Config{Window: cfg.RecoveryWindow, MaxBytes: cfg.RecoveryBytes}, r.epoch)
	r.core.Tick(time.Now())
	r.m = recoveryMetrics{
		ok:          set.NewCounter(`meshcast_recovery_joins_total{result="ok"}`),
		failed:      set.NewCounter(`meshcast_recovery_joins_total{result="failed"}`),
		notAsked:    set.NewCounter(`meshcast_recovery_joins_total{result="not_asked"}`),
		resent:      set.NewCounter("meshcast_recovery_messages_sent_total"),
		fetchOK:     set.NewCounter(`meshcast_recovery_fetches_total{result="ok"}`),
		fetchFailed: set.NewCounter(`meshcast_recovery_fetches_total{result="failed"}`),
		duplicates:  set.NewCounter("meshcast_recovery_duplicates_dropped_total"),
	}
	set.NewGauge("meshcast_recovery_history_bytes", func() float64 {
		r.mu.Lock()
		defer r.mu.Unlock()
		return float64(r.core.Bytes())
	})
	set.NewGauge("meshcast_recovery_history_messages", func() float64 {
		r.mu.Lock()
		defer r.mu.Unlock()
		return float64(r.core.Messages())
	})
	return r
}

// keepCopy is what history keeps of a broadcast at position
// stream:offset: its fields without built frames, its meta and payload
// copied (the payload may alias a reused read buffer) into one
// allocation. With number set, the meta kept is out's with pos written in
// front of it (history.AppendMeta); else out's as it is (a replica).
func keepCopy(out *outMsg, stream, offset uint64, number bool) *outMsg {
	buf := make([]byte, 0, len(out.meta)+len(out.data)+posMetaBytes)
	if number {
		buf = history.AppendMeta(buf, out.meta, stream, offset)
	} else {
		buf = append(buf, out.meta...)
	}
	m := len(buf)
	buf = append(buf, out.data...)
	return &outMsg{topic: out.topic, event: out.event, enc: out.enc, binary: out.binary,
		meta: buf[:m:m], data: buf[m:], stream: stream, offset: offset}
}

// posMetaBytes is the most history.AppendMeta adds to a meta:
// {"pos":"<16 hex digits>:<offset>"} and a comma.
const posMetaBytes = len(`{"pos":"`) + 16 + 1 + 20 + len(`",}`)

func keptSize(m *outMsg) int { return len(m.data) + len(m.meta) + len(m.event) }

// originate publishes a reliable broadcast this node accepted with the
// next position of its stream of the topic. The stripe's lock orders the
// topic's broadcasts; the fan-out starts without the history's lock, and
// the history records the message after the frames are queued but within
// the same hold of the topic's read lock, so a join (which plans under
// the write lock) still sees it either in history or live, never both.
func (s *Server) originate(k topicKey, t *topic, out *outMsg, skip *channel) {
	r := s.rec
	mt := k.meshTopic()
	st := &r.stripes[maphash.String(r.seed, mt)%uint64(len(r.stripes))]
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.heads == nil {
		st.heads = make(map[string]uint64)
	}
	off := st.heads[mt] + 1
	st.heads[mt] = off
	// The frames and the mesh share the meta bytes history keeps.
	kept := keepCopy(out, r.epoch, off, true)
	out.meta, out.stream, out.offset = kept.meta, r.epoch, off
	if t != nil {
		t.mu.RLock()
		s.metrics.fannedOut(t.fanoutLocked(out, skip))
	}
	now := time.Now()
	r.mu.Lock()
	r.core.Tick(now)
	r.core.Append(mt, r.epoch, off, keptSize(kept), kept)
	r.mu.Unlock()
	if t != nil {
		t.mu.RUnlock()
	}
	if s.cluster != nil {
		s.cluster.Publish(&Broadcast{Topic: mt, Event: out.event, Payload: out.data, Meta: out.meta, Enc: out.enc, Binary: out.binary})
	}
}

// deliverReplica keeps a positioned broadcast from another node and fans
// it out to the topic's subscribers (t may be nil: none here). A
// duplicate is dropped.
func (s *Server) deliverReplica(mt string, t *topic, out *outMsg) {
	r := s.rec
	kept := keepCopy(out, out.stream, out.offset, false)
	if t != nil {
		t.mu.RLock()
		defer t.mu.RUnlock()
	}
	r.mu.Lock()
	r.core.Tick(time.Now())
	fresh := r.core.Append(mt, out.stream, out.offset, keptSize(kept), kept)
	r.mu.Unlock()
	if !fresh {
		r.m.duplicates.Inc()
		return
	}
	if t != nil {
		s.metrics.fannedOut(t.fanoutLocked(out, nil))
	}
}

// plan decides a join's seam; called with the topic's write lock held.
func (r *recovery) plan(mt string, vec map[uint64]uint64, fetched map[uint64][]history.Fetched[*outMsg]) history.Plan[*outMsg] {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.core.Tick(time.Now())
	return r.core.Plan(mt, vec, fetched, true)
}

// fetchMissing fetches from peers the ranges of vec's recovery this node
// does not hold. Called without locks held; it waits on the mesh.
func (s *Server) fetchMissing(mt string, vec map[uint64]uint64) map[uint64][]history.Fetched[*outMsg] {
	r := s.rec
	if vec == nil || s.cluster == nil {
		return nil
	}
	r.mu.Lock()
	r.core.Tick(time.Now())
	p := r.core.Plan(mt, vec, nil, false)
	r.mu.Unlock()
	var got map[uint64][]history.Fetched[*outMsg]
	for _, f := range p.Fetch {
		for _, peer := range f.Peers {
			msgs, ok := s.fetchRange(peer, mt, f.Stream, f.After, f.Upto)
			if !ok {
				r.m.fetchFailed.Inc()
				continue
			}
			r.m.fetchOK.Inc()
			sizes := make([]int, len(msgs))
			for i, m := range msgs {
				sizes[i] = keptSize(m)
			}
			r.mu.Lock()
			// Kept where it extends this node's run: the next client
			// recovering the same range here needs no fetch.
			r.core.Fill(mt, f.Stream, f.After+1, msgs, sizes)
			r.mu.Unlock()
			if got == nil {
				got = make(map[uint64][]history.Fetched[*outMsg])
			}
			got[f.Stream] = append(got[f.Stream], history.Fetched[*outMsg]{First: f.After + 1, Msgs: msgs})
			break
		}
	}
	return got
}

type fetchKey struct {
	peer, topic         string
	stream, after, upto uint64
}

// flight is one fetch; msgs and ok are set before done closes.
type flight struct {
	done chan struct{}
	msgs []*outMsg
	ok   bool
}

// fetchRange asks peer for offsets after+1..upto of a stream; a join that
// needs a range being fetched already waits for that fetch.
func (s *Server) fetchRange(peer, mt string, stream, after, upto uint64) ([]*outMsg, bool) {
	r := s.rec
	k := fetchKey{peer, mt, stream, after, upto}
	r.fetchMu.Lock()
	f := r.flights[k]
	if f == nil {
		f = &flight{done: make(chan struct{})}
		r.flights[k] = f
		r.fetchMu.Unlock()
		f.msgs, f.ok = s.fetchFrom(peer, mt, stream, after, upto)
		r.fetchMu.Lock()
		delete(r.flights, k)
		r.fetchMu.Unlock()
		close(f.done)
		return f.msgs, f.ok
	}
	r.fetchMu.Unlock()
	<-f.done // bounded: fetchFrom's requests time out
	return f.msgs, f.ok
}

// fetchFrom asks peer for offsets after+1..upto of a stream, in as many
// requests as the replies' size takes.
func (s *Server) fetchFrom(peer, mt string, stream, after, upto uint64) ([]*outMsg, bool) {
	r := s.rec
	k := parseMeshTopic(mt)
	var out []*outMsg
	for after < upto {
		rep := r.request(s.cluster, peer, &meshproto.HistoryRequest{Topic: mt, Stream: stream, After: after, Upto: upto}, s.stopping)
		if rep == nil || !rep.Held || len(rep.Msgs) == 0 {
			return nil, false
		}
		for _, m := range rep.Msgs {
			after++
			if st, off, ok := history.MetaPos(m.Meta); !ok || st != stream || off != after || !validBroadcast(m.Event, m.Payload, m.Meta, m.Enc) {
				return nil, false
			}
			out = append(out, &outMsg{topic: k.name, event: m.Event, data: m.Payload, meta: m.Meta, enc: m.Enc,
				binary: m.Binary, stream: stream, offset: after})
		}
	}
	return out, true
}

// request sends a HistoryRequest and waits for its reply (nil on timeout,
// an unknown peer, or shutdown).
func (r *recovery) request(c Cluster, peer string, req *meshproto.HistoryRequest, stop <-chan struct{}) *meshproto.HistoryReply {
	ch := make(chan *meshproto.HistoryReply, 1)
	r.fetchMu.Lock()
	r.nextID++
	req.ID = r.nextID
	r.pending[req.ID] = ch
	r.fetchMu.Unlock()
	defer func() {
		r.fetchMu.Lock()
		delete(r.pending, req.ID)
		r.fetchMu.Unlock()
	}()
	if !c.Send(peer, req) {
		return nil
	}
	timer := time.NewTimer(fetchTimeout)
	defer timer.Stop()
	select {
	case rep := <-ch:
		return rep
	case <-timer.C:
	case <-stop:
	}
	return nil
}

// topicFrames are the stream heads of topic this node holds, for a node
// that subscribes to it (sent ahead of the presence snapshot).
func (r *recovery) topicFrames(topic string) []meshproto.Frame {
	r.mu.Lock()
	ranges := r.core.Ranges(topic)
	r.mu.Unlock()
	f := &meshproto.StreamHeads{Topic: topic, Ranges: make([]meshproto.StreamRange, len(ranges))}
	for i, x := range ranges {
		f.Ranges[i] = meshproto.StreamRange{Stream: x.Stream, Low: x.Low, Head: x.Head}
	}
	return []meshproto.Frame{f}
}

// receive handles recovery's frames from other nodes.
func (r *recovery) receive(c Cluster, from string, f meshproto.Frame) {
	switch f := f.(type) {
	case *meshproto.StreamHeads:
		ranges := make([]history.Range, len(f.Ranges))
		for i, x := range f.Ranges {
			ranges[i] = history.Range{Stream: x.Stream, Low: x.Low, Head: x.Head}
		}
		r.mu.Lock()
		r.core.Peer(from, f.Topic, ranges)
		r.mu.Unlock()
	case *meshproto.HistoryRequest:
		r.mu.Lock()
		kept, _, held := r.core.Read(f.Topic, f.Stream, f.After, f.Upto, fetchReplyBytes)
		rep := &meshproto.HistoryReply{ID: f.ID, Held: held, Msgs: make([]meshproto.HistoryMsg, len(kept))}
		for i, m := range kept {
			rep.Msgs[i] = meshproto.HistoryMsg{Event: m.event, Payload: m.data, Meta: m.meta, Enc: m.enc, Binary: m.binary}
		}
		r.mu.Unlock()
		c.Send(from, rep)
	case *meshproto.HistoryReply:
		r.fetchMu.Lock()
		ch := r.pending[f.ID]
		r.fetchMu.Unlock()
		if ch == nil {
			return
		}
		for i := range f.Msgs { // they may alias the cluster's read buffer
			m := &f.Msgs[i]
			m.Payload = append([]byte(nil), m.Payload...)
			m.Meta = append([]byte(nil), m.Meta...)
		}
		select {
		case ch <- f:
		default:
		}
	}
}

// peerDown forgets what a dead node reported holding.
func (r *recovery) peerDown(id string) {
	r.mu.Lock()
	r.core.PeerDown(id)
	r.mu.Unlock()
}

// validBroadcast reports whether a broadcast from another node can go
// into text frames: its strings must be UTF-8.
func validBroadcast(event string, payload, meta []byte, enc byte) bool {
	return utf8.ValidString(event) && utf8.Valid(meta) && (enc != phx.EncJSON || utf8.Valid(payload))
}

// joinSeam decides what a join is sent after its reply, under the topic's
// write lock: the reply gains the join vector (positions) and, when the
// join asked, whether it recovered; resend is what it missed, oldest
// first; failed, when not empty, is the system message's text.
//
// pg is the join's postgres_changes seam: the reply's one "recovered" is
// true only when every extension the join asked to recover did.
func (s *Server) joinSeam(ch *channel, reply []byte, fetched map[uint64][]history.Fetched[*outMsg], pg changesJoin) (out []byte, resend []*outMsg, failed string) {
	r := s.rec
	p := r.plan(ch.key.meshTopic(), ch.recover, fetched)
	ch.floors = p.Floors
	db := s.dbSeamLocked(ch) // the database's stream ("db")
	asked := ch.recover != nil || ch.recoverErr != nil || db.asked
	reason := p.Failed
	if ch.recoverErr != nil {
		reason = ch.recoverErr.Error()
	}
	if db.failed != "" && reason == "" {
		reason = db.failed
	} else if db.failed != "" {
		reason += "; " + db.failed
	}
	jp := joinPositions{broadcast: p.Positions, db: db.entry(reason == ""), asked: asked || pg.asked, ok: reason == "" && pg.ok()}
	if asked {
		jp.each = append(jp.each, extRecovery{"broadcast", reason == ""})
	}
	if pg.asked {
		jp.each = append(jp.each, extRecovery{"postgres_changes", pg.ok()})
	}
	if pg.held {
		jp.changes = pg.seam.String()
	}
	out = appendJoinPositions(reply, jp)
	switch {
	case !asked:
		r.m.notAsked.Inc()
		return out, nil, ""
	case reason != "":
		r.m.failed.Inc()
		return out, nil, "recovery failed: " + reason
	}
	r.m.ok.Inc()
	if ch.db != nil {
		ch.db.send = db.asked // its rows go out after the replay (sendDBLocked)
	}
	resend = make([]*outMsg, len(p.Send))
	for i, m := range p.Send {
		resend[i] = &outMsg{topic: m.topic, event: m.event, meta: m.meta, enc: m.enc, data: m.data, binary: m.binary,
			stream: m.stream, offset: m.offset}
	}
	r.m.resent.Add(len(resend))
	return out, resend, ""
}

// joinPositions is what a join reply says about recovery: the seam of
// each extension and, when the join asked for recovery of any, whether
// every missed message of all of them follows.
type joinPositions struct {
	broadcast map[uint64]uint64
	db        string // the database's stream's seam ("" without it)
	// changes is the postgres_changes seam (a change position), "" when
	// there is none to give (no binding subscribed).
	changes   string
	asked, ok bool
	// each is, per extension the join asked to recover, whether it did
	// ("recovery"): a client cannot tell from ok alone which of its
	// positions the messages after the reply continue.
	each []extRecovery
}

type extRecovery struct {
	ext string
	ok  bool
}

// appendJoinPositions adds to a join reply (a JSON object) its
// "positions" and, when recovery was asked for, "recovered".
func appendJoinPositions(reply []byte, jp joinPositions) []byte {
	out := make([]byte, 0, len(reply)+64+28*len(jp.broadcast)+len(jp.changes)+len(jp.db))
	out = append(out, reply[:len(reply)-1]...)
	out = append(out, `,"positions":{"broadcast":`...)
	out = history.AppendVector(out, jp.broadcast)
	if jp.db != "" {
		out = appendDBEntry(out, jp.db)
	}
	if jp.changes != "" {
		out = append(out, `,"postgres_changes":`...)
		out = phx.AppendString(out, jp.changes)
	}
	out = append(out, '}')
	if jp.asked {
		out = append(out, `,"recovered":`...)
		out = strconv.AppendBool(out, jp.ok)
	}
	for i, e := range jp.each {
		if i == 0 {
			out = append(out, `,"recovery":{`...)
		} else {
			out = append(out, ',')
		}
		out = phx.AppendString(out, e.ext)
		out = append(out, ':')
		out = strconv.AppendBool(out, e.ok)
	}
	if len(jp.each) > 0 {
		out = append(out, '}')
	}
	return append(out, '}')
}
