package meshproto

import (
	"errors"
	"reflect"
	"testing"
)

// FuzzDecode feeds Decode arbitrary bytes. It must never panic, and what it
// decodes must encode back to a frame that decodes to the same value.
func FuzzDecode(f *testing.F) {
	for _, fr := range frames {
		f.Add(Append(nil, fr), 0)
	}
	f.Add([]byte{0xff, 0xff, 0xff, 0xff}, 0)
	f.Add([]byte{0, 0, 0, 2, byte(TypeHello), Version}, 16)
	f.Fuzz(func(t *testing.T, b []byte, maxFrame int) {
		fr, n, err := Decode(b, maxFrame)
		if err != nil {
			if fr != nil {
				t.Fatalf("frame %+v with error %v", fr, err)
			}
			known := errors.Is(err, ErrShort) || errors.Is(err, ErrTooLarge) || errors.Is(err, ErrVersion) ||
				errors.Is(err, ErrUnknownType) || errors.Is(err, ErrMalformed)
			if !known || n < 0 || n > len(b) {
				t.Fatalf("n = %d of %d, err = %v", n, len(b), err)
			}
			return
		}
		if n < headerLen || n > len(b) {
			t.Fatalf("n = %d of %d", n, len(b))
		}
		re := Append(nil, fr)
		if len(re) > n {
			// Only non-minimal varints shrink; a re-encoding never grows.
			t.Fatalf("re-encoding is %d bytes, input frame %d", len(re), n)
		}
		again, m, err := Decode(re, 0)
		if err != nil || m != len(re) {
			t.Fatalf("re-encoded %+v: n = %d of %d, err = %v", fr, m, len(re), err)
		}
		if !reflect.DeepEqual(again, fr) {
			t.Fatalf("decoded %+v, re-decoded %+v", fr, again)
		}
	})
}
