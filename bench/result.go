package bench

import (
	"fmt"
	"strings"
)

// Result is what a run measured. Latencies are in milliseconds; a value of -1
// means "not measured".
type Result struct {
	Target     string `json:"target"`
	Transport  string `json:"transport,omitempty"`
	Unreliable bool   `json:"unreliable,omitempty"`
	Mode       string `json:"mode"`
	URL        string `json:"url"`
	Binary     bool   `json:"binary,omitempty"`
	Payload    int    `json:"payload_bytes"`

	Subs              int     `json:"subs"`
	Connected         int     `json:"connected"`
	ConnectErrors     int     `json:"connect_errors"`
	FirstConnectError string  `json:"first_connect_error,omitempty"`
	ConnectSeconds    float64 `json:"connect_seconds"`

	// Publishing and delivery (throughput and latency modes).
	Published         uint64  `json:"published"`          // all publications, warmup included
	PublishedMeasured uint64  `json:"published_measured"` // publications stamped after warmup
	RatePerSec        float64 `json:"rate_target,omitempty"`
	Window            int     `json:"window,omitempty"`
	PublishPerSec     float64 `json:"publish_per_sec"`
	Delivered         uint64  `json:"delivered"`          // measured deliveries, all subscribers
	Expected          uint64  `json:"expected"`           // published_measured x connected
	Lost              int64   `json:"lost"`               // all deliveries expected minus received (warmup included)
	Gaps              uint64  `json:"gaps"`               // sequence numbers skipped, summed over subscribers
	OutOfOrder        uint64  `json:"out_of_order"`       // repeated or older sequence numbers
	Elapsed           float64 `json:"elapsed_seconds"`    // measure start to last measured delivery
	DeliveriesPerSec  float64 `json:"deliveries_per_sec"` // delivered / elapsed
	P50               float64 `json:"p50_ms"`
	P90               float64 `json:"p90_ms"`
	P99               float64 `json:"p99_ms"`
	P999              float64 `json:"p999_ms"`
	Max               float64 `json:"max_ms"`
	Mean              float64 `json:"mean_ms"`
	PublisherLagMax   float64 `json:"publisher_lag_max_ms"` // latency mode: worst lateness vs schedule
	PublisherLate     uint64  `json:"publisher_late"`       // latency mode: sends >1ms behind schedule
	WindowStalls      int     `json:"window_stalls"`        // throughput: window waits abandoned after no progress

	// Datagrams (-unreliable): what the node counted during the run, so
	// that lost deliveries split into dropped by the server and lost on
	// the way (network, the client's receive queue). -1 when unknown.
	ServerDatagramsSent    float64 `json:"server_datagrams_sent"`
	ServerDatagramsDropped float64 `json:"server_datagrams_dropped"`

	// Things that should not happen.
	Disconnects     int    `json:"disconnects"`
	FirstDisconnect string `json:"first_disconnect,omitempty"`
	Unexpected      uint64 `json:"unexpected_frames"`
	FirstUnexpected string `json:"first_unexpected,omitempty"`
	PublishErrors   uint64 `json:"publish_errors"`

	// Resources. CPU is in cores (CPU seconds per wall second) over the
	// measured window; -1 when unknown.
	ServerCPU float64 `json:"server_cpu_cores"`
	// ServerCPUPerDeliveryUs is server CPU time per delivery (server cores
	// / deliveries per second), in microseconds; -1 when unknown.
	ServerCPUPerDeliveryUs float64 `json:"server_cpu_us_per_delivery"`
	ClientCPU              float64 `json:"client_cpu_cores"`
	HostCPU                float64 `json:"host_cpu_cores"` // whole machine; minus server and client = interference
	RSSBeforeKiB           int64   `json:"rss_before_kib,omitempty"`
	RSSAfterKiB            int64   `json:"rss_after_kib,omitempty"`
	RSSPerConnKiB          float64 `json:"rss_per_conn_kib,omitempty"`
	ClientRSSKiB           int64   `json:"client_rss_kib"` // meshbench itself, once everyone is subscribed
	// ClientAllocsPerDelivery is meshbench's heap allocations during the
	// measured window per delivery: its own overhead, ideally ~0.
	ClientAllocsPerDelivery float64 `json:"client_allocs_per_delivery"`
}

