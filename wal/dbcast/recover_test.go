package dbcast

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/meshcast/meshcast/wal"
)

// fakeSource answers Recover with a fixed result; calls counts them, and
// gate (when set) holds each until closed.
type fakeSource struct {
	mu    sync.Mutex
	calls int
	res   wal.RecoverResult
	err   error
	gate  chan struct{}
	// unanswered is how many calls fail first as if no owner answered.
	unanswered int
}

func (f *fakeSource) Head() wal.Pos { return wal.Pos{LSN: 1} }

func (f *fakeSource) Recover(ctx context.Context, subs []*wal.Subscription, after wal.Pos) (wal.RecoverResult, error) {
	f.mu.Lock()
	f.calls++
	unanswered := f.calls <= f.unanswered
	f.mu.Unlock()
	if unanswered {
		return wal.RecoverResult{}, &wal.RecoveryError{Reason: wal.ReasonNoAnswer}
	}
	if f.gate != nil {
		<-f.gate
	}
	return f.res, f.err
}

func at(lsn uint64, vals map[string]string) *wal.Change {
	c := row(vals)
	c.LSN, c.Seq = wal.LSN(lsn), 0
	return c
}

// TestRecovererKeepsTheTopic: of every row the node's subscription gets
// back, a channel is sent the broadcasts of its topic and privacy, in
// order, with their positions, and not the rows live delivery skips.
func TestRecovererKeepsTheTopic(t *testing.T) {
	sub := Subscription(7)
	id := func(s string) map[string]string { return with(base(), "id", `"`+s+`"`) }
	src := &fakeSource{res: wal.RecoverResult{Through: wal.Pos{LSN: 0x90}, Changes: []wal.Recovered{
		{Change: at(0x10, id("a")), IDs: []uint64{7}},
		{Change: at(0x20, with(id("b"), "topic", `"room2"`)), IDs: []uint64{7}},
		{Change: at(0x30, with(id("c"), "private", "false")), IDs: []uint64{7}},
		{Change: at(0x40, with(id("d"), "payload", `{"long": "0123456789"}`)), IDs: []uint64{7}},
		{Change: at(0x50, with(id("e"), "extension", `"presence"`)), IDs: []uint64{7}},
		{Change: at(0x60, id("f")), IDs: []uint64{9}}, // another subscription's
		{Change: at(0x70, id("g")), IDs: []uint64{7}},
	}}}
	r := NewRecoverer(src, sub, 16, nil)
	msgs, through, err := r.Recover(context.Background(), "room1", true, wal.Pos{LSN: 1}, wal.Pos{LSN: 1})
	if err != nil || through != (wal.Pos{LSN: 0x90}) {
		t.Fatalf("through %v err %v", through, err)
	}
	var got []string
	for _, m := range msgs {
		got = append(got, m.ID+"@"+m.Pos.String())
	}
	if fmt.Sprint(got) != "[a@0/10:0 g@0/70:0]" {
		t.Fatalf("got %v, want a and g (room1, private, within the limit, broadcasts, ours)", got)
	}
}

// TestRecovererShares: joins recovering from one position at once share
// one request, unless it is not complete through what they need; the
// stream's reason is the client's.
func TestRecovererShares(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := &fakeSource{gate: make(chan struct{}), res: wal.RecoverResult{Through: wal.Pos{LSN: 5}}}
		r := NewRecoverer(src, Subscription(7), 0, nil)
		var wg sync.WaitGroup
		for _, need := range []uint64{5, 5, 6} { // the last began capturing after the request's head
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, _, err := r.Recover(context.Background(), "t", false, wal.Pos{LSN: 1}, wal.Pos{LSN: wal.LSN(need)}); err != nil {
					t.Error(err)
				}
			}()
			synctest.Wait() // in line: the first asks, the others wait on it
		}
		close(src.gate)
		wg.Wait()
		if src.calls != 2 || r.shared.Get() != 1 {
			t.Fatalf("%d requests, %d shared: want the shared one and the one asking again", src.calls, r.shared.Get())
		}
	})
	src := &fakeSource{err: &wal.RecoveryError{Reason: wal.ReasonWindow}}
	r := NewRecoverer(src, Subscription(7), 0, nil)
	_, _, err := r.Recover(context.Background(), "t", false, wal.Pos{LSN: 1}, wal.Pos{})
	if err == nil || err.Error() != wal.ReasonWindow {
		t.Fatalf("err %v, want the reason alone", err)
	}
	src.err = errors.New("connection reset")
	if _, _, err = r.Recover(context.Background(), "t", false, wal.Pos{LSN: 1}, wal.Pos{}); err == nil || !strings.Contains(err.Error(), "connection reset") {
		t.Fatalf("err %v", err)
	}
}

// TestRecovererAsksAgain: while no owner answers (one died, the next is
// taking over) the Recoverer asks again, until its context ends.
func TestRecovererAsksAgain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := &fakeSource{unanswered: 3, res: wal.RecoverResult{Through: wal.Pos{LSN: 9}}}
		r := NewRecoverer(src, Subscription(7), 0, nil)
		_, through, err := r.Recover(context.Background(), "t", false, wal.Pos{LSN: 1}, wal.Pos{})
		if err != nil || through != (wal.Pos{LSN: 9}) || src.calls != 4 {
			t.Fatalf("through %v err %v after %d calls, want the fourth's answer", through, err, src.calls)
		}
		src.calls, src.unanswered = 0, 1000
		ctx, cancel := context.WithTimeout(context.Background(), 2100*time.Millisecond)
		defer cancel()
		_, _, err = r.Recover(ctx, "t", false, wal.Pos{LSN: 1}, wal.Pos{})
		if err == nil || err.Error() != wal.ReasonNoAnswer || src.calls != 9 {
			t.Fatalf("err %v after %d calls, want no answer after 2 s of asking every 250 ms", err, src.calls)
		}
	})
}
