package edge

import (
	"flag"

	"github.com/meshcast/meshcast/internal/flagx"
)

// RegisterFlags registers the command-line flags of c's fields in fs,
// with c's values as their defaults (start from DefaultConfig). On the
// command line 0 turns a limit off (the field becomes -1); a setting that
// is not a limit takes its default at 0, as the field does. A usage
// string says what 0 means but not the default: meshcast's --help adds
// it. NodeID, JWTSecret, AllowedOrigins and WebTransportCert are the
// command's to set: their values need the environment or files.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.WebTransportAdvertise, "webtransport-advertise", c.WebTransportAdvertise, "WebTransport address clients dial, `host:port` or an https URL, published at /realtime/v1/webtransport/cert-hash")
	fs.IntVar(&c.DatagramQueue, "datagram-queue", c.DatagramQueue, "datagrams waiting per WebTransport session before the oldest is dropped (latest wins); smaller keeps them fresher under overload")
	fs.DurationVar(&c.WebTransportCertValidity, "webtransport-cert-validity", c.WebTransportCertValidity, "validity of a generated WebTransport certificate, under 336h (Chromium's limit for pinned certificates); rotated after half of it")
	flagx.Limit(fs, &c.MaxConnections, "max-connections", "max client connections on this node (0 = off)")
	flagx.Limit(fs, &c.AddressShare, "address-share", "share of --max-connections (and of --webtransport-max-handshakes) one client address, IPv4 or IPv6 /64, may hold; past it its new connections are refused (0 or 1 = no per-address bound)")
	flagx.Limit(fs, &c.MaxHandshakes, "webtransport-max-handshakes", "QUIC handshakes in progress on the WebTransport port; past half of it clients must validate their address (QUIC Retry), past it they are refused; a connection counts against --max-connections once its handshake completes (0 = off)")
	flagx.Limit(fs, &c.WebTransportWindow, "webtransport-receive-window", "most bytes a WebTransport client may have sent that the node has not read, per connection and per stream; streams start at 64 KiB and grow only as the node reads (0 = quic-go's 15 MiB / 6 MiB)")
	flagx.Limit(fs, &c.MaxFrameBytes, "max-frame-bytes", "max bytes of one WebSocket message or REST body (0 = off)")
	flagx.Limit(fs, &c.MaxPayloadBytes, "max-payload-bytes", "max bytes of one broadcast payload (0 = off)")
	flagx.Limit(fs, &c.MaxTopicBytes, "max-topic-bytes", "max bytes of a topic, \"realtime:\" included; realtime-js's binary frames carry at most 255 (0 = off)")
	flagx.Limit(fs, &c.MaxChannelsPerConn, "max-channels-per-conn", "max joined channels per connection (0 = off)")
	flagx.Limit(fs, &c.JoinsPerSecond, "joins-per-sec", "max channel joins per second per connection; exceeding closes the socket (0 = off)")
	flagx.Limit(fs, &c.EventsPerSecond, "events-per-sec", "max broadcast+presence pushes per second per connection; exceeding closes the channel (0 = off)")
	flagx.Limit(fs, &c.BytesPerSecond, "bytes-per-sec", "max bytes per second of a connection's broadcast+presence pushes, burst one second but at least one largest message; exceeding closes the channel (0 = off)")
	flagx.Limit(fs, &c.MaxBatchMessages, "max-batch-messages", "max messages in one REST /api/broadcast batch (0 = off)")
	flagx.Limit(fs, &c.RESTEventsPerSecond, "rest-events-per-sec", "max messages per second REST requests from one client address publish; over it a request gets 429 (0 = off)")
	flagx.Limit(fs, &c.QueueBytes, "queue-bytes", "outbound queue bound per connection; a client that falls this far behind is closed as a slow consumer; never below --bytes-per-sec's burst + --max-frame-bytes (0 = off)")
	flagx.DurationLimit(fs, &c.RecoveryWindow, "recovery-window", "how long each node keeps the broadcasts it originates and receives, so that a client rejoining within it gets what it missed (0 = recovery off: no positions, no history)")
	flagx.Limit(fs, &c.RecoveryBytes, "recovery-bytes", "max bytes of broadcast history on this node over all topics; the oldest message goes first, and a recovery that needs it fails explicitly (0 = only the window bounds it)")
	flagx.Limit(fs, &c.MaxPresenceBytes, "max-presence-bytes", "max bytes of one presence track payload (0 = off)")
	flagx.Limit(fs, &c.MaxPresenceBytesPerConn, "max-presence-bytes-per-conn", "max bytes of the presence payloads one connection tracks over all its channels (0 = off)")
	flagx.Limit(fs, &c.MaxPresenceKeys, "max-presence-keys", "max presence entries in one channel, one per tracking join (0 = off)")
	flagx.Limit(fs, &c.PresenceEventsPerSecond, "presence-events-per-sec", "max presence track/untrack events per second on one channel topic on this node; exceeding closes the channel that sent it (0 = off)")
	flagx.DurationLimit(fs, &c.IdleTimeout, "idle-timeout", "close sockets that send nothing (not even heartbeats) for this long (0 = off)")
	flagx.DurationLimit(fs, &c.WriteTimeout, "write-timeout", "max time of one write to a client (0 = off)")
	flagx.DurationLimit(fs, &c.MessageTimeout, "message-timeout", "max time a client message may take to arrive once begun, fragments included (0 = off)")
	flagx.DurationLimit(fs, &c.HTTPReadHeaderTimeout, "http-read-header-timeout", "max time to read an HTTP request's headers (0 = off)")
	flagx.DurationLimit(fs, &c.HTTPReadTimeout, "http-read-timeout", "max time to read a whole HTTP request, body included; not WebSockets once upgraded (0 = off)")
	flagx.DurationLimit(fs, &c.HTTPWriteTimeout, "http-write-timeout", "max time to write an HTTP response; not WebSockets once upgraded (0 = off)")
	flagx.DurationLimit(fs, &c.HTTPIdleTimeout, "http-idle-timeout", "close keep-alive HTTP connections idle this long (0 = the --http-read-timeout; both 0: 2m)")
	flagx.DurationLimit(fs, &c.JWTLeeway, "jwt-leeway", "clock skew allowed for a JWT's nbf and iat (tokens not valid yet, or issued in the future, are refused beyond it) (0 = none)")
	fs.DurationVar(&c.WriteCoalesce, "write-coalesce", c.WriteCoalesce, "shortest time between two writes to one client: frames for a client written to less than this ago wait at most this long and share one write (0 = write every frame at once)")
	fs.DurationVar(&c.WebTransportCoalesce, "webtransport-write-coalesce", c.WebTransportCoalesce, "--write-coalesce for WebTransport sessions, whose writes cost a QUIC packet each (0 = --write-coalesce applies)")
	fs.IntVar(&c.ReadWorkers, "read-workers", c.ReadWorkers, "goroutines that read the WebSockets the poller reports readable (Linux's epoll; an idle WebSocket then holds no goroutine): 0 = one per CPU, at least 2; -1 = no poller, a reader goroutine per WebSocket")
	flagx.Limit(fs, &c.MaxBindingsPerJoin, "max-bindings-per-join", "Postgres changes: max postgres_changes bindings in one channel join (0 = off)")
	flagx.Limit(fs, &c.MaxBindingsPerConn, "max-bindings-per-conn", "Postgres changes: max postgres_changes bindings of one connection's channels together (0 = off)")
	flagx.Limit(fs, &c.MaxFilterBytes, "max-filter-bytes", "Postgres changes: max bytes of one binding's filter, and of its select's column names together (0 = off)")
	flagx.Limit(fs, &c.MaxPatternBytes, "max-pattern-bytes", "Postgres changes: max bytes of a like, ilike, match or imatch filter value (0 = off)")
	flagx.Limit(fs, &c.MaxRegexInsts, "max-regex-insts", "Postgres changes: max RE2 instructions a match or imatch pattern compiles to, x{n} counting n times (0 = off)")
}
