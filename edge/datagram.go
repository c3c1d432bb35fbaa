package edge

import (
	"errors"
	"fmt"
	"strings"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/webtransport-go"
	"golang.org/x/time/rate"

	"github.com/meshcast/meshcast/edge/outq"
	"github.com/meshcast/meshcast/wire/phx"
)

// Unreliable broadcast over WebTransport datagrams (README, "Datagrams"),
// for channels joined with broadcast.unreliable: latest-wins traffic such
// as cursors. A datagram is one Phoenix binary frame: kind 3 from the
// client (join_ref = the channel's current one, ref empty), kind 4 to it.
// A client datagram is published like a broadcast, marked unreliable: the
// WebTransport subscribers that opted in get it as a datagram, everyone
// else (WebSocket, sessions without the opt-in) as a normal frame.
//
// Datagrams never go out from the fan-out: quic-go's datagram queue blocks
// when full. They go on the connection's outq datagram lane (latest-wins,
// bounded), and its writer sends them.

// MaxDatagramBytes is the largest datagram a client may send: Chromium's
// datagrams.maxDatagramSize (larger browser datagrams are dropped without
// a word on the way).
const MaxDatagramBytes = 1024

// datagramSender is a transport that sends datagrams (WebTransport).
type datagramSender interface {
	sendDatagram(d []byte) error
}

// errDatagram is a datagram the client sent that cannot be delivered: it
// is dropped, counted by reason, and the client is told why.
type errDatagram struct {
	reason string // metric label
	msg    string
}

func (e *errDatagram) Error() string { return e.msg }

// decodeDatagram decodes a client datagram: a kind-3 binary frame of at
// most MaxDatagramBytes with an empty ref.
func decodeDatagram(d []byte) (phx.Message, error) {
	if len(d) > MaxDatagramBytes {
		return phx.Message{}, &errDatagram{"too_large", fmt.Sprintf("Datagram dropped: %d bytes, a datagram carries at most %d", len(d), MaxDatagramBytes)}
	}
	m, err := phx.DecodeBinary(d)
	if err != nil {
		return phx.Message{}, &errDatagram{"malformed", "Datagram dropped: " + strings.TrimPrefix(err.Error(), "phx: ")}
	}
	if m.Ref != "" {
		return phx.Message{}, &errDatagram{"malformed", "Datagram dropped: a datagram has no ref (nothing answers it)"}
	}
	return m, nil
}

// deliver queues a fan-out message for one subscriber: as a datagram when
// the message is one and the subscriber can and asked to receive them,
// else as the frame of its format. It reports whether a queue took it.
func (ch *channel) deliver(m *outMsg) bool {
	if !ch.grants.canRead(ExtBroadcast) {
		return false // a private channel whose policy denies reading broadcasts
	}
	c := ch.conn
	if m.unreliable && ch.unreliable && c.dg != nil {
		if f := m.frame(formatWTv2); f != nil && f[4] == wtOpBinary {
			return c.enqueueDatagram(f)
		}
	}
	f := m.frame(c.format)
	return f != nil && c.enqueue(f)
}

// enqueueDatagram puts a WebTransport binary frame on the datagram lane;
// the writer sends its body as the datagram.
func (c *conn) enqueueDatagram(f []byte) bool {
	r, dropped, start := c.q.PushDatagram(f)
	if start {
		c.startWriter()
	}
	if dropped {
		c.srv.metrics.datagramDropped("queue_full")
	}
	return r != outq.Rejected
}

// sendDatagrams sends what the datagram lane held. One too large for the
// QUIC path goes on the stream instead. Only the writer calls it.
func (c *conn) sendDatagrams(ds [][]byte) error {
	m := c.srv.metrics
	for _, f := range ds {
		err := c.dg.sendDatagram(f[wtHeader:])
		var tooLarge *quic.DatagramTooLargeError
		switch {
		case err == nil:
			m.datagramsSent.Inc()
			m.wrote(c.tm, len(f)-wtHeader)
		case errors.As(err, &tooLarge):
			m.datagramsOnStream.Inc()
			if err := c.tr.writeFrames([][]byte{f}); err != nil {
				return err
			}
			m.wrote(c.tm, len(f))
		default:
			// The session is ending; the stream write will tell.
			m.datagramDropped("closed")
		}
	}
	return nil
}

// readDatagrams reads the session's datagrams until it ends.
func (c *conn) readDatagrams(sess *webtransport.Session) {
	for {
		d, err := sess.ReceiveDatagram(sess.Context())
		if err != nil {
			return
		}
		c.handleDatagram(d)
	}
}

// handleDatagram publishes one client datagram, or drops it and says why.
func (c *conn) handleDatagram(d []byte) {
	m := c.srv.metrics
	m.datagramsReceived.Inc()
	m.read(c.tm, len(d))
	msg, err := decodeDatagram(d)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gone {
		return
	}
	var ch *channel
	if err == nil {
		ch = c.channels[msg.Topic]
		switch {
		case ch == nil:
			err = &errDatagram{"not_joined", "Datagram dropped: " + msg.Topic + " is not joined"}
		case msg.JoinRef != ch.joinRef:
			err = &errDatagram{"stale_join_ref", fmt.Sprintf("Datagram dropped: join_ref %q is not the current join of %s", msg.JoinRef, msg.Topic)}
		case !ch.unreliable:
			err = &errDatagram{"not_enabled", "Datagram dropped: join " + msg.Topic + " with config.broadcast.unreliable = true to send datagrams"}
		}
	}
	if err != nil {
		c.dropDatagram(ch, msg.Topic, err.(*errDatagram))
		return
	}
	if !c.allowEvent(ch, len(msg.Payload)) {
		m.datagramDropped("rate_limited")
		return
	}
	if r := c.writeRefusal(ch, ExtBroadcast); r != nil {
		m.datagramDropped("write_denied")
		c.carryOut(r, &msg, ch) // dropped without a word, as a broadcast
		return
	}
	out := &outMsg{topic: ch.key.name, event: msg.UserEvent, data: msg.Payload, enc: msg.Enc, binary: true, unreliable: true}
	skip := ch
	if ch.self {
		skip = nil
	}
	c.srv.publish(ch.key, ch.t, out, skip)
}

// dropDatagram counts a dropped datagram and tells the client, at most a
// few times a second: a system message on the channel's topic (on
// "phoenix" when the datagram named none), with the current join_ref when
// the topic is joined. Called with c.mu held.
func (c *conn) dropDatagram(ch *channel, topic string, e *errDatagram) {
	c.srv.metrics.datagramDropped(e.reason)
	if c.notices == nil {
		c.notices = rate.NewLimiter(2, 5)
	}
	if !c.notices.Allow() {
		return
	}
	joinRef, name := "", ""
	if ch != nil {
		joinRef = ch.joinRef
	}
	if n, ok := strings.CutPrefix(topic, topicPrefix); ok {
		name = n
	} else {
		topic = "phoenix"
	}
	c.send(joinRef, "", topic, "system", systemPayload("broadcast", "error", e.msg, name))
}
