package cluster

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/meshcast/meshcast/mesh/wanemu"
)

// DefaultRTT is the round-trip time in ms between fly.io regions that
// meshbench local emulates unless told otherwise: Azure's published P50
// inter-region round trips over its backbone (MicrosoftDocs/azure-docs,
// articles/networking/azure-network-latency.md, July 2023 data), with each
// fly region mapped to the nearest Azure region: iad=East US, ord=North
// Central US, lax=West US, fra=Germany West Central, ams=West Europe,
// lhr=UK South, sin=Southeast Asia, nrt=Japan East, syd=Australia East,
// gru=Brazil South, jnb=South Africa North. The public internet is as
// slow or slower; fly's own live figures are at rtt.fly.dev.
var DefaultRTT = map[string]float64{
	"iad-ord": 19, "iad-lax": 64, "iad-fra": 87, "iad-ams": 82, "iad-lhr": 76, "iad-sin": 223, "iad-nrt": 156, "iad-syd": 204, "iad-gru": 116, "iad-jnb": 243,
	"ord-lax": 49, "ord-fra": 103, "ord-ams": 100, "ord-lhr": 91, "ord-sin": 205, "ord-nrt": 142, "ord-syd": 188, "ord-gru": 136, "ord-jnb": 263,
	"lax-fra": 147, "lax-ams": 147, "lax-lhr": 136, "lax-sin": 169, "lax-nrt": 106, "lax-syd": 148, "lax-gru": 180, "lax-jnb": 312,
	"fra-ams": 9, "fra-lhr": 14, "fra-sin": 155, "fra-nrt": 217, "fra-syd": 237, "fra-gru": 189, "fra-jnb": 180,
	"ams-lhr": 9, "ams-sin": 156, "ams-nrt": 219, "ams-syd": 240, "ams-gru": 184, "ams-jnb": 183,
	"lhr-sin": 153, "lhr-nrt": 217, "lhr-syd": 238, "lhr-gru": 178, "lhr-jnb": 173,
	"sin-nrt": 70, "sin-syd": 89, "sin-gru": 341, "sin-jnb": 296,
	"nrt-syd": 102, "nrt-gru": 275, "nrt-jnb": 358,
	"syd-gru": 319, "syd-jnb": 378,
	"gru-jnb": 345,
}

// rttOf looks a pair up in m in either order.
func rttOf(m map[string]float64, a, b string) (float64, bool) {
	if v, ok := m[a+"-"+b]; ok {
		return v, true
	}
	v, ok := m[b+"-"+a]
	return v, ok
}

// ParseRTTMatrix reads "iad-fra=87,iad-sin=223,…" (ms).
func ParseRTTMatrix(s string) (map[string]float64, error) {
	out := map[string]float64{}
	for _, kv := range strings.Split(s, ",") {
		if kv = strings.TrimSpace(kv); kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		a, b, ok2 := strings.Cut(k, "-")
		f, err := strconv.ParseFloat(v, 64)
		if !ok || !ok2 || a == "" || b == "" || err != nil || f < 0 {
			return nil, fmt.Errorf("cluster: rtt %q is not region-region=ms", kv)
		}
		out[k] = f
	}
	return out, nil
}

// WAN is the emulated WAN of a cluster with these nodes' regions on the
// port layout of basePort (see Config): every node's gossip and mesh
// address with its region, and the RTT between every pair of regions,
// from rtt ("a-b" → ms, either order; "a-a" a delay inside a region), else
// DefaultRTT.
func WAN(regions []string, basePort int, rtt map[string]float64, jitterMS, loss float64) (wanemu.Config, error) {
	w := wanemu.Config{Nodes: map[string]string{}, RTT: map[string]float64{}, JitterMS: jitterMS, Loss: loss}
	var distinct []string
	for i, r := range regions {
		g := basePort + 100 + 10*(i+1)
		w.Nodes["127.0.0.1:"+strconv.Itoa(g)] = r
		w.Nodes["127.0.0.1:"+strconv.Itoa(g+1)] = r
		if !slices.Contains(distinct, r) {
			distinct = append(distinct, r)
		}
	}
	for i, a := range distinct {
		if v, ok := rttOf(rtt, a, a); ok {
			w.RTT[a+"-"+a] = v
		}
		for _, b := range distinct[i+1:] {
			v, ok := rttOf(rtt, a, b)
			if !ok {
				v, ok = rttOf(DefaultRTT, a, b)
			}
			if !ok {
				return w, fmt.Errorf("cluster: no RTT between %s and %s: give it with -rtt-matrix %s-%s=MS", a, b, a, b)
			}
			w.RTT[a+"-"+b] = v
		}
	}
	return w, w.Validate()
}
