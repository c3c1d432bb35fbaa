package bench

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/meshcast/meshcast/bench/measure"
)

// Region scenarios (meshbench local / meshbench regions): clients are placed
// in regions, each connects to a node of its region, and every message says
// where and when it was sent, so latency is reported per (publisher region
// → subscriber region) pair. See bench/README.md "Latency by region".

// Scenario names a region scenario.
type Scenario string

// Region scenarios. The Postgres changes scenario is `meshbench wal`
// (RunWAL), which meshbench local starts on the same emulated WAN.
const (
	// ScenarioFanout: Subs subscribers of one channel spread over every
	// region, one publisher per region of PubRegions (default the first).
	ScenarioFanout Scenario = "fanout"
	// ScenarioRooms: Channels channels × SubsPerChannel subscribers each,
	// a channel's subscribers spread over the regions, and one publisher
	// per channel in each region of PubRegions (default every region).
	ScenarioRooms Scenario = "rooms"
	// ScenarioPresence: Subs watchers spread over the regions, joined with
	// presence; one churner per region tracks and untracks at Rate joins/s
	// in total; latency is track → presence_diff join at each watcher, and
	// the time until every watcher saw a join.
	ScenarioPresence Scenario = "presence"
	// ScenarioConnect: Subs connections opened at ConnectRate over the
	// regions, held for Idle; reports handshake times per region and the
	// nodes' resident memory per connection.
	ScenarioConnect Scenario = "connect"
)

// Site is a region and the WebSocket URLs of its nodes.
type Site struct {
	Region string
	URLs   []string
	// PIDs of the nodes' processes, when local (server CPU and RSS from
	// /proc); otherwise both come from each node's /metrics.
	PIDs []int
}

// RegionConfig describes one region scenario run. Zero fields take the
// defaults noted.
type RegionConfig struct {
	Scenario Scenario // default ScenarioFanout
	Sites    []Site   // at least one; clients of a region go to its URLs, round-robin
	Label    string   // names the run (the routing strategy in meshbench local)

	Subs           int      // fanout: subscribers (default 300); presence: watchers (default 60); connect: connections (default 1000)
	Channels       int      // rooms: channels (default 20)
	SubsPerChannel int      // rooms: subscribers per channel (default 10)
	PubRegions     []string // regions with publishers (fanout: the first site; rooms: every site)
	// Rate is publications per second over all publishers (fanout,
	// rooms), or presence joins per second over all churners. 0 with
	// fanout or rooms publishes as fast as Window allows.
	Rate        float64
	Window      int           // publications in flight when Rate is 0; default 32
	PayloadSize int           // bytes of each payload; default 120
	Duration    time.Duration // measured publishing; default 10s
	Warmup      time.Duration // publishing before measuring; default 1s
	Drain       time.Duration // max wait for outstanding deliveries; default 5s
	Idle        time.Duration // connect: how long the connections are held after the ramp; default 5s
	ConnectRate float64       // connections opened per second; default 1000
	Seed        uint64        // picks each client's node within its region; default 1
	// RegionHeader, if set, is sent on every WebSocket upgrade with the
	// client's region as value (fly.io: Fly-Prefer-Region routes the
	// connection to a machine of that region).
	RegionHeader string
	// OneWay is the emulated one-way delay between two regions, for the
	// report (nil: not emulated).
	OneWay func(from, to string) time.Duration
	// Pollers is the number of goroutines holding the subscribers
	// (default GOMAXPROCS).
	Pollers int

	HandshakeTimeout time.Duration // dial + join of one connection; default 10s
	Logf             func(format string, args ...any)
}

// Limits of a region run.
const (
	maxRegionConns = 60000
	maxRegionPubs  = 4096
)

