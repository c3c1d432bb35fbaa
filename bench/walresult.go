package bench

import (
	"fmt"
	"strings"
)

// WALResult is what a WAL run measured. Latencies are in milliseconds, CPU
// in cores (CPU seconds per wall second) over the measured window (from
// the end of the warmup until the deliveries drained); -1 is "not
// measured".
type WALResult struct {
	Label      string  `json:"label,omitempty"`
	Shape      string  `json:"shape"`
	Nodes      int     `json:"nodes"`
	Owner      string  `json:"owner"` // the node whose reader ran
	Subs       int     `json:"subs"`
	Topics     int     `json:"topics"`
	Writers    int     `json:"writers"`
	RowsPerTx  int     `json:"rows_per_tx"`
	Window     int     `json:"window"`
	RateTarget float64 `json:"rate_target"` // rows/s, 0 = max
	Pad        int     `json:"pad_bytes"`
	Logs       string  `json:"logs,omitempty"` // the started cluster's logs

	Connected         int     `json:"connected"`
	ConnectErrors     int     `json:"connect_errors"`
	FirstConnectError string  `json:"first_connect_error,omitempty"`
	ConnectSeconds    float64 `json:"connect_seconds"`

	// The writer.
	Rows             uint64  `json:"rows"`          // committed, warmup included
	RowsMeasured     uint64  `json:"rows_measured"` // committed with a send time in the measured window
	RowsPerSec       float64 `json:"rows_per_sec"`
	CommitP50        float64 `json:"commit_p50_ms"` // statement sent → commit acknowledged
	CommitP99        float64 `json:"commit_p99_ms"`
	CommitErrors     uint64  `json:"commit_errors"`
	FirstCommitError string  `json:"first_commit_error,omitempty"`
	WriterLate       uint64  `json:"writer_late"` // fixed rate: transactions sent >1 ms behind schedule
	WriterLagMax     float64 `json:"writer_lag_max_ms"`
	WindowStalls     int     `json:"window_stalls"`

	// Deliveries: a delivery is one row reaching one subscriber.
	Expected         uint64  `json:"expected"`      // owed for the committed rows, warmup included
	Received         uint64  `json:"received"`      // distinct rows received, summed over subscribers
	Lost             int64   `json:"lost"`          // owed and never received, after the drain
	Repeated         uint64  `json:"repeated"`      // received again, or after a later row of the same writer
	Wrong            uint64  `json:"wrong"`         // rows a subscriber must not see (another team or key)
	ChangeErrors     uint64  `json:"change_errors"` // changes with non-null errors
	Drained          bool    `json:"drained"`       // everything owed arrived within the drain
	Delivered        uint64  `json:"delivered"`     // measured deliveries
	Elapsed          float64 `json:"elapsed_seconds"`
	DeliveriesPerSec float64 `json:"deliveries_per_sec"`
	P50              float64 `json:"p50_ms"` // commit → client: writer's send of the statement → subscriber's read
	P90              float64 `json:"p90_ms"`
	P95              float64 `json:"p95_ms"`
	P99              float64 `json:"p99_ms"`
	P999             float64 `json:"p999_ms"`
	Max              float64 `json:"max_ms"`
	Mean             float64 `json:"mean_ms"`
	// Commit acknowledged → client: from the writer hearing its commit
	// acknowledged to the subscriber's read (0 when read before that): the
	// latency without Postgres's own statement and commit time.
	AckP50 float64 `json:"ack_p50_ms"`
	AckP95 float64 `json:"ack_p95_ms"`
	AckP99 float64 `json:"ack_p99_ms"`
	AckMax float64 `json:"ack_max_ms"`
	// ReadBeforeAck counts measured deliveries read before the writer heard
	// its commit acknowledged (counted as 0 in the Ack figures).
	ReadBeforeAck uint64 `json:"read_before_ack"`

	// The slot, from Postgres: pg_current_wal_lsn() − confirmed_flush_lsn.
	SlotLagStart   int64   `json:"slot_lag_start_bytes"` // when measuring started
	SlotLagEnd     int64   `json:"slot_lag_end_bytes"`   // when writing stopped
	SlotLagMax     int64   `json:"slot_lag_max_bytes"`
	SlotLagDrained int64   `json:"slot_lag_drained_bytes"`        // after the drain
	SlotLagSlope   float64 `json:"slot_lag_growth_bytes_per_sec"` // least squares over the measured window
	NodeLagMax     float64 `json:"node_lag_max_bytes"`            // meshcast_wal_lag_bytes, highest seen
	WALBytes       int64   `json:"wal_bytes"`                     // WAL written in the measured window

	// From the nodes' /metrics, over the measured window.
	PerNode            []WALNodeResult `json:"per_node"`
	ChangesOut         float64         `json:"changes_out"`          // meshcast_changes_out_total
	MeshChangesBytes   float64         `json:"mesh_changes_bytes"`   // changes lane, sent by all nodes
	MeshChangesFrames  float64         `json:"mesh_changes_frames"`  // changes lane frames sent
	WALChanges         float64         `json:"wal_changes"`          // meshcast_wal_changes_total (the owner's reader)
	QueueDrops         float64         `json:"queue_drops"`          // meshcast_queue_drops_total
	SlowConsumerCloses float64         `json:"slow_consumer_closes"` // meshcast_slow_consumer_closes_total
	DeliveriesWindow   uint64          `json:"deliveries_window"`    // rows received in the measured window (the CPU's denominator)
	ServerCPU          float64         `json:"server_cpu_cores"`     // all nodes
	PostgresCPU        float64         `json:"postgres_cpu_cores"`   // postmaster and its children
	ClientCPU          float64         `json:"client_cpu_cores"`     // meshbench: writer and subscribers
	HostCPU            float64         `json:"host_cpu_cores"`
	ServerUsPerDeliv   float64         `json:"server_cpu_us_per_delivery"`
	ServerUsPerRow     float64         `json:"server_cpu_us_per_row"`
	PostgresUsPerRow   float64         `json:"postgres_cpu_us_per_row"`

	Disconnects     int    `json:"disconnects"`
	FirstDisconnect string `json:"first_disconnect,omitempty"`
	Unexpected      uint64 `json:"unexpected_frames"`
	FirstUnexpected string `json:"first_unexpected,omitempty"`
}

