// Package gossipnet is memberlist's network transport for a meshcast node:
// UDP packets and TCP streams on one host:port, as memberlist's own
// NetTransport, except that nothing reaches memberlist before it proves
// it was sealed with the cluster's gossip key.
//
// memberlist checks the seal itself, but only after it has paid for the
// message: its transport allocates 64 KiB for every datagram and hands
// each one over on an unbuffered channel, logging every one that fails to
// open, so junk at line rate starves the failure detector of the CPU and
// socket buffer its probes need; and on a stream it reads the claimed
// length (up to 20 MiB) into memory before it opens anything, holding the
// connection for its TCP timeout, with no bound on how many such streams
// are open. Here a datagram is read into one reused buffer and dropped
// unless it opens with the key; a stream must send a sealed message no
// larger than Config.MaxStreamBytes within Config.StreamTimeout, at most
// Config.MaxPendingStreams streams are being checked at once, and only a
// stream that passed reaches memberlist (which opens it again: the cost
// of a second AES-GCM pass over a few messages a second).
package gossipnet

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/hashicorp/go-sockaddr"
	"github.com/hashicorp/memberlist"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// Config configures a Transport.
type Config struct {
	// BindAddr is the host:port bound for both TCP and UDP; port 0 picks
	// a free one.
	BindAddr string
	// Key is memberlist's SecretKey (16, 24 or 32 bytes).
	Key []byte
	// MaxPendingStreams bounds the inbound streams being checked at once;
	// if zero, 32.
	MaxPendingStreams int
	// MaxStreamBytes is the largest first message an inbound stream may
	// announce (memberlist's push/pull state, about 300 bytes per member);
	// if zero, 1 MiB.
	MaxStreamBytes int
	// StreamTimeout is how long an inbound stream has to deliver its first
	// message whole; if zero, 5 s.
	StreamTimeout time.Duration
	// Metrics receives the transport's counters; if nil, a private set.
	Metrics *metrics.Set
	// Log receives refusals (it should be rate-limited); if nil, discarded.
	Log *slog.Logger
}

// Defaults of Config.
const (
	DefaultMaxPendingStreams = 32
	DefaultMaxStreamBytes    = 1 << 20
	DefaultStreamTimeout     = 5 * time.Second
)

const (
	// udpBufSize fits any datagram memberlist sends (UDPBufferSize, 1400
	// bytes); a larger one is cut and dropped.
	udpBufSize = 8 << 10
	// udpBatch is how many datagrams one recvmmsg reads at most.
	udpBatch = 16
	// udpRecvBuf is the socket receive buffer asked for: room to ride out
	// a stall of the reader under a flood (~7000 datagrams of 1200 bytes).
	udpRecvBuf = 8 << 20
	// packetQueue is how many opened packets wait for memberlist.
	packetQueue = 256
)

// Transport implements memberlist.NodeAwareTransport.
type Transport struct {
	cfg    Config
	tcp    *net.TCPListener
	udp    *net.UDPConn
	opener *opener // the UDP reader's

	packets chan *memberlist.Packet
	streams chan net.Conn
	done    chan struct{}
	wg      sync.WaitGroup

	mu      sync.Mutex
	pending *pendingSet[net.Conn]
	closed  bool

	droppedJunk    *metrics.Counter
	droppedQueue   *metrics.Counter
	refused        func(reason string) *metrics.Counter
	passedStreams  *metrics.Counter
	passedPackets  *metrics.Counter
	shutdownOnce   sync.Once
	pendingMetricN string
}

