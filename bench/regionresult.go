package bench

import (
	"fmt"
	"strings"

	"github.com/meshcast/meshcast/bench/measure"
)

// RegionResult is the outcome of one region scenario run. Times are in
// milliseconds; -1 means not measured.
type RegionResult struct {
	Scenario       Scenario `json:"scenario"`
	Label          string   `json:"label,omitempty"`
	Regions        []string `json:"regions"`
	NodesPerRegion []int    `json:"nodes_per_region"`
	PubRegions     []string `json:"pub_regions,omitempty"`
	Subs           int      `json:"subs"`
	Channels       int      `json:"channels,omitempty"`
	SubsPerChannel int      `json:"subs_per_channel,omitempty"`
	Rate           float64  `json:"rate"`
	Window         int      `json:"window,omitempty"`
	Payload        int      `json:"payload"`
	DurationS      float64  `json:"duration_s"`
	Seed           uint64   `json:"seed"`

	Connected         int                          `json:"connected"`
	ConnectErrors     int                          `json:"connect_errors"`
	FirstConnectError string                       `json:"first_connect_error,omitempty"`
	ConnectSeconds    float64                      `json:"connect_s"`
	ConnectMS         map[string]measure.Quantiles `json:"connect_ms"`    // dial + join, by region
	ClientRTTMS       map[string]float64           `json:"client_rtt_ms"` // heartbeat round trip to a node of the region

	Publishers        int     `json:"publishers"`
	Published         uint64  `json:"published"`
	PublishedMeasured uint64  `json:"published_measured"`
	PublishPerSec     float64 `json:"publish_per_s"`
	PublisherLagMaxMS float64 `json:"publisher_lag_max_ms"`
	PublisherLate     uint64  `json:"publisher_late"`
	WindowStalls      int     `json:"window_stalls,omitempty"`
	Expected          uint64  `json:"expected"`  // measured publications × their channel's subscribers
	Delivered         uint64  `json:"delivered"` // measured deliveries
	DeliveriesPerSec  float64 `json:"deliveries_per_s"`
	Lost              int64   `json:"lost"` // every publication × subscribers − deliveries, after the drain
	Drained           bool    `json:"drained"`
	Gaps              uint64  `json:"gaps"`
	OutOfOrder        uint64  `json:"out_of_order"`
	Unexpected        uint64  `json:"unexpected"`
	FirstUnexpected   string  `json:"first_unexpected,omitempty"`
	Disconnects       int     `json:"disconnects"`
	FirstDisconnect   string  `json:"first_disconnect,omitempty"`
	PublishErrors     int     `json:"publish_errors"`
	FirstPublishError string  `json:"first_publish_error,omitempty"`

	Pairs    []PairStats      `json:"pairs"` // publisher region → subscriber region
	Presence *PresenceFigures `json:"presence,omitempty"`
	Connect  *ConnectFigures  `json:"connect,omitempty"`
	Server   ServerFigures    `json:"server"`

	ClientCPU  float64 `json:"client_cpu"` // cores, meshbench itself
	HostCPU    float64 `json:"host_cpu"`   // cores, the whole machine
	Goroutines int     `json:"client_goroutines"`
}

// PairStats is the latency from publishers of one region to subscribers
// of another (or the same).
type PairStats struct {
	From             string             `json:"from"`
	To               string             `json:"to"`
	OneWayMS         float64            `json:"one_way_ms"` // emulated one-way delay, -1 when not emulated
	Count            uint64             `json:"count"`      // measured deliveries
	ExpectedMeasured uint64             `json:"expected_measured"`
	Expected         uint64             `json:"expected"` // all publications (warmup too) × subscribers
	Received         uint64             `json:"received"`
	Lost             int64              `json:"lost"`
	Min              float64            `json:"min"`
	P50              float64            `json:"p50"`
	P90              float64            `json:"p90"`
	P99              float64            `json:"p99"`
	Max              float64            `json:"max"`
	Mean             float64            `json:"mean"`
	CDF              []measure.CDFPoint `json:"cdf"`
}

