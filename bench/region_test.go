package bench

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshcast/meshcast/bench/measure"

	"github.com/gobwas/ws"
	"go.uber.org/goleak"
	"golang.org/x/net/html"
)

func TestRTTMatrixAndWAN(t *testing.T) {
	m, err := ParseRTTMatrix("iad-fra=90, fra-fra=2")
	if err != nil || m["iad-fra"] != 90 || m["fra-fra"] != 2 {
		t.Fatal(m, err)
	}
	for _, bad := range []string{"iad=3", "iad-fra", "iad-fra=x", "iad-fra=-1"} {
		if _, err := ParseRTTMatrix(bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
	w, err := LocalConfig{Regions: []string{"iad", "fra", "sin"}, NodesPerRegion: 2, RTT: m, BasePort: 5000}.WANConfig()
	if err != nil {
		t.Fatal(err)
	}
	if len(w.Nodes) != 12 || w.Nodes["127.0.0.1:5110"] != "iad" || w.Nodes["127.0.0.1:5161"] != "sin" {
		t.Fatalf("nodes %v", w.Nodes)
	}
	if w.RTT["iad-fra"] != 90 || w.RTT["iad-sin"] != 223 || w.RTT["fra-sin"] != 155 || w.RTT["fra-fra"] != 2 {
		t.Fatalf("rtt %v (want overrides, then fly.md's Azure table)", w.RTT)
	}
	if _, err := (LocalConfig{Regions: []string{"iad", "mars"}}).WANConfig(); err == nil {
		t.Error("unknown pair without an RTT accepted")
	}
}

// TestPollerFrames feeds a polled connection what a server may send: a
// frame cut over several writes, 16- and 64-bit lengths, a fragmented
// message, pings (answered) and a close.
func TestPollerFrames(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	pong := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		if _, err := ws.Upgrade(c); err != nil {
			return
		}
		c.Write(frame(true, ws.OpText, []byte("first")))
		big := frame(true, ws.OpBinary, bytes.Repeat([]byte{'b'}, 70000))
		mid := frame(true, ws.OpText, bytes.Repeat([]byte{'m'}, 300))
		all := append(append([]byte{}, mid...), big...)
		for i := 0; i < len(all); i += 997 { // cut everywhere, headers too
			c.Write(all[i:min(i+997, len(all))])
			time.Sleep(time.Millisecond)
		}
		c.Write(frame(false, ws.OpText, []byte("frag-")))
		c.Write(frame(true, ws.OpPing, []byte("hi")))
		c.Write(frame(true, ws.OpContinuation, []byte("ment")))
		h, err := ws.ReadHeader(c)
		if err == nil && h.OpCode == ws.OpPong {
			b := make([]byte, h.Length)
			c.Read(b)
			ws.Cipher(b, h.Mask, 0)
			pong <- b
		}
		c.Write(frame(true, ws.OpClose, ws.NewCloseFrameBody(ws.StatusGoingAway, "bye")))
		time.Sleep(100 * time.Millisecond)
	}()
	base := time.Now()
	g, err := newPollGroup(2, func() int64 { return int64(time.Since(base)) }, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer g.close()
	c, err := dialWS(context.Background(), "ws://"+ln.Addr().String()+"/", time.Second, 4096)
	if err != nil {
		t.Fatal(err)
	}
	rec := &msgRecorder{}
	if err := g.add(c, rec); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if n, _ := g.errs(); n > 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case p := <-pong:
		if string(p) != "hi" {
			t.Errorf("pong %q", p)
		}
	case <-time.After(time.Second):
		t.Error("ping not answered")
	}
	rec.mu.Lock()
	got := rec.msgs
	rec.mu.Unlock()
	want := []string{"first", strings.Repeat("m", 300), strings.Repeat("b", 70000), "frag-ment"}
	if len(got) != len(want) {
		t.Fatalf("got %d messages, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("message %d: %d bytes %.20q…, want %d", i, len(got[i]), got[i], len(want[i]))
		}
	}
	if n, err := g.errs(); n != 1 || err == nil || !strings.Contains(err.Error(), "bye") {
		t.Errorf("close: %d %v", n, err)
	}
}

type msgRecorder struct {
	mu   sync.Mutex
	msgs []string
}

func (r *msgRecorder) onMessage(_ int, _ ws.OpCode, b []byte, _ int64) {
	r.mu.Lock()
	r.msgs = append(r.msgs, string(b))
	r.mu.Unlock()
}

// frame builds an unmasked server frame.
func frame(fin bool, op ws.OpCode, p []byte) []byte {
	b0 := byte(op)
	if fin {
		b0 |= 0x80
	}
	b := []byte{b0}
	switch n := len(p); {
	case n < 126:
		b = append(b, byte(n))
	case n <= 0xffff:
		b = append(b, 126, byte(n>>8), byte(n))
	default:
		b = append(b, 127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	return append(b, p...)
}

// TestReportFormats writes a report with two runs and parses what comes
// out: JSON back into a Report, HTML with an HTML parser (every chart an
// inline SVG, nothing loaded from elsewhere).
func TestReportFormats(t *testing.T) {
	rep := NewReport("test", "meshbench local -test")
	rep.Emulated, rep.RTTMS = true, map[string]float64{"iad-fra": 87}
	for _, label := range []string{"interested", "relay"} {
		res := &RegionResult{Scenario: ScenarioFanout, Label: label, Regions: []string{"iad", "fra"}}
		for _, pr := range [][2]string{{"iad", "iad"}, {"iad", "fra"}} {
			h := measure.NewHistogram()
			ow := 0.0
			if pr[1] != pr[0] {
				ow = 43.5
			}
			for i := range 100 {
				h.Record(int64((ow + float64(i)/10) * 1e6))
			}
			res.Pairs = append(res.Pairs, pairStats(h, pr[0], pr[1], func(a, b string) time.Duration {
				return time.Duration(ow * 1e6)
			}))
		}
		res.Server = ServerFigures{MeshBytesPerMsg: 500, WANBytesPerMsg: 250, WANFramesPerMsg: 1, Nodes: []NodeFigures{{Node: "n1-x", Region: "iad"}}}
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
