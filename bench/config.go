package bench

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/meshcast/meshcast/bench/measure"
)

// Targets.
const (
	TargetMeshcast   = "meshcast"   // Phoenix v2 / Supabase Realtime protocol
	TargetCentrifugo = "centrifugo" // Centrifugo v6 JSON protocol
)

// Mode selects what a run measures.
type Mode string

// Modes.
const (
	// ModeThroughput publishes as fast as the in-flight window allows.
	ModeThroughput Mode = "throughput"
	// ModeLatency publishes at a fixed rate.
	ModeLatency Mode = "latency"
	// ModeIdle only connects and subscribes, and measures the server's RSS.
	ModeIdle Mode = "idle"
)

// Default URLs per target.
const (
	DefaultMeshcastURL   = "ws://127.0.0.1:4000/realtime/v1/websocket?apikey=bench&vsn=2.0.0"
	DefaultCentrifugoURL = "ws://127.0.0.1:8000/connection/websocket"
)

// Config describes one benchmark run. Zero fields take the defaults noted.
type Config struct {
	Target string // TargetMeshcast (default) or TargetCentrifugo
	URL    string // WebSocket URL; default per target. Several, comma-separated, spread the subscribers round-robin (one per cluster node)
	PubURL string // the publisher's WebSocket URL; default the first of URL
	Mode   Mode   // default ModeThroughput

	Subs        int           // subscriber connections; default 1000
	Duration    time.Duration // measured publishing time; default 10s
	Warmup      time.Duration // publishing before measuring starts; 0 = none
	Rate        float64       // publications/s; 0 = unlimited (throughput only; latency requires > 0)
	Window      int           // throughput: max publications in flight (sent, not yet received by every subscriber); default 32, <0 = unlimited
	PayloadSize int           // bytes of the JSON payload; default 100
	ConnectRate float64       // connections opened per second; default 2000
	Binary      bool          // meshcast: publish kind-3 binary frames instead of text
	// Transport is how meshcast clients connect: TransportWebSocket
	// (default) or TransportWebTransport (sessions at the URL the node's
	// cert-hash endpoint names, its certificate pinned by hash).
	Transport string
	// Unreliable (WebTransport): subscribers join with
	// broadcast.unreliable and the publisher sends datagrams; lost
	// datagrams count as lost deliveries.
	Unreliable bool

	ServerPID int           // server process for RSS/CPU readings; 0 = none
	Hold      time.Duration // idle: keep connections open this long after measuring
	Settle    time.Duration // idle: max wait for the server's RSS to settle; default 5s
	Drain     time.Duration // max wait for in-flight deliveries after publishing; default 5s

	Topic   string // meshcast topic; default "realtime:bench"
	Channel string // centrifugo channel; default "bench:room"

	// HandshakeTimeout bounds dial + upgrade + join/subscribe of one
	// connection; default 10s.
	HandshakeTimeout time.Duration
	// ReadBuffer is the per-connection read buffer size; default 2048.
	ReadBuffer int

	// Logf, if set, receives progress lines.
	Logf func(format string, args ...any)
}

// Limits that keep a run sane on one machine.
const (
	maxSubs        = 60000
	maxConnectRate = 20000
	maxDuration    = time.Hour
)

