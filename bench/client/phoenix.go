package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/gobwas/ws"

	"github.com/meshcast/meshcast/wire/phx"
)

// JoinRef is the join_ref of every channel joined here (one per
// connection, joined with ref 1).
const JoinRef = "1"

// Join is a phx_join payload's config, as realtime-js sends it: broadcast
// without self or ack, and what is set here.
type Join struct {
	Presence   string   // presence key; presence is enabled when set
	Unreliable bool     // meshcast's datagrams on WebTransport
	Changes    []string // postgres_changes bindings, JSON objects
	Token      string   // access_token, if any
}

// Payload is the phx_join payload, written with the server's own join type.
func (j Join) Payload() []byte {
	var p phx.JoinPayload
	c := &p.Config
	c.Broadcast.Unreliable = phx.Flag(j.Unreliable)
	c.Presence.Key, _ = json.Marshal(j.Presence)
	c.Presence.Enabled = j.Presence != ""
	c.PostgresChanges = []json.RawMessage{}
	for _, b := range j.Changes {
		c.PostgresChanges = append(c.PostgresChanges, json.RawMessage(b))
	}
	if j.Token != "" {
		p.AccessToken = &j.Token
	}
	b, _ := json.Marshal(p)
	return b
}

// JoinChannel joins topic and waits (at most timeout) for the node's ok
// reply, skipping a few frames before it. Then, if until is set, it hands
// it every text frame until it returns done: a postgres_changes subscriber
// waits for "Subscribed to PostgreSQL" that way.
func JoinChannel(c Conn, topic string, j Join, timeout time.Duration, until func(f phx.RawFrame, raw []byte) (done bool, err error)) error {
	if err := c.SetDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	defer c.SetDeadline(time.Time{})
	if err := c.WriteFrame(ws.OpText, phx.AppendPush(nil, JoinRef, 1, topic, "phx_join", j.Payload())); err != nil {
		return fmt.Errorf("send phx_join: %w", err)
	}
	replied := false
	for range 64 {
		op, b, err := c.ReadFrame()
		if err != nil {
			return fmt.Errorf("await the join (replied %v): %w", replied, err)
		}
		if op != ws.OpText {
			continue
		}
		f, err := phx.ScanV2(b)
		if err != nil {
			return err
		}
		if replied {
			if done, err := until(f, b); done || err != nil {
				return err
			}
			continue
		}
		if string(f.Event) != "phx_reply" || string(f.Ref) != "1" || string(f.Topic) != topic {
			continue
		}
		if r, err := phx.DecodeReply(f.Payload); err != nil || r.Status != "ok" {
			return fmt.Errorf("join refused: %.300s", f.Payload)
		}
		if replied = true; until == nil {
			return nil
		}
	}
	return errors.New("no join reply within 64 frames")
}

// PhoenixHeartbeat appends the Phoenix heartbeat [null,"<ref>","phoenix","heartbeat",{}].
func PhoenixHeartbeat(dst []byte, ref uint64) []byte {
	return phx.AppendPush(dst, "", ref, "phoenix", "heartbeat", []byte("{}"))
}

// Track appends a presence track of meta (a JSON object) on topic.
func Track(dst []byte, ref uint64, topic string, meta []byte) []byte {
	p := append([]byte(`{"type":"presence","event":"track","payload":`), meta...)
	return phx.AppendPush(dst, JoinRef, ref, topic, "presence", append(p, '}'))
}

// Broadcast appends a text broadcast push of payload (a JSON object) as
// event; scratch is a buffer for the broadcast payload, returned for reuse.
func Broadcast(dst, scratch []byte, ref uint64, topic, event string, payload []byte) (frame, scratchOut []byte) {
	scratch = phx.AppendBroadcastPayload(scratch[:0], event, payload, nil)
	return phx.AppendPush(dst, JoinRef, ref, topic, "broadcast", scratch), scratch
}
