package cluster

import (
	"strings"
	"testing"
)

func TestParseMetrics(t *testing.T) {
	m, err := parseMetrics(strings.NewReader("# HELP x\nprocess_cpu_seconds_total 1.5\n" +
		`meshcast_mesh_bytes_sent_total{peer="a",lane="changes"} 10` + "\n" +
		`meshcast_mesh_bytes_sent_total{peer="b",lane="changes"} 5` + "\n" +
		`meshcast_mesh_bytes_sent_total{peer="b",lane="data"} 7` + "\n" +
		`meshcast_mesh_node_info{node="n1-x",region="iad"} 1` + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if m.Sum("process_cpu_seconds_total") != 1.5 || m.Sum("meshcast_mesh_bytes_sent_total", `lane="changes"`) != 15 ||
		m.Sum("meshcast_mesh_bytes_sent_total") != 22 {
		t.Errorf("%v", m)
	}
	if id, region := m.NodeInfo(); id != "n1-x" || region != "iad" {
		t.Errorf("node info %q %q", id, region)
	}
	if u := MetricsURL("wss://a.example:8443/realtime/v1/websocket?apikey=x"); u != "https://a.example:8443/metrics" {
		t.Errorf("metrics URL %s", u)
	}
}

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
	w, err := WAN([]string{"iad", "iad", "fra", "fra", "sin", "sin"}, 5000, m, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(w.Nodes) != 12 || w.Nodes["127.0.0.1:5110"] != "iad" || w.Nodes["127.0.0.1:5161"] != "sin" {
		t.Fatalf("nodes %v", w.Nodes)
	}
	if w.RTT["iad-fra"] != 90 || w.RTT["iad-sin"] != 223 || w.RTT["fra-sin"] != 155 || w.RTT["fra-fra"] != 2 {
		t.Fatalf("rtt %v (want overrides, then fly.md's Azure table)", w.RTT)
	}
	if _, err := WAN([]string{"iad", "mars"}, 5000, nil, 0, 0); err == nil {
		t.Error("unknown pair without an RTT accepted")
	}
	if c := Cycle([]string{"a", "b"}, 3); strings.Join(c, ",") != "a,b,a" {
		t.Errorf("cycle %v", c)
	}
}