func newResult(cfg *Config) *Result {
	return &Result{Target: cfg.Target, Transport: cfg.Transport, Unreliable: cfg.Unreliable, Mode: string(cfg.Mode), URL: cfg.URL,
		Binary: cfg.Binary, Payload: cfg.PayloadSize, Subs: cfg.Subs, ServerCPU: -1, ServerCPUPerDeliveryUs: -1, ClientCPU: -1, HostCPU: -1,
		ServerDatagramsSent: -1, ServerDatagramsDropped: -1}
}

// Column names the result's server and transport, as the table's column.
func (r *Result) Column() string {
	c := r.Target
	if r.Transport != "" && r.Transport != TransportWebSocket {
		c += " " + r.Transport
	}
	if r.Unreliable {
		c += " datagrams"
	}
	return c
}

// String is a one-line human summary.
func (r *Result) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s subs=%d/%d", r.Column(), r.Mode, r.Connected, r.Subs)
	if r.Binary {
		b.WriteString(" binary")
	}
	if r.Mode == string(ModeIdle) {
		fmt.Fprintf(&b, " connect=%.1fs", r.ConnectSeconds)
		if r.RSSAfterKiB > 0 {
			fmt.Fprintf(&b, " rss %d->%d KiB = %.1f KiB/conn", r.RSSBeforeKiB, r.RSSAfterKiB, r.RSSPerConnKiB)
		} else {
			b.WriteString(" rss=not measured (-server-pid 0)")
		}
	} else {
		fmt.Fprintf(&b, " pub=%d (%.0f/s) deliveries/s=%.0f delivered=%d/%d lost=%d p50=%.2fms p99=%.2fms max=%.2fms",
			r.PublishedMeasured, r.PublishPerSec, r.DeliveriesPerSec, r.Delivered, r.Expected, r.Lost, r.P50, r.P99, r.Max)
	}
	if r.ServerCPU >= 0 {
		fmt.Fprintf(&b, " server_cpu=%.2f", r.ServerCPU)
	}
	if r.ServerCPUPerDeliveryUs >= 0 && r.Mode != string(ModeIdle) {
		fmt.Fprintf(&b, " server_us/delivery=%.3f", r.ServerCPUPerDeliveryUs)
	}
	if r.ClientCPU >= 0 {
		fmt.Fprintf(&b, " client_cpu=%.2f", r.ClientCPU)
	}
	if r.HostCPU >= 0 {
		fmt.Fprintf(&b, " host_cpu=%.2f", r.HostCPU)
	}
	if r.ConnectErrors > 0 {
		fmt.Fprintf(&b, " CONNECT_ERRORS=%d (%s)", r.ConnectErrors, r.FirstConnectError)
	}
	if r.Disconnects > 0 {
		fmt.Fprintf(&b, " DISCONNECTS=%d (%s)", r.Disconnects, r.FirstDisconnect)
	}
	if r.Unreliable && r.ServerDatagramsSent >= 0 {
		fmt.Fprintf(&b, " server_datagrams_sent=%.0f server_datagrams_dropped=%.0f", r.ServerDatagramsSent, r.ServerDatagramsDropped)
	}
	if r.Gaps > 0 || r.OutOfOrder > 0 {
		fmt.Fprintf(&b, " GAPS=%d OUT_OF_ORDER=%d", r.Gaps, r.OutOfOrder)
	}
	if r.Unexpected > 0 {
		fmt.Fprintf(&b, " UNEXPECTED=%d (%.120s)", r.Unexpected, r.FirstUnexpected)
	}
	if r.PublishErrors > 0 {
		fmt.Fprintf(&b, " PUBLISH_ERRORS=%d", r.PublishErrors)
	}
	if r.WindowStalls > 0 {
		fmt.Fprintf(&b, " WINDOW_STALLS=%d", r.WindowStalls)
	}
	return b.String()
}
