//go:build linux

package netpoll

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// Poller is an epoll instance. Add, Rearm and Remove may be called from
// any goroutine; Wait from one at a time.
type Poller struct {
	f      *os.File        // the epoll descriptor, in Go's runtime poller
	rc     syscall.RawConn // f's
	events []unix.EpollEvent
}

var (
	errPollerClosed = fmt.Errorf("netpoll: poller %w", os.ErrClosed)
	errSocketClosed = fmt.Errorf("netpoll: socket %w", os.ErrClosed)
)

// interest is what a socket is watched for: readable (or hung up, or
// failed: a read then tells which), reported once per arming.
const interest = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT

// New returns a Poller.
func New() (*Poller, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	// Non-blocking, so that os.NewFile puts it in Go's runtime poller and
	// Wait parks its goroutine until the epoll set has something to say.
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("setnonblock", err)
	}
	f := os.NewFile(uintptr(fd), "epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &Poller{f: f, rc: rc, events: make([]unix.EpollEvent, 256)}, nil
}

// Add watches the socket c, reported with key, armed at once.
func (p *Poller) Add(c syscall.RawConn, key uint64) error {
	return p.ctl(c, unix.EPOLL_CTL_ADD, key, "epoll_ctl add")
}

// Rearm arms c again after it was reported: it is reported as soon as it
// is readable, at once if it already is.
func (p *Poller) Rearm(c syscall.RawConn, key uint64) error {
	return p.ctl(c, unix.EPOLL_CTL_MOD, key, "epoll_ctl mod")
}

// Remove stops watching c. Closing c does too.
func (p *Poller) Remove(c syscall.RawConn) error {
	return p.ctl(c, unix.EPOLL_CTL_DEL, 0, "epoll_ctl del")
}

func (p *Poller) ctl(c syscall.RawConn, op int, key uint64, what string) error {
	ev := unix.EpollEvent{Events: interest, Fd: int32(uint32(key)), Pad: int32(uint32(key >> 32))}
	var err error
	cerr := c.Control(func(fd uintptr) {
		perr := p.rc.Control(func(epfd uintptr) {
			err = unix.EpollCtl(int(epfd), op, int(fd), &ev)
		})
		if perr != nil {
			err = errPollerClosed
		}
	})
	if cerr != nil {
		// RawConn.Control fails only on a closed socket.
		return errSocketClosed
	}
	if err != nil {
		var errno syscall.Errno
		if errors.As(err, &errno) {
			return os.NewSyscallError(what, errno)
		}
		return err
	}
	return nil
}

// Wait blocks until at least one watched socket is readable and stores
// the keys of those reported (at most len(keys)) in keys. After Close it
// returns an error wrapping os.ErrClosed.
func (p *Poller) Wait(keys []uint64) (int, error) {
	if len(keys) == 0 {
		return 0, errors.New("netpoll: Wait needs room for a key")
	}
	events := p.events[:min(len(keys), len(p.events))]
	var n int
	var werr error
	err := p.rc.Read(func(epfd uintptr) bool {
		for {
			n, werr = unix.EpollWait(int(epfd), events, 0)
			if werr != unix.EINTR {
				break
			}
		}
		// Nothing ready: park until the epoll descriptor is readable.
		return n > 0 || werr != nil
	})
	if err != nil {
		return 0, errPollerClosed
	}
	if werr != nil {
		return 0, os.NewSyscallError("epoll_wait", werr)
	}
	for i, ev := range events[:n] {
		keys[i] = uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
	}
	return n, nil
}

// Close releases the epoll instance and wakes a Wait.
func (p *Poller) Close() error {
	if err := p.f.Close(); err != nil {
		return fmt.Errorf("netpoll: %w", err)
	}
	return nil
}