// New binds the address and starts serving.
func New(cfg Config) (*Transport, error) {
	if cfg.MaxPendingStreams <= 0 {
		cfg.MaxPendingStreams = DefaultMaxPendingStreams
	}
	if cfg.MaxStreamBytes <= 0 {
		cfg.MaxStreamBytes = DefaultMaxStreamBytes
	}
	if cfg.StreamTimeout <= 0 {
		cfg.StreamTimeout = DefaultStreamTimeout
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.NewSet()
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	op, err := newOpener(cfg.Key)
	if err != nil {
		return nil, err
	}
	t := &Transport{
		cfg:     cfg,
		opener:  op,
		packets: make(chan *memberlist.Packet, packetQueue),
		streams: make(chan net.Conn),
		done:    make(chan struct{}),
		pending: newPendingSet[net.Conn](cfg.MaxPendingStreams),
	}
	if err := t.listen(); err != nil {
		return nil, err
	}
	ms := cfg.Metrics
	t.droppedJunk = ms.GetOrCreateCounter(`meshcast_gossip_packets_dropped_total{reason="unauthenticated"}`)
	t.droppedQueue = ms.GetOrCreateCounter(`meshcast_gossip_packets_dropped_total{reason="queue_full"}`)
	t.passedPackets = ms.GetOrCreateCounter("meshcast_gossip_packets_received_total")
	t.passedStreams = ms.GetOrCreateCounter("meshcast_gossip_streams_accepted_total")
	t.refused = func(reason string) *metrics.Counter {
		return ms.GetOrCreateCounter(`meshcast_gossip_streams_refused_total{reason="` + reason + `"}`)
	}
	t.pendingMetricN = "meshcast_gossip_streams_pending"
	ms.GetOrCreateGauge(t.pendingMetricN, func() float64 {
		t.mu.Lock()
		defer t.mu.Unlock()
		return float64(t.pending.len())
	})
	t.wg.Add(2)
	go func() { defer t.wg.Done(); t.readPackets() }()
	go func() { defer t.wg.Done(); t.acceptStreams() }()
	return t, nil
}

// listen binds TCP and UDP on one port; with port 0 it retries when the
// port the kernel gave TCP is taken for UDP.
func (t *Transport) listen() error {
	host, port, err := net.SplitHostPort(t.cfg.BindAddr)
	if err != nil {
		return fmt.Errorf("gossipnet: bind address %q: %w", t.cfg.BindAddr, err)
	}
	var ip net.IP
	if host != "" {
		if ip = net.ParseIP(host); ip == nil {
			return fmt.Errorf("gossipnet: bind address %q: not an IP", t.cfg.BindAddr)
		}
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return fmt.Errorf("gossipnet: bind port %q: %w", port, err)
	}
	tries := 1
	if p == 0 {
		tries = 10
	}
	for i := 0; ; i++ {
		tcp, err := net.ListenTCP("tcp", &net.TCPAddr{IP: ip, Port: p})
		if err != nil {
			return fmt.Errorf("gossipnet: listen tcp %s: %w", t.cfg.BindAddr, err)
		}
		bound := tcp.Addr().(*net.TCPAddr).Port
		udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: ip, Port: bound})
		if err != nil {
			tcp.Close()
			if i+1 < tries {
				continue
			}
			return fmt.Errorf("gossipnet: listen udp %s: %w", t.cfg.BindAddr, err)
		}
		setReadBuffer(udp, udpRecvBuf)
		t.tcp, t.udp = tcp, udp
		return nil
	}
}

// setReadBuffer asks for a receive buffer of size, past the kernel's cap
// (net.core.rmem_max) where the process may (CAP_NET_ADMIN), as quic-go
// does; best effort.
func setReadBuffer(c *net.UDPConn, size int) {
	if rc, err := c.SyscallConn(); err == nil {
		var serr error
		rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, size)
		})
		if serr == nil {
			return
		}
	}
	c.SetReadBuffer(size) // capped by the kernel
}

// Port is the bound port (TCP and UDP).
func (t *Transport) Port() int { return t.tcp.Addr().(*net.TCPAddr).Port }

// FinalAdvertiseAddr implements memberlist.Transport as NetTransport does:
// the given address, else the bound one (a private IP if bound to all).
func (t *Transport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	if port == 0 {
		port = t.Port()
	}
	if ip != "" {
		a := net.ParseIP(ip)
		if a == nil {
			return nil, 0, fmt.Errorf("gossipnet: advertise address %q", ip)
		}
		if a4 := a.To4(); a4 != nil {
			a = a4
		}
		return a, port, nil
	}
	bound := t.tcp.Addr().(*net.TCPAddr).IP
	if !bound.IsUnspecified() {
		return bound, t.Port(), nil
	}
	priv, err := privateIP()
	if err != nil {
		return nil, 0, err
	}
	return priv, t.Port(), nil
}

// WriteTo implements memberlist.Transport.
func (t *Transport) WriteTo(b []byte, addr string) (time.Time, error) {
	a, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return time.Time{}, err
	}
	_, err = t.udp.WriteTo(b, a)
	return time.Now(), err
}

// WriteToAddress implements memberlist.NodeAwareTransport.
func (t *Transport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	return t.WriteTo(b, a.Addr)
}

// PacketCh implements memberlist.Transport.
func (t *Transport) PacketCh() <-chan *memberlist.Packet { return t.packets }

// DialTimeout implements memberlist.Transport.
func (t *Transport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	return d.Dial("tcp", addr)
}

// DialAddressTimeout implements memberlist.NodeAwareTransport.
func (t *Transport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.DialTimeout(a.Addr, timeout)
}

// StreamCh implements memberlist.Transport.
func (t *Transport) StreamCh() <-chan net.Conn { return t.streams }

// Shutdown implements memberlist.Transport: it closes the sockets and the
// streams being checked, and waits for its goroutines.
func (t *Transport) Shutdown() error {
	t.shutdownOnce.Do(func() {
		t.mu.Lock()
		t.closed = true
		for _, e := range t.pending.order {
			e.s.Close()
		}
		t.mu.Unlock()
		close(t.done)
		t.tcp.Close()
		t.udp.Close()
		t.wg.Wait()
		t.cfg.Metrics.UnregisterMetric(t.pendingMetricN)
	})
	return nil
}

