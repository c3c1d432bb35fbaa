//go:build !linux

package netpoll

import (
	"errors"
	"syscall"
)

// Poller is not available on this system: New reports
// errors.ErrUnsupported.
type Poller struct{}

// New reports errors.ErrUnsupported: only Linux has a poller here.
func New() (*Poller, error) { return nil, errors.ErrUnsupported }

// Add reports errors.ErrUnsupported.
func (p *Poller) Add(c syscall.RawConn, key uint64) error { return errors.ErrUnsupported }

// Rearm reports errors.ErrUnsupported.
func (p *Poller) Rearm(c syscall.RawConn, key uint64) error { return errors.ErrUnsupported }

// Remove reports errors.ErrUnsupported.
func (p *Poller) Remove(c syscall.RawConn) error { return errors.ErrUnsupported }

// Wait reports errors.ErrUnsupported.
func (p *Poller) Wait(keys []uint64) (int, error) { return 0, errors.ErrUnsupported }

// Close does nothing.
func (p *Poller) Close() error { return nil }
