package wanemu

import (
	"net"
	"time"
)

// packetConn delays the packets a node sends to other regions. Reads are
// untouched: the sender delayed them.
type packetConn struct {
	net.PacketConn
	e    *Emulator
	kind string
}

// PacketConn wraps the QUIC mesh's UDP socket: a packet to a node of
// another region leaves after the one-way delay (and may be dropped by
// Config.Loss). WriteTo returns at once, as a kernel socket buffer would.
func (e *Emulator) PacketConn(pc net.PacketConn) net.PacketConn {
	return &packetConn{PacketConn: pc, e: e, kind: KindMesh}
}

func (c *packetConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	r, d, known := c.e.route(addr.String())
	if !known {
		c.e.count(c.kind, "", len(p), true)
		return c.PacketConn.WriteTo(p, addr)
	}
	if c.e.lose(r) {
		c.e.dropped(c.kind, r)
		return len(p), nil
	}
	c.e.count(c.kind, r, len(p), true)
	if d <= 0 {
		return c.PacketConn.WriteTo(p, addr)
	}
	late := append([]byte(nil), p...) // the caller reuses p
	c.e.line.at(time.Now().Add(d), func() {
		// Errors are what a lost packet would be: QUIC recovers.
		_, _ = c.PacketConn.WriteTo(late, addr)
	})
	return len(p), nil
}
