package report

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/html"

	"github.com/meshcast/meshcast/bench"
	"github.com/meshcast/meshcast/bench/measure"
)

// TestReportFormats writes a report with two runs and parses what comes
// out: JSON back into a Report, HTML with an HTML parser (every chart an
// inline SVG, nothing loaded from elsewhere).
func TestReportFormats(t *testing.T) {
	rep := New("test", "meshbench local -test")
	rep.Emulated, rep.RTTMS = true, map[string]float64{"iad-fra": 87}
	for _, label := range []string{"interested", "relay"} {
		res := &bench.RegionResult{Scenario: bench.ScenarioFanout, Label: label, Regions: []string{"iad", "fra"}}
		for _, pr := range [][2]string{{"iad", "iad"}, {"iad", "fra"}} {
			h := measure.NewHistogram()
			ow := 0.0
			if pr[1] != pr[0] {
				ow = 43.5
			}
			for i := range 100 {
				h.Record(int64((ow + float64(i)/10) * 1e6))
			}
			p := bench.PairStats{From: pr[0], To: pr[1], Count: h.Count(), OneWayMS: ow, CDF: h.CDF(60)}
			p.P50, p.P99 = measure.MS(time.Duration(h.Quantile(0.5))), measure.MS(time.Duration(h.Quantile(0.99)))
			res.Pairs = append(res.Pairs, p)
		}
		res.Server = bench.ServerFigures{MeshBytesPerMsg: 500, WANBytesPerMsg: 250, WANFramesPerMsg: 1, Nodes: []bench.NodeFigures{{Node: "n1-x", Region: "iad"}}}
		rep.Runs = append(rep.Runs, res)
	}
	var js, page, txt bytes.Buffer
	if err := rep.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(js.Bytes(), &back); err != nil || len(back.Runs) != 2 || back.Runs[1].Pair("iad", "fra") == nil ||
		len(back.Runs[1].Pair("iad", "fra").CDF) == 0 {
		t.Fatalf("JSON round trip: %v %+v", err, back)
	}
	if err := rep.WriteText(&txt); err != nil || !strings.Contains(txt.String(), "iad → fra") || !strings.Contains(txt.String(), "relay") {
		t.Fatalf("text: %v\n%s", err, txt.String())
	}
	if err := rep.WriteHTML(&page); err != nil {
		t.Fatal(err)
	}
	doc, err := html.Parse(bytes.NewReader(page.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode {
			counts[n.Data]++
			for _, a := range n.Attr {
				if (a.Key == "src" || a.Key == "href") && a.Val != "" {
					t.Errorf("<%s %s=%q>: the page must be self-contained", n.Data, a.Key, a.Val)
				}
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	// Per run a heatmap and a CDF, plus the bytes chart.
	if counts["svg"] != 5 || counts["polyline"] != 4 || counts["script"] != 0 || counts["table"] < 5 {
		t.Fatalf("elements %v", counts)
	}
}

func TestTables(t *testing.T) {
	res := bench.Result{Target: bench.TargetMeshcast, Mode: string(bench.ModeThroughput), Subs: 20, Connected: 20, DeliveriesPerSec: 1e5, P50: 1}
	var out strings.Builder
	if err := WriteTable(&out, []bench.Result{res, res}); err != nil || !strings.Contains(out.String(), "deliveries/s") || !strings.Contains(out.String(), "THROUGHPUT, 20 SUBS") {
		t.Fatalf("table: %v\n%s", err, out.String())
	}
	out.Reset()
	if err := WriteWALTable(&out, []bench.WALResult{{Label: "fanout-100", Shape: "fanout", RateTarget: 100}}); err != nil || !strings.Contains(out.String(), "fanout-100") {
		t.Fatalf("wal table: %v\n%s", err, out.String())
	}
}
