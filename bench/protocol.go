package bench

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/gobwas/ws"
)

// protocol is what differs between benchmark targets: how a connection
// subscribes, how a publication is framed, and how a subscriber recognises a
// delivery. Implementations are stateless; per-connection state lives in the
// runner.
type protocol interface {
	// handshake subscribes c (or, for the publisher, makes it ready to
	// publish) and returns once the server confirmed it.
	handshake(c clientConn, publisher bool, timeout time.Duration) error
	// appendPublish appends the frame that publishes payload with sequence
	// seq (also usable as a request id) and returns its opcode.
	appendPublish(dst []byte, seq uint64, payload []byte) ([]byte, ws.OpCode)
	// heartbeatEvery is the client heartbeat period, 0 if the protocol has none.
	heartbeatEvery() time.Duration
	// appendHeartbeat appends the client heartbeat frame with reference ref.
	appendHeartbeat(dst []byte, ref uint64) []byte
	// scan classifies one data frame read by a connection. It calls v.sample
	// for every benchmark payload, v.unexpected for frames the benchmark does
	// not expect, v.reply(frame) to answer server pings.
	scan(op ws.OpCode, frame []byte, v visitor)
}

// visitor receives what scan finds in a frame.
type visitor interface {
	sample(b []byte)
	unexpected(frame []byte)
	reply(frame []byte)
}

// newProtocol returns the protocol for a target name.
func newProtocol(cfg *Config) (protocol, error) {
	switch cfg.Target {
	case TargetMeshcast:
		return &phoenix{topic: cfg.Topic, event: "m", binary: cfg.Binary, unreliable: cfg.Unreliable}, nil
	case TargetCentrifugo:
		if cfg.Binary || cfg.Unreliable || cfg.Transport != TransportWebSocket {
			return nil, errors.New("bench: -binary, -unreliable and -transport webtransport apply to the meshcast target only")
		}
		return &centrifugo{channel: cfg.Channel}, nil
	default:
		return nil, fmt.Errorf("bench: unknown target %q (want %s or %s)", cfg.Target, TargetMeshcast, TargetCentrifugo)
	}
}

// phoenix speaks Phoenix Channels v2 as Supabase realtime-js does.
type phoenix struct {
	topic      string
	event      string
	binary     bool
	unreliable bool // join with broadcast.unreliable; publish datagrams
}

const phxJoinRef = "1"

func (p *phoenix) handshake(c clientConn, _ bool, timeout time.Duration) error {
	if err := c.SetDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	defer c.SetDeadline(time.Time{})
	join := AppendPhxJoin(nil, phxJoinRef, p.topic)
	if p.unreliable {
		join = AppendPhxJoinConfig(nil, phxJoinRef, p.topic, phxJoinConfigUnreliable)
	}
	if err := c.WriteFrame(ws.OpText, join); err != nil {
		return fmt.Errorf("send phx_join: %w", err)
	}
	for range 16 { // the reply should be first; tolerate a few pushes before it
		op, b, err := c.ReadFrame()
		if err != nil {
			return fmt.Errorf("await join reply: %w", err)
		}
		if op != ws.OpText {
			continue
		}
		r, err := parsePhxFrame(b)
		if err != nil {
			return err
		}
		if r.Event != "phx_reply" || r.Ref == nil || *r.Ref != phxJoinRef || r.Topic != p.topic {
			continue
		}
		if r.Status != "ok" {
			return fmt.Errorf("join refused: %s", r.Raw)
		}
		return nil
	}
	return errors.New("no join reply within 16 frames")
}

func (p *phoenix) appendPublish(dst []byte, seq uint64, payload []byte) ([]byte, ws.OpCode) {
	ref := seq + 1 // ref 1 was the join
	if p.unreliable {
		return AppendDatagram(dst, phxJoinRef, p.topic, p.event, payload), ws.OpBinary
	}
	if p.binary {
		// Only fails for fields over 255 bytes, which newProtocol's inputs rule out.
		out, _ := AppendKind3(dst, phxJoinRef, ref, p.topic, p.event, "", EncJSON, payload)
		return out, ws.OpBinary
	}
	return AppendPhxBroadcast(dst, phxJoinRef, ref, p.topic, p.event, payload), ws.OpText
}

