package meshproto

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"reflect"
	"testing"
)

// FuzzReadFrame reads a lane's byte stream frame by frame, as a peer's
// reader does: every frame it returns is the one Decode finds at that
// offset, no buffer grows past the frame limit, and the stream ends with
// an end of stream or one of the codec's errors.
func FuzzReadFrame(f *testing.F) {
	var lane []byte
	for _, fr := range frames {
		lane = Append(lane, fr)
	}
	f.Add(lane, 0)
	f.Add(lane, 64)
	f.Add(Append(Append(nil, &Hello{NodeID: "n1-abc", Region: "iad", Incarnation: 9, MAC: make([]byte, 32)}), &Ping{Nanos: 5}), 4096)
	f.Add([]byte{0, 0, 0, 1, byte(TypePing)}, 16)
	f.Fuzz(func(t *testing.T, stream []byte, maxFrame int) {
		if maxFrame < 0 {
			maxFrame = -maxFrame
		}
		maxFrame %= 1 << 16
		limit := maxFrame
		if limit == 0 {
			limit = DefaultMaxFrame
		}
		br := bufio.NewReaderSize(bytes.NewReader(stream), 16)
		var buf []byte
		off := 0
		for i := 0; ; i++ {
			if i > len(stream) {
				t.Fatalf("%d frames from %d bytes", i, len(stream))
			}
			fr, nbuf, err := ReadFrame(br, maxFrame, buf)
			if cap(nbuf) > prefixLen+limit {
				t.Fatalf("buffer of %d bytes with a %d-byte limit", cap(nbuf), limit)
			}
			buf = nbuf
			want, n, derr := Decode(stream[off:], maxFrame)
			if err != nil {
				switch {
				case errors.Is(err, io.EOF):
					if off != len(stream) {
						t.Fatalf("EOF at %d of %d", off, len(stream))
					}
					return
				case errors.Is(err, io.ErrUnexpectedEOF):
					if !errors.Is(derr, ErrShort) {
						t.Fatalf("unexpected EOF at %d where Decode says %v", off, derr)
					}
					return
				case errors.Is(err, ErrTooLarge):
					if !errors.Is(derr, ErrTooLarge) {
						t.Fatalf("ReadFrame: %v, Decode: %v", err, derr)
					}
					return
				}
				if derr == nil || derr.Error() != err.Error() {
					t.Fatalf("ReadFrame: %v, Decode: %v", err, derr)
				}
				off += n // the frame was read whole; the stream goes on
				continue
			}
			if derr != nil || !reflect.DeepEqual(fr, want) {
				t.Fatalf("at %d ReadFrame gives %+v, Decode %+v (%v)", off, fr, want, derr)
			}
			off += n
		}
	})
}
