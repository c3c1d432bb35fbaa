//go:build linux

package main

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// What ordinary clients can make a node send its peers must never break
// the link between two healthy nodes. These run with the presence and
// topic limits off, so that the sizes the original reports used get
// through the edge and reach the mesh.

// noLimits turns off the edge limits that would stop these inputs first.
var noLimits = []string{
	"--max-presence-bytes", "0", "--max-presence-bytes-per-conn", "0",
	"--bytes-per-sec", "0", "--queue-bytes", "0", "--max-topic-bytes", "0",
}

// Six sockets tracking 2.9 MB each on one topic make a 17.4 MB presence
// snapshot, more than a mesh frame may be (16 MiB). It crosses in parts:
// clients on the other nodes see all six, the link is never reset, and
// broadcasts on other topics keep flowing.
func TestClusterPresenceSnapshotLargerThanAFrame(t *testing.T) {
	c := startCluster(t, "s", noLimits...)
	n1, n2 := c.nodes[0], c.nodes[1]
	const topic, other = "realtime:big", "realtime:other"
	connectsBefore := mustScrape(t, n1)["meshcast_mesh_connects_total"]

	blob := `{"blob":"` + strings.Repeat("x", 2_900_000) + `"}`
	for i := range 6 {
		tr := connect(t, n1, fmt.Sprintf("tracker%d", i))
		tr.join(topic, "1", joinConfig(fmt.Sprintf("k%d", i), false, false))
		tr.track(topic, "1", "2", blob)
	}
	watcher := connect(t, n2, "watcher@n2")
	watcher.join(topic, "1", joinConfig("w", true, false))
	for i := range 6 {
		watcher.awaitPresence(30*time.Second, fmt.Sprintf("k%d", i), true)
	}

	sub := connect(t, n2, "sub@n2")
	sub.join(other, "1", joinConfig("s", false, false))
	pub := connect(t, n1, "pub@n1")
	pub.join(other, "1", joinConfig("p", false, false))
	for i := range 20 {
		start := time.Now()
		pub.send(broadcastFrame(other, "1", fmt.Sprint(10+i), "tick", fmt.Sprintf(`{"i":%d}`, i)))
		sub.await(msgWait, "tick", func(f frame) bool { _, ok := isBroadcast(f, other, "tick"); return ok })
		if d := time.Since(start); d > time.Second {
			t.Errorf("broadcast %d took %v across the mesh", i, d)
		}
	}
	if after := mustScrape(t, n1)["meshcast_mesh_connects_total"]; after != connectsBefore {
		t.Errorf("n1's mesh connects went from %v to %v: the snapshot broke a link", connectsBefore, after)
	}
}

// Twenty topics with 1 MB names make a 20 MB interest snapshot for a node
// that joins later. It crosses in parts: the new node learns every
// interest and routes a broadcast of each topic to the subscriber.
func TestClusterInterestSnapshotLargerThanAFrame(t *testing.T) {
	specs := clusterSpecs(t, "s", noLimits...)
	n1 := spawnNode(t, specs[0])
	sub := connect(t, n1, "sub@n1")
	var names []string
	for i := range 20 {
		name := fmt.Sprintf("%02d", i) + strings.Repeat("t", 1<<20)
		names = append(names, name)
		sub.join("realtime:"+name, fmt.Sprint(i+1), joinConfig("s", false, false))
	}
	n2 := spawnNode(t, specs[1])
	(&cluster{}).waitMembers(t, []*node{n1, n2}, 2, readyWait)
	// n2 learns n1's interests from the snapshot n1 sends when its link to
	// n2 comes up. A topic joined now is announced behind that snapshot on
	// the same lane, so once n2 routes it, the snapshot has been applied.
	sub.join("realtime:canary", "99", joinConfig("s", false, false))
	publish := func(topic, payload string) {
		body := fmt.Sprintf(`{"messages":[{"topic":%q,"event":"m","payload":%s}]}`, topic, payload)
		resp, err := httpClient.Post("http://"+n2.httpAddr+"/api/broadcast", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("REST: %d", resp.StatusCode)
		}
	}
	if !waitFor(30*time.Second, func() bool {
		publish("canary", `{}`)
		f, err := sub.readFrame(200 * time.Millisecond)
		return err == nil && f.Event == "broadcast"
	}) {
		t.Fatal("n2 never routed the canary topic to n1")
	}
	for { // drain canaries still on their way
		if _, err := sub.readFrame(300 * time.Millisecond); err != nil {
			break
		}
	}
	want := 0
	for _, name := range names {
		publish(name, `{}`) // each carries its 1 MB topic to the subscriber
		want++
	}
	got := 0
	for got < want {
		f, err := sub.readFrame(msgWait)
		if err != nil {
			t.Fatalf("received %d of %d broadcasts: %v", got, want, err)
		}
		if f.Event == "broadcast" {
			got++
		}
	}
}