// readPackets passes the datagrams that open with the key to memberlist,
// each in a buffer of its own size; the rest cost their share of one
// recvmmsg and one failed AES-GCM open, in buffers that are reused.
func (t *Transport) readPackets() {
	var rb batchReader = ipv6.NewPacketConn(t.udp)
	if a, ok := t.udp.LocalAddr().(*net.UDPAddr); ok && a.IP.To4() != nil {
		rb = ipv4.NewPacketConn(t.udp)
	}
	msgs := make([]ipv4.Message, udpBatch)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{make([]byte, udpBufSize)}
	}
	for {
		n, err := rb.ReadBatch(msgs, 0)
		if err != nil {
			if t.isClosed() {
				return
			}
			t.cfg.Log.Warn("gossip: reading datagrams", "err", err)
			continue
		}
		now := time.Now()
		for _, m := range msgs[:n] {
			t.packet(m.Buffers[0][:m.N], m.Flags&unix.MSG_TRUNC != 0, m.Addr, now)
		}
	}
}

// batchReader is ipv4.PacketConn or ipv6.PacketConn (whose Message types
// are the same).
type batchReader interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
}

// packet passes one datagram to memberlist if it opens with the key.
func (t *Transport) packet(b []byte, truncated bool, from net.Addr, now time.Time) {
	if truncated || !t.opener.sealed(b, nil) {
		t.droppedJunk.Inc()
		return
	}
	t.passedPackets.Inc()
	select {
	case t.packets <- &memberlist.Packet{Buf: bytes.Clone(b), From: from, Timestamp: now}:
	default:
		t.droppedQueue.Inc()
	}
}

func (t *Transport) isClosed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.closed
}

// acceptStreams admits inbound streams into the pending set and checks
// each on a goroutine of its own.
func (t *Transport) acceptStreams() {
	var delay time.Duration
	for {
		c, err := t.tcp.AcceptTCP()
		if err != nil {
			if t.isClosed() {
				return
			}
			// Out of descriptors, most likely: back off as net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			t.cfg.Log.Warn("gossip: accepting a stream", "err", err)
			select {
			case <-time.After(delay):
			case <-t.done:
				return
			}
			continue
		}
		delay = 0
		addr := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			c.Close()
			return
		}
		evicted, ok := t.pending.add(c, addr)
		t.wg.Add(1)
		t.mu.Unlock()
		if ok {
			evicted.Close()
			t.refuse(evicted, "evicted", nil)
		}
		go func() { defer t.wg.Done(); t.check(c) }()
	}
}

// check reads a stream's first message; one sealed with the key goes to
// memberlist with the bytes read put back in front.
func (t *Transport) check(c net.Conn) {
	c.SetDeadline(time.Now().Add(t.cfg.StreamTimeout))
	msg, reason, err := t.readFirst(c)
	t.mu.Lock()
	mine := t.pending.remove(c)
	t.mu.Unlock()
	if !mine { // evicted (counted then) or shut down
		c.Close()
		return
	}
	if reason != "" {
		c.Close()
		t.refuse(c, reason, err)
		return
	}
	c.SetDeadline(time.Time{}) // memberlist sets its own
	t.passedStreams.Inc()
	select {
	case t.streams <- &replayConn{Conn: c, r: io.MultiReader(bytes.NewReader(msg), c)}:
	case <-t.done:
		c.Close()
	}
}

// readFirst reads and checks the first message; reason is empty when it
// passed. The buffer grows with the bytes that arrive, never to a length
// only claimed.
func (t *Transport) readFirst(c io.Reader) (msg []byte, reason string, err error) {
	var hdr [streamHeader]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return nil, readReason(err), err
	}
	if hdr[0] != encryptMsg {
		return nil, "not_sealed", nil
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > uint32(t.cfg.MaxStreamBytes) {
		return nil, "too_large", fmt.Errorf("announces %d bytes, over %d", n, t.cfg.MaxStreamBytes)
	}
	var b bytes.Buffer
	b.Write(hdr[:])
	if _, err := io.CopyN(&b, c, int64(n)); err != nil {
		return nil, readReason(err), err
	}
	op, err := newOpener(t.cfg.Key)
	if err != nil {
		return nil, "unauthenticated", err
	}
	if !op.sealed(b.Bytes()[streamHeader:], hdr[:]) {
		return nil, "unauthenticated", nil
	}
	return b.Bytes(), "", nil
}

func readReason(err error) string {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	return "incomplete"
}

// refuse counts and logs a stream that did not reach memberlist.
func (t *Transport) refuse(c net.Conn, reason string, err error) {
	t.refused(reason).Inc()
	args := []any{"remote", c.RemoteAddr().String(), "reason", reason}
	if err != nil {
		args = append(args, "err", err)
	}
	t.cfg.Log.Warn("gossip stream refused: no message sealed with the cluster key", args...)
}

// replayConn gives memberlist the checked message, then the connection.
type replayConn struct {
	net.Conn
	r io.Reader
}

func (c *replayConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// privateIP is the address NetTransport advertises when bound to all
// interfaces (go-sockaddr's choice of a private address).
func privateIP() (net.IP, error) {
	s, err := sockaddr.GetPrivateIP()
	if err != nil {
		return nil, fmt.Errorf("gossipnet: interface addresses: %w", err)
	}
	ip := net.ParseIP(s)
	if ip == nil {
		return nil, errors.New("gossipnet: no private IP address found, and no advertise address given")
	}
	return ip, nil
}
