//go:build !linux

package bench

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
)

// The region scenarios' subscribers are held by epoll pollers, which exist
// on Linux only (regionpoll_linux.go); elsewhere they refuse to run.

type msgHandler interface {
	onMessage(shard int, op ws.OpCode, b []byte, now int64)
}

type pollConn struct{ open bool }

type poller struct {
	mu    sync.Mutex
	conns map[int]*pollConn
}

type pollGroup struct {
	ps       []*poller
	stopping atomic.Bool
	wg       sync.WaitGroup
}

var errNoPoller = errors.New("bench: the region scenarios need Linux (epoll)")

func newPollGroup(int, func() int64, time.Duration) (*pollGroup, error) { return nil, errNoPoller }
func (g *pollGroup) add(*wsConn, msgHandler) error                      { return errNoPoller }
func (g *pollGroup) close()                                             {}
func (g *pollGroup) errs() (int, error)                                 { return 0, nil }