// PresenceFigures: joins tracked and how long until every watcher saw one.
type PresenceFigures struct {
	Joins       uint64            `json:"joins"`         // tracks sent while measuring
	Watchers    int               `json:"watchers"`      // connected watchers
	AllSeen     measure.Quantiles `json:"all_seen_ms"`   // track → the last watcher's presence_diff, per join
	Incomplete  uint64            `json:"incomplete"`    // measured joins some watcher never saw
	StateFrames uint64            `json:"state_frames"`  // presence_state frames (one per watcher join)
	Leaves      uint64            `json:"leave_entries"` // leave entries seen (the previous meta of a re-track)
}

// ConnectFigures: the ramp and what idle connections cost.
type ConnectFigures struct {
	RampSeconds      float64            `json:"ramp_s"`
	ConnectsPerSec   float64            `json:"connects_per_s"`
	IdleSeconds      float64            `json:"idle_s"`
	NodeRSSPerConnKB map[string]float64 `json:"node_rss_per_conn_kib"` // node → (RSS after − before) / its connections
	ClientRSSPerConn float64            `json:"client_rss_per_conn_kib"`
	ClientRSSMiB     float64            `json:"client_rss_mib"`
	HeldAfterIdle    int                `json:"held_after_idle"` // connections still open after the idle hold
}

func newRegionResult(cfg *RegionConfig) *RegionResult {
	res := &RegionResult{Scenario: cfg.Scenario, Label: cfg.Label, Subs: cfg.conns(), Rate: cfg.Rate, Payload: cfg.PayloadSize,
		DurationS: cfg.Duration.Seconds(), Seed: cfg.Seed, ConnectMS: map[string]measure.Quantiles{}, ClientRTTMS: map[string]float64{},
		ClientCPU: -1, HostCPU: -1, PubRegions: cfg.PubRegions}
	for _, s := range cfg.Sites {
		res.Regions = append(res.Regions, s.Region)
		res.NodesPerRegion = append(res.NodesPerRegion, len(s.URLs))
	}
	if cfg.Scenario == ScenarioRooms {
		res.Channels, res.SubsPerChannel = cfg.Channels, cfg.SubsPerChannel
	}
	if cfg.Rate == 0 {
		res.Window = cfg.Window
	}
	return res
}

// Pair returns the stats of from → to, or nil.
func (r *RegionResult) Pair(from, to string) *PairStats {
	for i := range r.Pairs {
		if r.Pairs[i].From == from && r.Pairs[i].To == to {
			return &r.Pairs[i]
		}
	}
	return nil
}

// String is a one-line summary.
func (r *RegionResult) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s", r.Scenario)
	if r.Label != "" {
		fmt.Fprintf(&b, " [%s]", r.Label)
	}
	fmt.Fprintf(&b, ": %d/%d connected, %d published (%.0f/s), %d delivered (%.0f/s), lost %d, gaps %d, ooo %d, unexpected %d, disconnects %d",
		r.Connected, r.Subs, r.Published, r.PublishPerSec, r.Delivered, r.DeliveriesPerSec, r.Lost, r.Gaps, r.OutOfOrder, r.Unexpected, r.Disconnects)
	if r.Server.Nodes != nil {
		fmt.Fprintf(&b, "; mesh %.0f B/msg, WAN %.0f B/msg (%.2f frames), server CPU %.2f cores", r.Server.MeshBytesPerMsg, r.Server.WANBytesPerMsg, r.Server.WANFramesPerMsg, r.Server.CPU)
	}
	return b.String()
}

// WorstOverOneWay is the largest p99 − emulated one-way delay over the
// cross-region pairs (false when nothing was emulated or measured).
func (r *RegionResult) WorstOverOneWay() (float64, bool) {
	worst, ok := 0.0, false
	for _, p := range r.Pairs {
		if p.From == p.To || p.OneWayMS < 0 || p.Count == 0 {
			continue
		}
		if d := p.P99 - p.OneWayMS; !ok || d > worst {
			worst, ok = d, true
		}
	}
	return worst, ok
}

// OtherCPU is the cores used by neither the nodes nor meshbench during the
// run (host − servers − meshbench): other work on a shared machine. Runs
// with a large value were disturbed.
func (r *RegionResult) OtherCPU() float64 {
	if r.HostCPU < 0 || r.ClientCPU < 0 {
		return -1
	}
	return r.HostCPU - r.Server.CPU - r.ClientCPU
}
