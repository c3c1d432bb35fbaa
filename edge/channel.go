package edge

import (
	"encoding/json"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"

	"github.com/meshcast/meshcast/edge/history"
	"github.com/meshcast/meshcast/wal"
	"github.com/meshcast/meshcast/wal/dbcast"
	"github.com/meshcast/meshcast/wire/phx"
)

const topicPrefix = "realtime:"

// channel is one joined channel of a connection.
type channel struct {
	conn    *conn
	key     topicKey
	name    string // topic without the realtime: prefix
	joinRef string
	t       *topic // set by hub.join

	self, ack  bool
	unreliable bool // broadcast.unreliable: datagrams on WebTransport

	// Guarded by t.mu (presence state and its fan-out share the lock).
	presenceEnabled bool
	presenceKey     string
	holder          uint64 // this join's presence holder ID
	presenceBytes   int    // size of this join's tracked meta (guarded by conn.mu)
	claims          *claims
	bindings        []binding // postgres_changes; set before the channel is joined
	expiry          *time.Timer

	// recover is the broadcast vector the join asked to recover from (nil:
	// none, or recoverErr when it was malformed); floors, set at the join
	// under t.mu, are per stream the offsets at or below which live
	// messages are before its seam (read under t.mu's read lock).
	recover    map[uint64]uint64
	recoverErr error
	floors     map[uint64]uint64
	// db is the join's part of the database's stream (nil: no positions
	// or no stream); dbFloor, set at the join under t.mu, is the position
	// at or before which live database broadcasts are before its seam.
	db      *dbJoin
	dbFloor wal.Pos

	// pgAfter is the change position the join asked to recover its
	// postgres_changes from (pgAsked; pgBad when it could not be read).
	// pgSeam, guarded by changeSubs.mu, is where the channel's change
	// stream starts (changes.go).
	pgAfter wal.Pos
	pgAsked bool
	pgBad   error
	pgSeam  *changeSeam

	// grants are what claims may do on the channel (all, unless private
	// on a node with a secret). Changed with c.mu and t.mu held, read
	// under either: fan-out skips channels that may not read.
	grants grants

	// replay is the join's broadcast.replay (nil: none); replayed holds
	// the IDs it replayed, which the live stream skips (set under t.mu
	// before the channel gets any broadcast).
	replay   *replayParams
	replayed map[string]struct{}
}

var (
	emptyObject = []byte("{}")
	joinOK      = []byte(`{"postgres_changes":[]}`)
)

