package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
)

// Centrifugo v6 JSON client protocol frames (bidirectional WebSocket at
// /connection/websocket). A frame may carry several newline-separated JSON
// messages; an empty object `{}` from the server is a ping that must be
// answered with `{}`.

// AppendCentConnect appends `{"id":<id>,"connect":{}}`.
func AppendCentConnect(dst []byte, id uint64) []byte {
	dst = append(dst, `{"id":`...)
	dst = strconv.AppendUint(dst, id, 10)
	return append(dst, `,"connect":{}}`...)
}

// AppendCentSubscribe appends `{"id":<id>,"subscribe":{"channel":"<channel>"}}`.
func AppendCentSubscribe(dst []byte, id uint64, channel string) []byte {
	dst = append(dst, `{"id":`...)
	dst = strconv.AppendUint(dst, id, 10)
	dst = append(dst, `,"subscribe":{"channel":`...)
	dst = strconv.AppendQuote(dst, channel)
	return append(dst, `}}`...)
}

// AppendCentPublish appends `{"id":<id>,"publish":{"channel":"<channel>","data":<data>}}`.
// channel must not need JSON escaping; data must be JSON.
func AppendCentPublish(dst []byte, id uint64, channel string, data []byte) []byte {
	dst = append(dst, `{"id":`...)
	dst = strconv.AppendUint(dst, id, 10)
	dst = append(dst, `,"publish":{"channel":"`...)
	dst = append(dst, channel...)
	dst = append(dst, `","data":`...)
	dst = append(dst, data...)
	return append(dst, `}}`...)
}

// centPing is the server ping and the client pong.
var centPing = []byte(`{}`)

// centReply is the part of a Centrifugo reply the handshake checks.
type centReply struct {
	ID    uint64          `json:"id"`
	Error *centError      `json:"error"`
	Push  json.RawMessage `json:"push"`
}

type centError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

func (e *centError) Error() string {
	return fmt.Sprintf("centrifugo error %d: %s", e.Code, e.Message)
}

// forEachLine calls fn for every non-empty newline-separated message of a
// Centrifugo frame.
func forEachLine(frame []byte, fn func(line []byte)) {
	for len(frame) > 0 {
		i := bytes.IndexByte(frame, '\n')
		var line []byte
		if i < 0 {
			line, frame = frame, nil
		} else {
			line, frame = frame[:i], frame[i+1:]
		}
		line = bytes.TrimSpace(line)
		if len(line) > 0 {
			fn(line)
		}
	}
}
