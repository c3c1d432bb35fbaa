// Package client is meshbench's side of the wire: many client connections
// to a meshcast node (or another realtime server) at little CPU each.
// WebSocket and WebTransport connections carry whole frames in and out;
// holders read thousands of them (a goroutine each, or a few epoll
// pollers) and keep them alive with heartbeats; Phoenix joins, pushes and
// heartbeats are written with wire/phx.
package client

import (
	"errors"
	"fmt"
	"time"

	"github.com/gobwas/ws"
)

// Conn is one client connection, WebSocket or WebTransport: whole frames in
// and out, the WebSocket opcodes (text, binary) naming their kind on both.
type Conn interface {
	// WriteFrame writes one frame; it is safe for concurrent use.
	WriteFrame(op ws.OpCode, p []byte) error
	// ReadFrame returns the next data message, valid until the next call
	// (one goroutine reads). A close from the server is a *CloseError.
	ReadFrame() (ws.OpCode, []byte, error)
	SetDeadline(t time.Time) error
	SetWriteDeadline(t time.Time) error
	Close() error           // no closing handshake
	CloseGracefully() error // a close frame (best effort), then Close
}

// ErrClosed is what a *CloseError is: the server closed the connection.
var ErrClosed = errors.New("client: connection closed by the server")

// CloseError is the server's close frame.
type CloseError struct {
	Code   int
	Reason string
}

func (e *CloseError) Error() string {
	return fmt.Sprintf("%v (code %d %q)", ErrClosed, e.Code, e.Reason)
}

// Unwrap makes errors.Is(err, ErrClosed) true.
func (e *CloseError) Unwrap() error { return ErrClosed }

// maxFrame bounds what a client accepts from a server.
const maxFrame = 1 << 20
