package mesh

import (
	"fmt"
	"time"

	"github.com/hashicorp/memberlist"
)

// pingDelegate hands the round trip of every direct gossip probe
// memberlist completes to the node, which shows it as
// meshcast_gossip_rtt_seconds{peer}: the failure detector's view of the
// network, next to the mesh's own meshcast_mesh_rtt_seconds (an emulated
// WAN must slow both).
type pingDelegate struct{ n membershipEvents }

func (pingDelegate) AckPayload() []byte { return nil }

func (d pingDelegate) NotifyPingComplete(other *memberlist.Node, rtt time.Duration, _ []byte) {
	if r, ok := d.n.(interface{ gossipRTT(string, time.Duration) }); ok && other != nil {
		r.gossipRTT(other.Name, rtt)
	}
}

// gossipRTT records the last gossip probe round trip to a member.
func (n *Node) gossipRTT(id string, rtt time.Duration) {
	n.metrics.GetOrCreateGauge(fmt.Sprintf(`meshcast_gossip_rtt_seconds{peer=%q}`, id), nil).Set(rtt.Seconds())
}
