package edge

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshcast/meshcast/wire/phx"
)

// sinkConn is a net.Conn whose writes always succeed at once, so that the
// benchmark measures the server's fan-out path, not a peer's reading.
type sinkConn struct {
	written atomic.Int64
	closed  chan struct{}
	once    sync.Once
}

func newSinkConn() *sinkConn { return &sinkConn{closed: make(chan struct{})} }

func (c *sinkConn) Read([]byte) (int, error)         { <-c.closed; return 0, net.ErrClosed }
func (c *sinkConn) Write(p []byte) (int, error)      { c.written.Add(int64(len(p))); return len(p), nil }
func (c *sinkConn) Close() error                     { c.once.Do(func() { close(c.closed) }); return nil }
func (c *sinkConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *sinkConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *sinkConn) SetDeadline(time.Time) error      { return nil }
func (c *sinkConn) SetReadDeadline(time.Time) error  { return nil }
func (c *sinkConn) SetWriteDeadline(time.Time) error { return nil }

// benchTopic makes a topic with n subscribed connections whose writers run.
func benchTopic(b *testing.B, s *Server, n int) (*topic, func()) {
	var conns []*conn
	key := topicKey{name: "realtime:bench"}
	for i := 0; i < n; i++ {
		c := newConn(s, newWSTransport(newSinkConn(), 0), formatWSv2, "bench")
		conns = append(conns, c)
		ch := &channel{conn: c, key: key, name: "bench", holder: uint64(i)}
		t, _ := s.hub.acquire(key)
		s.hub.join(ch, t, func(*topic) {})
	}
	return s.hub.lookup(key), func() {
		for _, c := range conns {
			c.closeNow(1000, "")
			<-c.writerDone
		}
	}
}

// BenchmarkFanout measures one broadcast delivered to N local subscribers:
// encode once, queue the same frame bytes N times. allocs/op is per
// broadcast, whatever N is.
func BenchmarkFanout(b *testing.B) {
	payload := []byte(`{"t":1732500000000000000,"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}`)
	for _, n := range []int{1, 100, 10_000} {
		b.Run(fmt.Sprintf("subs=%d", n), func(b *testing.B) {
			cfg := DefaultConfig()
			cfg.QueueBytes = 0 // the sinks never fall behind for long; do not let scheduling close them
			s, err := New(cfg)
			if err != nil {
				b.Fatal(err)
			}
			t, stop := benchTopic(b, s, n)
			defer stop()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				out := &outMsg{topic: "realtime:bench", event: "m", data: payload, enc: phx.EncJSON}
				if got := t.fanout(out, nil).total(); got != n {
					b.Fatalf("delivered to %d of %d", got, n)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "deliveries/s")
		})
	}
}

// BenchmarkPublishRecovery is one broadcast a client published on this
// node reaching 1000 local subscribers, with recovery off and on (the
// default window and budget): the cost of numbering it, writing meta.pos
// and keeping it in history. subs=0 isolates that cost (the fan-out's
// writers run beside the loop and make subs=1000 noisy).
func BenchmarkPublishRecovery(b *testing.B) {
	payload := []byte(`{"t":1732500000000000000,"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}`)
	for _, c := range []struct {
		n      int
		window time.Duration
	}{{0, 0}, {0, 5 * time.Minute}, {1000, 0}, {1000, 5 * time.Minute}} {
		n := c.n
		window := c.window
		name := fmt.Sprintf("subs=%d/recovery=off", n)
		if window > 0 {
			name = fmt.Sprintf("subs=%d/recovery=on", n)
		}
		b.Run(name, func(b *testing.B) {
			cfg := DefaultConfig()
			cfg.QueueBytes = 0
			cfg.RecoveryWindow = window
			s, err := New(cfg)
			if err != nil {
				b.Fatal(err)
			}
			t, stop := benchTopic(b, s, n)
			defer stop()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				out := &outMsg{topic: "realtime:bench", event: "m", data: payload, enc: phx.EncJSON}
				s.publish(topicKey{name: "realtime:bench"}, t, out, nil)
			}
			b.StopTimer()
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "deliveries/s")
		})
	}
}
