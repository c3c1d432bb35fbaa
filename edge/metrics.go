package edge

import (
	"io"

	"github.com/VictoriaMetrics/metrics"
)

// serverMetrics are the node's counters, kept in a Set owned by the Server
// so that several servers in one process (tests, clusters) do not share
// them.
type serverMetrics struct {
	set *metrics.Set

	connectionsTotal *metrics.Counter
	joins            *metrics.Counter
	leaves           *metrics.Counter
	messagesIn       *metrics.Counter
	messagesOut      *metrics.Counter
	bytesIn          *metrics.Counter
	bytesOut         *metrics.Counter
	writes           *metrics.Counter
	broadcasts       *metrics.Counter
	presenceEvents   *metrics.Counter
	restBroadcasts   *metrics.Counter
	queueDrops       *metrics.Counter
	slowClose        *metrics.Counter
	changesOut       *metrics.Counter
}

func newServerMetrics(s *Server) *serverMetrics {
	set := metrics.NewSet()
	m := &serverMetrics{
		set:              set,
		connectionsTotal: set.NewCounter("meshcast_connections_total"),
		joins:            set.NewCounter("meshcast_joins_total"),
		leaves:           set.NewCounter("meshcast_leaves_total"),
		messagesIn:       set.NewCounter("meshcast_messages_in_total"),
		messagesOut:      set.NewCounter("meshcast_messages_out_total"),
		bytesIn:          set.NewCounter("meshcast_bytes_in_total"),
		bytesOut:         set.NewCounter("meshcast_bytes_out_total"),
		writes:           set.NewCounter("meshcast_socket_writes_total"),
		broadcasts:       set.NewCounter("meshcast_broadcasts_total"),
		presenceEvents:   set.NewCounter("meshcast_presence_events_total"),
		restBroadcasts:   set.NewCounter("meshcast_rest_broadcasts_total"),
		queueDrops:       set.NewCounter("meshcast_queue_drops_total"),
		slowClose:        set.NewCounter("meshcast_slow_consumer_closes_total"),
		changesOut:       set.NewCounter("meshcast_changes_out_total"),
	}
	set.NewGauge("meshcast_connections", func() float64 { return float64(s.conns.Load()) })
	set.NewGauge("meshcast_channels", func() float64 { return float64(s.channels.Load()) })
	set.NewGauge("meshcast_topics", func() float64 { return float64(s.hub.topicCount()) })
	return m
}

// errorReason counts an error by reason; reasons are a small fixed set of
// snake_case words so the label cardinality stays bounded.
func (m *serverMetrics) errorReason(reason string) {
	m.set.GetOrCreateCounter(`meshcast_errors_total{reason="` + reason + `"}`).Inc()
}

func (m *serverMetrics) write(w io.Writer) {
	m.set.WritePrometheus(w)
	metrics.WriteProcessMetrics(w)
}
