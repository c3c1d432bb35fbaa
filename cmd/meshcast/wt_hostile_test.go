//go:build linux

package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"github.com/quic-go/webtransport-go"
)

// WebTransport sessions whose client sends no WebTransport flow-control
// settings (webtransport-go's client with a zero Config; webtransport-go
// then sets no per-session stream limit) open extra streams and fill
// them, and hold the sessions with heartbeats, against one node: QUIC
// lets no second bidirectional stream open, the node resets the
// unidirectional ones, the node's memory stays put, and a WebSocket
// subscriber of the same node gets every broadcast. Before, each session
// could open ~195 streams and push ~1.44 MiB into them (300 sessions:
// +523 MiB RSS). 60 sessions here; MESHCAST_HOSTILE_FULL=1: 300.
func TestWebTransportSessionsWithExtraStreams(t *testing.T) {
	v := startVictim(t)
	sessions, streams := 60, 6
	if fullSize() {
		sessions, streams = 300, 195
	}
	var opened, pushed atomic.Int64
	var mu sync.Mutex
	var held []*wtAttacker
	var wg sync.WaitGroup
	sem := make(chan struct{}, 20)
	for range sessions {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			a, err := dialWTAttacker(v.b.httpAddr)
			if err != nil {
				t.Errorf("session: %v", err)
				return
			}
			mu.Lock()
			held = append(held, a)
			mu.Unlock()
			o, p := a.pushExtra(streams)
			opened.Add(o)
			pushed.Add(p)
		}()
	}
	wg.Wait()
	defer func() {
		for _, a := range held {
			a.close()
		}
	}()
	t.Logf("%d sessions: %d extra bidirectional streams opened, %d KiB accepted into extra streams",
		sessions, opened.Load(), pushed.Load()>>10)
	if opened.Load() > 0 {
		t.Errorf("%d extra bidirectional streams opened", opened.Load())
	}
	// Each unidirectional stream may take its first window (64 KiB) before
	// the reset reaches the client; the node drops it.
	if limit := int64(sessions*streams) * (64 << 10); pushed.Load() > limit {
		t.Errorf("the node took %d KiB into extra streams, want at most %d KiB", pushed.Load()>>10, limit>>10)
	}
	v.finish(t, fmt.Sprintf("%d WebTransport sessions pushing into extra streams", sessions))
}

// wtAttacker is one session held open with heartbeats.
type wtAttacker struct {
	tr   *webtransport.Transport
	sess *webtransport.Session
	stop chan struct{}
	done chan struct{}
}

func dialWTAttacker(httpAddr string) (*wtAttacker, error) {
	tr := &webtransport.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true, NextProtos: []string{http3.NextProtoH3}}, //nolint:gosec // a test client
		QUICConfig:      &quic.Config{EnableDatagrams: true, EnableStreamResetPartialDelivery: true, KeepAlivePeriod: time.Second},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, sess, err := tr.Dial(ctx, "https://"+httpAddr+"/realtime/v1/webtransport?apikey=test&vsn=2.0.0", nil)
	if err != nil {
		tr.Close()
		return nil, err
	}
	str, err := sess.OpenStreamSync(ctx)
	if err != nil {
		sess.CloseWithError(0, "")
		tr.Close()
		return nil, err
	}
	a := &wtAttacker{tr: tr, sess: sess, stop: make(chan struct{}), done: make(chan struct{})}
	hb := []byte(`[null,"hb","phoenix","heartbeat",{}]`)
	frame := binary.BigEndian.AppendUint32(nil, uint32(len(hb)+1))
	frame = append(append(frame, 1), hb...)
	go func() { // heartbeats keep the session, as realtime-js does
		defer close(a.done)
		tick := time.NewTicker(5 * time.Second)
		defer tick.Stop()
		for {
			if _, err := str.Write(frame); err != nil {
				return
			}
			select {
			case <-a.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return a, nil
}

// pushExtra opens a second bidirectional stream and n unidirectional ones
// and writes 256 KiB to each for up to a second; it returns how many
// bidirectional streams carried bytes and how many bytes were accepted.
func (a *wtAttacker) pushExtra(n int) (opened, pushed int64) {
	junk := make([]byte, 256<<10)
	rand.Read(junk)
	var total, bidi atomic.Int64
	var wg sync.WaitGroup
	if s, err := a.sess.OpenStream(); err == nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.SetWriteDeadline(time.Now().Add(time.Second))
			if k, _ := s.Write(junk); k > 0 {
				bidi.Add(1)
				total.Add(int64(k))
			}
		}()
	}
	for range n {
		u, err := a.sess.OpenUniStream()
		if err != nil {
			break // QUIC's limit on unidirectional streams
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			u.SetWriteDeadline(time.Now().Add(time.Second))
			k, _ := u.Write(junk)
			total.Add(int64(k))
		}()
	}
	wg.Wait()
	return bidi.Load(), total.Load()
}

func (a *wtAttacker) close() {
	close(a.stop)
	a.sess.CloseWithError(0, "")
	<-a.done
	a.tr.Close()
}
