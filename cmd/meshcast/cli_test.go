package main

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"os"
	"reflect"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
)

// cleanEnv unsets every MESHCAST_* and FLY_* variable for the test, so
// that parseFlags sees only what the test sets.
func cleanEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "MESHCAST_") || strings.HasPrefix(k, "FLY_") {
			t.Setenv(k, "") // restored after the test
			os.Unsetenv(k)
		}
	}
}

// Open mode (no --jwt-secret) listens on loopback unless --listen or
// MESHCAST_LISTEN says where; with a secret the default is every
// interface, as before.
func TestOpenModeListen(t *testing.T) {
	cleanEnv(t)
	for _, c := range []struct {
		args     []string
		env      string
		listen   string
		loopback bool
	}{
		{nil, "", openListen, true},
		{[]string{"--jwt-secret", "s"}, "", defaultListen, false},
		{[]string{"--listen", ":5000"}, "", ":5000", false},
		{[]string{"--listen", defaultListen}, "", defaultListen, false},
		{nil, "0.0.0.0:5001", "0.0.0.0:5001", false},
		{[]string{"--listen", "127.0.0.1:5002"}, ":5001", "127.0.0.1:5002", false},
	} {
		t.Run(strings.Join(c.args, " ")+" "+c.env, func(t *testing.T) {
			if c.env != "" {
				t.Setenv("MESHCAST_LISTEN", c.env)
			}
			o, err := parseFlags(c.args, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if o.listen != c.listen || o.loopbackOnly != c.loopback {
				t.Errorf("listen %q (loopback only %v), want %q (%v)", o.listen, o.loopbackOnly, c.listen, c.loopback)
			}
		})
	}
}

// A value a flag does not take, from the environment or the command line,
// is an error that names the variable (or flag) and what it wants.
func TestBadFlagValues(t *testing.T) {
	cleanEnv(t)
	for _, c := range []struct {
		env, value string
		args       []string
		want       string
	}{
		{"MESHCAST_MAX_FRAME_BYTES", "5MB", nil, `environment variable MESHCAST_MAX_FRAME_BYTES="5MB": --max-frame-bytes wants an integer number of bytes, such as 5242880`},
		{"MESHCAST_MAX_CONNECTIONS", "lots", nil, `environment variable MESHCAST_MAX_CONNECTIONS="lots": --max-connections wants an integer, such as 100`},
		{"MESHCAST_IDLE_TIMEOUT", "60", nil, `environment variable MESHCAST_IDLE_TIMEOUT="60": --idle-timeout wants a duration, such as 10s, 500ms or 1m30s`},
		{"MESHCAST_EVENTS_PER_SEC", "fast", nil, `environment variable MESHCAST_EVENTS_PER_SEC="fast": --events-per-sec wants a number, such as 100 or 2.5`},
		{"MESHCAST_REGION_RELAY", "yes", nil, `environment variable MESHCAST_REGION_RELAY="yes": --region-relay wants true or false`},
		{"MESHCAST_MAX_SLOT_LAG", "99999999999999999999", nil, `environment variable MESHCAST_MAX_SLOT_LAG="99999999999999999999": --max-slot-lag wants a number in range, not this one (value out of range)`},
		{"MESHCAST_QUEUE_BYTES", strings.Repeat("9", 200), nil, `environment variable MESHCAST_QUEUE_BYTES="` + strings.Repeat("9", 64) + `…": --queue-bytes wants`},
		{"", "", []string{"--write-timeout", "5"}, `--write-timeout "5": wants a duration, such as 10s, 500ms or 1m30s`},
		{"", "", []string{"--max-payload-bytes=3MB"}, `--max-payload-bytes "3MB": wants an integer number of bytes, such as 5242880`},
	} {
		if c.env != "" {
			t.Setenv(c.env, c.value)
		}
		_, err := parseFlags(c.args, io.Discard)
		if err == nil || !strings.HasPrefix(err.Error(), c.want) || !errors.As(err, new(flagError)) {
			t.Errorf("%s=%q %v: error %v, want %q", c.env, c.value, c.args, err, c.want)
		}
		if c.env != "" {
			os.Unsetenv(c.env)
		}
	}
}

var helpFlagRE = regexp.MustCompile(`(?m)^  --([a-z0-9-]+)(?: (\S+))?\n    \t(.*)$`)

// zeroArg is the zero value of a flag by the argument name the help shows.
func zeroArg(arg string) string {
	switch arg {
	case "":
		return "false"
	case "duration":
		return "0s"
	case "int", "uint", "float":
		return "0"
	}
	return ""
}

// --help states each flag's default once, and the one the node uses: a
// default the help prints, given explicitly, changes nothing; a flag it
// prints no default for is at its zero value; where other flags decide
// the default, the help says what they make it.
func TestHelpDefaults(t *testing.T) {
	cleanEnv(t)
	var help bytes.Buffer
	if _, err := parseFlags([]string{"--help"}, &help); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: %v", err)
	}
	base, err := parseFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	notes := base.helpDefaults()
	blocks := helpFlagRE.FindAllStringSubmatch(help.String(), -1)
	if len(blocks) < 50 {
		t.Fatalf("%d flags in the help:\n%s", len(blocks), help.String())
	}
	for _, b := range blocks {
		name, arg, usage := b[1], b[2], b[3]
		if n := strings.Count(usage, "(default"); n > 1 || strings.Contains(usage, "default:") {
			t.Errorf("--%s states its default %d times: %s", name, n, usage)
			continue
		}
		_, def, stated := strings.Cut(usage, " (default ")
		def = strings.TrimSuffix(def, ")")
		if _, ok := notes[name]; ok {
			continue // checked below
		}
		value := zeroArg(arg)
		if stated {
			value, _, _ = strings.Cut(def, " = ") // bytes: "5242880 = 5 MiB"
			if u, err := strconv.Unquote(value); err == nil {
				value = u
			}
		}
		o, err := parseFlags([]string{"--" + name + "=" + value}, io.Discard)
		if err != nil {
			t.Errorf("--%s=%q (the default the help states): %v", name, value, err)
			continue
		}
		o.flags = base.flags
		if !reflect.DeepEqual(o, base) {
			t.Errorf("--%s: the help says the default is %q, but giving it changes the configuration", name, value)
		}
	}
	for name, note := range notes {
		if !strings.Contains(help.String(), "(default "+note+")") {
			t.Errorf("--%s: the help does not state %q", name, note)
		}
	}
	// The defaults other flags decide.
	if !strings.Contains(notes["listen"], base.listen+" without --jwt-secret") {
		t.Errorf("--listen note %q; open mode listens on %s", notes["listen"], base.listen)
	}
	if o, _ := parseFlags([]string{"--jwt-secret", "s"}, io.Discard); !strings.Contains(notes["listen"], o.listen+" with it") {
		t.Errorf("--listen note %q; with a secret the node listens on %s", notes["listen"], o.listen)
	}
	q := base.edge.EffectiveQueueBytes()
	if want := "in effect " + strconv.Itoa(q) + " = 10 MiB"; q == base.edge.QueueBytes || !strings.Contains(notes["queue-bytes"], want) {
		t.Errorf("--queue-bytes note %q, want it to say %q", notes["queue-bytes"], want)
	}
}

