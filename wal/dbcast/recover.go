package dbcast

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/meshcast/meshcast/wal"
)

// Source is what recovery needs of the change stream (wal.Service): its
// head on this node and the changes after a position, read back from the
// owner's history.
type Source interface {
	Head() wal.Pos
	Recover(ctx context.Context, subs []*wal.Subscription, after wal.Pos) (wal.RecoverResult, error)
}

// A Recoverer reads back, for a channel that rejoins, the database
// broadcasts of its topic committed after the last one it received (the
// "db" stream of issue 18's recovery). Every node has one subscription of
// realtime.messages, so what it asks the owner for is every row after the
// position, of every topic; it keeps what the channel's topic is sent.
// Joins that recover from the same position at once share one request.
type Recoverer struct {
	src        Source
	sub        *wal.Subscription
	maxPayload int

	served, failed, shared, retries *metrics.Counter

	mu      sync.Mutex
	flights map[wal.Pos]*recoverFlight
}

// recoverFlight is one request to the owner; msgs, through and err are
// set before done closes.
type recoverFlight struct {
	done    chan struct{}
	msgs    []Message
	through wal.Pos
	err     error
}

// NewRecoverer returns the Recoverer of sub, the node's subscription of
// realtime.messages (Subscription), registered with src. Rows over
// maxPayload bytes (if zero, no bound) are skipped, as live delivery skips
// them. set receives its counters (nil: none kept).
func NewRecoverer(src Source, sub *wal.Subscription, maxPayload int, set *metrics.Set) *Recoverer {
	if set == nil {
		set = metrics.NewSet()
	}
	return &Recoverer{src: src, sub: sub, maxPayload: maxPayload, flights: make(map[wal.Pos]*recoverFlight),
		served:  set.NewCounter(`meshcast_db_broadcast_recoveries_total{result="ok"}`),
		failed:  set.NewCounter(`meshcast_db_broadcast_recoveries_total{result="failed"}`),
		shared:  set.NewCounter("meshcast_db_broadcast_recoveries_shared_total"),
		retries: set.NewCounter("meshcast_db_broadcast_recovery_retries_total")}
}

// Head is the change stream's head on this node (wal.Service.Head): every
// row after it is still to be delivered live.
func (r *Recoverer) Head() wal.Pos { return r.src.Head() }

// Recover returns the broadcasts of the topic (public or private, as
// private says) committed after `after`, oldest first, complete through
// the position it returns, which is at least atLeast (a Head the caller
// read before it started to capture live rows: the live rows after it
// reach the caller, so the two together miss none). The error's text is
// what the client is told after "recovery failed: ".
func (r *Recoverer) Recover(ctx context.Context, topic string, private bool, after, atLeast wal.Pos) ([]Message, wal.Pos, error) {
	f, shared := r.flight(ctx, after)
	if shared && f.err == nil && f.through.Before(atLeast) {
		// Asked before this join began capturing: not enough.
		f, shared = r.flight(ctx, after)
	}
	if f.err != nil {
		r.failed.Inc()
		return nil, wal.Pos{}, f.err
	}
	r.served.Inc()
	if shared {
		r.shared.Inc()
	}
	var out []Message
	for _, m := range f.msgs {
		if m.Topic == topic && m.Private == private {
			out = append(out, m)
		}
	}
	return out, f.through, nil
}

// flight joins the request for after under way, or makes one; shared
// reports that it joined one.
func (r *Recoverer) flight(ctx context.Context, after wal.Pos) (f *recoverFlight, shared bool) {
	r.mu.Lock()
	if f = r.flights[after]; f != nil {
		r.mu.Unlock()
		select {
		case <-f.done:
			return f, true
		case <-ctx.Done():
			return &recoverFlight{err: failure(ctx.Err())}, false
		}
	}
	f = &recoverFlight{done: make(chan struct{})}
	r.flights[after] = f
	r.mu.Unlock()
	f.msgs, f.through, f.err = r.read(ctx, after)
	r.mu.Lock()
	delete(r.flights, after)
	r.mu.Unlock()
	close(f.done)
	return f, false
}

// retryWait is the pause before asking again when no owner answered (one
// was killed and the next is taking over).
const retryWait = 250 * time.Millisecond

// read asks the owner for the rows after `after` and decodes the
// broadcasts among them. While no owner answers it asks again, as long
// as ctx lets it: a client that rejoins during an owner's failover
// recovers once the next owner has read the window back.
func (r *Recoverer) read(ctx context.Context, after wal.Pos) ([]Message, wal.Pos, error) {
	res, err := r.src.Recover(ctx, []*wal.Subscription{r.sub}, after)
	for noAnswer(err) && ctx.Err() == nil {
		select {
		case <-time.After(retryWait):
		case <-ctx.Done():
			continue
		}
		r.retries.Inc()
		res, err = r.src.Recover(ctx, []*wal.Subscription{r.sub}, after)
	}
	if err != nil {
		return nil, wal.Pos{}, failure(err)
	}
	msgs := make([]Message, 0, len(res.Changes))
	for _, c := range res.Changes {
		if !IsMessages(c.Change) || !reaches(c.IDs, r.sub.ID) {
			continue
		}
		if m, err := decodeWithin(c.Change, r.maxPayload); err == nil {
			msgs = append(msgs, m)
		}
	}
	return msgs, res.Through, nil
}

func noAnswer(err error) bool {
	var re *wal.RecoveryError
	return errors.As(err, &re) && re.Reason == wal.ReasonNoAnswer
}

func reaches(ids []uint64, id uint64) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

// failure is the client's reason for err.
func failure(err error) error {
	var re *wal.RecoveryError
	switch {
	case errors.As(err, &re):
		return errors.New(re.Reason)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return errors.New("the database's change stream did not answer in time")
	}
	return errors.New("the database's change stream: " + short(err.Error()))
}
