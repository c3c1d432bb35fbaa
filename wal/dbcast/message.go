// Package dbcast delivers the rows apps insert into realtime.messages
// (realtime.send, realtime.send_binary, realtime.broadcast_changes) as
// broadcasts, the way Supabase Realtime does, but through the node's
// permanent replication slot: a row committed while no node reads the
// database, or while the owner fails over, is delivered once a reader is
// back (at least once; repeats are dropped by id).
//
// The rows travel as postgres_changes do (wal.Service): every node
// registers one Subscription of realtime.messages with the database's
// owner, so each row goes once to each node and is acknowledged before the
// owner confirms it to Postgres. Authorize keeps those subscriptions out of
// the row-level security checks of postgres_changes (a private channel's
// members were authorized at join), and Deliver turns their changes into
// broadcasts on the node. Replay reads a topic's recent rows for a joining
// channel, as that channel's identity.
package dbcast

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/meshcast/meshcast/wal"
)

// Table is the table whose inserted rows are broadcasts.
const (
	Schema = "realtime"
	Table  = "messages"
)

// Message is one broadcast row of realtime.messages.
type Message struct {
	ID      string // the row's id (a uuid), meta.id to subscribers
	Topic   string // the channel's name without "realtime:"
	Event   string
	Private bool
	// Payload is the JSON of payload, or the bytes of binary_payload when
	// Binary.
	Payload []byte
	Binary  bool
	// Pos is the row's place in the change stream (its transaction's
	// commit LSN and its sequence there): meta.pos "db:<Pos>" to
	// subscribers. Zero for a row read otherwise (replay).
	Pos wal.Pos
}

// ErrNotBroadcast is a row of another extension than broadcast.
var ErrNotBroadcast = errors.New("dbcast: not a broadcast row")

// IsMessages reports whether c is a row of realtime.messages.
func IsMessages(c *wal.Change) bool { return c.Schema == Schema && c.Table == Table }

// Decode reads the broadcast of an inserted row of realtime.messages.
// Columns are found by name (an app's table may order them otherwise); a
// row without topic or id, or with a value of another type than Supabase's
// schema has, is an error.
func Decode(c *wal.Change) (Message, error) {
	m := Message{Pos: c.Pos()}
	if !IsMessages(c) || c.Kind != wal.Insert {
		return m, fmt.Errorf("dbcast: %s of %s.%s is not an insert into realtime.messages", c.Kind, c.Schema, c.Table)
	}
	var ext, payload, binary json.RawMessage
	var private json.RawMessage
	for i, col := range c.Columns {
		if i >= len(c.Record) {
			break
		}
		v := c.Record[i]
		switch col.Name {
		case "id":
			if err := str(v, &m.ID); err != nil {
				return m, fmt.Errorf("dbcast: id: %w", err)
			}
		case "topic":
			if err := str(v, &m.Topic); err != nil {
				return m, fmt.Errorf("dbcast: topic: %w", err)
			}
		case "event":
			if err := str(v, &m.Event); err != nil {
				return m, fmt.Errorf("dbcast: event: %w", err)
			}
		case "extension":
			ext = v
		case "payload":
			payload = v
		case "binary_payload":
			binary = v
		case "private":
			private = v
		}
	}
	var e string
	if err := str(ext, &e); err != nil || e != "broadcast" {
		return m, ErrNotBroadcast
	}
	if m.ID == "" || m.Topic == "" {
		return m, errors.New("dbcast: a row without id or topic")
	}
	m.Private = string(private) == "true"
	switch {
	case !isNull(binary):
		var s string
		if err := json.Unmarshal(binary, &s); err != nil {
			return m, fmt.Errorf("dbcast: binary_payload: %w", err)
		}
		b, err := byteaHex(s)
		if err != nil {
			return m, fmt.Errorf("dbcast: binary_payload: %w", err)
		}
		m.Payload, m.Binary = b, true
	case !isNull(payload):
		m.Payload = payload
	default:
		m.Payload = []byte("{}") // realtime.send with a null payload
	}
	return m, nil
}

func isNull(v json.RawMessage) bool { return len(v) == 0 || string(v) == "null" }

// str decodes a JSON string (null is "").
func str(v json.RawMessage, dst *string) error {
	if isNull(v) {
		*dst = ""
		return nil
	}
	return json.Unmarshal(v, dst)
}

// byteaHex decodes bytea's hex output ("\x0a0b").
func byteaHex(s string) ([]byte, error) {
	h, ok := strings.CutPrefix(s, `\x`)
	if !ok {
		return nil, errors.New(`not bytea hex output (no \x)`)
	}
	return hex.DecodeString(h)
}
