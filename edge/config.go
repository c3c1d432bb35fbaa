package edge

import (
	"log/slog"
	"time"
)

// Config configures a Server. The zero value of a limit means "off"; use
// DefaultConfig for the defaults the CLI documents.
type Config struct {
	// NodeID names this node in presence entries and logs.
	NodeID string
	// JWTSecret enables auth: apikeys and access tokens must be HS256/384/512
	// JWTs signed with it carrying role and exp. Empty runs the node open.
	JWTSecret []byte

	MaxConnections     int           // per node
	MaxFrameBytes      int           // one WebSocket message
	MaxPayloadBytes    int           // one broadcast or presence payload
	MaxChannelsPerConn int           // joined channels per connection
	JoinsPerSecond     float64       // per connection; exceeding closes the socket
	EventsPerSecond    float64       // broadcast and presence pushes per connection
	MaxBatchMessages   int           // messages in one REST batch
	QueueBytes         int           // outbound queue bound per connection
	IdleTimeout        time.Duration // close sockets silent this long
	WriteTimeout       time.Duration // a single write to a client
	// WriteCoalesce is the shortest time between two writes to one
	// connection: frames for a connection written to less than this ago
	// wait (at most this long) and go out together. 0 writes every frame
	// at once.
	WriteCoalesce time.Duration

	Logger *slog.Logger
}

// DefaultConfig returns the defaults: generous enough for one publisher at
// 5000 events/s and 20k connections from one address.
func DefaultConfig() Config {
	return Config{
		NodeID:             "meshcast",
		MaxConnections:     100_000,
		MaxFrameBytes:      5 << 20,
		MaxPayloadBytes:    3_000_000,
		MaxChannelsPerConn: 100,
		JoinsPerSecond:     100,
		EventsPerSecond:    10_000,
		MaxBatchMessages:   1000,
		QueueBytes:         4 << 20,
		IdleTimeout:        60 * time.Second,
		WriteTimeout:       10 * time.Second,
	}
}
