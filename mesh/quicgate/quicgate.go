// Package quicgate bounds what a QUIC listener holds for connections it
// has not admitted yet. quic-go starts a connection (state, goroutines,
// timers) for every ClientHello and keeps it for up to its handshake
// timeouts, whether or not the client ever answers; nothing bounds how
// many. A Gate hooks into a quic.Transport (ConnContext and
// VerifySourceAddress) and counts each connection from its first packet
// until the listener admits it (Admit: the handshake completed, or the
// peer authenticated) or it ends:
//
//   - past Config.Max connections in that stage a new one is refused
//     (CONNECTION_REFUSED, which costs one packet);
//   - past Config.RetryAbove, a client must first prove it receives at
//     its source address (a QUIC Retry, stateless for the server), so
//     spoofed ClientHellos cost nothing and every address counted is
//     real;
//   - a proven address may hold at most Config.PerAddr of them (IPv4
//     addresses count alone, IPv6 ones by /64).
package quicgate

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"

	"github.com/VictoriaMetrics/metrics"
	"github.com/quic-go/quic-go"
)

// Config configures a Gate.
type Config struct {
	// Max bounds the connections not admitted yet; if zero, 256.
	Max int
	// RetryAbove: with more connections than this not admitted yet, new
	// clients must validate their address (QUIC Retry); if zero, Max/2;
	// negative: never.
	RetryAbove int
	// PerAddr bounds the connections one validated address may have not
	// admitted yet; if zero, no bound.
	PerAddr int
	// Metrics receives the gate's metrics, named Name+"_in_progress"
	// (gauge), Name+`_refused_total{reason="full"|"address"}`,
	// Name+"_retries_total" and Name+"_abandoned_total"; nil: none.
	Metrics *metrics.Set
	Name    string
	// OnAbandon, if set, is called (on some goroutine of quic-go's) for
	// each connection that ended before it was admitted.
	OnAbandon func(remote net.Addr)
}

// DefaultMax is Config.Max's default.
const DefaultMax = 256

// ErrRefused is what ConnContext refuses a connection with.
var ErrRefused = errors.New("quicgate: too many connections in the handshake stage")

// Gate counts a listener's connections until they are admitted.
type Gate struct {
	cfg Config

	mu    sync.Mutex
	n     int
	per   map[netip.Prefix]int
	count counters
}

type counters struct {
	full, addr, retries, abandoned *metrics.Counter
}

// New returns a Gate; Install it on the listener's transport.
func New(cfg Config) *Gate {
	if cfg.Max <= 0 {
		cfg.Max = DefaultMax
	}
	if cfg.RetryAbove == 0 {
		cfg.RetryAbove = cfg.Max / 2
	}
	g := &Gate{cfg: cfg, per: make(map[netip.Prefix]int)}
	if ms := cfg.Metrics; ms != nil {
		ms.NewGauge(cfg.Name+"_in_progress", func() float64 { return float64(g.InProgress()) })
		g.count = counters{
			full:      ms.NewCounter(cfg.Name + `_refused_total{reason="full"}`),
			addr:      ms.NewCounter(cfg.Name + `_refused_total{reason="address"}`),
			retries:   ms.NewCounter(cfg.Name + "_retries_total"),
			abandoned: ms.NewCounter(cfg.Name + "_abandoned_total"),
		}
	}
	return g
}

// Install sets tr's ConnContext and VerifySourceAddress (before tr listens).
func (g *Gate) Install(tr *quic.Transport) {
	tr.ConnContext = g.connContext
	tr.VerifySourceAddress = g.verifySource
}

// InProgress is the number of connections not admitted yet.
func (g *Gate) InProgress() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.n
}

func (g *Gate) verifySource(net.Addr) bool {
	g.mu.Lock()
	retry := g.cfg.RetryAbove >= 0 && g.n >= g.cfg.RetryAbove
	g.mu.Unlock()
	if retry {
		inc(g.count.retries)
	}
	return retry
}

type ticketKey struct{}

// ticket is one counted connection.
type ticket struct {
	g      *Gate
	key    netip.Prefix
	remote net.Addr
	once   sync.Once
}

func (g *Gate) connContext(ctx context.Context, info *quic.ClientInfo) (context.Context, error) {
	key := prefixOf(info.RemoteAddr)
	g.mu.Lock()
	if g.n >= g.cfg.Max {
		g.mu.Unlock()
		inc(g.count.full)
		return ctx, ErrRefused
	}
	if info.AddrVerified && g.cfg.PerAddr > 0 && g.per[key] >= g.cfg.PerAddr {
		g.mu.Unlock()
		inc(g.count.addr)
		return ctx, ErrRefused
	}
	g.n++
	g.per[key]++
	g.mu.Unlock()
	t := &ticket{g: g, key: key, remote: info.RemoteAddr}
	// quic-go ends this context when the connection closes or its
	// handshake fails.
	context.AfterFunc(ctx, func() { t.release(false) })
	return context.WithValue(ctx, ticketKey{}, t), nil
}

// Admit ends the count of c (accepted through a gated transport): its
// handshake stage is over. Calling it again, or for a connection of
// another transport, does nothing.
func Admit(c *quic.Conn) {
	if t, ok := c.Context().Value(ticketKey{}).(*ticket); ok {
		t.release(true)
	}
}

func (t *ticket) release(admitted bool) {
	t.once.Do(func() {
		g := t.g
		g.mu.Lock()
		g.n--
		if g.per[t.key]--; g.per[t.key] <= 0 {
			delete(g.per, t.key)
		}
		g.mu.Unlock()
		if !admitted {
			inc(g.count.abandoned)
			if g.cfg.OnAbandon != nil {
				g.cfg.OnAbandon(t.remote)
			}
		}
	})
}

func inc(c *metrics.Counter) {
	if c != nil {
		c.Inc()
	}
}

// prefixOf is the unit one address counts in.
func prefixOf(a net.Addr) netip.Prefix {
	var ip netip.Addr
	switch a := a.(type) {
	case *net.UDPAddr:
		ip = a.AddrPort().Addr()
	case *net.TCPAddr:
		ip = a.AddrPort().Addr()
	default:
		if ap, err := netip.ParseAddrPort(a.String()); err == nil {
			ip = ap.Addr()
		}
	}
	return AddrKey(ip)
}

// AddrKey is the unit a client address counts in: an IPv4 address alone,
// an IPv6 one by its /64 (what one subscriber is usually given). Listeners
// that bound admitted connections per address use it too.
func AddrKey(ip netip.Addr) netip.Prefix {
	ip = ip.Unmap()
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.Prefix(bits)
	return p
}