// WALNodeResult is one node's part of the measured window.
type WALNodeResult struct {
	URL              string  `json:"url"` // its /metrics
	Owner            bool    `json:"owner"`
	CPU              float64 `json:"cpu_cores"`
	ChangesOut       float64 `json:"changes_out"`
	MeshChangesBytes float64 `json:"mesh_changes_bytes"`
	WALChanges       float64 `json:"wal_changes"`
}

func newWALResult(cfg *WALConfig) *WALResult {
	return &WALResult{Label: cfg.Label, Shape: string(cfg.Shape), Subs: cfg.Subs, Topics: cfg.Topics, Writers: cfg.Writers,
		RowsPerTx: cfg.RowsPerTx, Window: cfg.Window, RateTarget: cfg.Rate, Pad: cfg.Pad,
		ServerCPU: -1, PostgresCPU: -1, ClientCPU: -1, HostCPU: -1}
}

// setSnapshots fills the fields that come from the two snapshots, with
// deliveries received in between.
func (res *WALResult) setSnapshots(urls []string, a, b walSnapshot, deliveries uint64) {
	res.DeliveriesWindow = deliveries
	secs := b.cpu.At.Sub(a.cpu.At).Seconds()
	rate := func(x, y float64) float64 {
		if secs <= 0 {
			return -1
		}
		return (y - x) / secs
	}
	res.ClientCPU, res.HostCPU, res.PostgresCPU = b.cpu.Cores(a.cpu)
	var cpu float64
	known := len(a.nodes) > 0
	for i := range a.nodes {
		m0, m1 := a.nodes[i], b.nodes[i]
		if m0 == nil || m1 == nil {
			known = false
			continue
		}
		d := func(name string, labels ...string) float64 { return m1.Sum(name, labels...) - m0.Sum(name, labels...) }
		n := WALNodeResult{
			URL:              urls[i],
			Owner:            m1["meshcast_wal_reader_running"] == 1,
			CPU:              rate(m0.Sum("process_cpu_seconds_total"), m1.Sum("process_cpu_seconds_total")),
			ChangesOut:       d("meshcast_changes_out_total"),
			MeshChangesBytes: d("meshcast_mesh_bytes_sent_total", `lane="changes"`),
			WALChanges:       d("meshcast_wal_changes_total"),
		}
		cpu += n.CPU
		if n.Owner {
			res.Owner = urls[i]
		}
		res.ChangesOut += n.ChangesOut
		res.MeshChangesBytes += n.MeshChangesBytes
		res.MeshChangesFrames += d("meshcast_mesh_frames_sent_total", `lane="changes"`)
		res.WALChanges += n.WALChanges
		res.QueueDrops += d("meshcast_queue_drops_total")
		res.SlowConsumerCloses += d("meshcast_slow_consumer_closes_total")
		res.PerNode = append(res.PerNode, n)
	}
	if known {
		res.ServerCPU = cpu
		if deliveries > 0 {
			res.ServerUsPerDeliv = cpu * secs / float64(deliveries) * 1e6
		}
	}
	rows := res.WALChanges
	if rows > 0 {
		if known {
			res.ServerUsPerRow = cpu * secs / rows * 1e6
		}
		if res.PostgresCPU >= 0 {
			res.PostgresUsPerRow = res.PostgresCPU * secs / rows * 1e6
		}
	}
}

