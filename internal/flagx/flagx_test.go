package flagx

import (
	"flag"
	"fmt"
	"io"
	"testing"
	"time"
)

// On the command line 0 (or a negative value) turns a limit off, stored
// as -1; a positive value is kept; without the flag the field keeps its
// value; a bad value is the flag package's error.
func TestLimit(t *testing.T) {
	for _, c := range []struct {
		args  []string
		n     int
		f     float64
		d     time.Duration
		valid bool
	}{
		{nil, 5, 2.5, time.Second, true},
		{[]string{"--n", "0", "--f", "0", "--d", "0"}, -1, -1, -1, true},
		{[]string{"--n", "-1", "--f", "-3", "--d", "-1s"}, -1, -1, -1, true},
		{[]string{"--n", "7", "--f", "0.5", "--d", "2m"}, 7, 0.5, 2 * time.Minute, true},
		{[]string{"--n", "x"}, 0, 0, 0, false},
		{[]string{"--n", "1.5"}, 0, 0, 0, false},
		{[]string{"--d", "7"}, 0, 0, 0, false},
	} {
		n, f, d := 5, 2.5, time.Second
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		Limit(fs, &n, "n", "")
		Limit(fs, &f, "f", "")
		DurationLimit(fs, &d, "d", "")
		err := fs.Parse(c.args)
		if (err == nil) != c.valid {
			t.Errorf("%q: %v", c.args, err)
			continue
		}
		if c.valid && (n != c.n || f != c.f || d != c.d) {
			t.Errorf("%q: n=%d f=%v d=%v, want %d %v %v", c.args, n, f, d, c.n, c.f, c.d)
		}
	}
}

// The help shows an off limit as 0, and a default as the flag package
// would.
func TestLimitShows(t *testing.T) {
	off, on, d := -1, 2.5, time.Minute
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	Limit(fs, &off, "off", "")
	Limit(fs, &on, "on", "")
	DurationLimit(fs, &d, "d", "")
	for name, want := range map[string]string{"off": "0 0", "on": "2.5 2.5", "d": "1m0s 1m0s"} {
		f := fs.Lookup(name)
		if got := fmt.Sprintf("%v %s", f.Value.(flag.Getter).Get(), f.DefValue); got != want {
			t.Errorf("--%s: value and default %q, want %q", name, got, want)
		}
	}
}
