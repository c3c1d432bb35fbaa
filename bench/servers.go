package bench

import (
	"context"
	"net/http"
	"strings"
	"sync"

	"github.com/meshcast/meshcast/bench/cluster"
)

// ServerFigures is what the nodes' /metrics said about a run: deltas from
// just before publishing to after the drain, summed over the nodes.
// "Data" is the mesh's data lane (broadcasts), WAN the part sent to nodes
// of another region (regions from meshcast_mesh_node_info). Wire bytes
// come from the WAN emulator (meshcast_wanemu_*: QUIC packets with their
// headers, acks and the control lane; only with --emulate-wan).
type ServerFigures struct {
	Nodes              []NodeFigures `json:"nodes"`
	MeshBytesPerMsg    float64       `json:"mesh_bytes_per_msg"`
	MeshFramesPerMsg   float64       `json:"mesh_frames_per_msg"`
	WANBytesPerMsg     float64       `json:"wan_bytes_per_msg"`
	WANFramesPerMsg    float64       `json:"wan_frames_per_msg"`
	WireWANBytesPerMsg float64       `json:"wire_wan_bytes_per_msg"`
	MeshDrops          float64       `json:"mesh_drops"`
	ClientDrops        float64       `json:"client_drops"` // queue drops + slow-consumer closes
	CPU                float64       `json:"cpu"`          // cores, all nodes
	CPUPerDeliveryUs   float64       `json:"cpu_us_per_delivery"`
}

// NodeFigures is one node's share.
type NodeFigures struct {
	URL            string                        `json:"url"`
	Node           string                        `json:"node"`
	Region         string                        `json:"region"`
	CPU            float64                       `json:"cpu"`
	RSSMiB         float64                       `json:"rss_mib"`
	DataBytes      float64                       `json:"data_bytes"`
	DataFrames     float64                       `json:"data_frames"`
	WANDataBytes   float64                       `json:"wan_data_bytes"`
	WANDataFrames  float64                       `json:"wan_data_frames"`
	ControlBytes   float64                       `json:"control_bytes"`
	MeshDrops      float64                       `json:"mesh_drops"`
	QueueDrops     float64                       `json:"queue_drops"`
	SlowCloses     float64                       `json:"slow_consumer_closes"`
	WireWANBytes   float64                       `json:"wire_wan_bytes"`   // wanemu, kind mesh
	GossipWANBytes float64                       `json:"gossip_wan_bytes"` // wanemu, gossip UDP + TCP
	PeerLaneBytes  map[string]map[string]float64 `json:"peer_lane_bytes"`  // peer → lane → bytes sent
}

// siteScrape is every node's /metrics at one moment ("" URL when a scrape
// failed).
type siteScrape struct {
	urls    []string
	metrics []cluster.Metrics
	regions map[string]string // node ID → region, from every node's info
}

// scrapeSites reads every node's /metrics at once; header (if set) carries
// the node's region, as the clients' upgrades do.
func scrapeSites(ctx context.Context, sites []Site, header string) siteScrape {
	var s siteScrape
	var regions []string
	for _, site := range sites {
		for _, u := range site.URLs {
			s.urls = append(s.urls, cluster.MetricsURL(u))
			regions = append(regions, site.Region)
		}
	}
	s.metrics = make([]cluster.Metrics, len(s.urls))
	var wg sync.WaitGroup
	for i, u := range s.urls {
		wg.Go(func() {
			if m, err := cluster.Scrape(ctx, u, regionHeader(header, regions[i])); err == nil {
				s.metrics[i] = m
			}
		})
	}
	wg.Wait()
	s.regions = map[string]string{}
	for _, m := range s.metrics {
		if id, reg := m.NodeInfo(); id != "" {
			s.regions[id] = reg
		}
	}
	return s
}

// regionHeader is the header carrying region (nil without a header name).
func regionHeader(name, region string) http.Header {
	if name == "" {
		return nil
	}
	return http.Header{name: {region}}
}

// serverFigures subtracts two scrapes. msgs is the number of publications,
// deliveries the measured deliveries (for CPU per delivery), wall the
// seconds between the scrapes' CPU readings.
func serverFigures(before, after siteScrape, msgs uint64, deliveries uint64, wall float64) ServerFigures {
	var f ServerFigures
	for i, m1 := range after.metrics {
		m0 := before.metrics[i]
		if m0 == nil || m1 == nil {
			continue
		}
		id, reg := m1.NodeInfo()
		n := NodeFigures{URL: after.urls[i], Node: id, Region: reg, PeerLaneBytes: map[string]map[string]float64{}}
		d := func(key string) float64 { return m1[key] - m0[key] }
		for k, v := range m1 {
			name, _, _ := strings.Cut(k, "{")
			delta := v - m0[k]
			switch name {
			case "meshcast_mesh_bytes_sent_total":
				peer, lane := cluster.LabelValue(k, "peer"), cluster.LabelValue(k, "lane")
				if n.PeerLaneBytes[peer] == nil {
					n.PeerLaneBytes[peer] = map[string]float64{}
				}
				n.PeerLaneBytes[peer][lane] += delta
				wan := after.regions[peer] != "" && after.regions[peer] != reg
				if lane == "data" {
					n.DataBytes += delta
					if wan {
						n.WANDataBytes += delta
					}
				} else {
					n.ControlBytes += delta
				}
			case "meshcast_mesh_frames_sent_total":
				if cluster.LabelValue(k, "lane") == "data" {
					n.DataFrames += delta
					if p := cluster.LabelValue(k, "peer"); after.regions[p] != "" && after.regions[p] != reg {
						n.WANDataFrames += delta
					}
				}
			case "meshcast_mesh_drops_total":
				n.MeshDrops += delta
			case "meshcast_wanemu_bytes_total":
				if cluster.LabelValue(k, "to") != reg {
					if cluster.LabelValue(k, "kind") == "mesh" {
						n.WireWANBytes += delta
					} else {
						n.GossipWANBytes += delta
					}
				}
			}
		}
		n.QueueDrops = d("meshcast_queue_drops_total")
		n.SlowCloses = d("meshcast_slow_consumer_closes_total")
		if wall > 0 {
			n.CPU = d("process_cpu_seconds_total") / wall
		}
		n.RSSMiB = m1["process_resident_memory_bytes"] / (1 << 20)
		f.Nodes = append(f.Nodes, n)
		f.CPU += n.CPU
		f.MeshDrops += n.MeshDrops
		f.ClientDrops += n.QueueDrops + n.SlowCloses
		if msgs > 0 {
			m := float64(msgs)
			f.MeshBytesPerMsg += n.DataBytes / m
			f.MeshFramesPerMsg += n.DataFrames / m
			f.WANBytesPerMsg += n.WANDataBytes / m
			f.WANFramesPerMsg += n.WANDataFrames / m
			f.WireWANBytesPerMsg += n.WireWANBytes / m
		}
	}
	if deliveries > 0 && wall > 0 {
		f.CPUPerDeliveryUs = f.CPU * wall / float64(deliveries) * 1e6
	}
	return f
}
