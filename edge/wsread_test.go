package edge

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// masked is one masked client frame.
func masked(op ws.OpCode, fin bool, body []byte) []byte {
	f := ws.NewFrame(op, fin, bytes.Clone(body))
	return ws.MustCompileFrame(ws.MaskFrameInPlace(f))
}

// decodeWS feeds in to a wsReader in pieces of the given sizes (cycled;
// none: all at once) and returns the events, until the first error.
func decodeWS(in []byte, max int64, pieces ...int) []wsEvent {
	r := wsReader{max: max}
	var evs []wsEvent
	now := time.Unix(1, 0)
	for i := 0; len(in) > 0; i++ {
		p := in
		if len(pieces) > 0 {
			p = in[:min(len(in), pieces[i%len(pieces)])]
		}
		in = in[len(p):]
		for len(p) > 0 {
			n, ev := r.next(p, now)
			if n == 0 && ev.kind == wsNone {
				panic("no progress")
			}
			p = p[n:]
			if ev.kind != wsNone {
				evs = append(evs, ev)
			}
			if ev.kind == wsError {
				return evs
			}
		}
	}
	return evs
}

// referenceEvents decodes in the way the edge did before the poller, with
// gobwas/ws's ReadHeader on a blocking reader: the rules the incremental
// reader must keep.
func referenceEvents(in []byte, max int64) []wsEvent {
	br := bytes.NewReader(in)
	var msg message
	var evs []wsEvent
	for {
		h, err := ws.ReadHeader(br)
		if errors.Is(err, ws.ErrHeaderLengthMSB) {
			return append(evs, wsEvent{kind: wsError, code: ws.StatusProtocolError, reason: "bad frame", metric: "read"})
		}
		if err != nil {
			return evs
		}
		if max > 0 && !h.OpCode.IsControl() && h.Length > max-int64(len(msg.buf)) {
			return append(evs, wsEvent{kind: wsError, code: ws.StatusMessageTooBig, reason: fmt.Sprintf("message exceeds %d bytes", max), metric: "frame_too_large"})
		}
		var perr string
		switch {
		case h.Rsv != 0 || !knownOpCode(h.OpCode):
			perr = "reserved bits or opcode"
		case !h.Masked:
			perr = "client frames must be masked"
		case h.OpCode.IsControl() && (!h.Fin || h.Length > 125):
			perr = "bad control frame"
		case !h.OpCode.IsControl() && h.OpCode == ws.OpContinuation && !msg.started:
			perr = "unexpected continuation frame"
		case !h.OpCode.IsControl() && h.OpCode != ws.OpContinuation && msg.started:
			perr = "expected continuation frame"
		}
		if perr != "" {
			return append(evs, wsProtocolError(perr))
		}
		if h.OpCode.IsControl() {
			body := make([]byte, h.Length)
			if _, err := io.ReadFull(br, body); err != nil {
				return evs
			}
			ws.Cipher(body, h.Mask, 0)
			evs = append(evs, wsEvent{kind: wsControl, op: h.OpCode, payload: body, frameBytes: len(body)})
			continue
		}
		if !msg.started {
			msg.begin(h.OpCode)
		}
		from := len(msg.buf)
		if err := msg.read(br, int(h.Length)); err != nil {
			return evs
		}
		ws.Cipher(msg.buf[from:], h.Mask, 0)
		if !h.Fin {
			evs = append(evs, wsEvent{kind: wsFragment, op: h.OpCode, frameBytes: int(h.Length)})
			continue
		}
		b, op := msg.finish()
		evs = append(evs, wsEvent{kind: wsMessage, op: op, payload: b, frameBytes: int(h.Length)})
	}
}

func sameEvents(a, b []wsEvent) error {
	if len(a) != len(b) {
		return fmt.Errorf("%d events, want %d", len(a), len(b))
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.kind != y.kind || x.op != y.op || !bytes.Equal(x.payload, y.payload) || x.frameBytes != y.frameBytes ||
			x.code != y.code || x.reason != y.reason || x.metric != y.metric {
			return fmt.Errorf("event %d: %+v, want %+v", i, x, y)
		}
	}
	return nil
}

