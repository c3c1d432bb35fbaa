package cluster

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Metrics are the samples of one /metrics page: name{labels} → value.
type Metrics map[string]float64

// Sum adds the samples of name whose labels contain every one of labels
// (each like `lane="changes"`).
func (m Metrics) Sum(name string, labels ...string) float64 {
	var s float64
	for k, v := range m {
		n, l, _ := strings.Cut(k, "{")
		if n != name {
			continue
		}
		ok := true
		for _, want := range labels {
			ok = ok && strings.Contains(l, want)
		}
		if ok {
			s += v
		}
	}
	return s
}

// NodeInfo is the node's ID and region from meshcast_mesh_node_info.
func (m Metrics) NodeInfo() (id, region string) {
	for k := range m {
		if strings.HasPrefix(k, "meshcast_mesh_node_info{") {
			return LabelValue(k, "node"), LabelValue(k, "region")
		}
	}
	return "", ""
}

// LabelValue extracts label name's value from a sample key.
func LabelValue(key, name string) string {
	i := strings.Index(key, name+`="`)
	if i < 0 {
		return ""
	}
	rest := key[i+len(name)+2:]
	j := strings.IndexByte(rest, '"')
	if j < 0 {
		return ""
	}
	return rest[:j]
}

// MetricsURL turns a node's WebSocket URL into its /metrics URL.
func MetricsURL(wsURL string) string {
	u, err := url.Parse(wsURL)
	if err != nil {
		return ""
	}
	u.Scheme = strings.Replace(strings.Replace(u.Scheme, "wss", "https", 1), "ws", "http", 1)
	u.Path, u.RawQuery = "/metrics", ""
	return u.String()
}

// metricsClient keeps no idle connections: nothing outlives a scrape.
var metricsClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

// Scrape reads a Prometheus text page (within 5 s), sending header (fly.io's
// proxy answers from a machine of the region Fly-Prefer-Region names).
func Scrape(ctx context.Context, url string, header http.Header) (Metrics, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := metricsClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("cluster: %s: %s", url, resp.Status)
	}
	return parseMetrics(io.LimitReader(resp.Body, 16<<20))
}

func parseMetrics(r io.Reader) (Metrics, error) {
	m := Metrics{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			m[line[:i]] = v
		}
	}
	return m, sc.Err()
}
