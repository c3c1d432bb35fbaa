//go:build !linux

package client

import (
	"errors"
	"time"
)

// Poller exists on Linux only (epoll); elsewhere it refuses to start.
type Poller struct{ failures }

var errNoPoller = errors.New("client: the poller needs Linux (epoll)")

func NewPoller(int, func() int64, Heartbeat, time.Duration) (*Poller, error) { return nil, errNoPoller }
func (g *Poller) Hold(Conn, Handler) error                                   { return errNoPoller }
func (g *Poller) Close()                                                     {}
