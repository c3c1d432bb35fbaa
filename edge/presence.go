package edge

import (
	"crypto/rand"
	"encoding/hex"
	"sort"
	"strconv"
	"strings"

	"github.com/meshcast/meshcast/mesh/presence"
	"github.com/meshcast/meshcast/wire/phx"
)

var presenceTrackNotMap = phx.ReasonPayload("Presence track payload must be a map")

// Presence refusals. Size and rate refusals end the channel as Supabase's
// do (a system error, then phx_close); a full channel only refuses the
// track, so the client stays subscribed.
const (
	msgTrackTooLarge    = "Track message size exceeded"
	msgPresenceRate     = "Too many presence messages per second"
	reasonPresenceKeys  = "PresenceLimitReached: Too many presence keys in this channel"
	msgConnPresenceFull = "Track message size exceeded: this connection's presence would exceed the per-connection limit"
)

// presence handles a presence push (track/untrack). Presence pushes are
// always answered, because realtime-js's track() waits for the reply. On a
// private channel the first track asks the policy whether the channel may
// write presence (and read it, if the join did not ask); a track it may
// not is answered with an error. Called with c.mu held (let go while a
// policy answers).
func (c *conn) presence(ch *channel, m *phx.Message, size int) {
	if !c.allowEvent(ch, size) {
		return
	}
	p, err := phx.DecodePresence(m.Payload)
	if err != nil {
		c.presenceReply(ch, m, "error", emptyObject)
		return
	}
	switch strings.ToLower(p.Event) {
	case "":
		c.presenceReply(ch, m, "ok", emptyObject)
	case "track":
		c.track(ch, m, p.Payload)
	case "untrack":
		c.untrack(ch, m)
	default:
		c.presenceReply(ch, m, "error", emptyObject)
	}
}

func (c *conn) presenceReply(ch *channel, m *phx.Message, status string, resp []byte) {
	c.reply(ch.joinRef, m.Ref, m.Topic, status, resp)
}

// presenceRefuse refuses a presence push and ends the channel.
func (c *conn) presenceRefuse(ch *channel, m *phx.Message, metric, message string) {
	c.srv.metrics.errorReason(metric)
	c.presenceReply(ch, m, "error", phx.ReasonPayload(message))
	c.closeChannel(ch, message)
}

// track handles a presence track of meta payload.
func (c *conn) track(ch *channel, m *phx.Message, payload []byte) {
	if r := c.writeRefusal(ch, ExtPresence); r != nil {
		c.carryOut(r, m, ch)
		return
	}
	if !phx.IsObject(payload) {
		c.presenceReply(ch, m, "error", presenceTrackNotMap)
		return
	}
	s := c.srv
	cfg := &s.cfg
	meta := compactJSON(payload)
	if max := cfg.MaxPresenceBytes; max > 0 && len(meta) > max {
		c.presenceRefuse(ch, m, "payload_too_large", msgTrackTooLarge)
		return
	}
	if max := cfg.MaxPresenceBytesPerConn; max > 0 && c.presenceBytes-ch.presenceBytes+len(meta) > max {
		c.presenceRefuse(ch, m, "payload_too_large", msgConnPresenceFull)
		return
	}
	t := ch.t
	t.mu.Lock()
	if _, tracked := t.presence.Get(cfg.NodeID, ch.holder); !tracked {
		if max := cfg.MaxPresenceKeys; max > 0 && t.presence.Len() >= max {
			t.mu.Unlock()
			s.metrics.errorReason("presence_limit")
			c.presenceReply(ch, m, "error", phx.ReasonPayload(reasonPresenceKeys))
			return
		}
	}
	if !t.allowPresence() {
		t.mu.Unlock()
		c.presenceRefuse(ch, m, "rate_limited", msgPresenceRate)
		return
	}
	s.metrics.presenceEvents.Inc()
	d := t.presence.Track(presence.Entry{
		Owner:  cfg.NodeID,
		Holder: ch.holder,
		Key:    ch.presenceKey,
		Ref:    s.newRef(),
		Meta:   meta,
	})
	s.localPresence(t, d)
	c.presenceBytes += len(meta) - ch.presenceBytes
	ch.presenceBytes = len(meta)
	c.presenceReply(ch, m, "ok", emptyObject)
	if !ch.presenceEnabled {
		// A track turns presence on for this join (realtime-js joins
		// with presence off when the app has no presence listener).
		// It never got the join's presence_state, so it gets one now:
		// without it, members tracked earlier stay invisible to it.
		ch.presenceEnabled = true
		if ch.grants.canRead(ExtPresence) {
			c.send(ch.joinRef, "", m.Topic, "presence_state", presenceState(&t.presence.Set))
		}
	}
	t.mu.Unlock()
}

