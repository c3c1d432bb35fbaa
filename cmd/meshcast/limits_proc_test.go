//go:build linux

package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// TestNodeLimitFlags: the per-node limits an attacker runs into are set
// by the binary's flags: --max-connections refuses the socket past it
// with 429 while the connected clients go on, --rest-events-per-sec
// refuses a REST flood with 429 (the burst: one second, or one batch if larger), --http-read-header-timeout cuts a
// trickled request.
func TestNodeLimitFlags(t *testing.T) {
	spec := clusterSpecs(t, "s")[0]
	// Every client here is 127.0.0.1: the node-wide limit is under test,
	// not one address's share of it (edge's TestOneAddressGetsItsShare).
	spec.extra = []string{"--max-connections", "3", "--address-share", "0", "--rest-events-per-sec", "20", "--max-batch-messages", "10", "--http-read-header-timeout", "300ms"}
	n := spawnNode(t, spec)
	sub, pub := connect(t, n, "sub"), connect(t, n, "pub")
	const topic = "realtime:limits"
	for _, c := range []*wsClient{sub, pub} {
		c.send(joinFrame(topic, "1", joinConfig("", false, false)))
		c.await(msgWait, "join reply", func(f frame) bool { return isReply(f, topic, "1") })
	}
	third := connect(t, n, "third")

	// The fourth socket is refused with Supabase's answer.
	var status int
	var body string
	d := ws.Dialer{Timeout: msgWait, OnStatusError: func(st int, _ []byte, r io.Reader) {
		status = st
		if resp, err := http.ReadResponse(bufio.NewReader(r), nil); err == nil {
			b, _ := io.ReadAll(resp.Body)
			body = string(b)
		}
	}}
	if nc, _, _, err := d.Dial(context.Background(), "ws://"+n.httpAddr+"/realtime/v1/websocket?apikey=test&vsn=2.0.0"); err == nil {
		nc.Close()
		t.Fatal("a fourth socket was admitted under --max-connections 3")
	}
	if status != 429 || !jsonEqual([]byte(body), `{"error":"Too many connected users"}`) {
		t.Errorf("fourth socket: %d %s, want 429 Too many connected users", status, body)
	}
	// The admitted ones are untouched.
	pub.send(broadcastFrame(topic, "1", "2", "tick", `{"i":1}`))
	sub.await(msgWait, "tick", func(f frame) bool { _, ok := isBroadcast(f, topic, "tick"); return ok })
	third.nc.Close()
	if !waitFor(msgWait, func() bool {
		c, err := dialWS(n, "again")
		if err == nil {
			c.nc.Close()
		}
		return err == nil
	}) {
		t.Error("no socket admitted after one closed")
	}

	// REST: a burst of 20 messages, then 429.
	statuses := map[int]int{}
	for range 30 {
		resp, err := http.Post("http://"+n.httpAddr+"/api/broadcast/limits/events/e", "application/json", strings.NewReader(`{}`))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		statuses[resp.StatusCode]++
	}
	if statuses[202] < 20 || statuses[429] == 0 || statuses[202]+statuses[429] != 30 {
		t.Errorf("30 REST messages under --rest-events-per-sec 20: %v, want 20 or a few more accepted, the rest 429", statuses)
	}

	// A request line trickled is cut at the header timeout.
	nc, err := net.Dial("tcp", n.httpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	start := time.Now()
	go func() {
		for _, b := range []byte("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n") {
			if _, err := nc.Write([]byte{b}); err != nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	nc.SetReadDeadline(time.Now().Add(msgWait))
	_, err = io.Copy(io.Discard, nc)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Errorf("trickled request still open after %v", msgWait)
	} else if d := time.Since(start); d > 1500*time.Millisecond {
		t.Errorf("trickled request cut after %v, want about 300 ms", d)
	}
}
