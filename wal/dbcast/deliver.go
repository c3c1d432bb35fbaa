package dbcast

import (
	"errors"
	"log/slog"
	"sync"

	"github.com/VictoriaMetrics/metrics"

	"github.com/meshcast/meshcast/wal"
)

// Fanout is what Deliver needs of the node: its broadcast path to the
// local channels of a topic (edge.Server.DeliverDB). It reports how many
// subscribers took the message.
type Fanout interface {
	DeliverDB(m *Message) int
}

// DefaultDedupe is how many row IDs a Deliverer remembers (if zero).
const DefaultDedupe = 16384

// Config configures a Deliverer.
type Config struct {
	// Fanout delivers to the node's channels. Required.
	Fanout Fanout
	// MaxPayloadBytes bounds a row's payload (its JSON, or its bytes); a
	// larger row is counted, logged and not delivered. If zero, no bound.
	MaxPayloadBytes int
	// Dedupe is how many of the latest row IDs are remembered: a row whose
	// ID is among them is not delivered again. If zero, DefaultDedupe.
	Dedupe  int
	Logger  *slog.Logger // if nil, slog.Default()
	Metrics *metrics.Set // if nil, a set of its own
}

// A Deliverer turns the rows of realtime.messages that reach this node into
// broadcasts of its channels, each row once.
type Deliverer struct {
	cfg Config
	log *slog.Logger

	delivered, duplicates, tooLarge, invalid *metrics.Counter

	mu   sync.Mutex
	ids  map[uint64]struct{} // subscription IDs of this node's broadcast subscription
	seen *recent
}

// NewDeliverer returns a Deliverer.
func NewDeliverer(cfg Config) *Deliverer {
	if cfg.Dedupe <= 0 {
		cfg.Dedupe = DefaultDedupe
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.NewSet()
	}
	m := cfg.Metrics
	return &Deliverer{
		cfg:        cfg,
		log:        cfg.Logger.With("component", "dbcast"),
		delivered:  m.NewCounter("meshcast_db_broadcasts_total"),
		duplicates: m.NewCounter("meshcast_db_broadcasts_duplicate_total"),
		tooLarge:   m.NewCounter(`meshcast_db_broadcasts_dropped_total{reason="payload_too_large"}`),
		invalid:    m.NewCounter(`meshcast_db_broadcasts_dropped_total{reason="invalid"}`),
		ids:        map[uint64]struct{}{},
		seen:       newRecent(cfg.Dedupe),
	}
}

// Own makes sub (a Subscription) one of those whose changes are this
// node's broadcasts.
func (d *Deliverer) Own(sub *wal.Subscription) {
	d.mu.Lock()
	d.ids[sub.ID] = struct{}{}
	d.mu.Unlock()
}

// Wrap returns a wal.ServiceConfig.Deliver that hands the changes of this
// node's broadcast subscriptions to the Deliverer and the rest, with the
// other subscription IDs, to next.
func (d *Deliverer) Wrap(next func(c *wal.Change, ids []uint64)) func(c *wal.Change, ids []uint64) {
	return func(c *wal.Change, ids []uint64) {
		if !IsMessages(c) {
			next(c, ids)
			return
		}
		rest := ids[:0:0]
		mine := false
		d.mu.Lock()
		for _, id := range ids {
			if _, ok := d.ids[id]; ok {
				mine = true
			} else {
				rest = append(rest, id)
			}
		}
		d.mu.Unlock()
		if mine {
			d.deliver(c)
		}
		if len(rest) > 0 {
			next(c, rest)
		}
	}
}

// deliver broadcasts the row c, unless it was delivered already or breaks
// the limits.
func (d *Deliverer) deliver(c *wal.Change) {
	m, err := decodeWithin(c, d.cfg.MaxPayloadBytes)
	switch {
	case errors.Is(err, ErrNotBroadcast):
		return // a presence row: nothing to broadcast
	case errors.Is(err, errTooLarge):
		d.tooLarge.Inc()
		d.log.Warn("a broadcast row of realtime.messages is over the payload limit; not delivered",
			"id", m.ID, "topic", short(m.Topic), "bytes", len(m.Payload), "max", d.cfg.MaxPayloadBytes)
		return
	case err != nil:
		d.invalid.Inc()
		d.log.Warn("a row of realtime.messages is not a broadcast; not delivered", "lsn", c.LSN, "err", err)
		return
	}
	d.mu.Lock()
	fresh := d.seen.add(m.ID)
	d.mu.Unlock()
	if !fresh {
		d.duplicates.Inc()
		return
	}
	d.delivered.Inc()
	d.cfg.Fanout.DeliverDB(&m)
}

var errTooLarge = errors.New("dbcast: payload over the limit")

// decodeWithin decodes the broadcast of row c, which must keep to max
// bytes of payload (if zero, no bound): the rows live delivery skips,
// recovery skips too.
func decodeWithin(c *wal.Change, max int) (Message, error) {
	m, err := Decode(c)
	if err == nil && max > 0 && len(m.Payload) > max {
		err = errTooLarge
	}
	return m, err
}

// short is at most 64 bytes of s, for logs.
func short(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// recent is a set of the latest n strings added (a ring and its index).
type recent struct {
	ring []string
	next int
	set  map[string]struct{}
}

func newRecent(n int) *recent {
	return &recent{ring: make([]string, n), set: make(map[string]struct{}, n)}
}

// add adds s and reports whether it was new; the oldest is forgotten.
func (r *recent) add(s string) bool {
	if _, ok := r.set[s]; ok {
		return false
	}
	if old := r.ring[r.next]; old != "" {
		delete(r.set, old)
	}
	r.ring[r.next] = s
	r.set[s] = struct{}{}
	r.next = (r.next + 1) % len(r.ring)
	return true
}
