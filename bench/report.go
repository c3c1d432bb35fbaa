package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"time"

	"github.com/meshcast/meshcast/bench/measure"
)

// Report is everything one meshbench local / regions invocation measured:
// one RegionResult per strategy (and round), plus Postgres changes runs.
// It is written as text, JSON and a self-contained HTML page.
type Report struct {
	Title    string             `json:"title"`
	Command  string             `json:"command"`
	Started  time.Time          `json:"started"`
	Host     string             `json:"host"`
	Load1    float64            `json:"load1_at_start"` // 1-minute load average before the first run
	Emulated bool               `json:"emulated"`       // a local cluster on an emulated WAN
	RTTMS    map[string]float64 `json:"rtt_ms,omitempty"`
	JitterMS float64            `json:"jitter_ms,omitempty"`
	Loss     float64            `json:"loss,omitempty"`
	Runs     []*RegionResult    `json:"runs"`
	WAL      []*WALResult       `json:"wal,omitempty"`
}

// NewReport starts a report of this process's command line.
func NewReport(title, command string) *Report {
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
		if err := run.WriteText(w); err != nil {
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

func runName(r *RegionResult) string {
	if r.Label != "" {
		return r.Label
	}
	return string(r.Scenario)
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
