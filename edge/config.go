package edge

import (
	"crypto/tls"
	"log/slog"
	"net/http"
	"time"
)

// Config configures a Server.
//
// Zero values follow one rule, the same in mesh and wal (and quic-go's):
// a field's zero value means its default, which DefaultConfig holds and
// the field's comment states ("if zero, …"); a negative value turns a
// limit off. On the command line (RegisterFlags) 0 turns a limit off.
type Config struct {
	// NodeID names this node in presence entries and logs. Required.
	NodeID string
	// Version is the node's release, answered at GET /version (if empty,
	// "unknown").
	Version string
	// JWTSecret enables auth: apikeys and access tokens must be HS256/384/512
	// JWTs signed with it carrying role and exp. If empty, the node runs
	// open.
	JWTSecret []byte

	// Limits on what one client may do. If zero, DefaultConfig's value;
	// if negative, no limit.
	MaxConnections     int     // per node (if zero, 100 000)
	MaxFrameBytes      int     // one WebSocket message or REST body (if zero, 5 MiB)
	MaxPayloadBytes    int     // one broadcast payload (if zero, 3 000 000)
	MaxTopicBytes      int     // a topic's length, "realtime:" included (if zero, 255)
	MaxChannelsPerConn int     // joined channels per connection (if zero, 100)
	JoinsPerSecond     float64 // per connection; exceeding closes the socket (if zero, 100)
	EventsPerSecond    float64 // broadcast and presence pushes per connection (if zero, 10 000)
	// BytesPerSecond bounds the payload bytes of a connection's broadcast
	// and presence pushes; the burst is one second of it, but at least one
	// largest message, so any message the size limits allow can pass. If
	// zero, 5 MiB/s; if negative, no limit.
	BytesPerSecond   float64
	MaxBatchMessages int // messages in one REST batch (if zero, 1000)
	// RESTEventsPerSecond bounds the messages REST requests from one
	// client address publish per second; the burst is one second of it,
	// but at least one whole batch. Over it a request is refused (429). If
	// zero, 10 000; if negative, no limit.
	RESTEventsPerSecond float64
	// AddressShare is the share of MaxConnections (and of MaxHandshakes)
	// one client address may hold, an IPv4 address or an IPv6 /64: past
	// it the address's new connections are refused, so that one address
	// cannot take every place. Behind a proxy that ends client
	// connections, every client has its address. If zero, 0.25; if
	// negative (or 1 and more), no per-address bound.
	AddressShare float64
	// QueueBytes bounds a connection's outbound queue; a client further
	// behind is closed as a slow consumer. The bound is never below one
	// publisher's burst (BytesPerSecond's burst plus one largest frame), so
	// a subscriber that keeps up with one publisher at the allowed rate is
	// never closed. If zero, 4 MiB; if negative, no bound.
	QueueBytes int

	// Postgres changes: what one connection's postgres_changes bindings
	// may ask of the change path (see wal.Limits). If zero, DefaultConfig's
	// value; if negative, no limit.
	MaxBindingsPerJoin int // bindings in one join (if zero, 100)
	MaxBindingsPerConn int // subscribed bindings of a connection's channels together (if zero, 500)
	MaxFilterBytes     int // one binding's filter, and its select's column names together (if zero, 4096)
	MaxPatternBytes    int // the value of a like, ilike, match or imatch filter (if zero, 256)
	MaxRegexInsts      int // the RE2 program of a match or imatch pattern (if zero, 64)

	// Presence limits. If zero, DefaultConfig's value; if negative, no
	// limit.
	MaxPresenceBytes        int     // one track payload (if zero, 64 KiB)
	MaxPresenceBytesPerConn int     // a connection's tracked payloads, over all its channels (if zero, 1 MiB)
	MaxPresenceKeys         int     // presence entries in one channel, one per tracking join (if zero, 1000)
	PresenceEventsPerSecond float64 // track/untrack per channel topic on this node (if zero, 100)

	// Timeouts. If zero, DefaultConfig's value; if negative, none.
	IdleTimeout  time.Duration // close sockets silent this long (if zero, 60 s)
	WriteTimeout time.Duration // a single write to a client (if zero, 10 s)
	// MessageTimeout bounds how long one client message may take to arrive
	// once its first frame header has: a fragmented message (or one large
	// frame) that stays unfinished longer closes the socket. If zero, 30 s.
	MessageTimeout time.Duration

	// HTTP server timeouts; WebSocket connections are not affected once
	// upgraded. If zero, DefaultConfig's value; if negative, none, except
	// that a negative HTTPIdleTimeout takes HTTPReadTimeout's, and with
	// both negative idle keep-alive connections are closed after 2 minutes.
	HTTPReadHeaderTimeout time.Duration // request line and headers (if zero, 5 s)
	HTTPReadTimeout       time.Duration // a whole request, body included (if zero, 30 s)
	HTTPWriteTimeout      time.Duration // a response (if zero, 30 s)
	HTTPIdleTimeout       time.Duration // a keep-alive connection between requests (if zero, 30 s)

	// JWTLeeway is the clock skew allowed when checking a token's nbf and
	// iat: a token not valid yet, or issued in the future, by more than
	// this is refused. exp is checked without leeway, as Supabase does. If
	// zero, 10 s; if negative, none.
	JWTLeeway time.Duration
	// WriteCoalesce is the shortest time between two writes to one
	// connection: frames for a connection written to less than this ago
	// wait (at most this long) and go out together. If zero, every frame
	// is written at once.
	WriteCoalesce time.Duration
	// WebTransportCoalesce is WriteCoalesce for WebTransport sessions,
	// whose writes cost a QUIC packet each (packing, AES-GCM, a sendmsg,
	// and the client's ACKs) where a WebSocket's cost a writev: frames
	// that share a write share packets. If zero, WriteCoalesce applies to
	// them too.
	WebTransportCoalesce time.Duration

	// ReadWorkers is how many goroutines read the WebSockets the poller
	// reports readable (Linux). If zero, one per CPU (GOMAXPROCS), at
	// least 2. Negative: no poller, a reader goroutine per WebSocket (as on
	// systems without one).
	ReadWorkers int

	// WebTransport (ServeWebTransport).

	// AllowedOrigins are the origins whose pages may connect, over
	// WebSocket or WebTransport: "https://app.example.com" (scheme, host
	// and port as the Origin header has them), "https://*.example.com"
	// (any subdomain) or "*". If empty, every origin may. Requests without
	// an Origin (not from a browser) are allowed.
	AllowedOrigins []string
	// WebTransportCert is the listener's certificate (--tls-cert). If nil,
	// the node generates self-signed ECDSA P-256 certificates valid for
	// WebTransportCertValidity, rotates them, and publishes their SHA-256
	// for serverCertificateHashes.
	WebTransportCert *tls.Certificate
	// WebTransportCertValidity is the validity of a generated certificate,
	// below MaxCertValidity; if zero, DefaultCertValidity. It rotates after
	// half of it.
	WebTransportCertValidity time.Duration
	// WebTransportAdvertise is where clients dial WebTransport, as
	// "host:port" or an https URL; if empty, derived from the listener and
	// the request (see README).
	WebTransportAdvertise string
	// DatagramQueue is how many datagrams wait per WebTransport session
	// before the oldest is dropped; if zero, 16.
	DatagramQueue int
	// MaxHandshakes bounds the QUIC connections of the WebTransport
	// listener whose handshake has not completed (a connection counts
	// against MaxConnections only once it has): past half of it new
	// clients must first validate their address (QUIC Retry), past it
	// they are refused. If zero, 2000; if negative, no bound.
	MaxHandshakes int
	// WebTransportWindow bounds what a WebTransport client may have
	// sent that the node has not read yet, per connection and per stream
	// (QUIC flow control). Streams start at 64 KiB and grow towards it only
	// as the node reads them, so a stream it never reads holds 64 KiB at
	// most. If zero, 1 MiB; if negative, quic-go's maxima (15 MiB per
	// connection, 6 MiB per stream).
	WebTransportWindow int

	// ChannelPolicy decides private channels on a node with a JWTSecret:
	// which roles may read and write which topics (see ChannelPolicy). If
	// nil, the claims rule: any verified role except anon may read and
	// write every private channel. A node without a JWTSecret never asks.
	ChannelPolicy ChannelPolicy

	// DemoTable, if set, serves the demo page's live table panel at
	// /demo/todos and below (make run-pg's node only: it writes to a
	// database without auth). Without it the panel only shows changes.
	DemoTable http.Handler

	// RecoveryWindow is how long this node keeps the broadcasts it
	// originates and receives, so that a client rejoining within it gets
	// what it missed (README, Recovery). If zero, 5 minutes; if negative,
	// recovery is off: no positions, no history.
	RecoveryWindow time.Duration
	// RecoveryBytes bounds the history's bytes on this node, over every
	// topic (the oldest message goes first). If zero, 64 MiB; if
	// negative, only the window bounds it.
	RecoveryBytes int

	Logger *slog.Logger // if nil, slog.Default()
}

