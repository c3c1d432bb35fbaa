package edge

import (
	"fmt"
	"slices"
	"testing"

	"github.com/gobwas/ws"

	"github.com/meshcast/meshcast/wire/fuzzcorpus"
	"github.com/meshcast/meshcast/wire/phx"
)

// TestWriteCorpus writes the edge's seed corpora: WebTransport streams
// and datagrams as clientjs sends them, tokens of every shape, join
// payloads, presence pushes and REST bodies.
func TestWriteCorpus(t *testing.T) {
	fuzzcorpus.Skip(t)
	join := []byte(joinFrame("1", "realtime:room1", `{"broadcast":{"self":true,"unreliable":true},"presence":{"key":"k1"}}`))
	session := append(wtFrame(wtOpText, join), wtFrame(wtOpText, []byte(broadcastFrame("1", "2", "realtime:room1", "e", `{"a":1}`)))...)
	session = append(session, wtFrame(wtOpBinary, kind3("1", "3", "realtime:room1", "cursor", phx.EncJSON, []byte(`{"x":42}`)))...)
	session = append(session, wtFrame(wtOpText, []byte(heartbeatFrame))...)
	session = append(session, wtFrame(wtOpClose, []byte{3, 232, 'b', 'y', 'e'})...)
	fuzzcorpus.Write(t, "FuzzWTFrameReader", "session", session, 0)
	fuzzcorpus.Write(t, "FuzzWTFrameReader", "session-limit-64", session, 64)
	fuzzcorpus.Write(t, "FuzzWTFrameReader", "split-header", session[:3], 0)

	wsSession := slices.Concat(masked(ws.OpText, true, join), masked(ws.OpText, true, []byte(heartbeatFrame)),
		masked(ws.OpBinary, true, kind3("1", "3", "realtime:room1", "cursor", phx.EncJSON, []byte(`{"x":42}`))),
		masked(ws.OpText, false, []byte(heartbeatFrame[:9])), masked(ws.OpPing, true, []byte("ping")),
		masked(ws.OpContinuation, true, []byte(heartbeatFrame[9:])), masked(ws.OpClose, true, []byte{3, 232, 'b', 'y', 'e'}))
	fuzzcorpus.Write(t, "FuzzWSReader", "session", wsSession, int64(0), uint8(0))
	fuzzcorpus.Write(t, "FuzzWSReader", "session-pieces-limit-64", wsSession, int64(64), uint8(5))
	fuzzcorpus.Write(t, "FuzzWSReader", "bytewise", wsSession, int64(0), uint8(1))

	fuzzcorpus.Write(t, "FuzzDecodeDatagram", "cursor-json", kind3("1", "", "realtime:room1", "cursor", phx.EncJSON, []byte(`{"x":42,"y":7}`)))
	fuzzcorpus.Write(t, "FuzzDecodeDatagram", "cursor-bytes", kind3("1", "", "realtime:room1", "cursor", phx.EncBytes, []byte{0, 1, 0xff}))
	fuzzcorpus.Write(t, "FuzzDecodeDatagram", "with-ref", kind3("1", "9", "realtime:room1", "cursor", phx.EncJSON, []byte(`{}`)))

	for name, tok := range tokenSeeds(t) {
		fuzzcorpus.Write(t, "FuzzVerifyToken", name, tok, []byte(nil))
	}
	fuzzcorpus.Write(t, "FuzzVerifyToken", "claims-anon", "", []byte(`{"role":"anon","exp":1750003600,"iss":"supabase","ref":"abc"}`))
	fuzzcorpus.Write(t, "FuzzVerifyToken", "claims-huge-exp", "", []byte(`{"role":"service_role","exp":1e300}`))

	for i, s := range joinPayloadSeeds {
		fuzzcorpus.Write(t, "FuzzJoinConfig", fmt.Sprint(i), []byte(s))
	}
	for i, s := range presenceSeeds {
		fuzzcorpus.Write(t, "FuzzPresenceTrack", fmt.Sprint(i), []byte(s), "user-1")
	}
	for i, s := range restSeeds {
		fuzzcorpus.Write(t, "FuzzRESTBroadcast", fmt.Sprintf("batch-%d", i), true, "application/json", "", []byte(s))
	}
	fuzzcorpus.Write(t, "FuzzRESTBroadcast", "single-json", false, "application/json", "room1", []byte(`{"x":42}`))
	fuzzcorpus.Write(t, "FuzzRESTBroadcast", "single-bytes", false, "application/octet-stream", "room1", []byte{0, 0xff, 1})
}