// The version: -ldflags -X main.version wins, then the module version go
// install records, then the VCS revision, then "devel".
func TestResolveVersion(t *testing.T) {
	info := func(mod string, settings ...string) *debug.BuildInfo {
		bi := &debug.BuildInfo{Main: debug.Module{Version: mod}}
		for i := 0; i+1 < len(settings); i += 2 {
			bi.Settings = append(bi.Settings, debug.BuildSetting{Key: settings[i], Value: settings[i+1]})
		}
		return bi
	}
	for _, c := range []struct {
		linked string
		info   *debug.BuildInfo
		want   string
	}{
		{"v1.2.3", info("v0.9.0"), "v1.2.3"},
		{"", info("v0.9.0"), "v0.9.0"},
		{"", info("v0.0.0-20260101000000-0123456789ab+dirty"), "v0.0.0-20260101000000-0123456789ab+dirty"},
		{"", info("(devel)", "vcs.revision", "0123456789abcdef0123", "vcs.modified", "true"), "devel-0123456789ab-dirty"},
		{"", info("(devel)", "vcs.revision", "0123456789abcdef0123", "vcs.modified", "false"), "devel-0123456789ab"},
		{"", info("(devel)"), "devel"},
		{"", nil, "devel"},
	} {
		if got := resolveVersion(c.linked, c.info); got != c.want {
			t.Errorf("resolveVersion(%q, %+v) = %q, want %q", c.linked, c.info, got, c.want)
		}
	}
}

// On a fly.io machine the environment sets defaults: the help states
// those, not what an empty default would derive.
func TestHelpDefaultsOnFly(t *testing.T) {
	cleanEnv(t)
	t.Setenv("FLY_APP_NAME", "meshcast-test")
	t.Setenv("FLY_PRIVATE_IP", "fdaa::2")
	var help bytes.Buffer
	if _, err := parseFlags([]string{"--help"}, &help); !errors.Is(err, flag.ErrHelp) {
		t.Fatal(err)
	}
	for _, want := range []string{`(default "[fdaa::2]:7946")`, `(default "[::]:7947")`, `(default "meshcast-test.internal:7946")`} {
		if !strings.Contains(help.String(), want) {
			t.Errorf("the help on fly.io does not state %s", want)
		}
	}
	if strings.Contains(help.String(), "(default the --gossip-addr)") {
		t.Error("the help on fly.io states the derived --gossip-advertise, not fly's")
	}
}