// DefaultConfig returns the defaults: generous enough for one publisher at
// 5000 events/s and 20k connections from one address.
func DefaultConfig() Config {
	return Config{
		NodeID:                   "meshcast",
		MaxConnections:           100_000,
		AddressShare:             0.25,
		MaxHandshakes:            2000,
		WebTransportWindow:       1 << 20,
		MaxFrameBytes:            5 << 20,
		MaxPayloadBytes:          3_000_000,
		MaxTopicBytes:            255,
		MaxChannelsPerConn:       100,
		JoinsPerSecond:           100,
		EventsPerSecond:          10_000,
		BytesPerSecond:           5 << 20,
		MaxBatchMessages:         1000,
		RESTEventsPerSecond:      10_000,
		QueueBytes:               4 << 20,
		RecoveryWindow:           5 * time.Minute,
		RecoveryBytes:            64 << 20,
		MaxBindingsPerJoin:       100,
		MaxBindingsPerConn:       500,
		MaxFilterBytes:           4096,
		MaxPatternBytes:          256,
		MaxRegexInsts:            64,
		MaxPresenceBytes:         64 << 10,
		MaxPresenceBytesPerConn:  1 << 20,
		MaxPresenceKeys:          1000,
		PresenceEventsPerSecond:  100,
		IdleTimeout:              60 * time.Second,
		WriteTimeout:             10 * time.Second,
		MessageTimeout:           30 * time.Second,
		HTTPReadHeaderTimeout:    5 * time.Second,
		HTTPReadTimeout:          30 * time.Second,
		HTTPWriteTimeout:         30 * time.Second,
		HTTPIdleTimeout:          30 * time.Second,
		JWTLeeway:                10 * time.Second,
		DatagramQueue:            16,
		WebTransportCertValidity: DefaultCertValidity,
	}
}

