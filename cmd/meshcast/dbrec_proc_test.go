//go:build linux

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// dbTick is a database broadcast of topic ticks as a client sees it.
type dbTick struct {
	i   int
	pos string // meta.pos
}

// readTicks reads broadcasts until one has i = last, within d.
func readTicks(c *wsClient, last int, d time.Duration) ([]dbTick, error) {
	deadline := time.Now().Add(d)
	var got []dbTick
	for len(got) == 0 || got[len(got)-1].i != last {
		f, err := c.readFrame(time.Until(deadline))
		if err != nil {
			return got, fmt.Errorf("%s after %d ticks: %w", c.name, len(got), err)
		}
		if f.Event != "broadcast" {
			continue
		}
		var p struct {
			Payload struct{ I int } `json:"payload"`
			Meta    struct{ Pos string }
		}
		json.Unmarshal(f.Payload, &p)
		got = append(got, dbTick{p.Payload.I, p.Meta.Pos})
	}
	return got, nil
}

// The database's stream across a WAL owner's kill -9: a subscriber whose
// connection dropped rejoins on another node, asking for what followed
// the last row it got (recover.broadcast.db) — once right after the kill,
// while the nodes still take the owner for alive, and once a new owner
// streams. The new owner rebuilt the recovery window from the slot, so
// both joins recover: every row after that one arrives once, in commit
// order, then live.
func TestClusterDBRecoveryAcrossOwnerKill(t *testing.T) {
	pg := supabasePostgres(t)
	c := startCluster(t, "s3cret", "--database-url", pg.URL())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var sent atomic.Int64
	subs := map[*node]*wsClient{}
	for _, n := range c.nodes {
		subs[n] = connect(t, n, "sub@"+n.name)
		subs[n].join("realtime:ticks", "1", `{"private":false}`)
	}
	if !waitFor(30*time.Second, func() bool { // every node's subscription is with the owner
		sendTicks(ctx, pg.URL(), 0, 0, time.Millisecond, &sent)
		for _, s := range subs {
			if _, err := readTicks(s, 0, 300*time.Millisecond); err != nil {
				return false
			}
		}
		return true
	}) {
		t.Fatal("no broadcast from the database reached every node")
	}
	owner := ownerOf(t, c.nodes)
	var a, b *node // survivors: the subscriber leaves a, comes back on b
	for _, n := range c.nodes {
		switch {
		case n == owner:
		case a == nil:
			a = n
		default:
			b = n
		}
	}
	wctx, stopWriting := context.WithCancel(ctx)
	defer stopWriting()
	wrote := make(chan error, 1)
	go func() { wrote <- sendTicks(wctx, pg.URL(), 1, 1<<20, 20*time.Millisecond, &sent) }()
	got, err := readTicks(subs[a], 50, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	last := got[len(got)-1]
	subs[a].nc.Close() // its connection drops
	owner.cmd.Process.Kill()
	if !owner.exited(5 * time.Second) {
		t.Fatal("the owner did not die")
	}
	// Rejoining at once, while the owner is not yet known to be dead: the
	// node asks it, then its successor once there is one.
	early := recoverJoin(t, b, "early@"+b.name, last.pos)
	// A new owner streams: b's live subscriber gets rows again.
	if _, err := readTicks(subs[b], int(sent.Load())+5, crashDetectWait+20*time.Second); err != nil {
		t.Fatalf("no new owner: %v", err)
	}
	back := recoverJoin(t, b, "back@"+b.name, last.pos)
	atRejoin := sent.Load()
	if !waitFor(10*time.Second, func() bool { return sent.Load() >= atRejoin+20 }) { // live rows after the recovered ones
		t.Fatalf("the writer is stuck at %d", sent.Load())
	}
	stopWriting()
	<-wrote
	final := int(sent.Load())
	var rest []dbTick
	for _, c := range []*wsClient{early, back} {
		if rest, err = readTicks(c, final, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		for k, tk := range rest {
			if tk.i != last.i+1+k {
				t.Fatalf("after %d %s got %v; want every row %d..%d once, in order", last.i, c.name, rest, last.i+1, final)
			}
		}
	}
	m := mustScrape(t, b)
	t.Logf("rejoined on %s after row %d at %s: %d rows, recoveries %v, asked again %v times", b.name, last.i, last.pos, len(rest),
		m[`meshcast_db_broadcast_recoveries_total{result="ok"}`], m["meshcast_db_broadcast_recovery_retries_total"])
}

// recoverJoin connects to n and joins ticks asking to recover the
// database's stream after pos (a meta.pos); the join must recover.
func recoverJoin(t *testing.T, n *node, name, pos string) *wsClient {
	t.Helper()
	c := connect(t, n, name)
	start := time.Now()
	c.send(joinFrame("realtime:ticks", "1", fmt.Sprintf(`{"private":false,"recover":{"broadcast":{"db":%q}}}`, pos[len("db:"):])))
	reply := c.await(15*time.Second, "join reply", func(f frame) bool { return isReply(f, "realtime:ticks", "1") })
	var r struct {
		Response struct {
			Recovered *bool
			Positions struct{ Broadcast map[string]any }
		}
	}
	json.Unmarshal(reply.Payload, &r)
	if r.Response.Recovered == nil || !*r.Response.Recovered || r.Response.Positions.Broadcast["db"] == nil {
		t.Fatalf("%s: the rejoin after the owner's kill: %s, want recovered and positions.broadcast.db", name, reply.raw)
	}
	t.Logf("%s: recovered, reply after %v", name, time.Since(start).Round(time.Millisecond))
	return c
}
