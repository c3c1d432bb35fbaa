package edge

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"

	"github.com/gobwas/ws"

	"github.com/meshcast/meshcast/wire/phx"
)

// parseWT splits one WebTransport stream frame into opcode and body,
// checking the length prefix covers exactly the rest.
func parseWT(t *testing.T, f []byte) (byte, []byte) {
	t.Helper()
	if len(f) < wtHeader {
		t.Fatalf("frame of %d bytes has no header", len(f))
	}
	if n := binary.BigEndian.Uint32(f); int(n) != len(f)-4 {
		t.Fatalf("length prefix %d, frame has %d bytes after it", n, len(f)-4)
	}
	return f[4], f[5:]
}

// parseWS reads one WebSocket frame and checks nothing follows it.
func parseWS(t *testing.T, f []byte) ws.Frame {
	t.Helper()
	r := bytes.NewReader(f)
	h, err := ws.ReadHeader(r)
	if err != nil {
		t.Fatalf("ReadHeader: %v", err)
	}
	if h.Length != int64(r.Len()) {
		t.Fatalf("header declares %d bytes, %d follow", h.Length, r.Len())
	}
	fr := ws.Frame{Header: h, Payload: f[len(f)-r.Len():]}
	if !fr.Header.Fin || fr.Header.Masked {
		t.Fatalf("header %+v: want FIN, unmasked", fr.Header)
	}
	return fr
}

func TestFrameFormats(t *testing.T) {
	// Payload sizes on both sides of the WebSocket header's length forms.
	for _, size := range []int{0, 100, 125, 126, 1000, 65535, 65536, 200000} {
		payload := []byte(`{"s":"` + strings.Repeat("x", size) + `"}`)
		ws2 := textFrame(formatWSv2, "1", "2", "realtime:r", "e", payload)
		wt2 := textFrame(formatWTv2, "1", "2", "realtime:r", "e", payload)
		ws1 := textFrame(formatWSv1, "1", "2", "realtime:r", "e", payload)

		fr := parseWS(t, ws2)
		op, body := parseWT(t, wt2)
		if fr.Header.OpCode != ws.OpText || op != wtOpText {
			t.Fatalf("size %d: opcodes %v / %d, want text", size, fr.Header.OpCode, op)
		}
		if !bytes.Equal(fr.Payload, body) {
			t.Fatalf("size %d: the WebSocket and WebTransport v2 bodies differ", size)
		}
		if want := phx.AppendFrame(nil, phx.V2, "1", "2", "realtime:r", "e", payload); !bytes.Equal(body, want) {
			t.Fatalf("size %d: body %.80q, want %.80q", size, body, want)
		}
		if got, want := parseWS(t, ws1).Payload, phx.AppendFrame(nil, phx.V1, "1", "2", "realtime:r", "e", payload); !bytes.Equal(got, want) {
			t.Fatalf("size %d: v1 body %.80q, want %.80q", size, got, want)
		}
	}
}

func TestOutMsgBuiltOncePerFormat(t *testing.T) {
	m := &outMsg{topic: "realtime:r", event: "cursor", data: []byte(`{"x":1}`), enc: phx.EncJSON, binary: true}
	a, b := m.frame(formatWTv2), m.frame(formatWTv2)
	if &a[0] != &b[0] {
		t.Fatal("the WebTransport frame was built twice")
	}
	op, body := parseWT(t, a)
	fr := parseWS(t, m.frame(formatWSv2))
	if op != wtOpBinary || fr.Header.OpCode != ws.OpBinary || !bytes.Equal(body, fr.Payload) {
		t.Fatalf("kind 4: WT op %d body %q, WS op %v body %q", op, body, fr.Header.OpCode, fr.Payload)
	}
	if body[0] != phx.KindUserBroadcast {
		t.Fatalf("binary body kind %d, want 4", body[0])
	}
	// v1 gets the JSON text form of the same broadcast.
	if v1 := parseWS(t, m.frame(formatWSv1)); v1.Header.OpCode != ws.OpText {
		t.Fatalf("v1 opcode %v, want text", v1.Header.OpCode)
	}

	raw := &outMsg{topic: "realtime:r", event: "b", data: []byte{0xff, 0}, enc: phx.EncBytes}
	if first, again := raw.frame(formatWSv1), raw.frame(formatWSv1); first != nil || again != nil {
		t.Fatal("raw bytes must not reach a v1 client")
	}
	if raw.frame(formatWTv2) == nil {
		t.Fatal("raw bytes go to WebTransport clients as kind 4")
	}
}

func TestCloseFrames(t *testing.T) {
	long := strings.Repeat("é", 100) // 200 bytes: cut at a rune boundary
	for _, reason := range []string{"", "bye", long} {
		fr := parseWS(t, closeFrame(formatWSv2, ws.StatusGoingAway, reason))
		code, wsReason := ws.ParseCloseFrameData(fr.Payload)
		op, body := parseWT(t, closeFrame(formatWTv2, ws.StatusGoingAway, reason))
		if op != wtOpClose || len(body) < 2 {
			t.Fatalf("WT close: op %d, body %q", op, body)
		}
		if got := ws.StatusCode(binary.BigEndian.Uint16(body)); got != ws.StatusGoingAway || code != ws.StatusGoingAway {
			t.Fatalf("codes WT %d WS %d, want 1001", got, code)
		}
		if string(body[2:]) != wsReason || len(wsReason) > maxCloseReason || !strings.HasPrefix(reason, wsReason) {
			t.Fatalf("reason WT %q WS %q from %q", body[2:], wsReason, reason)
		}
	}
}