func (p *phoenix) heartbeatEvery() time.Duration { return 25 * time.Second }

func (p *phoenix) appendHeartbeat(dst []byte, ref uint64) []byte {
	return AppendPhxHeartbeat(dst, ref)
}

var (
	phxBroadcastEvent = []byte(`"broadcast",{`)
	phxReplyEvent     = []byte(`"phx_reply",`)
	phxStatusOK       = []byte(`"status":"ok"`)
)

func (p *phoenix) scan(op ws.OpCode, frame []byte, v visitor) {
	switch op {
	case ws.OpBinary:
		k, err := ParseKind4(frame)
		if err != nil {
			v.unexpected(frame)
			return
		}
		v.sample(k.Payload)
	case ws.OpText:
		switch {
		case bytes.Contains(frame, phxBroadcastEvent):
			v.sample(frame)
		case bytes.Contains(frame, phxReplyEvent) && bytes.Contains(frame, phxStatusOK):
			// heartbeat reply
		default:
			v.unexpected(frame)
		}
	}
}

// centrifugo speaks Centrifugo's v2 JSON client protocol (Centrifugo v5/v6).
type centrifugo struct {
	channel string
}

var (
	centPush   = []byte(`"push":`)
	centPub    = []byte(`"pub":`)
	centReplyP = []byte(`"publish":{}`)
)

func (p *centrifugo) handshake(c clientConn, publisher bool, timeout time.Duration) error {
	if err := c.SetDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	defer c.SetDeadline(time.Time{})
	if err := c.WriteFrame(ws.OpText, AppendCentConnect(nil, 1)); err != nil {
		return fmt.Errorf("send connect: %w", err)
	}
	if err := centAwait(c, 1); err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	if publisher {
		return nil
	}
	if err := c.WriteFrame(ws.OpText, AppendCentSubscribe(nil, 2, p.channel)); err != nil {
		return fmt.Errorf("send subscribe: %w", err)
	}
	if err := centAwait(c, 2); err != nil {
		return fmt.Errorf("subscribe %s: %w", p.channel, err)
	}
	return nil
}

// centAwait reads until the reply with the given id, answering pings.
func centAwait(c clientConn, id uint64) error {
	for range 16 {
		_, b, err := c.ReadFrame()
		if err != nil {
			return err
		}
		var found bool
		var rerr error
		forEachLine(b, func(line []byte) {
			if bytes.Equal(line, centPing) {
				rerr = errors.Join(rerr, c.WriteFrame(ws.OpText, centPing))
				return
			}
			var r centReply
			if err := json.Unmarshal(line, &r); err != nil {
				rerr = errors.Join(rerr, err)
				return
			}
			if r.ID != id {
				return
			}
			found = true
			if r.Error != nil {
				rerr = errors.Join(rerr, r.Error)
			}
		})
		if rerr != nil {
			return rerr
		}
		if found {
			return nil
		}
	}
	return fmt.Errorf("no reply to command %d within 16 frames", id)
}

func (p *centrifugo) appendPublish(dst []byte, seq uint64, payload []byte) ([]byte, ws.OpCode) {
	return AppendCentPublish(dst, seq+1, p.channel, payload), ws.OpText // id 1 was connect
}

func (p *centrifugo) heartbeatEvery() time.Duration { return 0 }

func (p *centrifugo) appendHeartbeat(dst []byte, _ uint64) []byte { return dst }

func (p *centrifugo) scan(_ ws.OpCode, frame []byte, v visitor) {
	forEachLine(frame, func(line []byte) {
		switch {
		case bytes.Equal(line, centPing):
			v.reply(centPing)
		case bytes.Contains(line, centPush) && bytes.Contains(line, centPub):
			v.sample(line)
		case bytes.Contains(line, centReplyP) && !bytes.Contains(line, []byte(`"error"`)):
			// publish ack on the publisher's connection
		default:
			v.unexpected(line)
		}
	})
}