// untrack handles a presence untrack.
func (c *conn) untrack(ch *channel, m *phx.Message) {
	s := c.srv
	t := ch.t
	t.mu.Lock()
	if !t.allowPresence() {
		t.mu.Unlock()
		c.presenceRefuse(ch, m, "rate_limited", msgPresenceRate)
		return
	}
	s.metrics.presenceEvents.Inc()
	s.localPresence(t, t.presence.Untrack(s.cfg.NodeID, ch.holder))
	c.presenceBytes -= ch.presenceBytes
	ch.presenceBytes = 0
	t.mu.Unlock()
	c.presenceReply(ch, m, "ok", emptyObject)
}

// allowPresence applies the topic's presence events/s limit. Called with
// t.mu held.
func (t *topic) allowPresence() bool {
	return t.presenceRate == nil || t.presenceRate.Allow()
}

// localPresence publishes a change of this node's own presence entries:
// to local subscribers, and as a numbered delta to the nodes interested in
// the topic. Called with t.mu held, so deltas leave in order.
func (s *Server) localPresence(t *topic, d presence.Diff) {
	if d.Empty() {
		return
	}
	t.fanoutPresenceDiff(d)
	if s.cluster == nil {
		return
	}
	if delta, ok := t.presence.Local(d, s.presenceSeq.Add(1)); ok {
		s.cluster.SendPresence(t.key.meshTopic(), delta)
	}
}

// fanoutPresenceDiff sends a presence_diff to every presence-enabled
// channel of the topic that may read presence, the tracker included.
// Called with t.mu held.
func (t *topic) fanoutPresenceDiff(d presence.Diff) {
	payload := presenceDiff(d)
	var frames [numFormats][]byte
	for _, ch := range t.subs {
		if !ch.presenceEnabled || !ch.grants.canRead(ExtPresence) {
			continue
		}
		ff := ch.conn.format
		if frames[ff] == nil {
			frames[ff] = textFrame(ff, "", "", t.key.name, "presence_diff", payload)
		}
		ch.conn.enqueue(frames[ff])
	}
}

// presenceState encodes {key: {metas: [...]}} of a whole topic.
func presenceState(s *presence.Set) []byte {
	return appendPresenceMap(nil, s.List(), nil)
}

func presenceDiff(d presence.Diff) []byte {
	joins := make([]presence.Entry, len(d.Joins))
	prev := make(map[string]string, len(d.Joins))
	for i, j := range d.Joins {
		joins[i] = j.Entry
		if j.PrevRef != "" {
			prev[j.Ref] = j.PrevRef
		}
	}
	leaves := append([]presence.Entry(nil), d.Leaves...)
	sortByKey(joins)
	sortByKey(leaves)
	p := []byte(`{"joins":`)
	p = appendPresenceMap(p, joins, prev)
	p = append(p, `,"leaves":`...)
	p = appendPresenceMap(p, leaves, nil)
	return append(p, '}')
}

// appendPresenceMap encodes entries, which must be grouped by key, as
// {key: {metas: [...]}}.
func appendPresenceMap(dst []byte, entries []presence.Entry, prev map[string]string) []byte {
	dst = append(dst, '{')
	for i := 0; i < len(entries); {
		j := i
		for j < len(entries) && entries[j].Key == entries[i].Key {
			j++
		}
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = phx.AppendString(dst, entries[i].Key)
		dst = append(dst, `:{"metas":[`...)
		for k, e := range entries[i:j] {
			if k > 0 {
				dst = append(dst, ',')
			}
			dst = phx.AppendPresenceMeta(dst, e.Meta, e.Ref, prev[e.Ref])
		}
		dst = append(dst, "]}"...)
		i = j
	}
	return append(dst, '}')
}

func sortByKey(entries []presence.Entry) {
	sort.SliceStable(entries, func(i, j int) bool { return entries[i].Key < entries[j].Key })
}

// newRef returns a unique, opaque phx_ref.
func (s *Server) newRef() string {
	return s.refPrefix + strconv.FormatUint(s.refs.Add(1), 36)
}

func newRefPrefix() string {
	var b [4]byte
	rand.Read(b[:])
	return "F" + hex.EncodeToString(b[:])
}

// newUUID returns a random (version 4) UUID, the presence key of a join
// that asked for none.
func newUUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