func (c RegionConfig) withDefaults() (RegionConfig, error) {
	if c.Scenario == "" {
		c.Scenario = ScenarioFanout
	}
	if c.Subs == 0 {
		c.Subs = map[Scenario]int{ScenarioFanout: 300, ScenarioPresence: 60, ScenarioConnect: 1000}[c.Scenario]
	}
	if c.Channels == 0 {
		c.Channels = 20
	}
	if c.SubsPerChannel == 0 {
		c.SubsPerChannel = 10
	}
	if len(c.PubRegions) == 0 && len(c.Sites) > 0 {
		switch c.Scenario {
		case ScenarioFanout:
			c.PubRegions = []string{c.Sites[0].Region}
		default:
			for _, s := range c.Sites {
				c.PubRegions = append(c.PubRegions, s.Region)
			}
		}
	}
	if c.Window == 0 {
		c.Window = 32
	}
	if c.PayloadSize == 0 {
		c.PayloadSize = 120
	}
	if c.Duration == 0 {
		c.Duration = 10 * time.Second
	}
	if c.Warmup == 0 {
		c.Warmup = time.Second
	}
	if c.Drain == 0 {
		c.Drain = 5 * time.Second
	}
	if c.Idle == 0 {
		c.Idle = 5 * time.Second
	}
	if c.ConnectRate == 0 {
		c.ConnectRate = 1000
	}
	if c.Seed == 0 {
		c.Seed = 1
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = 10 * time.Second
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
	var errs []error
	switch c.Scenario {
	case ScenarioFanout, ScenarioRooms, ScenarioPresence, ScenarioConnect:
	default:
		errs = append(errs, fmt.Errorf("unknown scenario %q (fanout, rooms, presence, connect; wal is meshbench wal)", c.Scenario))
	}
	if len(c.Sites) == 0 {
		errs = append(errs, errors.New("no regions"))
	}
	seen := map[string]bool{}
	for _, s := range c.Sites {
		if s.Region == "" || len(s.Region) > 16 || !plainJSONString(s.Region) || seen[s.Region] {
			errs = append(errs, fmt.Errorf("bad or repeated region %q", s.Region))
		}
		seen[s.Region] = true
		if len(s.URLs) == 0 {
			errs = append(errs, fmt.Errorf("region %s has no node URL", s.Region))
		}
		for _, u := range s.URLs {
			if p, err := url.Parse(u); err != nil || (p.Scheme != "ws" && p.Scheme != "wss") {
				errs = append(errs, fmt.Errorf("node URL %q is not ws:// or wss://", u))
			}
		}
	}
	for _, r := range c.PubRegions {
		if !seen[r] {
			errs = append(errs, fmt.Errorf("publisher region %q has no site", r))
		}
	}
	if c.conns() < 1 || c.conns() > maxRegionConns {
		errs = append(errs, fmt.Errorf("%d connections outside [1, %d]", c.conns(), maxRegionConns))
	}
	if c.publishers() > maxRegionPubs {
		errs = append(errs, fmt.Errorf("%d publishers over %d", c.publishers(), maxRegionPubs))
	}
	if c.Rate < 0 || (c.Scenario == ScenarioPresence && c.Rate == 0) {
		errs = append(errs, errors.New("rate must be >= 0 (presence: > 0 joins/s)"))
	}
	if c.PayloadSize < measure.MinRegionPayloadSize || c.PayloadSize > 1<<20 {
		errs = append(errs, fmt.Errorf("payload must be within [%d, 1 MiB]", measure.MinRegionPayloadSize))
	}
	for _, d := range []time.Duration{c.Duration, c.Warmup, c.Idle} {
		if d < 0 || d > maxDuration {
			errs = append(errs, errors.New("durations must be within [0, 1h]"))
		}
	}
	if c.Drain < 0 || c.Drain > time.Minute {
		errs = append(errs, errors.New("drain must be within [0, 1m]"))
	}
	if c.ConnectRate <= 0 || c.ConnectRate > maxConnectRate {
		errs = append(errs, fmt.Errorf("connect rate must be within (0, %d]", maxConnectRate))
	}
	if err := errors.Join(errs...); err != nil {
		return c, fmt.Errorf("bench: invalid region config: %w", err)
	}
	return c, nil
}

// conns is the number of subscriber connections the scenario opens.
func (c *RegionConfig) conns() int {
	if c.Scenario == ScenarioRooms {
		return c.Channels * c.SubsPerChannel
	}
	return c.Subs
}

// publishers is the number of publishing connections.
func (c *RegionConfig) publishers() int {
	switch c.Scenario {
	case ScenarioFanout:
		return len(c.PubRegions)
	case ScenarioRooms:
		return c.Channels * len(c.PubRegions)
	case ScenarioPresence:
		return len(c.Sites)
	}
	return 0
}

// Budget bounds how long RunRegions takes with this config.
func (c RegionConfig) Budget() time.Duration {
	c, err := c.withDefaults()
	if err != nil {
		return time.Minute
	}
	connect := time.Duration(float64(c.conns()+c.publishers())/c.ConnectRate*float64(time.Second)) + 2*c.HandshakeTimeout
	d := connect + c.Warmup + c.Duration + c.Drain + 30*time.Second
	if c.Scenario == ScenarioConnect {
		d += c.Idle + 10*time.Second
	}
	return d
}

// regionIndex returns the index of region name b among the sites, -1 if
// none.
func regionIndex(sites []Site, b []byte) int {
	for i := range sites {
		if sites[i].Region == string(b) {
			return i
		}
	}
	return -1
}

// metricsURLOf turns a node's WebSocket URL into its /metrics URL.
func metricsURLOf(ws string) string {
	u, err := url.Parse(ws)
	if err != nil {
		return ""
	}
	u.Scheme = strings.Replace(strings.Replace(u.Scheme, "wss", "https", 1), "ws", "http", 1)
	u.Path, u.RawQuery = "/metrics", ""
	return u.String()
}
