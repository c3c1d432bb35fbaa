package edge

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// rawRequest writes a request on a fresh connection, half-closes it (the
// node sees the end of what the client sends) and reads the answer.
func rawRequest(t *testing.T, ts *testServer, req string) (httpResult, error) {
	t.Helper()
	nc := rawTCP(t, ts)
	nc.SetDeadline(time.Now().Add(testWait))
	if _, err := io.WriteString(nc, req); err != nil {
		return httpResult{}, err
	}
	nc.(*net.TCPConn).CloseWrite()
	resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
	if err != nil {
		return httpResult{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return httpResult{status: resp.StatusCode, header: resp.Header, body: string(b)}, err
}

// TestHostileREST attacks POST /api/broadcast and its single-message form
// with garbage, truncated, oversized, slow and flood requests while the
// bystanders use the node: each gets its status and body, the bystanders
// every tick, and nothing of the attack stays behind.
func TestHostileREST(t *testing.T) {
	ts := startWTServer(t, func(c *Config) {
		hostileConfig(c)
		c.MaxBatchMessages = 100
		c.RESTEventsPerSecond = 200
	})
	b := startBystanders(t, ts)
	const batch, single = "/api/broadcast", "/api/broadcast/bystanders/events/rest"
	unprocessable := `{"errors":{"messages":["can't be blank"]}}`
	tooLarge := `{"errors":{"messages":["Payload size exceeds tenant limit"]}}`

	t.Run("garbage", func(t *testing.T) {
		cases := []struct {
			path, ctype, body string
			status            int
			want              string
		}{
			{batch, "application/json", "\x00\x01garbage{", 422, unprocessable},
			{batch, "application/json", `{"messages":"no"}`, 422, unprocessable},
			{batch, "application/json", `{"messages":[{"topic":"bystanders","payload":[1]}]}`, 422, `{"errors":{"messages":["each message needs a topic and an object payload"]}}`},
			{single, "application/json", "{{", 422, `{"error":"payload is not valid JSON"}`},
			{single, "text/html", "<p>", 415, `{"error":"Unsupported Media Type. Use application/json or application/octet-stream"}`},
		}
		for _, tc := range cases {
			r, err := ts.do("POST", tc.path, tc.ctype, tc.body)
			if err != nil || r.status != tc.status || !jsonEq([]byte(r.body), tc.want) {
				t.Errorf("POST %s %q: %d %s %v, want %d %s", tc.path, tc.body, r.status, r.body, err, tc.status, tc.want)
			}
		}
		r, err := rawRequest(t, ts.testServer, "POST "+batch+" HTTP/1.1\r\nHost: x\r\nContent-Length: lots\r\n\r\n")
		if err != nil || r.status != 400 {
			t.Errorf("a Content-Length that is no number: %d %v, want 400", r.status, err)
		}
	})
	t.Run("truncated", func(t *testing.T) {
		// 100 bytes announced, 10 sent, then the client's end.
		r, err := rawRequest(t, ts.testServer, "POST "+batch+" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"messages")
		if err != nil || r.status != 400 || !jsonEq([]byte(r.body), `{"message":"could not read body"}`) {
			t.Errorf("truncated body: %d %s %v, want 400 could not read body", r.status, r.body, err)
		}
		// A chunked body cut inside a chunk.
		r, err = rawRequest(t, ts.testServer, "POST "+single+" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n100\r\n{\"a\":")
		if err != nil || r.status != 400 {
			t.Errorf("truncated chunked body: %d %s %v, want 400", r.status, r.body, err)
		}
	})
	t.Run("oversized", func(t *testing.T) {
		big := `{"messages":[{"topic":"bystanders","event":"e","payload":{"s":"` + strings.Repeat("x", 64<<10) + `"}}]}`
		if r, err := ts.do("POST", batch, "application/json", big); err != nil || r.status != 422 || !jsonEq([]byte(r.body), tooLarge) {
			t.Errorf("a body over --max-frame-bytes: %d %s %v, want 422", r.status, r.body, err)
		}
		// A terabyte announced: refused once the limit is passed, without
		// reading (or holding) the rest.
		nc := rawTCP(t, ts.testServer)
		fmt.Fprintf(nc, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n", single, int64(1)<<40)
		go func() {
			chunk := make([]byte, 16<<10)
			for range 8 {
				nc.SetWriteDeadline(time.Now().Add(testWait))
				if _, err := nc.Write(chunk); err != nil {
					return
				}
			}
		}()
		if st, err := statusOf(nc); st != 422 && !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("a terabyte announced: %d %v, want 422", st, err)
		}
		nc.Close()
		many := `{"messages":[` + strings.Repeat(`{"topic":"t","event":"e","payload":{}},`, 100) + `{"topic":"t","event":"e","payload":{}}]}`
		if r, err := ts.do("POST", batch, "application/json", many); err != nil || r.status != 429 {
			t.Errorf("a batch of 101 under a limit of 100: %d %s %v, want 429", r.status, r.body, err)
		}
	})
	t.Run("slow headers and body", func(t *testing.T) {
		// Five requests whose headers trickle, five whose body does (each
		// would take 5 s or more): the header and read timeouts (1 s) cut
		// them.
		head := "POST " + single + " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n"
		var wg sync.WaitGroup
		for i := range 10 {
			nc := rawTCP(t, ts.testServer)
			what, send := "headers", []byte(head)
			if i%2 == 1 {
				what = "body"
				io.WriteString(nc, head)
				send = []byte(`{"s":"` + strings.Repeat("x", 192) + `"}`)
			}
			wg.Add(2)
			go func() {
				defer wg.Done()
				if n := trickle(nc, send, 50*time.Millisecond); n == len(send) {
					t.Errorf("slow %s %d: the node took all %d bytes trickled", what, i, n)
				}
			}()
			go func() {
				defer wg.Done()
				if _, err := closedByNode(nc, testWait); err != nil {
					t.Errorf("slow %s %d: %v", what, i, err)
				}
				nc.Close()
			}()
		}
		b.progress(t, "slow REST requests")
		wg.Wait()
	})
	t.Run("flood", func(t *testing.T) {
		// Two clients post batches of 50 at the bystanders' topic as fast
		// as they can: beyond 200 messages a second from this address
		// they get 429, and the bystanders their ticks.
		body := `{"messages":[` + strings.Repeat(`{"topic":"bystanders","event":"rest","payload":{}},`, 49) + `{"topic":"bystanders","event":"rest","payload":{}}]}`
		var mu sync.Mutex
		statuses := map[int]int{}
		var wg sync.WaitGroup
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 25 {
					r, err := ts.do("POST", batch, "application/json", body)
					mu.Lock()
					if err != nil {
						t.Errorf("REST flood: %v", err)
					} else {
						statuses[r.status]++
						if r.status == 429 && !jsonEq([]byte(r.body), `{"message":"Too many messages per second"}`) {
							t.Errorf("429 with %s", r.body)
						}
					}
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		t.Logf("REST flood: %v", statuses)
		if statuses[429] == 0 || statuses[202] == 0 || statuses[202]+statuses[429] != 50 {
			t.Errorf("50 batches of 50 as fast as they go: %v, want some 202 and the rest 429", statuses)
		}
		b.progress(t, "a REST flood")
	})
	b.check(t)
}
