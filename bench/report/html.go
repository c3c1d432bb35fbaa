package report

import (
	"fmt"
	"html"
	"io"
	"math"
	"sort"
	"strings"

	"github.com/meshcast/meshcast/bench"
)

// WriteHTML writes the report as one self-contained HTML page: no script,
// no external resource; the charts are SVG generated here. Per run: a
// heatmap of p99 by (publisher region → subscriber region) and the latency
// CDF of every pair; for several runs, mesh and WAN bytes per message side
// by side; then every table of the text report.
func (r *Report) WriteHTML(w io.Writer) error {
	var b strings.Builder
	b.WriteString(`<!doctype html><html lang="en"><head><meta charset="utf-8"><title>` + esc(r.Title) + `</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1d2330;background:#fff;max-width:1400px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #dde}h3{font-size:15px;margin:14px 0 6px}
code,.mono{font-family:ui-monospace,monospace;font-size:12px}.muted{color:#667}
table{border-collapse:collapse;margin:6px 0 12px}td,th{border:1px solid #dde;padding:3px 7px;text-align:right;font-variant-numeric:tabular-nums}
th{background:#f3f4f8}td:first-child,th:first-child{text-align:left}
.row{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}.ok{color:#17803d}.bad{color:#b42318}
svg text{font-family:system-ui,sans-serif}
</style></head><body>
`)
	fmt.Fprintf(&b, "<h1>%s</h1><div class=muted>%s · %s · load %.2f at start</div><div class=mono>%s</div>\n",
		esc(r.Title), esc(r.Started.Format("2006-01-02 15:04 UTC")), esc(r.Host), r.Load1, esc(r.Command))
	if r.Emulated {
		keys := sortedKeys(r.RTTMS)
		var parts []string
		for _, k := range keys {
			parts = append(parts, fmt.Sprintf("%s %.0f ms", k, r.RTTMS[k]))
		}
		fmt.Fprintf(&b, "<p>Emulated WAN (round trips; one-way delay = half): %s; jitter %.0f ms, loss %.3f. Every byte of mesh and gossip between regions is delayed, never client ↔ node traffic.</p>\n",
			esc(strings.Join(parts, ", ")), r.JitterMS, r.Loss)
	}
	if len(r.Runs) > 1 {
		b.WriteString("<h2>Strategies side by side</h2><div class=row>")
		b.WriteString(bytesChart(r.Runs))
		b.WriteString(comparisonTable(r.Runs))
		b.WriteString("</div>")
	}
	for _, run := range r.Runs {
		fmt.Fprintf(&b, "<h2>%s</h2><p>%s</p><div class=row>", esc(runName(run)+" — "+string(run.Scenario)), esc(run.String()))
		if len(run.Pairs) > 0 {
			b.WriteString(heatmap(run))
			b.WriteString(cdfChart(run))
		}
		b.WriteString("</div>")
		b.WriteString(pairTable(run))
		b.WriteString(extrasHTML(run))
		b.WriteString(nodeTable(run))
	}
	if len(r.WAL) > 0 {
		b.WriteString("<h2>Postgres changes</h2><table><tr><th>run</th><th>result</th></tr>")
		for _, wr := range r.WAL {
			fmt.Fprintf(&b, "<tr><td>%s</td><td class=mono style='text-align:left'>%s</td></tr>", esc(wr.Label), esc(wr.String()))
		}
		b.WriteString("</table>")
	}
	b.WriteString("<p class=muted>Written by meshbench (bench/reporthtml.go). Latency = receive time − send time stamped in the payload; publishers and subscribers run in one process, so one clock.</p></body></html>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func esc(s string) string { return html.EscapeString(s) }

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// heatmap draws p99 by pair: rows are publisher regions, columns
// subscriber regions; the colour is p99 − emulated one-way delay (green
// within 10 ms, red from 40 ms), or p99 itself without emulation.
func heatmap(run *bench.RegionResult) string {
	regs := run.Regions
	const cell, left, top = 92, 70, 56
	wd, ht := left+cell*len(regs)+10, top+cell*len(regs)+30
	var b strings.Builder
	fmt.Fprintf(&b, `<figure><svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" role="img" aria-label="p99 heatmap">`, wd, ht)
	fmt.Fprintf(&b, `<text x="%d" y="16" font-size="13" font-weight="600">p99 by pair (ms) · colour: p99 − one-way</text>`, 4)
	fmt.Fprintf(&b, `<text x="%d" y="40" font-size="12" fill="#667">subscriber region →</text>`, left)
	for j, reg := range regs {
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="13" text-anchor="middle">%s</text>`, left+cell*j+cell/2, top-4, esc(reg))
	}
	for i, from := range regs {
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="13" text-anchor="end">%s</text>`, left-8, top+cell*i+cell/2+4, esc(from))
		for j, to := range regs {
			x, y := left+cell*j, top+cell*i
			p := run.Pair(from, to)
			if p == nil || p.Count == 0 {
				fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="#f3f4f8" stroke="#fff"/>`, x, y, cell, cell)
				continue
			}
			over := p.P99
			if p.OneWayMS >= 0 {
				over = p.P99 - p.OneWayMS
			}
			fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="%s" stroke="#fff" stroke-width="2"><title>%s → %s: p99 %.1f ms, one-way %.1f ms</title></rect>`,
				x, y, cell, cell, heatColour(over), esc(from), esc(to), p.P99, p.OneWayMS)
			fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="16" font-weight="600" text-anchor="middle">%.1f</text>`, x+cell/2, y+cell/2, p.P99)
			if p.OneWayMS >= 0 {
				fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="11" text-anchor="middle">%+.1f over %.1f</text>`, x+cell/2, y+cell/2+18, over, p.OneWayMS)
			}
		}
	}
	fmt.Fprintf(&b, `<text x="4" y="%d" font-size="11" fill="#667">rows: publisher region</text></svg></figure>`, ht-8)
	return b.String()
}

