// Package report writes what meshbench measured for people: the text, JSON
// and self-contained HTML report of meshbench local and regions, and the
// side-by-side tables of the fan-out and WAL results.
package report

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"text/tabwriter"
	"time"

	"github.com/meshcast/meshcast/bench"
	"github.com/meshcast/meshcast/bench/measure"
)

// Report is everything one meshbench local / regions invocation measured:
// one RegionResult per strategy (and round), plus Postgres changes runs.
// It is written as text, JSON and a self-contained HTML page.
type Report struct {
	Title    string                `json:"title"`
	Command  string                `json:"command"`
	Started  time.Time             `json:"started"`
	Host     string                `json:"host"`
	Load1    float64               `json:"load1_at_start"` // 1-minute load average before the first run
	Emulated bool                  `json:"emulated"`       // a local cluster on an emulated WAN
	RTTMS    map[string]float64    `json:"rtt_ms,omitempty"`
	JitterMS float64               `json:"jitter_ms,omitempty"`
	Loss     float64               `json:"loss,omitempty"`
	Runs     []*bench.RegionResult `json:"runs"`
	WAL      []*bench.WALResult    `json:"wal,omitempty"`
}

// New starts a report of this process's command line.
func New(title, command string) *Report {
	r := &Report{Title: title, Command: command, Started: time.Now().UTC(), Load1: -1}
	host, _ := os.Hostname()
	r.Host = fmt.Sprintf("%s, %d CPUs, %s/%s", host, runtime.NumCPU(), runtime.GOOS, runtime.GOARCH)
	if l, err := measure.ReadLoad1(); err == nil {
		r.Load1 = l
	}
	return r
}

// WriteJSON writes the report as one indented JSON document.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", " ")
	return enc.Encode(r)
}

// WriteText writes every run's tables, then the strategy comparison.
func (r *Report) WriteText(w io.Writer) error {
	fmt.Fprintf(w, "%s\n%s\n%s, load %.2f at start\n", r.Title, r.Command, r.Host, r.Load1)
	if r.Emulated {
		fmt.Fprintf(w, "emulated WAN RTT (ms): %v, jitter %.0f ms, loss %.3f\n", r.RTTMS, r.JitterMS, r.Loss)
	}
	for _, run := range r.Runs {
		fmt.Fprintln(w)
		if err := writeRun(w, run); err != nil {
			return err
		}
	}
	for _, wr := range r.WAL {
		fmt.Fprintf(w, "\n== wal: %s\n", wr)
	}
	if len(r.Runs) > 1 {
		fmt.Fprintln(w)
		return r.writeComparison(w)
	}
	return nil
}

// writeComparison puts the runs side by side: bytes per message and the
// worst cross-region p99 over its one-way delay.
func (r *Report) writeComparison(w io.Writer) error {
	fmt.Fprintf(w, "%-14s %10s %11s %10s %10s %10s %14s %10s %7s %6s\n", "run", "mesh B/msg", "mesh fr/msg", "WAN B/msg", "WAN fr/msg", "wire WAN B", "worst p99−1way", "CPU cores", "others", "lost")
	for _, run := range r.Runs {
		worst := "-"
		if v, ok := run.WorstOverOneWay(); ok {
			worst = fmt.Sprintf("%+.1f ms", v)
		}
		s := run.Server
		fmt.Fprintf(w, "%-14s %10.1f %11.2f %10.1f %10.2f %10.1f %14s %10.2f %7.2f %6d\n", runName(run), s.MeshBytesPerMsg, s.MeshFramesPerMsg,
			s.WANBytesPerMsg, s.WANFramesPerMsg, s.WireWANBytesPerMsg, worst, s.CPU, run.OtherCPU(), run.Lost)
	}
	return nil
}

func runName(r *bench.RegionResult) string {
	if r.Label != "" {
		return r.Label
	}
	return string(r.Scenario)
}

// WriteText writes the run as tables: the latency matrix, then what the
// servers said.
func writeRun(w io.Writer, r *bench.RegionResult) error {
	fmt.Fprintf(w, "== %s\n", r.String())
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	if len(r.Pairs) > 0 {
		fmt.Fprintln(tw, "from → to\tone-way\tmin\tp50\tp90\tp99\tmax\tp99−one-way\tdelivered\tlost\t")
		for _, p := range r.Pairs {
			ow, over := "-", "-"
			if p.OneWayMS >= 0 {
				ow, over = fmt.Sprintf("%.1f", p.OneWayMS), fmt.Sprintf("%+.1f", p.P99-p.OneWayMS)
			}
			fmt.Fprintf(tw, "%s → %s\t%s\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%s\t%d\t%d\t\n", p.From, p.To, ow, p.Min, p.P50, p.P90, p.P99, p.Max, over, p.Count, p.Lost)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	writeExtras(w, r)
	return writeServers(w, &r.Server)
}

func writeServers(w io.Writer, s *bench.ServerFigures) error {
	if len(s.Nodes) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "node\tregion\tCPU\tRSS MiB\tdata B sent\tWAN data B\tcontrol B\tmesh drops\tclient drops\twire WAN B (wanemu)\tgossip WAN B\t")
	for _, n := range s.Nodes {
		fmt.Fprintf(tw, "%s\t%s\t%.2f\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t\n", n.Node, n.Region, n.CPU, n.RSSMiB,
			n.DataBytes, n.WANDataBytes, n.ControlBytes, n.MeshDrops, n.QueueDrops+n.SlowCloses, n.WireWANBytes, n.GossipWANBytes)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "per message: mesh %.1f B / %.2f frames, WAN %.1f B / %.2f frames (data lane); WAN on the wire %.1f B (QUIC, all lanes); server CPU %.2f cores, %.2f µs per delivery\n",
		s.MeshBytesPerMsg, s.MeshFramesPerMsg, s.WANBytesPerMsg, s.WANFramesPerMsg, s.WireWANBytesPerMsg, s.CPU, s.CPUPerDeliveryUs)
	return err
}

// writeExtras writes the presence and connect figures.
func writeExtras(w io.Writer, r *bench.RegionResult) {
	if pf := r.Presence; pf != nil {
		fmt.Fprintf(w, "presence: %d joins, %d watchers: every watcher saw a join after p50 %.1f, p99 %.1f, max %.1f ms; %d joins incomplete\n",
			pf.Joins, pf.Watchers, pf.AllSeen.P50, pf.AllSeen.P99, pf.AllSeen.Max, pf.Incomplete)
	}
	if cf := r.Connect; cf != nil {
		for _, k := range sortedKeys(r.ConnectMS) {
			q := r.ConnectMS[k]
			fmt.Fprintf(w, "connect %s: %d handshakes p50 %.1f p99 %.1f max %.1f ms\n", k, q.Count, q.P50, q.P99, q.Max)
		}
		fmt.Fprintf(w, "ramp %.1fs (%.0f/s), held %d after %.0fs idle; client %.1f KiB/conn (%.0f MiB, %d goroutines)\n",
			cf.RampSeconds, cf.ConnectsPerSec, cf.HeldAfterIdle, cf.IdleSeconds, cf.ClientRSSPerConn, cf.ClientRSSMiB, r.Goroutines)
		for _, k := range sortedKeys(cf.NodeRSSPerConnKB) {
			fmt.Fprintf(w, "node %s: %.1f KiB RSS per connection\n", k, cf.NodeRSSPerConnKB[k])
		}
	}
}
