//go:build linux

package netpoll

import (
	"errors"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pair is a connected AF_UNIX stream pair: a write to peer makes sock
// readable before the write returns, so what the poller must report is
// known exactly, without waiting.
type pair struct {
	sock, peer *os.File
	rc         syscall.RawConn
}

func newPair(t testing.TB) *pair {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	p := &pair{sock: os.NewFile(uintptr(fds[0]), "sock"), peer: os.NewFile(uintptr(fds[1]), "peer")}
	if p.rc, err = p.sock.SyscallConn(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.sock.Close(); p.peer.Close() })
	return p
}

func (p *pair) send(t testing.TB, n int) {
	t.Helper()
	if _, err := p.peer.Write(make([]byte, n)); err != nil {
		t.Fatal(err)
	}
}

// drain reads everything sock holds without blocking.
func (p *pair) drain(t testing.TB) int {
	t.Helper()
	total := 0
	buf := make([]byte, 4096)
	for {
		var n int
		var rerr error
		p.rc.Read(func(fd uintptr) bool {
			n, rerr = unix.Read(int(fd), buf)
			return true
		})
		if n > 0 {
			total += n
			continue
		}
		if errors.Is(rerr, unix.EAGAIN) || n == 0 {
			return total
		}
		t.Fatal(rerr)
	}
}

func newPoller(t testing.TB) *Poller {
	t.Helper()
	p, err := New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// ready returns the keys the poller reports now, sorted, without
// waiting: a Wait that would block means none.
func ready(t testing.TB, p *Poller, sentinel *pair, key uint64) []uint64 {
	t.Helper()
	// The sentinel makes Wait return even when nothing else is ready; it
	// is reported in the same epoll_wait as everything ready before it.
	sentinel.send(t, 1)
	var got []uint64
	keys := make([]uint64, 8)
	for !slices.Contains(got, key) {
		n, err := p.Wait(keys)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, keys[:n]...)
	}
	sentinel.drain(t)
	if err := p.Rearm(sentinel.rc, key); err != nil {
		t.Fatal(err)
	}
	got = slices.DeleteFunc(got, func(k uint64) bool { return k == key })
	slices.Sort(got)
	return got
}

func TestOneShot(t *testing.T) {
	p := newPoller(t)
	a, b, s := newPair(t), newPair(t), newPair(t)
	const sk = 99
	for k, x := range map[uint64]*pair{1: a, 2: b, sk: s} {
		if err := p.Add(x.rc, k); err != nil {
			t.Fatal(err)
		}
	}
	if got := ready(t, p, s, sk); len(got) != 0 {
		t.Fatalf("nothing written, reported %v", got)
	}
	a.send(t, 10)
	if got := ready(t, p, s, sk); !slices.Equal(got, []uint64{1}) {
		t.Fatalf("a written: reported %v, want [1]", got)
	}
	a.send(t, 10)
	b.send(t, 1)
	if got := ready(t, p, s, sk); !slices.Equal(got, []uint64{2}) {
		t.Fatalf("a (reported, not rearmed) and b written: reported %v, want [2]", got)
	}
	if err := p.Rearm(a.rc, 1); err != nil {
		t.Fatal(err)
	}
	if got := ready(t, p, s, sk); !slices.Equal(got, []uint64{1}) {
		t.Fatalf("a rearmed with 20 bytes unread: reported %v, want [1]", got)
	}
	if n := a.drain(t); n != 20 {
		t.Fatalf("a held %d bytes, want 20", n)
	}
	b.drain(t)
	for k, x := range map[uint64]*pair{1: a, 2: b} {
		if err := p.Rearm(x.rc, k); err != nil {
			t.Fatal(err)
		}
	}
	if got := ready(t, p, s, sk); len(got) != 0 {
		t.Fatalf("both read empty and rearmed: reported %v", got)
	}
	b.peer.Close()
	if got := ready(t, p, s, sk); !slices.Equal(got, []uint64{2}) {
		t.Fatalf("b's peer closed: reported %v, want [2]", got)
	}
}

// TestKeys: every bit of a key comes back.
func TestKeys(t *testing.T) {
	p := newPoller(t)
	s := newPair(t)
	const sk = 7
	if err := p.Add(s.rc, sk); err != nil {
		t.Fatal(err)
	}
	for _, key := range []uint64{0, 1, 1 << 31, 1 << 32, 1<<63 | 5, 0xdeadbeefcafef00d, ^uint64(0)} {
		x := newPair(t)
		if err := p.Add(x.rc, key); err != nil {
			t.Fatal(err)
		}
		x.send(t, 1)
		if got := ready(t, p, s, sk); !slices.Equal(got, []uint64{key}) {
			t.Errorf("key %#x: reported %#x", key, got)
		}
		x.sock.Close()
	}
}

