package edge

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
)

// readAllWT reads frames from b until the reader stops, and returns the
// frames re-encoded and the error that stopped it.
func readAllWT(b []byte, max int) (frames [][]byte, err error) {
	fr := wtFrameReader{r: bufio.NewReaderSize(bytes.NewReader(b), 16), max: max}
	for {
		body, op, err := fr.next()
		if err != nil {
			return frames, err
		}
		frames = append(frames, wtFrame(op, body))
	}
}

func TestWTFrameReader(t *testing.T) {
	two := append(wtFrame(wtOpText, []byte(`[1]`)), wtFrame(wtOpBinary, []byte{3, 0})...)
	cases := []struct {
		name   string
		in     []byte
		frames int
		err    error // io.EOF, io.ErrUnexpectedEOF, or a *wtFrameError with this code
		code   uint16
	}{
		{"empty stream", nil, 0, io.EOF, 0},
		{"two frames", two, 2, io.EOF, 0},
		{"empty text body", wtFrame(wtOpText, nil), 1, io.EOF, 0},
		{"ends in a prefix", two[:3], 0, io.ErrUnexpectedEOF, 0},
		{"ends before the opcode", two[:4], 0, io.ErrUnexpectedEOF, 0},
		{"ends in a body", two[:6], 0, io.ErrUnexpectedEOF, 0},
		{"length 0", []byte{0, 0, 0, 0, 1}, 0, &wtFrameError{}, 1002},
		{"over max", binary.BigEndian.AppendUint32(nil, 1002), 0, &wtFrameError{}, 1009},
		{"max exactly", wtFrame(wtOpBinary, make([]byte, 1000)), 1, io.EOF, 0},
		{"unknown opcode", wtFrame(0, nil), 0, &wtFrameError{}, 1002},
		{"close body too long", wtFrame(wtOpClose, make([]byte, 126)), 0, &wtFrameError{}, 1002},
		{"close", wtFrame(wtOpClose, []byte{3, 232}), 1, io.EOF, 0},
	}
	for _, tc := range cases {
		frames, err := readAllWT(tc.in, 1000)
		var fe *wtFrameError
		switch {
		case len(frames) != tc.frames:
			t.Errorf("%s: %d frames, want %d", tc.name, len(frames), tc.frames)
		case tc.code != 0 && (!errors.As(err, &fe) || uint16(fe.code) != tc.code):
			t.Errorf("%s: %v, want close %d", tc.name, err, tc.code)
		case tc.code == 0 && !errors.Is(err, tc.err):
			t.Errorf("%s: %v, want %v", tc.name, err, tc.err)
		}
	}
}

// TestWTFrameReaderTrustsNoLength: a prefix claiming the whole limit
// allocates nothing ahead of the bytes that arrive.
func TestWTFrameReaderTrustsNoLength(t *testing.T) {
	in := append(binary.BigEndian.AppendUint32(nil, 5<<20), wtOpText, '[')
	fr := wtFrameReader{r: bufio.NewReader(bytes.NewReader(in)), max: 5 << 20}
	if err := fr.header(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := fr.body(); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("body: %v", err)
	}
	if c := cap(fr.msg.buf); c > growStep+1 {
		t.Fatalf("buffer of %d bytes for 1 byte received", c)
	}
}

// FuzzWTFrameReader: the stream decoder never panics, returns only bodies
// within the limit and known opcodes, stops with an end of stream or a
// framing error, and the frames it returns are exactly the bytes it
// consumed.
func FuzzWTFrameReader(f *testing.F) {
	f.Add(append(wtFrame(wtOpText, []byte(`[null,"1","phoenix","heartbeat",{}]`)), wtFrame(wtOpBinary, []byte{3, 1, 0, 1, 1, 0, 1, '1', 't', 'e', '{', '}'})...), 64)
	f.Add(wtFrame(wtOpClose, []byte{3, 232, 'b', 'y', 'e'}), 0)
	f.Add([]byte{0, 0, 0, 0}, 16)
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 1}, 0)
	f.Add(wtFrame(7, nil), 16)
	f.Fuzz(func(t *testing.T, in []byte, max int) {
		if max < 0 {
			max = -max
		}
		max %= 1 << 20
		frames, err := readAllWT(in, max)
		var fe *wtFrameError
		if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.As(err, &fe) {
			t.Fatalf("stopped with %v", err)
		}
		if fe != nil && fe.code != 1002 && fe.code != 1009 {
			t.Fatalf("close code %d", fe.code)
		}
		consumed := 0
		for _, fr := range frames {
			if op := fr[4]; op != wtOpText && op != wtOpBinary && op != wtOpClose {
				t.Fatalf("opcode %d", op)
			}
			if max > 0 && len(fr)-wtHeader > max {
				t.Fatalf("body of %d bytes over the limit %d", len(fr)-wtHeader, max)
			}
			if !bytes.Equal(fr, in[consumed:consumed+len(fr)]) {
				t.Fatalf("frame %x is not the input at %d", fr, consumed)
			}
			consumed += len(fr)
		}
		if errors.Is(err, io.EOF) && consumed != len(in) {
			t.Fatalf("clean end after %d of %d bytes", consumed, len(in))
		}
	})
}
