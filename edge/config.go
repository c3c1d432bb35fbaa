package edge

import (
	"crypto/tls"
	"log/slog"
	"net/http"
	"time"
)

// Config configures a Server. The zero value of a limit means "off"; use
// DefaultConfig for the defaults the CLI documents.
type Config struct {
	// NodeID names this node in presence entries and logs.
	NodeID string
	// Version is the node's release, answered at GET /version (if empty,
	// "unknown").
	Version string
	// JWTSecret enables auth: apikeys and access tokens must be HS256/384/512
	// JWTs signed with it carrying role and exp. Empty runs the node open.
	JWTSecret []byte

	MaxConnections     int     // per node
	MaxFrameBytes      int     // one WebSocket message
	MaxPayloadBytes    int     // one broadcast payload
	MaxTopicBytes      int     // a topic's length, "realtime:" included
	MaxChannelsPerConn int     // joined channels per connection
	JoinsPerSecond     float64 // per connection; exceeding closes the socket
	EventsPerSecond    float64 // broadcast and presence pushes per connection
	// BytesPerSecond bounds the payload bytes of a connection's broadcast
	// and presence pushes; the burst is one second of it, but at least one
	// largest message, so any message the size limits allow can pass.
	BytesPerSecond   float64
	MaxBatchMessages int // messages in one REST batch
	// RESTEventsPerSecond bounds the messages REST requests from one
	// client address publish per second; the burst is one second of it,
	// but at least one whole batch. Over it a request is refused (429).
	RESTEventsPerSecond float64
	// AddressShare is the share of MaxConnections (and of MaxHandshakes)
	// one client address may hold, an IPv4 address or an IPv6 /64: past
	// it the address's new connections are refused, so that one address
	// cannot take every place. 0 (or 1 and more) bounds nothing. Behind a
	// proxy that ends client connections, every client has its address.
	AddressShare float64
	// QueueBytes bounds a connection's outbound queue; a client further
	// behind is closed as a slow consumer. The bound is never below one
	// publisher's burst (BytesPerSecond's burst plus one largest frame), so
	// a subscriber that keeps up with one publisher at the allowed rate is
	// never closed.
	QueueBytes int

	// Postgres changes: what one connection's postgres_changes bindings
	// may ask of the change path (see wal.Limits).
	MaxBindingsPerJoin int // bindings in one join
	MaxBindingsPerConn int // subscribed bindings of a connection's channels together
	MaxFilterBytes     int // one binding's filter, and its select's column names together
	MaxPatternBytes    int // the value of a like, ilike, match or imatch filter
	MaxRegexInsts      int // the RE2 program of a match or imatch pattern

	// Presence limits.
	MaxPresenceBytes        int     // one track payload
	MaxPresenceBytesPerConn int     // a connection's tracked payloads, over all its channels
	MaxPresenceKeys         int     // presence entries in one channel (one per tracking join)
	PresenceEventsPerSecond float64 // track/untrack per channel topic on this node

	IdleTimeout  time.Duration // close sockets silent this long
	WriteTimeout time.Duration // a single write to a client
	// MessageTimeout bounds how long one client message may take to arrive
	// once its first frame header has: a fragmented message (or one large
	// frame) that stays unfinished longer closes the socket.
	MessageTimeout time.Duration

	// HTTP server timeouts; WebSocket connections are not affected once
	// upgraded.
	HTTPReadHeaderTimeout time.Duration // request line and headers
	HTTPReadTimeout       time.Duration // a whole request, body included
	HTTPWriteTimeout      time.Duration // a response
	HTTPIdleTimeout       time.Duration // a keep-alive connection between requests

	// JWTLeeway is the clock skew allowed when checking a token's nbf and
	// iat: a token not valid yet, or issued in the future, by more than
	// this is refused. exp is checked without leeway, as Supabase does.
	JWTLeeway time.Duration
	// WriteCoalesce is the shortest time between two writes to one
	// connection: frames for a connection written to less than this ago
	// wait (at most this long) and go out together. 0 writes every frame
	// at once.
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
	// WebTransportCert is the listener's certificate (--tls-cert). nil:
	// the node generates self-signed ECDSA P-256 certificates valid for
	// WebTransportCertValidity, rotates them, and publishes their SHA-256
	// for serverCertificateHashes.
	WebTransportCert *tls.Certificate
	// WebTransportCertValidity is the validity of a generated certificate,
	// below MaxCertValidity (0: DefaultCertValidity). It rotates after
	// half of it.
	WebTransportCertValidity time.Duration
	// WebTransportAdvertise is where clients dial WebTransport, as
	// "host:port" or an https URL; empty derives it from the listener and
	// the request (see README).
	WebTransportAdvertise string
	// DatagramQueue is how many datagrams wait per WebTransport session
	// before the oldest is dropped (0: 16).
	DatagramQueue int
	// MaxHandshakes bounds the QUIC connections of the WebTransport
	// listener whose handshake has not completed (a connection counts
	// against MaxConnections only once it has): past half of it new
	// clients must first validate their address (QUIC Retry), past it
	// they are refused. 0: unbounded.
	MaxHandshakes int
	// WebTransportWindow bounds what a WebTransport client may have
	// sent that the node has not read yet, per connection and per stream
	// (QUIC flow control). Streams start at 64 KiB and grow towards it only
	// as the node reads them, so a stream it never reads holds 64 KiB at
	// most. 0: quic-go's maxima (15 MiB per connection, 6 MiB per stream).
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
	// what it missed (README, Recovery). If zero, recovery is off: no
	// positions, no history.
	RecoveryWindow time.Duration
	// RecoveryBytes bounds the history's bytes on this node, over every
	// topic (the oldest message goes first); if zero, only the window
	// bounds it.
	RecoveryBytes int

	Logger *slog.Logger
}

// DefaultConfig returns the defaults: generous enough for one publisher at
// 5000 events/s and 20k connections from one address.
func DefaultConfig() Config {
	return Config{
		NodeID:                  "meshcast",
		MaxConnections:          100_000,
		AddressShare:            0.25,
		MaxHandshakes:           2000,
		WebTransportWindow:      1 << 20,
		WebTransportCoalesce:    10 * time.Millisecond,
		MaxFrameBytes:           5 << 20,
		MaxPayloadBytes:         3_000_000,
		MaxTopicBytes:           255,
		MaxChannelsPerConn:      100,
		JoinsPerSecond:          100,
		EventsPerSecond:         10_000,
		BytesPerSecond:          5 << 20,
		MaxBatchMessages:        1000,
		RESTEventsPerSecond:     10_000,
		QueueBytes:              4 << 20,
		RecoveryWindow:          5 * time.Minute,
		RecoveryBytes:           64 << 20,
		MaxBindingsPerJoin:      100,
		MaxBindingsPerConn:      500,
		MaxFilterBytes:          4096,
		MaxPatternBytes:         256,
		MaxRegexInsts:           64,
		MaxPresenceBytes:        64 << 10,
		MaxPresenceBytesPerConn: 1 << 20,
		MaxPresenceKeys:         1000,
		PresenceEventsPerSecond: 100,
		IdleTimeout:             60 * time.Second,
		WriteTimeout:            10 * time.Second,
		MessageTimeout:          30 * time.Second,
		HTTPReadHeaderTimeout:   5 * time.Second,
		HTTPReadTimeout:         30 * time.Second,
		HTTPWriteTimeout:        30 * time.Second,
		HTTPIdleTimeout:         30 * time.Second,
		JWTLeeway:               10 * time.Second,
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
