package edge

import (
	"io"

	"github.com/VictoriaMetrics/metrics"
)

// serverMetrics are the node's counters, kept in a Set owned by the Server
// so that several servers in one process (tests, clusters) do not share
// them.
//
// The connection and traffic counters exist twice: unlabeled, the node's
// total over all transports (the names a WebSocket-only node always had),
// and with a transport label, its parts.
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
	// changeWaits count the change deliveries that waited for a client's
	// queue (flow control); changeWaitSeconds, for how long in all.
	changeWaits       *metrics.Counter
	changeWaitSeconds *metrics.FloatCounter

	datagramsReceived *metrics.Counter
	datagramsSent     *metrics.Counter
	datagramsOnStream *metrics.Counter

	byKind [numKinds]*transportMetrics
}

// transportMetrics are the transport-labeled parts of the traffic
// counters.
type transportMetrics struct {
	connectionsTotal *metrics.Counter
	messagesIn       *metrics.Counter
	messagesOut      *metrics.Counter
	bytesIn          *metrics.Counter
	bytesOut         *metrics.Counter
	writes           *metrics.Counter
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

		datagramsReceived: set.NewCounter("meshcast_datagrams_received_total"),
		datagramsSent:     set.NewCounter("meshcast_datagrams_sent_total"),
		datagramsOnStream: set.NewCounter("meshcast_datagrams_on_stream_total"),
	}
	m.changeWaits = set.NewCounter("meshcast_changes_waits_total")
	m.changeWaitSeconds = set.NewFloatCounter("meshcast_changes_wait_seconds_total")
	set.NewGauge("meshcast_connections", func() float64 { return float64(s.conns.Load()) })
	for k := range transportKind(numKinds) {
		l := `{transport="` + k.String() + `"}`
		m.byKind[k] = &transportMetrics{
			connectionsTotal: set.NewCounter("meshcast_connections_total" + l),
			messagesIn:       set.NewCounter("meshcast_messages_in_total" + l),
			messagesOut:      set.NewCounter("meshcast_messages_out_total" + l),
			bytesIn:          set.NewCounter("meshcast_bytes_in_total" + l),
			bytesOut:         set.NewCounter("meshcast_bytes_out_total" + l),
			writes:           set.NewCounter("meshcast_socket_writes_total" + l),
		}
		set.NewGauge("meshcast_connections"+l, func() float64 { return float64(s.liveByKind[k].Load()) })
	}
	set.NewGauge("meshcast_read_workers", func() float64 { return float64(s.readWorkersNow()) })
	set.NewGauge("meshcast_channels", func() float64 { return float64(s.channels.Load()) })
	set.NewGauge("meshcast_topics", func() float64 { return float64(s.hub.topicCount()) })
	return m
}

// connected counts an accepted connection.
func (m *serverMetrics) connected(tm *transportMetrics) {
	m.connectionsTotal.Inc()
	tm.connectionsTotal.Inc()
}

// received counts one client message.
func (m *serverMetrics) received(tm *transportMetrics) {
	m.messagesIn.Inc()
	tm.messagesIn.Inc()
}

// read counts payload bytes read from a client.
func (m *serverMetrics) read(tm *transportMetrics, n int) {
	m.bytesIn.Add(n)
	tm.bytesIn.Add(n)
}

// delivered counts n frames queued to one connection.
func (m *serverMetrics) delivered(tm *transportMetrics, n int) {
	m.messagesOut.Add(n)
	tm.messagesOut.Add(n)
}

// fannedOut counts the frames a fan-out queued.
func (m *serverMetrics) fannedOut(d deliveries) {
	m.messagesOut.Add(d.total())
	for k, n := range d {
		if n > 0 {
			m.byKind[k].messagesOut.Add(n)
		}
	}
}

// wrote counts one write of n bytes of frames to a client.
func (m *serverMetrics) wrote(tm *transportMetrics, n int) {
	m.bytesOut.Add(n)
	m.writes.Inc()
	tm.bytesOut.Add(n)
	tm.writes.Inc()
}

// datagramDropped counts a datagram dropped, by reason (a small fixed set).
func (m *serverMetrics) datagramDropped(reason string) {
	m.set.GetOrCreateCounter(`meshcast_datagrams_dropped_total{reason="` + reason + `"}`).Inc()
}

// readHandoff counts a reader worker handing its place to another: "wait"
// (a handler waits for the cluster or the database) or "stall" (a
// connection held it past stallAfter while others waited).
func (m *serverMetrics) readHandoff(reason string) {
	m.set.GetOrCreateCounter(`meshcast_read_handoffs_total{reason="` + reason + `"}`).Inc()
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