func TestWSReader(t *testing.T) {
	hello := []byte(`[null,"1","phoenix","heartbeat",{}]`)
	frag := slices.Concat(masked(ws.OpText, false, hello[:10]), masked(ws.OpPing, true, []byte("p")),
		masked(ws.OpContinuation, false, hello[10:20]), masked(ws.OpContinuation, true, hello[20:]))
	long := bytes.Repeat([]byte("x"), 70000) // a 64-bit length
	cases := []struct {
		name  string
		in    []byte
		max   int64
		kinds []wsEventKind
		last  string // the last event's reason, or its payload
	}{
		{"text", masked(ws.OpText, true, hello), 0, []wsEventKind{wsMessage}, string(hello)},
		{"empty binary", masked(ws.OpBinary, true, nil), 0, []wsEventKind{wsMessage}, ""},
		{"fragments around a ping", frag, 0, []wsEventKind{wsFragment, wsControl, wsFragment, wsMessage}, string(hello)},
		{"126-byte length", masked(ws.OpText, true, long[:300]), 0, []wsEventKind{wsMessage}, string(long[:300])},
		{"64-bit length", masked(ws.OpBinary, true, long), 0, []wsEventKind{wsMessage}, string(long)},
		{"close", masked(ws.OpClose, true, []byte{3, 232}), 0, []wsEventKind{wsControl}, "\x03\xe8"},
		{"max exactly", masked(ws.OpText, true, long[:100]), 100, []wsEventKind{wsMessage}, string(long[:100])},
		{"over max", masked(ws.OpText, true, long[:101]), 100, []wsEventKind{wsError}, "message exceeds 100 bytes"},
		{"fragments over max", slices.Concat(masked(ws.OpText, false, long[:60]), masked(ws.OpContinuation, true, long[:41])), 100,
			[]wsEventKind{wsFragment, wsError}, "message exceeds 100 bytes"},
		{"control frames not counted", slices.Concat(masked(ws.OpText, false, long[:100]), masked(ws.OpPing, true, long[:100]),
			masked(ws.OpContinuation, true, nil)), 100, []wsEventKind{wsFragment, wsControl, wsMessage}, string(long[:100])},
		{"unmasked", ws.MustCompileFrame(ws.NewTextFrame(hello)), 0, []wsEventKind{wsError}, "client frames must be masked"},
		{"reserved bits", []byte{0xf1, 0x80, 1, 2, 3, 4}, 0, []wsEventKind{wsError}, "reserved bits or opcode"},
		{"unknown opcode", []byte{0x83, 0x80, 0, 0, 0, 0}, 0, []wsEventKind{wsError}, "reserved bits or opcode"},
		{"long ping", masked(ws.OpPing, true, long[:126]), 0, []wsEventKind{wsError}, "bad control frame"},
		{"fragmented ping", masked(ws.OpPing, false, nil), 0, []wsEventKind{wsError}, "bad control frame"},
		{"lone continuation", masked(ws.OpContinuation, true, hello), 0, []wsEventKind{wsError}, "unexpected continuation frame"},
		{"text inside a message", slices.Concat(masked(ws.OpText, false, hello), masked(ws.OpText, true, hello)), 0,
			[]wsEventKind{wsFragment, wsError}, "expected continuation frame"},
		{"length with its top bit", append([]byte{0x81, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0}, 1, 2, 3, 4), 0, []wsEventKind{wsError}, "bad frame"},
		{"lying length", []byte{0x81, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0}, 64 << 10,
			[]wsEventKind{wsError}, "message exceeds 65536 bytes"},
		{"truncated body", masked(ws.OpText, true, hello)[:20], 0, nil, ""},
		{"error stops decoding", slices.Concat([]byte{0x83, 0x80, 0, 0, 0, 0}, masked(ws.OpText, true, hello)), 0, []wsEventKind{wsError}, "reserved bits or opcode"},
	}
	for _, tc := range cases {
		for _, pieces := range [][]int{nil, {1}, {2, 3, 5, 7}, {16 << 10}} {
			evs := decodeWS(tc.in, tc.max, pieces...)
			var kinds []wsEventKind
			for _, ev := range evs {
				kinds = append(kinds, ev.kind)
			}
			if !slices.Equal(kinds, tc.kinds) {
				t.Errorf("%s, pieces %v: events %v, want %v", tc.name, pieces, kinds, tc.kinds)
				continue
			}
			if len(evs) == 0 {
				continue
			}
			last := evs[len(evs)-1]
			if got := last.reason + string(last.payload); got != tc.last {
				t.Errorf("%s, pieces %v: last event says %.40q, want %.40q", tc.name, pieces, got, tc.last)
			}
			if err := sameEvents(evs, referenceEvents(tc.in, tc.max)); err != nil {
				t.Errorf("%s, pieces %v: against the blocking reader: %v", tc.name, pieces, err)
			}
		}
	}
}

