package report

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/meshcast/meshcast/bench"
	"github.com/meshcast/meshcast/bench/measure"
)

// WriteTable prints results side by side: one column per target and
// transport (bench.Result.Column, in order of first appearance), one block of rows per scenario (mode, binary, subs,
// rate, window). Several results of one target and scenario (repeated
// rounds) are reduced row by row to their median, so one column's figures may
// come from different rounds; the number of rounds is shown.
func WriteTable(w io.Writer, results []bench.Result) error {
	var targets []string
	type key struct {
		mode   string
		binary bool
		subs   int
		rate   float64
		window int
	}
	var scenarios []key
	cells := map[key]map[string][]bench.Result{}
	for _, r := range results {
		col := r.Column()
		if !slices.Contains(targets, col) {
			targets = append(targets, col)
		}
		k := key{r.Mode, r.Binary, r.Subs, r.RatePerSec, r.Window}
		if cells[k] == nil {
			cells[k] = map[string][]bench.Result{}
			scenarios = append(scenarios, k)
		}
		cells[k][col] = append(cells[k][col], r)
	}

	const labelWidth = 44
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight|tabwriter.Debug)
	fmt.Fprintf(tw, "%-*s\t%s\t\n", labelWidth, "scenario / metric", strings.Join(targets, "\t"))
	for _, k := range scenarios {
		name := fmt.Sprintf("%s, %d subs", k.mode, k.subs)
		if k.rate > 0 {
			name += fmt.Sprintf(", %.0f msg/s", k.rate)
		}
		if k.window > 0 {
			name += fmt.Sprintf(", window %d", k.window)
		}
		if k.binary {
			name += ", binary"
		}
		fmt.Fprintf(tw, "%-*s\t%s\t\n", labelWidth, strings.ToUpper(name), strings.Repeat("\t", len(targets)-1))
		for _, rw := range tableRows(k.mode) {
			fmt.Fprintf(tw, "  %-*s", labelWidth-2, rw.label)
			for _, t := range targets {
				rs := cells[k][t]
				vs := make([]float64, len(rs))
				for i, r := range rs {
					vs[i] = rw.get(r)
				}
				switch {
				case len(rs) == 0:
					fmt.Fprint(tw, "\t-")
				case rw.prec < 0:
					fmt.Fprintf(tw, "\t%d", len(rs))
				default:
					fmt.Fprintf(tw, "\t%.*f", rw.prec, measure.Median(vs))
				}
			}
			fmt.Fprint(tw, "\t\n")
		}
	}
	return tw.Flush()
}

// row is one figure of the table, with its precision (-1: the rounds).
type row struct {
	label string
	get   func(bench.Result) float64
	prec  int
}

// tableRows are the figures of a mode.
func tableRows(mode string) []row {
	rows := []row{
		{"deliveries/s", func(r bench.Result) float64 { return r.DeliveriesPerSec }, 0},
		{"publications/s", func(r bench.Result) float64 { return r.PublishPerSec }, 0},
		{"latency p50 ms", func(r bench.Result) float64 { return r.P50 }, 2},
		{"latency p99 ms", func(r bench.Result) float64 { return r.P99 }, 2},
		{"latency max ms", func(r bench.Result) float64 { return r.Max }, 2},
		{"lost deliveries", func(r bench.Result) float64 { return float64(r.Lost) }, 0},
		{"server CPU µs/delivery", func(r bench.Result) float64 { return r.ServerCPUPerDeliveryUs }, 3},
	}
	if mode == string(bench.ModeIdle) {
		rows = []row{
			{"connected", func(r bench.Result) float64 { return float64(r.Connected) }, 0},
			{"connect time s", func(r bench.Result) float64 { return r.ConnectSeconds }, 1},
			{"RSS before KiB", func(r bench.Result) float64 { return float64(r.RSSBeforeKiB) }, 0},
			{"RSS after KiB", func(r bench.Result) float64 { return float64(r.RSSAfterKiB) }, 0},
			{"RSS KiB/conn", func(r bench.Result) float64 { return r.RSSPerConnKiB }, 1},
		}
	}
	return append(rows,
		row{"server CPU cores", func(r bench.Result) float64 { return r.ServerCPU }, 2},
		row{"meshbench CPU cores", func(r bench.Result) float64 { return r.ClientCPU }, 2},
		row{"host CPU cores", func(r bench.Result) float64 { return r.HostCPU }, 2},
		row{"  of which other processes", func(r bench.Result) float64 { return otherCPU(r) }, 2},
		row{"errors", func(r bench.Result) float64 {
			return float64(r.ConnectErrors+r.Disconnects) + float64(r.Unexpected+r.PublishErrors+r.Gaps+r.OutOfOrder)
		}, 0},
		row{"rounds", func(bench.Result) float64 { return 1 }, -1},
	)
}

// otherCPU is the host CPU not used by the server or meshbench: interference
// from other processes (and kernel work not charged to either), or -1.
func otherCPU(r bench.Result) float64 {
	if r.HostCPU < 0 || r.ServerCPU < 0 || r.ClientCPU < 0 {
		return -1
	}
	return max(r.HostCPU-r.ServerCPU-r.ClientCPU, 0)
}