// heatColour maps ms over the floor to green (≤ 10) … red (≥ 40).
func heatColour(over float64) string {
	t := math.Min(math.Max((over-5)/35, 0), 1)
	r := int(120 + 120*t)
	g := int(210 - 120*t)
	bl := int(140 - 60*t)
	return fmt.Sprintf("rgb(%d,%d,%d)", r, g, bl)
}

var pairColours = []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22", "#393b79", "#637939"}

// cdfChart draws every pair's latency CDF on a log time axis, with the
// emulated one-way delays as dashed lines.
func cdfChart(run *bench.RegionResult) string {
	const wd, ht, left, right, top, bottom = 620, 360, 50, 150, 24, 40
	lo, hi := math.Inf(1), 0.0
	for _, p := range run.Pairs {
		for _, c := range p.CDF {
			if c.MS > 0 {
				lo = math.Min(lo, c.MS)
			}
			hi = math.Max(hi, c.MS)
		}
	}
	if hi <= 0 {
		return ""
	}
	lo = math.Pow(10, math.Floor(math.Log10(math.Max(lo, 0.01))))
	hi = math.Pow(10, math.Ceil(math.Log10(hi)))
	pw, ph := float64(wd-left-right), float64(ht-top-bottom)
	xOf := func(v float64) float64 {
		v = math.Max(v, lo)
		return float64(left) + pw*(math.Log10(v)-math.Log10(lo))/(math.Log10(hi)-math.Log10(lo))
	}
	yOf := func(f float64) float64 { return float64(top) + ph*(1-f) }
	var b strings.Builder
	fmt.Fprintf(&b, `<figure><svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" role="img" aria-label="latency CDF">`, wd, ht)
	fmt.Fprintf(&b, `<text x="%d" y="14" font-size="13" font-weight="600">latency CDF per pair (publisher → subscriber)</text>`, left)
	for d := lo; d <= hi*1.0001; d *= 10 {
		for _, m := range []float64{1, 2, 5} {
			v := d * m
			if v > hi*1.0001 {
				break
			}
			x := xOf(v)
			fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#e6e8ef"/>`, x, top, x, ht-bottom)
			fmt.Fprintf(&b, `<text x="%.1f" y="%d" font-size="11" text-anchor="middle">%s</text>`, x, ht-bottom+14, trimFloat(v))
		}
	}
	for _, f := range []float64{0, 0.25, 0.5, 0.75, 0.9, 1} {
		y := yOf(f)
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#e6e8ef"/><text x="%d" y="%.1f" font-size="11" text-anchor="end">%s</text>`,
			left, y, wd-right, y, left-4, y+4, trimFloat(f))
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="12" text-anchor="middle">ms (log)</text>`, left+int(pw/2), ht-6)
	seenOneWay := map[float64]bool{}
	for _, p := range run.Pairs {
		if p.OneWayMS > 0 && !seenOneWay[p.OneWayMS] {
			seenOneWay[p.OneWayMS] = true
			x := xOf(p.OneWayMS)
			fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#99a" stroke-dasharray="4 3"><title>one-way %.1f ms</title></line>`, x, top, x, ht-bottom, p.OneWayMS)
		}
	}
	for i, p := range run.Pairs {
		col := pairColours[i%len(pairColours)]
		var pts []string
		prevF := 0.0
		for _, c := range p.CDF {
			x := xOf(c.MS)
			pts = append(pts, fmt.Sprintf("%.1f,%.1f %.1f,%.1f", x, yOf(prevF), x, yOf(c.F)))
			prevF = c.F
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.8" points="%s"><title>%s → %s</title></polyline>`, col, strings.Join(pts, " "), esc(p.From), esc(p.To))
		ly := top + 16*i + 8
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="3"/><text x="%d" y="%d" font-size="12">%s → %s</text>`,
			wd-right+10, ly, wd-right+28, ly, col, wd-right+32, ly+4, esc(p.From), esc(p.To))
	}
	b.WriteString(`</svg></figure>`)
	return b.String()
}

func trimFloat(v float64) string {
	s := fmt.Sprintf("%.3f", v)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	return s
}

// bytesChart draws mesh, WAN and wire WAN bytes per message by run.
func bytesChart(runs []*bench.RegionResult) string {
	const wd, ht, left, top, bottom = 520, 300, 56, 30, 50
	series := []struct {
		name, col string
		v         func(*bench.RegionResult) float64
	}{
		{"mesh data B/msg", "#1f77b4", func(r *bench.RegionResult) float64 { return r.Server.MeshBytesPerMsg }},
		{"WAN data B/msg", "#d62728", func(r *bench.RegionResult) float64 { return r.Server.WANBytesPerMsg }},
		{"WAN on the wire B/msg", "#ff9896", func(r *bench.RegionResult) float64 { return r.Server.WireWANBytesPerMsg }},
	}
	top0 := 0.0
	for _, r := range runs {
		for _, s := range series {
			top0 = math.Max(top0, s.v(r))
		}
	}
	if top0 == 0 {
		return ""
	}
	top0 *= 1.15
	pw, ph := float64(wd-left-10), float64(ht-top-bottom)
	group := pw / float64(len(runs))
	bar := group / float64(len(series)+1)
	var b strings.Builder
	fmt.Fprintf(&b, `<figure><svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" role="img" aria-label="bytes per message">`, wd, ht)
	fmt.Fprintf(&b, `<text x="%d" y="16" font-size="13" font-weight="600">bytes per message by strategy</text>`, 4)
	for i := 0; i <= 4; i++ {
		v := top0 * float64(i) / 4
		y := float64(top) + ph*(1-float64(i)/4)
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#e6e8ef"/><text x="%d" y="%.1f" font-size="11" text-anchor="end">%.0f</text>`, left, y, wd-10, y, left-4, y+4, v)
	}
	for gi, r := range runs {
		gx := float64(left) + group*float64(gi) + bar/2
		for si, s := range series {
			v := s.v(r)
			h := ph * v / top0
			x := gx + bar*float64(si)
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s: %.1f</title></rect>`, x, float64(top)+ph-h, bar-2, h, s.col, esc(s.name), v)
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="10" text-anchor="middle">%.0f</text>`, x+bar/2-1, float64(top)+ph-h-3, v)
		}
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" font-size="12" text-anchor="middle">%s</text>`, gx+bar*1.5, ht-bottom+16, esc(runName(r)))
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" font-size="11" text-anchor="middle" fill="#667">%.2f WAN fr/msg</text>`, gx+bar*1.5, ht-bottom+30, r.Server.WANFramesPerMsg)
	}
	for si, s := range series {
		x := left + 150*si
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="10" height="10" fill="%s"/><text x="%d" y="%d" font-size="11">%s</text>`, x, ht-12, s.col, x+14, ht-3, esc(s.name))
	}
	b.WriteString(`</svg></figure>`)
	return b.String()
}

func comparisonTable(runs []*bench.RegionResult) string {
	var b strings.Builder
	b.WriteString("<table><tr><th>run</th><th>mesh B/msg</th><th>mesh frames/msg</th><th>WAN B/msg</th><th>WAN frames/msg</th><th>wire WAN B/msg</th><th>worst cross-region p99 − one-way</th><th>server CPU</th><th>other processes (cores)</th><th>lost</th></tr>")
	for _, r := range runs {
		worst := "–"
		if v, ok := r.WorstOverOneWay(); ok {
			cls := "ok"
			if v > 10 {
				cls = "bad"
			}
			worst = fmt.Sprintf("<span class=%s>%+.1f ms</span>", cls, v)
		}
		s := r.Server
		fmt.Fprintf(&b, "<tr><td>%s</td><td>%.1f</td><td>%.2f</td><td>%.1f</td><td>%.2f</td><td>%.1f</td><td>%s</td><td>%.2f</td><td>%.2f</td><td>%d</td></tr>",
			esc(runName(r)), s.MeshBytesPerMsg, s.MeshFramesPerMsg, s.WANBytesPerMsg, s.WANFramesPerMsg, s.WireWANBytesPerMsg, worst, s.CPU, r.OtherCPU(), r.Lost)
	}
	b.WriteString("</table>")
	return b.String()
}

func pairTable(run *bench.RegionResult) string {
	if len(run.Pairs) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("<table><tr><th>publisher → subscriber</th><th>one-way</th><th>min</th><th>p50</th><th>p90</th><th>p99</th><th>max</th><th>p99 − one-way</th><th>delivered</th><th>lost</th></tr>")
	for _, p := range run.Pairs {
		ow, over := "–", "–"
		if p.OneWayMS >= 0 {
			ow, over = fmt.Sprintf("%.1f", p.OneWayMS), fmt.Sprintf("%+.1f", p.P99-p.OneWayMS)
		}
		fmt.Fprintf(&b, "<tr><td>%s → %s</td><td>%s</td><td>%.1f</td><td>%.1f</td><td>%.1f</td><td>%.1f</td><td>%.1f</td><td>%s</td><td>%d</td><td>%d</td></tr>",
			esc(p.From), esc(p.To), ow, p.Min, p.P50, p.P90, p.P99, p.Max, over, p.Count, p.Lost)
	}
	b.WriteString("</table>")
	return b.String()
}

func extrasHTML(run *bench.RegionResult) string {
	var b strings.Builder
	writeExtras(&b, run)
	if b.Len() == 0 {
		return ""
	}
	return "<pre class=mono>" + esc(b.String()) + "</pre>"
}

func nodeTable(run *bench.RegionResult) string {
	if len(run.Server.Nodes) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("<h3>nodes (from /metrics, over the run)</h3><table><tr><th>node</th><th>region</th><th>CPU cores</th><th>RSS MiB</th><th>data B sent</th><th>WAN data B</th><th>control B</th><th>mesh drops</th><th>client drops</th><th>wire WAN B</th><th>gossip WAN B</th><th>bytes per peer (data/control)</th></tr>")
	for _, n := range run.Server.Nodes {
		var peers []string
		for _, p := range sortedKeys(n.PeerLaneBytes) {
			peers = append(peers, fmt.Sprintf("%s %.0f/%.0f", p, n.PeerLaneBytes[p]["data"], n.PeerLaneBytes[p]["control"]))
		}
		fmt.Fprintf(&b, "<tr><td>%s</td><td>%s</td><td>%.2f</td><td>%.0f</td><td>%.0f</td><td>%.0f</td><td>%.0f</td><td>%.0f</td><td>%.0f</td><td>%.0f</td><td>%.0f</td><td class=mono style='text-align:left'>%s</td></tr>",
			esc(n.Node), esc(n.Region), n.CPU, n.RSSMiB, n.DataBytes, n.WANDataBytes, n.ControlBytes, n.MeshDrops, n.QueueDrops+n.SlowCloses, n.WireWANBytes, n.GossipWANBytes, esc(strings.Join(peers, ", ")))
	}
	b.WriteString("</table>")
	return b.String()
}