// withDefaults returns a copy of cfg with defaults applied, or an error if
// cfg is invalid.
func (cfg Config) withDefaults() (Config, error) {
	if cfg.Target == "" {
		cfg.Target = TargetMeshcast
	}
	if cfg.URL == "" {
		switch cfg.Target {
		case TargetCentrifugo:
			cfg.URL = DefaultCentrifugoURL
		default:
			cfg.URL = DefaultMeshcastURL
		}
	}
	if cfg.PubURL == "" {
		cfg.PubURL, _, _ = strings.Cut(cfg.URL, ",")
	}
	if cfg.Mode == "" {
		cfg.Mode = ModeThroughput
	}
	if cfg.Transport == "" {
		cfg.Transport = TransportWebSocket
	}
	if cfg.Subs == 0 {
		cfg.Subs = 1000
	}
	if cfg.Duration == 0 {
		cfg.Duration = 10 * time.Second
	}
	if cfg.Window == 0 {
		cfg.Window = 32
	}
	if cfg.PayloadSize == 0 {
		cfg.PayloadSize = 100
	}
	if cfg.ConnectRate == 0 {
		cfg.ConnectRate = 2000
	}
	if cfg.Settle == 0 {
		cfg.Settle = 5 * time.Second
	}
	if cfg.Drain == 0 {
		cfg.Drain = 5 * time.Second
	}
	if cfg.Topic == "" {
		cfg.Topic = "realtime:bench"
	}
	if cfg.Channel == "" {
		cfg.Channel = "bench:room"
	}
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	if cfg.ReadBuffer == 0 {
		cfg.ReadBuffer = 2048
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}

	var errs []error
	switch cfg.Transport {
	case TransportWebSocket, TransportWebTransport:
	default:
		errs = append(errs, fmt.Errorf("unknown transport %q", cfg.Transport))
	}
	if cfg.Unreliable && (cfg.Transport != TransportWebTransport || cfg.Binary) {
		errs = append(errs, errors.New("-unreliable needs -transport webtransport and sends datagrams (not -binary)"))
	}
	if cfg.Unreliable && cfg.PayloadSize+len(cfg.Topic)+16 > 1024 {
		errs = append(errs, errors.New("-unreliable: a datagram carries at most 1024 bytes (payload + topic + 16)"))
	}
	switch cfg.Mode {
	case ModeThroughput, ModeIdle:
	case ModeLatency:
		if cfg.Rate <= 0 {
			errs = append(errs, errors.New("latency mode needs -rate > 0"))
		}
	default:
		errs = append(errs, fmt.Errorf("unknown mode %q", cfg.Mode))
	}
	if cfg.Subs < 1 || cfg.Subs > maxSubs {
		errs = append(errs, fmt.Errorf("subs %d outside [1, %d]", cfg.Subs, maxSubs))
	}
	if cfg.Duration < 0 || cfg.Duration > maxDuration || cfg.Warmup < 0 || cfg.Warmup > maxDuration {
		errs = append(errs, errors.New("duration and warmup must be within [0, 1h]"))
	}
	if cfg.Hold < 0 || cfg.Hold > maxDuration || cfg.Settle < 0 || cfg.Settle > time.Minute || cfg.Drain < 0 || cfg.Drain > time.Minute {
		errs = append(errs, errors.New("hold must be within [0, 1h], settle and drain within [0, 1m]"))
	}
	if cfg.Rate < 0 {
		errs = append(errs, errors.New("rate must be >= 0"))
	}
	if cfg.ConnectRate < 0 || cfg.ConnectRate > maxConnectRate {
		errs = append(errs, fmt.Errorf("connect rate must be within (0, %d]", maxConnectRate))
	}
	if cfg.PayloadSize < measure.MinPayloadSize {
		errs = append(errs, fmt.Errorf("payload must be at least %d bytes", measure.MinPayloadSize))
	}
	if len(cfg.Topic) > 255 || !plainJSONString(cfg.Topic) || !plainJSONString(cfg.Channel) {
		errs = append(errs, errors.New("topic and channel must be plain strings (no quotes, backslashes, control bytes; topic <= 255 bytes)"))
	}
	if err := errors.Join(errs...); err != nil {
		return cfg, fmt.Errorf("bench: invalid config: %w", err)
	}
	return cfg, nil
}

// Budget returns an upper bound on how long Run takes with this config,
// suitable for a context deadline.
func (cfg Config) Budget() time.Duration {
	c, err := cfg.withDefaults()
	if err != nil {
		return time.Minute
	}
	connect := time.Duration(float64(c.Subs)/c.ConnectRate*float64(time.Second)) + c.HandshakeTimeout
	return connect + c.HandshakeTimeout + c.Warmup + c.Duration + c.Drain + c.Settle + c.Hold + 30*time.Second
}

// plainJSONString reports whether s can be written between JSON quotes as is.
func plainJSONString(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// subURL returns the URL subscriber i connects to.
func (cfg *Config) subURL(i int) string {
	urls := strings.Split(cfg.URL, ",")
	return strings.TrimSpace(urls[i%len(urls)])
}