// withDefaults applies the zero-value rule: a zero field takes
// DefaultConfig's value, and a negative limit becomes 0, which is how the
// server's code reads "off".
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	for _, f := range []struct{ v, def *int }{
		{&c.MaxConnections, &d.MaxConnections}, {&c.MaxFrameBytes, &d.MaxFrameBytes},
		{&c.MaxPayloadBytes, &d.MaxPayloadBytes}, {&c.MaxTopicBytes, &d.MaxTopicBytes},
		{&c.MaxChannelsPerConn, &d.MaxChannelsPerConn}, {&c.MaxBatchMessages, &d.MaxBatchMessages},
		{&c.QueueBytes, &d.QueueBytes}, {&c.MaxBindingsPerJoin, &d.MaxBindingsPerJoin},
		{&c.MaxBindingsPerConn, &d.MaxBindingsPerConn}, {&c.MaxFilterBytes, &d.MaxFilterBytes},
		{&c.MaxPatternBytes, &d.MaxPatternBytes}, {&c.MaxRegexInsts, &d.MaxRegexInsts},
		{&c.MaxPresenceBytes, &d.MaxPresenceBytes}, {&c.MaxPresenceBytesPerConn, &d.MaxPresenceBytesPerConn},
		{&c.MaxPresenceKeys, &d.MaxPresenceKeys}, {&c.MaxHandshakes, &d.MaxHandshakes},
		{&c.WebTransportWindow, &d.WebTransportWindow}, {&c.DatagramQueue, &d.DatagramQueue},
		{&c.RecoveryBytes, &d.RecoveryBytes},
	} {
		orDefault(f.v, *f.def)
	}
	for _, f := range []struct{ v, def *float64 }{
		{&c.JoinsPerSecond, &d.JoinsPerSecond}, {&c.EventsPerSecond, &d.EventsPerSecond},
		{&c.BytesPerSecond, &d.BytesPerSecond}, {&c.RESTEventsPerSecond, &d.RESTEventsPerSecond},
		{&c.AddressShare, &d.AddressShare}, {&c.PresenceEventsPerSecond, &d.PresenceEventsPerSecond},
	} {
		orDefault(f.v, *f.def)
	}
	for _, f := range []struct{ v, def *time.Duration }{
		{&c.IdleTimeout, &d.IdleTimeout}, {&c.WriteTimeout, &d.WriteTimeout},
		{&c.MessageTimeout, &d.MessageTimeout}, {&c.HTTPReadHeaderTimeout, &d.HTTPReadHeaderTimeout},
		{&c.HTTPReadTimeout, &d.HTTPReadTimeout}, {&c.HTTPWriteTimeout, &d.HTTPWriteTimeout},
		{&c.HTTPIdleTimeout, &d.HTTPIdleTimeout}, {&c.JWTLeeway, &d.JWTLeeway},
		{&c.WebTransportCertValidity, &d.WebTransportCertValidity}, {&c.RecoveryWindow, &d.RecoveryWindow},
	} {
		orDefault(f.v, *f.def)
	}
	return c
}

