package wanemu

import (
	"net"
	"os"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// transport wraps memberlist's transport: packets are delayed like the
// mesh's, and a stream this node dials is delayed in both directions.
// Streams it accepts are not (their dialer does it).
type transport struct {
	memberlist.NodeAwareTransport
	e *Emulator
}

// Transport wraps memberlist's transport (memberlist.NewNetTransport) so
// that gossip across regions is delayed too: UDP packets by the one-way
// delay, TCP streams (push-pull state exchange, fallback probes) by the
// one-way delay each way.
func (e *Emulator) Transport(t memberlist.NodeAwareTransport) memberlist.NodeAwareTransport {
	return &transport{NodeAwareTransport: t, e: e}
}

func (t *transport) WriteTo(b []byte, addr string) (time.Time, error) {
	return t.WriteToAddress(b, memberlist.Address{Addr: addr})
}

func (t *transport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	now := time.Now()
	r, d, known := t.e.route(a.Addr)
	if !known {
		t.e.count(KindGossipUDP, "", len(b), true)
		return t.NodeAwareTransport.WriteToAddress(b, a)
	}
	if t.e.lose(r) {
		t.e.dropped(KindGossipUDP, r)
		return now, nil
	}
	t.e.count(KindGossipUDP, r, len(b), true)
	if d <= 0 {
		return t.NodeAwareTransport.WriteToAddress(b, a)
	}
	late := append([]byte(nil), b...)
	t.e.line.at(now.Add(d), func() { _, _ = t.NodeAwareTransport.WriteToAddress(late, a) })
	return now, nil
}

func (t *transport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

func (t *transport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	r, d, known := t.e.route(a.Addr)
	if !known {
		t.e.count(KindGossipTCP, "", 0, true)
		return t.NodeAwareTransport.DialAddressTimeout(a, timeout)
	}
	// The TCP handshake crosses the WAN too: one round trip before the
	// connection is usable.
	time.Sleep(2 * d)
	c, err := t.NodeAwareTransport.DialAddressTimeout(a, timeout)
	if err != nil {
		return nil, err
	}
	t.e.count(KindGossipTCP, r, 0, true)
	if d <= 0 && t.e.cfg.JitterMS == 0 {
		return &countedConn{Conn: c, e: t.e, region: r}, nil
	}
	return newDelayedConn(c, t.e, r), nil
}

// countedConn counts the bytes of an undelayed stream.
type countedConn struct {
	net.Conn
	e      *Emulator
	region string
}

func (c *countedConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.e.count(KindGossipTCP, c.region, n, false)
	return n, err
}

func (c *countedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.e.count(KindGossipTCP, c.region, n, false)
	return n, err
}

// delayedConn is a dialed TCP stream seen through the WAN: what the node
// writes reaches the peer one delay later, and what the peer sends is
// handed to the node's reads one delay after it arrived. Order is kept
// (due times never go backwards). A write returns at once (a writer
// goroutine sends it when due); a write error of the real connection
// surfaces on a later Write.
type delayedConn struct {
	net.Conn
	e      *Emulator
	region string

	wmu      sync.Mutex
	lastWDue time.Time
	wErr     error
	closing  bool
	wq       chan chunk    // to the writer goroutine
	flushed  chan struct{} // closed once the writer is done and the connection closed

	in       chan chunk // from the reader goroutine
	rmu      sync.Mutex
	cur      []byte
	rErr     error
	deadline time.Time
}

type chunk struct {
	b   []byte
	due time.Time
	err error
}

func newDelayedConn(c net.Conn, e *Emulator, region string) *delayedConn {
	dc := &delayedConn{
		Conn: c, e: e, region: region,
		wq:      make(chan chunk, 256),
		flushed: make(chan struct{}),
		in:      make(chan chunk, 64),
	}
	go dc.writeLoop()
	go dc.readLoop()
	return dc
}

// due returns the next due time for a direction, never before last.
func (c *delayedConn) due(last time.Time) time.Time {
	_, d, _ := c.e.route(c.Conn.RemoteAddr().String())
	t := time.Now().Add(d)
	if t.Before(last) {
		t = last
	}
	return t
}

func (c *delayedConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.wErr != nil {
		return 0, c.wErr
	}
	if c.closing {
		return 0, net.ErrClosed
	}
	c.lastWDue = c.due(c.lastWDue)
	c.e.count(KindGossipTCP, c.region, len(p), false)
	c.wq <- chunk{b: append([]byte(nil), p...), due: c.lastWDue}
	return len(p), nil
}

func (c *delayedConn) writeLoop() {
	defer close(c.flushed)
	defer c.Conn.Close()
	for ch := range c.wq {
		if w := time.Until(ch.due); w > 0 {
			time.Sleep(w)
		}
		_ = c.Conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Conn.Write(ch.b); err != nil {
			c.wmu.Lock()
			c.wErr = err
			c.wmu.Unlock()
			for range c.wq { // discard the rest until Close
			}
			return
		}
	}
}

// Close lets the delayed writes go out first (memberlist often writes a
// message and closes at once), then closes the connection.
func (c *delayedConn) Close() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if !c.closing {
		c.closing = true
		close(c.wq)
	}
	return nil
}

func (c *delayedConn) readLoop() {
	var last time.Time
	for {
		buf := make([]byte, 16<<10)
		n, err := c.Conn.Read(buf)
		var ch chunk
		if n > 0 {
			c.e.count(KindGossipTCP, c.region, n, false)
			last = c.due(last)
			ch = chunk{b: buf[:n], due: last}
		}
		if err != nil {
			ch.err = err
			ch.due = c.due(last)
		}
		select {
		case c.in <- ch:
		case <-c.flushed:
			return
		}
		if err != nil {
			return
		}
	}
}

func (c *delayedConn) SetDeadline(t time.Time) error { return c.SetReadDeadline(t) }

// SetWriteDeadline is ignored: writes return at once.
func (c *delayedConn) SetWriteDeadline(time.Time) error { return nil }

// SetReadDeadline applies to the next Read calls (not one in progress).
func (c *delayedConn) SetReadDeadline(t time.Time) error {
	c.rmu.Lock()
	c.deadline = t
	c.rmu.Unlock()
	return nil
}

func (c *delayedConn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for len(c.cur) == 0 {
		if c.rErr != nil {
			return 0, c.rErr
		}
		var timeout <-chan time.Time
		if !c.deadline.IsZero() {
			d := time.Until(c.deadline)
			if d <= 0 {
				return 0, os.ErrDeadlineExceeded
			}
			t := time.NewTimer(d)
			defer t.Stop()
			timeout = t.C
		}
		var ch chunk
		select {
		case ch = <-c.in:
		case <-timeout:
			return 0, os.ErrDeadlineExceeded
		case <-c.flushed:
			return 0, net.ErrClosed
		}
		if w := time.Until(ch.due); w > 0 {
			time.Sleep(w)
		}
		c.cur, c.rErr = ch.b, ch.err
	}
	n := copy(p, c.cur)
	c.cur = c.cur[n:]
	return n, nil
}
