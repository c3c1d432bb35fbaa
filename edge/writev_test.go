package edge

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// socketPair returns the two ends of a Unix stream socket; the test's
// cleanup closes them.
func socketPair(t testing.TB) (w int, r *os.File) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	r = os.NewFile(uintptr(fds[1]), "reader")
	t.Cleanup(func() { unix.Close(fds[0]); r.Close() })
	return fds[0], r
}

// TestWritev checks that one and several frames arrive whole and in order.
func TestWritev(t *testing.T) {
	w, r := socketPair(t)
	for _, n := range []int{1, 3, 40} {
		var frames [][]byte
		var want []byte
		for i := range n {
			f := bytes.Repeat([]byte{byte('a' + i%26)}, 10+i)
			frames = append(frames, f, nil) // empty frames are skipped
			want = append(want, f...)
		}
		if n == 1 {
			frames = frames[:1]
		}
		got, err := writev(w, frames)
		if err != nil || got != len(want) {
			t.Fatalf("%d frames: wrote %d of %d: %v", n, got, len(want), err)
		}
		buf := make([]byte, len(want))
		if _, err := io.ReadFull(r, buf); err != nil || !bytes.Equal(buf, want) {
			t.Fatalf("%d frames: read %q, %v", n, buf, err)
		}
	}
}

// BenchmarkWritev writes batches of 150-byte frames to a socket that a
// goroutine drains: x/sys's Writev against writev. allocs/op is per write.
func BenchmarkWritev(b *testing.B) {
	for _, n := range []int{1, 16} {
		frames := make([][]byte, n)
		for i := range frames {
			frames[i] = bytes.Repeat([]byte{'x'}, 150)
		}
		for _, impl := range []struct {
			name string
			fn   func(int, [][]byte) (int, error)
		}{{"x-sys-Writev", unix.Writev}, {"writev", writev}} {
			b.Run(fmt.Sprintf("frames=%d/%s", n, impl.name), func(b *testing.B) {
				w, r := socketPair(b)
				go io.Copy(io.Discard, r)
				b.ReportAllocs()
				for b.Loop() {
					if _, err := impl.fn(w, frames); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