// TestSmallWait: more sockets ready than a Wait has room for come out in
// the following Waits, each once.
func TestSmallWait(t *testing.T) {
	p := newPoller(t)
	const n = 40
	for i := range n {
		x := newPair(t)
		if err := p.Add(x.rc, uint64(i)); err != nil {
			t.Fatal(err)
		}
		x.send(t, 1)
	}
	var got []uint64
	keys := make([]uint64, 3)
	for len(got) < n {
		k, err := p.Wait(keys)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, keys[:k]...)
	}
	slices.Sort(got)
	for i, k := range got {
		if k != uint64(i) {
			t.Fatalf("reported %v, want each of 0..%d once", got, n-1)
		}
	}
}

func TestClose(t *testing.T) {
	p, err := New()
	if err != nil {
		t.Fatal(err)
	}
	x := newPair(t)
	if err := p.Add(x.rc, 1); err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	go func() {
		_, err := p.Wait(make([]uint64, 4))
		done <- err
	}()
	// Wait parks (nothing is ready); Close must end it whenever it runs.
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrClosed) {
			t.Errorf("Wait after Close: %v, want os.ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Wait still blocked 10s after Close")
	}
	if err := p.Add(newPair(t).rc, 2); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Add after Close: %v, want os.ErrClosed", err)
	}
	if _, err := p.Wait(make([]uint64, 1)); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Wait after Close: %v, want os.ErrClosed", err)
	}
}

// TestClosedSocket: a closed socket is refused, never its number.
func TestClosedSocket(t *testing.T) {
	p := newPoller(t)
	x := newPair(t)
	if err := p.Add(x.rc, 1); err != nil {
		t.Fatal(err)
	}
	x.sock.Close()
	// The number is free: the next socket may well get it.
	y := newPair(t)
	if err := p.Rearm(x.rc, 1); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Rearm of a closed socket: %v, want os.ErrClosed", err)
	}
	if err := p.Add(x.rc, 1); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Add of a closed socket: %v, want os.ErrClosed", err)
	}
	if err := p.Add(y.rc, 2); err != nil {
		t.Errorf("Add of a new socket (maybe on the old number): %v", err)
	}
	if err := p.Add(y.rc, 2); !errors.Is(err, unix.EEXIST) {
		t.Errorf("second Add: %v, want EEXIST", err)
	}
	if err := p.Remove(y.rc); err != nil {
		t.Errorf("Remove: %v", err)
	}
	if err := p.Rearm(y.rc, 2); !errors.Is(err, unix.ENOENT) {
		t.Errorf("Rearm after Remove: %v, want ENOENT", err)
	}
}

// TestManySockets drives 300 sockets from several goroutines, each
// writing to its own sockets at random and rearming what it read, while
// one goroutine waits: every write is reported, and no socket is ever
// reported while its owner has not rearmed it.
func TestManySockets(t *testing.T) {
	p := newPoller(t)
	const owners, per, rounds = 6, 50, 30
	type sock struct {
		*pair
		armed chan struct{} // holds a token while the socket is armed
	}
	socks := make([]*sock, owners*per)
	for i := range socks {
		socks[i] = &sock{pair: newPair(t), armed: make(chan struct{}, 1)}
		socks[i].armed <- struct{}{}
		if err := p.Add(socks[i].rc, uint64(i)); err != nil {
			t.Fatal(err)
		}
	}
	reported := make([]chan struct{}, owners)
	for i := range reported {
		reported[i] = make(chan struct{}, per)
	}
	stop := make(chan struct{})
	var waiter sync.WaitGroup
	waiter.Add(1)
	go func() {
		defer waiter.Done()
		keys := make([]uint64, 16)
		for {
			n, err := p.Wait(keys)
			if err != nil {
				select {
				case <-stop:
				default:
					t.Errorf("Wait: %v", err)
				}
				return
			}
			for _, k := range keys[:n] {
				s := socks[k]
				select {
				case <-s.armed:
				default:
					t.Errorf("socket %d reported while not armed", k)
				}
				reported[int(k)/per] <- struct{}{}
			}
		}
	}()
	var wg sync.WaitGroup
	for o := range owners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(o), 1))
			mine := socks[o*per : (o+1)*per]
			for range rounds {
				var written []*sock
				for _, s := range mine {
					if rng.IntN(3) == 0 {
						s.send(t, 1+rng.IntN(100))
						written = append(written, s)
					}
				}
				for range written {
					select {
					case <-reported[o]:
					case <-time.After(10 * time.Second):
						t.Errorf("owner %d: a written socket not reported within 10s", o)
						return
					}
				}
				for _, s := range written {
					if s.drain(t) == 0 {
						t.Errorf("a reported socket held nothing")
					}
					s.armed <- struct{}{}
					if err := p.Rearm(s.rc, uint64(slices.Index(socks, s))); err != nil {
						t.Error(err)
					}
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	p.Close()
	waiter.Wait()
}