// TestWSReaderMessageStart: a message's time limit runs from its first
// header, whenever its other frames arrive.
func TestWSReaderMessageStart(t *testing.T) {
	r := wsReader{}
	t0 := time.Unix(100, 0)
	in := slices.Concat(masked(ws.OpText, false, []byte("ab")), masked(ws.OpContinuation, true, []byte("c")))
	r.next(in[:3], t0.Add(-time.Second)) // part of the first header
	r.next(in[3:7], t0)                  // the rest, and a byte of the body
	if !r.msg.started || !r.msg.start.Equal(t0) {
		t.Fatalf("after the first header: started %v at %v, want at %v", r.msg.started, r.msg.start, t0)
	}
	in = in[7:]
	for i := 1; len(in) > 0; i++ {
		n, _ := r.next(in, t0.Add(time.Duration(i)*time.Second))
		in = in[n:]
		if len(in) > 0 && !r.msg.start.Equal(t0) {
			t.Fatalf("start moved to %v", r.msg.start)
		}
	}
	if r.msg.started {
		t.Fatal("message still started after its last frame")
	}
	if !r.idle() {
		t.Fatal("not idle between frames")
	}
}

// TestWSReaderTrustsNoLength: a header claiming a large body allocates
// nothing ahead of the bytes that arrive.
func TestWSReaderTrustsNoLength(t *testing.T) {
	r := wsReader{max: 5 << 20}
	h := append([]byte{0x82, 0xff}, binary.BigEndian.AppendUint64(nil, 5<<20)...)
	h = append(h, 1, 2, 3, 4, 'x')
	if n, ev := r.next(h, time.Now()); n != len(h) || ev.kind != wsNone {
		t.Fatalf("next: %d bytes, %+v", n, ev)
	}
	if c := cap(r.msg.buf); c > growStep+1 {
		t.Fatalf("buffer of %d bytes for 1 byte received", c)
	}
}

// TestParseHeader compares the header decoder with gobwas/ws's on random
// headers.
func TestParseHeader(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		b := make([]byte, ws.MaxHeaderSize)
		for i := range b {
			b[i] = byte(rng.IntN(256))
		}
		want, werr := ws.ReadHeader(bytes.NewReader(b))
		got, ok := parseHeader(b[:headerSize(b[1])])
		if ok != (werr == nil) || ok && got != want {
			t.Fatalf("header %x: %+v %v, gobwas/ws says %+v %v", b, got, ok, want, werr)
		}
	}
}

// FuzzWSReader: the incremental decoder, fed in any pieces, finds exactly
// what the blocking reader finds, never panics, and never returns a
// message over the limit.
func FuzzWSReader(f *testing.F) {
	hello := []byte(`[null,"1","phoenix","heartbeat",{}]`)
	f.Add(slices.Concat(masked(ws.OpText, true, hello), masked(ws.OpPing, true, []byte("p"))), int64(0), uint8(3))
	f.Add(slices.Concat(masked(ws.OpText, false, hello[:5]), masked(ws.OpContinuation, true, hello[5:])), int64(16), uint8(1))
	f.Add([]byte{0x81, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0}, int64(0), uint8(0))
	f.Fuzz(func(t *testing.T, in []byte, max int64, piece uint8) {
		if max < 0 {
			max = -max
		}
		max %= 1 << 20
		want := referenceEvents(in, max)
		var got []wsEvent
		if piece == 0 {
			got = decodeWS(in, max)
		} else {
			got = decodeWS(in, max, int(piece), 1, int(piece)*7)
		}
		if err := sameEvents(got, want); err != nil {
			t.Fatal(err)
		}
		for _, ev := range got {
			if ev.kind == wsMessage && max > 0 && int64(len(ev.payload)) > max {
				t.Fatalf("message of %d bytes over the limit %d", len(ev.payload), max)
			}
		}
	})
}
