package report

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/meshcast/meshcast/bench"
)

// WriteWALTable prints WAL results one per row, in order.
func WriteWALTable(w io.Writer, results []bench.WALResult) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "run\tshape\tsubs\trate\trows/tx\trows/s\tdeliv/s\tp50 ms\tp95 ms\tp99 ms\tmax ms\tack p95\tack p99\tlost\tslot lag KiB start→end (max)\tgrowth B/s\tnodes\tpg\tmeshbench\thost\tnode µs/deliv\tnode µs/row\tpg µs/row\tmesh B/row\t")
	for _, r := range results {
		rate := "max"
		if r.RateTarget > 0 {
			rate = fmt.Sprintf("%.0f", r.RateTarget)
		}
		var meshPerRow float64
		if r.WALChanges > 0 {
			meshPerRow = r.MeshChangesBytes / r.WALChanges
		}
		lost := fmt.Sprint(r.Lost)
		if r.ConnectErrors > 0 || r.Wrong > 0 || r.Repeated > 0 || r.Unexpected > 0 || r.CommitErrors > 0 {
			lost += "!"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%.0f\t%.0f\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%s\t%.0f→%.0f (%.0f)\t%.0f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.0f\t%.0f\t%.0f\t\n",
			r.Label, r.Shape, r.Connected, rate, r.RowsPerTx, r.RowsPerSec, r.DeliveriesPerSec, r.P50, r.P95, r.P99, r.Max, r.AckP95, r.AckP99, lost,
			float64(r.SlotLagStart)/1024, float64(r.SlotLagEnd)/1024, float64(r.SlotLagMax)/1024, r.SlotLagSlope,
			r.ServerCPU, r.PostgresCPU, r.ClientCPU, r.HostCPU, r.ServerUsPerDeliv, r.ServerUsPerRow, r.PostgresUsPerRow, meshPerRow)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintln(w, "(p50–max: statement sent → client; ack: commit acknowledged to the writer → client; cpu in cores over the measured window; lost! = also connect errors, wrong or repeated rows, unexpected frames or commit errors: see the run's JSON)")
	return err
}
