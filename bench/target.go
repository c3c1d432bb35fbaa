package bench

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/gobwas/ws"

	"github.com/meshcast/meshcast/bench/client"
	"github.com/meshcast/meshcast/wire/phx"
)

// target is what differs between the servers the fan-out measures: how a
// connection subscribes, how a publication is framed, and how a
// subscriber recognises a delivery. The publisher's goroutine alone calls
// appendPublish.
type target interface {
	// join subscribes c (or, for the publisher, makes it ready to
	// publish) and returns once the server confirmed it.
	join(c client.Conn, publisher bool, timeout time.Duration) error
	// appendPublish appends the frame that publishes payload with sequence
	// seq (also usable as a request id) and returns its opcode.
	appendPublish(dst []byte, seq uint64, payload []byte) ([]byte, ws.OpCode)
	heartbeat() client.Heartbeat // nil if the protocol has none
	// scan classifies one data frame: v.sample for every benchmark
	// payload, v.odd for frames the benchmark does not expect,
	// v.reply(frame) to answer a server ping.
	scan(op ws.OpCode, frame []byte, v visitor)
}

// visitor receives what scan finds in a frame.
type visitor interface {
	sample(b []byte)
	odd(frame []byte)
	reply(frame []byte)
}

func newTarget(cfg *Config) target {
	if cfg.Target == TargetCentrifugo {
		return &centrifugo{channel: cfg.Channel}
	}
	return &phoenix{topic: cfg.Topic, event: "m", binary: cfg.Binary, unreliable: cfg.Unreliable}
}

// phoenix speaks Phoenix Channels v2 as Supabase realtime-js does.
type phoenix struct {
	topic, event string
	binary       bool
	unreliable   bool   // join with broadcast.unreliable; publish datagrams
	scratch      []byte // the publisher's broadcast payload object
}

func (p *phoenix) join(c client.Conn, _ bool, timeout time.Duration) error {
	return client.JoinChannel(c, p.topic, client.Join{Unreliable: p.unreliable}, timeout, nil)
}

func (p *phoenix) appendPublish(dst []byte, seq uint64, payload []byte) ([]byte, ws.OpCode) {
	ref := seq + 1 // ref 1 was the join
	switch {
	case p.unreliable: // a datagram carries no ref
		return phx.AppendUserBroadcastPush(dst, client.JoinRef, 0, p.topic, p.event, nil, phx.EncJSON, payload), ws.OpBinary
	case p.binary:
		return phx.AppendUserBroadcastPush(dst, client.JoinRef, ref, p.topic, p.event, nil, phx.EncJSON, payload), ws.OpBinary
	}
	dst, p.scratch = client.Broadcast(dst, p.scratch, ref, p.topic, p.event, payload)
	return dst, ws.OpText
}

func (p *phoenix) heartbeat() client.Heartbeat { return client.PhoenixHeartbeat }

var statusOK = []byte(`"status":"ok"`)

func (p *phoenix) scan(op ws.OpCode, frame []byte, v visitor) {
	if op == ws.OpBinary {
		if u, err := phx.DecodeUserBroadcast(frame); err == nil {
			v.sample(u.Payload)
		} else {
			v.odd(frame)
		}
		return
	}
	f, err := phx.ScanV2(frame)
	switch {
	case err == nil && string(f.Event) == "broadcast":
		v.sample(f.Payload)
	case err == nil && string(f.Event) == "phx_reply" && bytes.Contains(f.Payload, statusOK):
		// a heartbeat's reply
	default:
		v.odd(frame)
	}
}

// centrifugo speaks Centrifugo's v2 JSON client protocol (Centrifugo
// v5/v6) on /connection/websocket. A frame may carry several
// newline-separated JSON messages; an empty object `{}` from the server is
// a ping that must be answered with `{}`.
type centrifugo struct{ channel string }

var (
	centPing   = []byte(`{}`)
	centPush   = []byte(`"push":`)
	centPub    = []byte(`"pub":`)
	centReplyP = []byte(`"publish":{}`)
)

func (p *centrifugo) join(c client.Conn, publisher bool, timeout time.Duration) error {
	if err := c.SetDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	defer c.SetDeadline(time.Time{})
	if err := centCommand(c, 1, `"connect":{}`); err != nil || publisher {
		return err
	}
	return centCommand(c, 2, `"subscribe":{"channel":`+strconv.Quote(p.channel)+`}`)
}

// centCommand sends {"id":id,<body>} and reads until its reply, answering
// pings.
func centCommand(c client.Conn, id uint64, body string) error {
	if err := c.WriteFrame(ws.OpText, []byte(`{"id":`+strconv.FormatUint(id, 10)+`,`+body+`}`)); err != nil {
		return fmt.Errorf("send %s: %w", body, err)
	}
	for range 16 {
		_, b, err := c.ReadFrame()
		if err != nil {
			return err
		}
		var found bool
		forEachLine(b, func(line []byte) {
			if bytes.Equal(line, centPing) {
				err = errors.Join(err, c.WriteFrame(ws.OpText, centPing))
				return
			}
			var r struct {
				ID    uint64 `json:"id"`
				Error *struct {
					Code    int    `json:"code"`
					Message string `json:"message"`
				} `json:"error"`
			}
			if jerr := json.Unmarshal(line, &r); jerr != nil || r.ID != id {
				err = errors.Join(err, jerr)
				return
			}
			if found = true; r.Error != nil {
				err = errors.Join(err, fmt.Errorf("centrifugo error %d: %s", r.Error.Code, r.Error.Message))
			}
		})
		if err != nil || found {
			return err
		}
	}
	return fmt.Errorf("no reply to command %d within 16 frames", id)
}

// appendPublish appends {"id":<seq+1>,"publish":{"channel":"<channel>","data":<payload>}}
// (id 1 was connect).
func (p *centrifugo) appendPublish(dst []byte, seq uint64, payload []byte) ([]byte, ws.OpCode) {
	dst = append(dst, `{"id":`...)
	dst = strconv.AppendUint(dst, seq+1, 10)
	dst = append(dst, `,"publish":{"channel":"`...)
	dst = append(dst, p.channel...)
	dst = append(dst, `","data":`...)
	dst = append(dst, payload...)
	return append(dst, `}}`...), ws.OpText
}

func (p *centrifugo) heartbeat() client.Heartbeat { return nil }

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
			v.odd(line)
		}
	})
}

// forEachLine calls fn for every non-empty newline-separated message of a
// Centrifugo frame.
func forEachLine(frame []byte, fn func(line []byte)) {
	for line := range bytes.Lines(frame) {
		if line = bytes.TrimSpace(line); len(line) > 0 {
			fn(line)
		}
	}
}
