// Package testkit holds what the tests of several packages share: waiting
// on a condition, reading Prometheus text, and composing the Phoenix
// frames realtime-js sends. It is for tests only (nothing outside a
// _test.go file imports it), and it imports none of meshcast's packages, so
// that any package's tests may use it.
package testkit

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// WaitFor polls cond every 10 ms until it holds (true) or d passes
// (false).
func WaitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Metric returns the value of the series name (as the exposition format
// writes it, labels included: `x_total{reason="a"}`) in Prometheus text,
// or "" when it is missing.
func Metric(text, name string) string {
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return v
		}
	}
	return ""
}

// ParseMetrics reads Prometheus text into series → value, each series
// written as the exposition format has it, e.g.
// meshcast_mesh_frames_sent_total{peer="n2-1abc",lane="data"}. Comments
// and lines without a number are skipped.
func ParseMetrics(r io.Reader) (map[string]float64, error) {
	out := make(map[string]float64)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	return out, sc.Err()
}

// Phoenix frames of the v2 serializer (JSON arrays), as realtime-js sends
// them.

// JoinFrame is a phx_join of topic with join_ref = ref = joinRef; config
// is the join's config object (JSON).
func JoinFrame(joinRef, topic, config string) string {
	return fmt.Sprintf(`[%q,%q,%q,"phx_join",{"config":%s}]`, joinRef, joinRef, topic, config)
}

// BroadcastFrame is a text broadcast push; payload is JSON.
func BroadcastFrame(joinRef, ref, topic, event, payload string) string {
	return fmt.Sprintf(`[%q,%q,%q,"broadcast",{"type":"broadcast","event":%q,"payload":%s}]`, joinRef, ref, topic, event, payload)
}

// HeartbeatFrame is realtime-js's heartbeat, with ref "hb".
const HeartbeatFrame = `[null,"hb","phoenix","heartbeat",{}]`

// Kind3 is a client's binary broadcast push (realtime-js's binary
// serializer): kind 3, the lengths, the encoding of the payload, then the
// strings and the payload.
func Kind3(joinRef, ref, topic, event string, enc byte, payload []byte) []byte {
	b := []byte{3, byte(len(joinRef)), byte(len(ref)), byte(len(topic)), byte(len(event)), 0, enc}
	b = append(b, joinRef...)
	b = append(b, ref...)
	b = append(b, topic...)
	b = append(b, event...)
	return append(b, payload...)
}