// orDefault sets *v to def if it is zero, and to 0 (off) if it is
// negative.
func orDefault[T int | float64 | time.Duration](v *T, def T) {
	switch {
	case *v == 0:
		*v = def
	case *v < 0:
		*v = 0
	}
}

// byteBurst is the burst of the per-connection byte rate: one second of
// it, but at least the largest message a client may send.
func (c *Config) byteBurst() int {
	return max(int(c.BytesPerSecond), c.MaxFrameBytes, c.MaxPayloadBytes, 1)
}

// EffectiveQueueBytes is the outbound queue bound a connection gets (0:
// none): QueueBytes, raised as queueLimit says. --help states it.
func (c *Config) EffectiveQueueBytes() int { return c.queueLimit() }

// queueLimit is the effective outbound queue bound (0 = none): QueueBytes,
// raised to one publisher's burst plus one largest frame when the byte
// rate is limited, so that a subscriber keeping up with the allowed rate
// is never a slow consumer.
func (c *Config) queueLimit() int {
	if c.QueueBytes <= 0 {
		return 0
	}
	if c.BytesPerSecond <= 0 {
		return c.QueueBytes
	}
	return max(c.QueueBytes, c.byteBurst()+c.MaxFrameBytes+maxFrameHeader)
}

// changeQueueLimit is how many bytes of Postgres changes a connection's
// queue holds before their delivery waits (flow control): a quarter of
// QueueBytes, 1 MiB when QueueBytes is 0. Changes do not count against
// the queue's slow-consumer bound.
func (c *Config) changeQueueLimit() int {
	if c.QueueBytes <= 0 {
		return 1 << 20
	}
	return max(c.QueueBytes/4, 1)
}

// changeStall is how long a connection whose queue is full of changes may
// take nothing from it before it is closed as a slow consumer:
// WriteTimeout, which a stuck write also takes to fail, or 10s when that
// is 0, so that a client that stops reading never holds the changes of
// every other subscriber for longer.
func (c *Config) changeStall() time.Duration {
	if c.WriteTimeout > 0 {
		return c.WriteTimeout
	}
	return 10 * time.Second
}
