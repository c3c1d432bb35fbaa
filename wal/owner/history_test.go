package owner

import (
	"math"
	"testing"
	"time"

	"github.com/meshcast/meshcast/wire/meshproto"
)

const (
	recWindow   = time.Minute
	recWait     = 5 * time.Second
	histBudget  = 100
	noHold      = uint64(NoHold)
	maxSeq      = math.MaxUint32
	streamsFrom = 100
)

func recoveryConfig(self string) Config {
	cfg := config(self)
	cfg.Clustered = false
	cfg.RecoveryWindow, cfg.HistoryBytes, cfg.RecoverWait = recWindow, histBudget, recWait
	return cfg
}

var evictAll = Evict{Through: Pos{math.MaxUint64, maxSeq}}

// histOwner is the start of the history's tables: o alone owns the database
// and holds subscription 1 of its own; its reader streams from 100.
func histOwner() []step {
	return []step{
		{0, members(o), []Effect{evictAll, Hold{0}, StartReader{}}},
		{0, Streaming{Gen: 0}, nil},
		{0, HistoryFrom{Gen: 0, From: streamsFrom}, []Effect{Hold{noHold}}},
	}
}

// tx is a routed transaction of one change of bytes at lsn, committed at
// t0+at, for nobody.
func tx(lsn uint64, at time.Duration, bytes int64) Routed {
	return Routed{Items: []Item{{Commit: lsn, Time: t0.Add(at)}}, Head: Pos{lsn, 0}, Bytes: bytes}
}

func recoverReq(call uint64, after, head Pos) Receive {
	return Receive{From: "n1", Frame: &meshproto.ChangesRecover{DB: "db", Call: call, AfterLSN: after.LSN, AfterSeq: after.Seq, HeadLSN: head.LSN, HeadSeq: head.Seq}}
}

func failed(to string, call uint64, reason string) Answer {
	return Answer{To: to, Frame: &meshproto.ChangesRecovered{DB: "db", Call: call, Err: reason}}
}

func TestHistory(t *testing.T) {
	cases := []struct {
		name  string
		cfg   Config
		steps []step
	}{
		{"the slot is held at the history's start while it holds a transaction", recoveryConfig("o"), with(histOwner(),
			step{0, tx(110, 0, 10), rt(Hold{streamsFrom}, Confirm{LSN: 110})},
			step{time.Second, tx(120, time.Second, 10), rt(Confirm{LSN: 120})},
		)},
		{"a transaction leaves the window when its commit is older than it", recoveryConfig("o"), with(histOwner(),
			step{0, tx(110, 0, 10), rt(Hold{streamsFrom}, Confirm{LSN: 110})},
			step{time.Second, tx(120, time.Second, 10), rt(Confirm{LSN: 120})},
			step{recWindow - time.Millisecond, nil, nil},
			step{recWindow, nil, []Effect{Evict{Through: Pos{110, maxSeq}}, Hold{110}}},
			step{recWindow + time.Second, nil, []Effect{Evict{Through: Pos{120, maxSeq}}, Hold{noHold}}},
		)},
		{"the oldest transactions are evicted past the byte budget", recoveryConfig("o"), with(histOwner(),
			step{0, tx(110, 0, 40), rt(Hold{streamsFrom}, Confirm{LSN: 110})},
			step{0, tx(120, 0, 40), rt(Confirm{LSN: 120})},
			step{0, tx(130, 0, 40), rt(Evict{Through: Pos{110, maxSeq}, Bytes: true}, Hold{110}, Confirm{LSN: 130})},
		)},
		{"a transaction alone over the budget is dropped whole", recoveryConfig("o"), with(histOwner(),
			step{0, tx(110, 0, 40), rt(Hold{streamsFrom}, Confirm{LSN: 110})},
			step{0, Routed{Head: Pos{120, 5}, Bytes: 150}, rt(Evict{Through: Pos{110, maxSeq}, Bytes: true}, Evict{Through: Pos{120, 5}, Bytes: true}, Hold{noHold})},
			step{0, tx(120, 0, 0), rt(Evict{Through: Pos{120, maxSeq}, Bytes: true}, Confirm{LSN: 120})},
			step{0, tx(130, 0, 10), rt(Hold{120}, Confirm{LSN: 130})},
		)},
		{"a request waits until the history reaches the node's head", recoveryConfig("o"), with(histOwner(),
			step{0, tx(110, 0, 10), rt(Hold{streamsFrom}, Confirm{LSN: 110})},
			step{0, recoverReq(1, Pos{105, 0}, Pos{120, 0}), nil},
			step{time.Second, tx(120, 0, 10), rt(
				ServeRecovery{To: "n1", Req: recoverReq(1, Pos{105, 0}, Pos{120, 0}).Frame.(*meshproto.ChangesRecover), Through: Pos{120, 0}},
				Confirm{LSN: 120})},
		)},
		{"a request the history does not reach in time fails", recoveryConfig("o"), with(histOwner(),
			step{0, recoverReq(1, Pos{105, 0}, Pos{120, 0}), nil},
			step{0, recoverReq(2, Pos{500, 0}, Pos{}), nil},
			step{recWait, nil, []Effect{failed("n1", 1, ReasonNoAnswer), failed("n1", 2, ReasonUnknown)}},
		)},
		{"a request to a node that is not the owner, or without a window, fails", config("o"), []step{
			{0, recoverReq(1, Pos{}, Pos{}), []Effect{failed("n1", 1, ReasonOff)}},
		}},
		{"the history restarts when the slot moved past it", recoveryConfig("o"), with(histOwner(),
			step{0, tx(110, 0, 10), rt(Hold{streamsFrom}, Confirm{LSN: 110})},
			step{0, HistoryFrom{Gen: 0, From: 105}, nil},
			step{0, HistoryFrom{Gen: 0, From: 200}, []Effect{Evict{Through: Pos{200, maxSeq}}, Hold{noHold}}},
		)},
		{"a new owner starts a new history", recoveryConfig("o"), with(histOwner(),
			step{0, tx(110, 0, 10), rt(Hold{streamsFrom}, Confirm{LSN: 110})},
			step{0, recoverReq(1, Pos{110, 0}, Pos{200, 0}), nil},
			step{0, Drain{}, []Effect{StopReader{Gen: 0}, failed("n1", 1, ReasonNoAnswer), evictAll}},
		)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { run(t, tc.cfg, tc.steps) })
	}
}

// rt is the effects of a routed chunk: effects, then leave to route more.
func rt(effects ...Effect) []Effect { return append(effects, RouteMore{}) }
