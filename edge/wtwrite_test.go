package edge

import (
	"testing"
	"time"
)

// waitIdle waits until n writers wait in l, or fails.
func waitIdle(t *testing.T, l *writerLinger, n int32) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for l.idle.Load() != n {
		if time.Now().After(deadline) {
			t.Fatalf("idle writers: %d, want %d", l.idle.Load(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// The writer role goes to a waiting writer, exactly once; a writer nobody
// hands it to, or whose conn closes, exits; with none waiting the starter
// is told to start one.
func TestWriterLinger(t *testing.T) {
	l := newWriterLinger()
	if l.handOff() {
		t.Fatal("handOff with no writer waiting succeeded")
	}

	// Two writers wait (longer than the test); one role goes to one.
	l.wait = time.Hour
	got := make(chan bool, 2)
	closed := make(chan struct{})
	for range 2 {
		go func() { got <- l.linger(time.NewTimer(time.Hour), closed) }()
	}
	waitIdle(t, l, 2)
	if !l.handOff() {
		t.Fatal("handOff with two writers waiting failed")
	}
	if !<-got {
		t.Fatal("the writer that returned first did not get the role")
	}
	// The other one leaves when its conn closes.
	close(closed)
	if <-got {
		t.Fatal("two writers got one role")
	}
	if n := l.idle.Load(); n != 0 {
		t.Fatalf("idle writers after both returned: %d", n)
	}

	// A writer nobody hands the role to gives up after its wait.
	l.wait = time.Millisecond
	if l.linger(time.NewTimer(time.Hour), make(chan struct{})) {
		t.Fatal("a writer got a role nobody handed off")
	}
	if l.handOff() {
		t.Fatal("handOff succeeded after every writer left")
	}
}
