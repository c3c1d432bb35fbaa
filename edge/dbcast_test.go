package edge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/meshcast/meshcast/wal/dbcast"
)

// fakeReplay is a ReplaySource that hands each replay to the test, which
// answers it when it likes.
type fakeReplay struct {
	asked  chan replayAsk
	answer chan replayAnswer
}

type replayAsk struct {
	role, topic string
	since       int64
	limit       int
}

type replayAnswer struct {
	msgs []dbcast.Message
	err  error
}

func (f *fakeReplay) Replay(ctx context.Context, id *Identity, topic string, since int64, limit int) ([]dbcast.Message, error) {
	f.asked <- replayAsk{id.Role, topic, since, limit}
	select {
	case a := <-f.answer:
		return a.msgs, a.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func dbMsg(topic, id string) *dbcast.Message {
	return &dbcast.Message{ID: id, Topic: topic, Event: "e", Private: true, Payload: []byte(`{"id":"` + id + `"}`)}
}

// dbBroadcasts reads frames up to a barrier and returns the database
// broadcasts among them, as id:meta.
func dbBroadcasts(c *wsClient) []string {
	var out []string
	for _, f := range c.barrier() {
		if f.Event == "broadcast" {
			out = append(out, jsonField(f.Payload, "payload.id")+":"+jsonField(f.Payload, "meta"))
		}
	}
	return out
}

// TestReplayThenLive: a join's replay comes after its reply, oldest first,
// with meta.replayed; what the database delivered while the replay was
// read comes next unless it was replayed, and a late live copy of a
// replayed row is not sent again.
func TestReplayThenLive(t *testing.T) {
	f := &fakeReplay{asked: make(chan replayAsk, 1), answer: make(chan replayAnswer, 1)}
	ts := startServer(t, nil)
	ts.SetReplay(f)
	c := ts.connect(t)
	c.write(joinFrame("1", "realtime:r", `{"private":true,"broadcast":{"replay":{"since":5,"limit":30}}}`))
	ask := <-f.asked
	if ask.topic != "r" || ask.since != 5 || ask.limit != 25 {
		t.Fatalf("replay asked %+v, want topic r since 5 limit 25 (Supabase's most)", ask)
	}
	// While the replay is read: a row that the replay also holds, and a
	// newer one.
	waitFor(testWait, func() bool {
		t := ts.hub.lookup(topicKey{name: "realtime:r", private: true})
		return t != nil && len(t.captures) == 1
	})
	ts.DeliverDB(dbMsg("r", "m1"))
	ts.DeliverDB(dbMsg("r", "m3"))
	f.answer <- replayAnswer{msgs: []dbcast.Message{*dbMsg("r", "m0"), *dbMsg("r", "m1")}}
	c.until("the join reply", isReplyTo("1"))
	ts.DeliverDB(dbMsg("r", "m1")) // its live copy, late
	ts.DeliverDB(dbMsg("r", "m4"))
	ts.DeliverDB(&dbcast.Message{ID: "p", Topic: "r", Payload: []byte(`{"id":"p"}`)}) // the public topic of that name
	got := fmt.Sprint(dbBroadcasts(c))
	want := `["m0":{"id":"m0","replayed":true} "m1":{"id":"m1","replayed":true} "m3":{"id":"m3"} "m4":{"id":"m4"}]`
	if got != want {
		t.Fatalf("got %s\nwant %s", got, want)
	}
}

func TestReplayRefusals(t *testing.T) {
	f := &fakeReplay{asked: make(chan replayAsk, 1), answer: make(chan replayAnswer, 1)}
	ts := startServer(t, nil)
	c := ts.connect(t)
	// Without a database there is nothing to replay from.
	c.write(joinFrame("0", "realtime:r", `{"private":true,"broadcast":{"replay":{"since":1}}}`))
	if r := joinReason(c, "0"); r != "UnableToReplayMessages: Realtime was unable to replay messages" {
		t.Errorf("no database: reason %q", r)
	}
	ts = startServer(t, nil)
	ts.SetReplay(f)
	c = ts.connect(t)
	for i, tc := range []struct{ config, reason string }{
		{`{"broadcast":{"replay":{"since":1}}}`, "UnableToReplayMessages: Replay is not allowed for public channels"},
		{`{"private":true,"broadcast":{"replay":{}}}`, "UnableToReplayMessages: Replay params are not valid"},
		{`{"private":true,"broadcast":{"replay":{"since":"1"}}}`, "UnableToReplayMessages: Replay params are not valid"},
		{`{"private":true,"broadcast":{"replay":{"since":1,"limit":2.5}}}`, "UnableToReplayMessages: Replay params are not valid"},
		{`{"private":true,"broadcast":{"replay":7}}`, "UnableToReplayMessages: Replay params are not valid"},
	} {
		ref := fmt.Sprint(i + 1)
		c.write(joinFrame(ref, "realtime:r", tc.config))
		if r := joinReason(c, ref); r != tc.reason {
			t.Errorf("%s: reason %q, want %q", tc.config, r, tc.reason)
		}
	}
	c.write(joinFrame("9", "realtime:r", `{"private":true,"broadcast":{"replay":{"since":1,"limit":null}}}`))
	if ask := <-f.asked; ask.limit != 25 {
		t.Errorf("limit null asked %d, want 25", ask.limit)
	}
	f.answer <- replayAnswer{err: errors.New("database down")}
	if r := joinReason(c, "9"); r != "UnableToReplayMessages: Realtime was unable to replay messages" {
		t.Errorf("a failed replay: reason %q", r)
	}
}

// joinReason reads up to the reply to ref and returns its error reason
// ("" for an ok reply).
func joinReason(c *wsClient, ref string) string {
	var reply wsFrame
	c.until("the reply to "+ref, func(f wsFrame) bool {
		reply = f
		return isReplyTo(ref)(f)
	})
	var reason string
	json.Unmarshal([]byte(jsonField(reply.Payload, "response.reason")), &reason)
	return reason
}