// handleFrame handles one client message. It reports false when the
// connection must stop reading.
func (c *conn) handleFrame(binary bool, data []byte) bool {
	size := len(data)
	c.srv.metrics.received(c.tm)
	if !binary && !utf8.Valid(data) {
		// Every browser and Node's ws fail the connection on invalid UTF-8
		// in a text frame: relaying it would disconnect every subscriber
		// of the channel. RFC 6455 closes the sender with 1007.
		c.srv.metrics.errorReason("bad_frame")
		c.closeNow(ws.StatusInvalidFramePayloadData, "text frame is not valid UTF-8")
		return false
	}
	var m phx.Message
	var err error
	if binary {
		m, err = phx.DecodeBinary(data)
	} else {
		m, err = phx.DecodeText(c.vsn, data)
	}
	if err != nil {
		c.srv.metrics.errorReason("bad_frame")
		c.srv.log.Debug("bad client frame", "remote", c.remote, "err", err)
		c.closeNow(ws.StatusUnsupportedData, "invalid frame: "+err.Error())
		return false
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gone {
		return false
	}
	if m.Topic == "phoenix" && m.Event == "heartbeat" {
		c.reply("", m.Ref, m.Topic, "ok", emptyObject)
		return true
	}
	if m.Event == "phx_join" {
		return c.join(&m)
	}
	ch := c.channels[m.Topic]
	if ch == nil {
		if m.Event == "phx_leave" {
			c.reply(m.JoinRef, m.Ref, m.Topic, "ok", emptyObject)
		} else {
			c.reply(m.JoinRef, m.Ref, m.Topic, "error", phx.ReasonPayload("unmatched topic"))
		}
		return true
	}
	if m.JoinRef != "" && m.JoinRef != ch.joinRef {
		return true // a push from an earlier join of this topic
	}
	switch m.Event {
	case "broadcast":
		c.broadcast(ch, &m, size)
	case "presence":
		c.presence(ch, &m, size)
	case "access_token":
		c.refreshToken(ch, &m)
	case "phx_leave":
		// Leave the topic first: nothing fanned out after phx_close may
		// reach the client.
		c.removeChannel(ch)
		c.reply(ch.joinRef, m.Ref, m.Topic, "ok", emptyObject)
		c.send(ch.joinRef, ch.joinRef, m.Topic, "phx_close", emptyObject)
	}
	// Other events are ignored, as Phoenix does.
	return true
}

// join carries out a phx_join as the rules decide (rules.go): the
// checks of the frame and its token, then, for a private channel, the
// policy's read check, then the room for one more channel. Called with
// c.mu held, which it lets go while the policy, the cluster and the
// database are waited for; only this reader handles the connection's
// frames, so nothing else joins meanwhile.
func (c *conn) join(m *phx.Message) bool {
	plan, r := c.planJoin(m)
	if r == nil && plan.reads != 0 {
		allowed, err := c.ask(false, plan.claims, plan.name, plan.reads)
		plan.grants, r = decideJoinRead(&plan, allowed, err)
	}
	if r == nil && plan.replay != nil && !plan.grants.canRead(ExtBroadcast) {
		r = joinRefusal("Unauthorized: " + unauthorizedText(plan.name))
	}
	if r == nil && plan.replay != nil && c.srv.replay == nil {
		r = refuseReplayFailed // no database to replay from
	}
	if r == nil {
		if old := c.channels[m.Topic]; old != nil {
			// A second join of a joined topic replaces the first.
			c.removeChannel(old)
			c.send(old.joinRef, old.joinRef, m.Topic, "phx_close", emptyObject)
		}
		r = channelRoom(len(c.channels), c.srv.cfg.MaxChannelsPerConn)
	}
	if r != nil {
		return c.carryOut(r, m, nil)
	}
	return c.enter(c.newChannel(&plan, m.JoinRef), m, plan.config.PostgresChanges)
}

// planJoin gathers what the join rules decide on, in their order: the
// topic, the connection's joins/s, the payload, the token.
func (c *conn) planJoin(m *phx.Message) (joinPlan, *refusal) {
	s := c.srv
	name, r := checkJoinTopic(m.Topic, s.cfg.MaxTopicBytes)
	if r != nil {
		return joinPlan{}, r
	}
	if c.joins != nil && !c.joins.Allow() {
		return joinPlan{}, refuseJoinRate
	}
	p, r := decodeJoin(m.Payload)
	if r != nil {
		return joinPlan{}, r
	}
	tok := channelToken(p.Token(), c.apikey)
	var cl *claims
	var aerr *authError
	if ac := c.apikeyClaims; tok == c.apikey && ac != nil && s.auth.now().Before(ac.Exp) {
		// The socket's own key, verified at connect and not expired yet:
		// a join storm on one socket does not verify it each time.
		cl = ac
	} else {
		cl, aerr = s.auth.verify(tok)
	}
	return planJoin(m.Topic, name, &p, tok, cl, aerr, s.auth.open())
}

// newChannel makes the channel of a decided join.
func (c *conn) newChannel(plan *joinPlan, joinRef string) *channel {
	cfg := &plan.config
	ch := &channel{
		conn:            c,
		key:             plan.key,
		name:            plan.name,
		joinRef:         joinRef,
		self:            bool(cfg.Broadcast.Self),
		ack:             bool(cfg.Broadcast.Ack),
		unreliable:      bool(cfg.Broadcast.Unreliable),
		presenceEnabled: bool(cfg.Presence.Enabled),
		presenceKey:     cfg.PresenceKey(),
		holder:          c.srv.holders.Add(1),
		claims:          plan.claims,
		grants:          plan.grants,
		replay:          plan.replay,
	}
	if ch.presenceKey == "" {
		ch.presenceKey = newUUID()
	}
	if c.srv.rec != nil {
		vec := cfg.Recover.Broadcast
		if len(vec) == 0 {
			vec = cfg.Broadcast.Recover // realtime-js passes only broadcast's object through
		}
		ch.recover, ch.recoverErr = history.ParseVector(vec)
		pos := cfg.Recover.PostgresChanges
		if isAbsent(pos) {
			pos = cfg.PostgresChangesOptions.Recover // where realtime-js passes it through
		}
		if !isAbsent(pos) && len(cfg.PostgresChanges) > 0 {
			ch.pgAsked = true
			ch.pgAfter, ch.pgBad = parseChangePos(pos)
		}
		ch.db = c.srv.newDBJoin(vec)
	}
	return ch
}

// enter adds a decided channel to its topic and replies to its join m:
// the reply, presence_state (when presence is on and may be read) and the
// system message about its postgres_changes bindings go out in that
// order, ordered with the topic's fan-out, then its replay. Called with
// c.mu held; false when the connection must stop reading.
func (c *conn) enter(ch *channel, m *phx.Message, changes []json.RawMessage) bool {
	s := c.srv
	t, ready := s.hub.acquire(ch.key)
	held := c.heldBindings()
	var replayed []dbcast.Message
	var captured *capture
	if ch.replay != nil {
		// Read before the bindings are registered: a replay that fails
		// refuses the join, as Supabase's does.
		captured = t.startCapture()
		c.unlockToWait() // the database's query
		var err error
		replayed, err = c.replayFor(ch, ch.replay)
		c.mu.Lock()
		if err != nil {
			t.mu.Lock()
			t.endCaptureLocked(captured)
			t.mu.Unlock()
			s.hub.release(t)
			return c.carryOut(refuseReplayFailed, m, nil)
		}
	}
	c.recoverDB(ch, t) // the db stream, when the join asks: c.mu let go meanwhile
	w := c.gather(ch, ready, changes, held)
	c.channels[m.Topic] = ch
	s.channels.Add(1)
	s.metrics.joins.Inc()
	s.hub.join(ch, t, func(t *topic) {
		var resend []*outMsg
		var failed string
		reply := w.reply
		pg := s.replyChanges(ch, w.pg)
		if s.rec != nil {
			reply, resend, failed = s.joinSeam(ch, reply, w.fetched, pg)
		}
		c.reply(m.JoinRef, m.Ref, m.Topic, "ok", reply)
		for _, out := range resend {
			ch.deliver(out)
		}
		if failed != "" {
			c.send(ch.joinRef, "", m.Topic, "system", systemPayload("broadcast", "error", failed, ch.name))
		}
		if ch.presenceEnabled && ch.grants.canRead(ExtPresence) {
			c.send(ch.joinRef, "", m.Topic, "presence_state", presenceState(&t.presence.Set))
		}
		if w.changesMsg != nil {
			c.send(ch.joinRef, "", m.Topic, "system", w.changesMsg)
		}
		if !pg.ok() {
			c.send(ch.joinRef, "", m.Topic, "system", systemPayload("postgres_changes", "error", "recovery failed: "+pg.reason, ch.name))
		}
		ch.sendDBLocked(t, replayed, captured) // replay, then the database rows recovered
	})
	if w.pg.held {
		s.drainChanges(ch) // what the seam holds, after the reply
	}
	c.armExpiry(ch)
	return true
}

// joinWork is what a join gathers before its turn on the topic.
type joinWork struct {
	reply      []byte // the reply's response, before recovery's positions
	changesMsg []byte // the system message about the bindings
	fetched    map[uint64][]history.Fetched[*outMsg]
	pg         changesJoin
}

// gather waits for what a join needs before its turn on the topic: a new
// topic in a cluster waits for the presence of the other nodes, which
// arrives before the first presence_state (bounded by the mesh, and by
// Shutdown's deadline); bindings wait (bounded) until the database's owner
// holds them, then attach holding their changes while the join recovers
// them (changeseam.go); broadcast recovery fetches the ranges only other
// nodes hold. c.mu is let go meanwhile, so that Shutdown and token timers
// are not held up by the wait; only this reader handles the connection's
// frames, so nothing else joins. held is c.heldBindings().
func (c *conn) gather(ch *channel, ready <-chan struct{}, changes []json.RawMessage, held int) joinWork {
	s := c.srv
	w := joinWork{reply: joinOK}
	if ready == nil && len(changes) == 0 && (ch.recover == nil || s.cluster == nil) {
		return w
	}
	c.unlockToWait()
	defer c.mu.Lock()
	if len(changes) > 0 {
		ch.bindings, w.changesMsg = s.joinChanges(ch, changes, ch.claims, held)
		w.reply = joinReplyChanges(ch.bindings)
	}
	if ready != nil {
		select {
		case <-ready:
		case <-s.stopping:
		}
	}
	if s.rec != nil {
		w.fetched = s.fetchMissing(ch.key.meshTopic(), ch.recover)
	}
	if len(changes) > 0 {
		// Last, so that changes are held no longer than it takes.
		w.pg = s.seamChanges(ch)
	}
	return w
}

// removeChannel leaves a channel: presence leaves go out, the topic forgets
// it. Called with c.mu held.
func (c *conn) removeChannel(ch *channel) {
	if c.channels[ch.key.name] == ch {
		delete(c.channels, ch.key.name)
	}
	if ch.expiry != nil {
		ch.expiry.Stop()
	}
	c.srv.channels.Add(-1)
	c.srv.metrics.leaves.Inc()
	c.srv.leaveChanges(ch)
	c.presenceBytes -= ch.presenceBytes
	ch.presenceBytes = 0
	c.srv.hub.leave(ch, func(t *topic) {
		c.srv.localPresence(t, t.presence.Untrack(c.srv.cfg.NodeID, ch.holder))
	})
}

// closeChannel ends a channel from the server side: a system error the app
// can see, then phx_close (the client does not rejoin). Called with c.mu
// held.
func (c *conn) closeChannel(ch *channel, message string) {
	c.removeChannel(ch)
	c.send(ch.joinRef, "", ch.key.name, "system", systemPayload("system", "error", message, ch.name))
	c.send(ch.joinRef, ch.joinRef, ch.key.name, "phx_close", emptyObject)
}

func systemPayload(extension, status, message, channel string) []byte {
	p := []byte(`{"extension":`)
	p = phx.AppendString(p, extension)
	p = append(p, `,"status":`...)
	p = phx.AppendString(p, status)
	p = append(p, `,"message":`...)
	p = phx.AppendString(p, message)
	if channel != "" {
		p = append(p, `,"channel":`...)
		p = phx.AppendString(p, channel)
	}
	return append(p, '}')
}

// teardown runs when the reader stops: every channel is left (presence
// leaves reach the other subscribers) and the writer is told to finish.
func (c *conn) teardown() {
	c.mu.Lock()
	c.gone = true
	for _, ch := range c.channels {
		c.removeChannel(ch)
	}
	c.mu.Unlock()
	c.closeNow(ws.StatusNormalClosure, "")
	<-c.writerDone
	c.srv.untrack(c)
}