// String is a human summary, a few lines.
func (r *WALResult) String() string {
	var b strings.Builder
	rate := "max"
	if r.RateTarget > 0 {
		rate = fmt.Sprintf("%.0f/s", r.RateTarget)
	}
	if r.Label != "" {
		b.WriteString(r.Label + ": ")
	}
	fmt.Fprintf(&b, "wal %s: %d nodes, subs=%d/%d, rate %s (%.0f rows/s committed, %d×%d rows/tx, window %d)\n",
		r.Shape, r.Nodes, r.Connected, r.Subs, rate, r.RowsPerSec, r.Writers, r.RowsPerTx, r.Window)
	fmt.Fprintf(&b, "  deliveries/s=%.0f delivered=%d lost=%d repeated=%d wrong=%d  commit→client p50=%.2f p90=%.2f p95=%.2f p99=%.2f max=%.2f ms  (commit itself p50 %.2f p99 %.2f ms)\n",
		r.DeliveriesPerSec, r.Delivered, r.Lost, r.Repeated, r.Wrong, r.P50, r.P90, r.P95, r.P99, r.Max, r.CommitP50, r.CommitP99)
	fmt.Fprintf(&b, "  commit acknowledged→client p50=%.2f p95=%.2f p99=%.2f max=%.2f ms (%d read before the ack)\n", r.AckP50, r.AckP95, r.AckP99, r.AckMax, r.ReadBeforeAck)
	fmt.Fprintf(&b, "  slot lag: start %s, end %s, max %s, drained %s, growth %.0f B/s; node lag max %s; WAL %s\n",
		kb(float64(r.SlotLagStart)), kb(float64(r.SlotLagEnd)), kb(float64(r.SlotLagMax)), kb(float64(r.SlotLagDrained)),
		r.SlotLagSlope, kb(r.NodeLagMax), kb(float64(r.WALBytes)))
	fmt.Fprintf(&b, "  cpu cores: nodes %.2f, postgres %.2f, meshbench %.2f, host %.2f; node µs/delivery %.2f, node µs/row %.1f, postgres µs/row %.1f\n",
		r.ServerCPU, r.PostgresCPU, r.ClientCPU, r.HostCPU, r.ServerUsPerDeliv, r.ServerUsPerRow, r.PostgresUsPerRow)
	fmt.Fprintf(&b, "  changes_out=%.0f mesh changes lane %.0f frames %s; per node:", r.ChangesOut, r.MeshChangesFrames, kb(r.MeshChangesBytes))
	for i, n := range r.PerNode {
		owner := ""
		if n.Owner {
			owner = " owner"
		}
		fmt.Fprintf(&b, " n%d%s cpu %.2f out %.0f mesh %s;", i+1, owner, n.CPU, n.ChangesOut, kb(n.MeshChangesBytes))
	}
	var bad []string
	if r.ConnectErrors > 0 {
		bad = append(bad, fmt.Sprintf("CONNECT_ERRORS=%d (%s)", r.ConnectErrors, r.FirstConnectError))
	}
	if r.CommitErrors > 0 {
		bad = append(bad, fmt.Sprintf("COMMIT_ERRORS=%d (%s)", r.CommitErrors, r.FirstCommitError))
	}
	if r.Disconnects > 0 {
		bad = append(bad, fmt.Sprintf("DISCONNECTS=%d (%s)", r.Disconnects, r.FirstDisconnect))
	}
	if r.Unexpected > 0 || r.ChangeErrors > 0 {
		bad = append(bad, fmt.Sprintf("UNEXPECTED=%d CHANGE_ERRORS=%d (%.150s)", r.Unexpected, r.ChangeErrors, r.FirstUnexpected))
	}
	if r.WindowStalls > 0 {
		bad = append(bad, fmt.Sprintf("WINDOW_STALLS=%d", r.WindowStalls))
	}
	if r.QueueDrops > 0 || r.SlowConsumerCloses > 0 {
		bad = append(bad, fmt.Sprintf("QUEUE_DROPS=%.0f SLOW_CONSUMER_CLOSES=%.0f", r.QueueDrops, r.SlowConsumerCloses))
	}
	if r.WriterLate > 0 {
		bad = append(bad, fmt.Sprintf("writer late %d times (max %.1f ms)", r.WriterLate, r.WriterLagMax))
	}
	if len(bad) > 0 {
		b.WriteString("\n  " + strings.Join(bad, " "))
	}
	return b.String()
}

func kb(v float64) string {
	switch {
	case v < 0:
		return "?"
	case v < 1<<10:
		return fmt.Sprintf("%.0fB", v)
	case v < 1<<20:
		return fmt.Sprintf("%.1fKiB", v/(1<<10))
	default:
		return fmt.Sprintf("%.1fMiB", v/(1<<20))
	}
}
