package edge

import (
	"time"

	"github.com/meshcast/meshcast/edge/history"
	"github.com/meshcast/meshcast/wire/meshproto"
	"github.com/meshcast/meshcast/wire/phx"
)

var payloadTooLarge = []byte(`"payload_size_exceeded"`)

// allowEvent applies the per-connection events/s and bytes/s limits to a
// push of size bytes; over either, the channel is closed with a system
// error (Supabase's message for events). Called with c.mu held.
func (c *conn) allowEvent(ch *channel, size int) bool {
	if c.events != nil && !c.events.Allow() {
		c.srv.metrics.errorReason("rate_limited")
		c.closeChannel(ch, "Too many messages per second")
		return false
	}
	if c.bytes != nil && !c.bytes.AllowN(time.Now(), size) {
		c.srv.metrics.errorReason("rate_limited")
		c.closeChannel(ch, "Too many bytes per second")
		return false
	}
	return true
}

// broadcast handles a client broadcast, text or binary kind 3. On a
// private channel the first one asks the policy whether the channel may
// write (a broadcast it may not is dropped without a reply). Called with
// c.mu held (let go while a policy answers).
func (c *conn) broadcast(ch *channel, m *phx.Message, size int) {
	if !c.allowEvent(ch, size) {
		return
	}
	out := &outMsg{topic: ch.key.name}
	if m.Binary {
		out.event, out.data, out.enc, out.binary = m.UserEvent, m.Payload, m.Enc, true
	} else {
		b, err := phx.DecodeBroadcast(m.Payload)
		if err != nil {
			c.srv.metrics.errorReason("bad_broadcast")
			if ch.ack {
				c.reply(ch.joinRef, m.Ref, m.Topic, "error", phx.ReasonPayload("broadcast payload must be a JSON object"))
			}
			return
		}
		out.event, out.data, out.enc = b.Event, b.Payload, phx.EncJSON
	}
	if r := c.writeRefusal(ch, ExtBroadcast); r != nil {
		c.carryOut(r, m, ch)
		return
	}
	if max := c.srv.cfg.MaxPayloadBytes; max > 0 && len(out.data) > max {
		c.srv.metrics.errorReason("payload_too_large")
		if ch.ack {
			c.reply(ch.joinRef, m.Ref, m.Topic, "error", payloadTooLarge)
		}
		return
	}
	skip := ch
	if ch.self {
		skip = nil
	}
	c.srv.publish(ch.key, ch.t, out, skip)
	if ch.ack {
		c.reply(ch.joinRef, m.Ref, m.Topic, "ok", emptyObject)
	}
}

// publish fans a broadcast out to a topic's local subscribers (t may be
// nil when there are none) and hands it to the cluster, which sends it once
// to each other node that has subscribers.
func (s *Server) publish(k topicKey, t *topic, out *outMsg, skip *channel) {
	s.metrics.broadcasts.Inc()
	if s.rec != nil && !out.unreliable && !history.HasPos(out.meta) {
		s.originate(k, t, out, skip)
		return
	}
	if t != nil {
		s.metrics.fannedOut(t.fanout(out, skip))
	}
	if s.cluster != nil {
		s.cluster.Publish(&meshproto.Broadcast{
			Topic:      k.meshTopic(),
			Event:      out.event,
			Payload:    out.data,
			Meta:       out.meta,
			Enc:        out.enc,
			Binary:     out.binary,
			Unreliable: out.unreliable,
		})
	}
}
