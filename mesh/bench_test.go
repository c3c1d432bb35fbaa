package mesh

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshcast/meshcast/mesh/presence"
	"github.com/meshcast/meshcast/mesh/route"
	"github.com/meshcast/meshcast/wire/meshproto"
)

// counter is a Handler that counts deliveries.
type counter struct{ n atomic.Int64 }

func (c *counter) Deliver(*meshproto.Broadcast)                    { c.n.Add(1) }
func (c *counter) ApplyPresence(string, presence.Delta) bool       { return true }
func (c *counter) ApplyPresenceSnapshot(string, presence.Snapshot) {}
func (c *counter) OwnPresence(string) presence.Snapshot            { return presence.Snapshot{} }
func (c *counter) NodeDown(string)                                 {}

// BenchmarkPublishStrategies routes broadcasts from one node of a 3-region
// × 2-node cluster (real QUIC on loopback) to subscribers on 4 of the other
// 5 nodes, and reports the mesh bytes and the cross-region ("WAN") bytes
// each message costs under each strategy, plus the router's allocations.
func BenchmarkPublishStrategies(b *testing.B) {
	regions := []string{"iad", "iad", "fra", "fra", "sin", "sin"}
	interested := []int{1, 2, 3, 4} // node 5 (sin) has no subscribers
	payload := []byte(`{"t":1732500000000000000,"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}`)
	for _, strategy := range []Strategy{AllNodes, Interested, RegionRelay} {
		b.Run(strategy.String(), func(b *testing.B) {
			var nodes []*Node
			var handlers []*counter
			for i, r := range regions {
				h := &counter{}
				var join []string
				if i > 0 {
					join = []string{nodes[0].GossipAddr()}
				}
				n, err := New(Config{
					Name: fmt.Sprintf("n%d", i), Region: r,
					GossipAddr: "127.0.0.1:0", MeshAddr: "127.0.0.1:0", Join: join,
					ClusterSecret: []byte("bench"), Strategy: strategy,
					Logger: slog.New(slog.DiscardHandler),
				}, h)
				if err != nil {
					b.Fatal(err)
				}
				if err := n.Start(); err != nil {
					b.Fatal(err)
				}
				defer n.Close()
				nodes, handlers = append(nodes, n), append(handlers, h)
			}
			for _, a := range nodes {
				for _, c := range nodes {
					if a != c && !waitFor(10*time.Second, func() bool { return a.Connected(c.ID()) }) {
						b.Fatal("cluster never connected")
					}
				}
			}
			for _, i := range interested {
				<-nodes[i].Subscribe("bench")
			}
			if !waitFor(5*time.Second, func() bool { return len(nodes[0].InterestedNodes("bench")) == len(interested) }) {
				b.Fatal("interest never propagated")
			}
			bytesSent := func() (total, wan int) {
				for _, a := range nodes {
					var sb strings.Builder
					a.WritePrometheus(&sb)
					for _, line := range strings.Split(sb.String(), "\n") {
						if !strings.HasPrefix(line, "meshcast_mesh_bytes_sent_total{") || !strings.Contains(line, `lane="data"`) {
							continue
						}
						v, _ := strconv.Atoi(line[strings.LastIndexByte(line, ' ')+1:])
						total += v
						for _, c := range nodes {
							if strings.Contains(line, `peer="`+c.ID()+`"`) && c.Region() != a.Region() {
								wan += v
							}
						}
					}
				}
				return total, wan
			}
			delivered := func() (n int64) {
				for _, h := range handlers {
					n += h.n.Load()
				}
				return n
			}
			t0, w0 := bytesSent()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				nodes[0].Publish(&meshproto.Broadcast{Topic: "bench", Event: "m", Payload: payload, Enc: 1})
				if i%512 == 511 { // keep the queues from overflowing
					want := int64(i+1) * int64(len(interested))
					waitFor(10*time.Second, func() bool { return delivered() >= want })
				}
			}
			b.StopTimer()
			want := int64(b.N) * int64(len(interested))
			if strategy == AllNodes {
				want = int64(b.N) * int64(len(nodes)-1)
			}
			if !waitFor(10*time.Second, func() bool { return delivered() >= want }) {
				b.Fatalf("delivered %d of %d", delivered(), want)
			}
			var t1, w1 int
			waitFor(5*time.Second, func() bool { t1, w1 = bytesSent(); return true })
			b.ReportMetric(float64(t1-t0)/float64(b.N), "mesh-B/msg")
			b.ReportMetric(float64(w1-w0)/float64(b.N), "wan-B/msg")
		})
	}
}

// BenchmarkRoute measures the router alone: interest lookup, encoding the
// frame once, and queueing it for each interested peer (no sockets).
func BenchmarkRoute(b *testing.B) {
	for _, peers := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("peers=%d", peers), func(b *testing.B) {
			n, err := New(Config{Name: "r", GossipAddr: "127.0.0.1:0", MeshAddr: "127.0.0.1:0", ClusterSecret: []byte("x"), Logger: slog.New(slog.DiscardHandler)}, &counter{})
			if err != nil {
				b.Fatal(err)
			}
			n.ctx, n.cancel = context.WithCancel(context.Background())
			defer n.cancel()
			for i := 0; i < peers; i++ {
				id := fmt.Sprintf("p%d", i)
				n.peers[id] = newPeer(n, Member{ID: id, Region: "r"})
				n.core.Step(route.InterestAdd{From: id, Topics: []string{"bench"}})
			}
			msg := &meshproto.Broadcast{Topic: "bench", Event: "m", Payload: make([]byte, 100), Enc: 1}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if n.Publish(msg) != peers {
					b.Fatal("not routed")
				}
				if i%1024 == 1023 {
					for _, p := range n.peers {
						p.lanes[laneData].reset()
					}
				}
			}
		})
	}
}
