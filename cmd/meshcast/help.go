package main

import (
	"encoding"
	"errors"
	"flag"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// How the command line explains itself: --help states each flag's default
// once, and the default the node really uses; a bad MESHCAST_* value
// names the variable and what it wants.
//
// A flag's usage string says what it does and what 0 or empty means, but
// not its default: printUsage adds that, from the flag's value or, where
// other flags decide it, from helpDefaults.

const usageHeader = `Usage: meshcast [flags]

Runs a meshcast edge node. Every flag may also be given as an environment
variable MESHCAST_<FLAG> (e.g. MESHCAST_LISTEN, MESHCAST_JWT_SECRET);
the command line wins. meshcast --version prints the version.

Flags:
`

// helpDefaults are the defaults --help states for flags whose value alone
// does not tell the truth: defaults derived from other flags, or raised
// by them. They are computed when help is printed, after the environment
// and the flags before --help were applied.
func (o *options) helpDefaults() map[string]string {
	d := map[string]string{
		"listen": openListen + " without --jwt-secret (loopback: this machine only), " + defaultListen + " with it",
	}
	// Empty means "derived", unless the environment set a default
	// (fly.io: flyDefaults).
	for name, note := range map[string]string{
		"webtransport-listen":    "the --listen address, over UDP",
		"webtransport-advertise": "derived from the listener and the request; see README",
		"gossip-advertise":       "the --gossip-addr",
		"mesh-addr":              "the --gossip-addr port + 1, on its host",
		"mesh-advertise":         "the --mesh-addr",
		"database-region":        "any region",
	} {
		if f := o.flags.Lookup(name); f != nil && f.DefValue == "" {
			d[name] = note
		}
	}
	c := o.edge
	if q, eff := c.QueueBytes, c.EffectiveQueueBytes(); eff != q {
		d["queue-bytes"] = fmt.Sprintf("%s; in effect %s", bytesText(int64(q)), bytesText(int64(eff)))
	}
	return d
}

// printUsage writes the help: each flag with its argument, its usage and
// its default.
func printUsage(w io.Writer, fs *flag.FlagSet, defaults map[string]string) {
	fmt.Fprint(w, usageHeader)
	fs.VisitAll(func(f *flag.Flag) {
		arg, usage := flag.UnquoteUsage(f)
		if arg == "value" {
			arg = argName(f) // a flag.Value of a package (internal/flagx)
		}
		fmt.Fprintf(w, "  --%s", f.Name)
		if arg != "" {
			fmt.Fprintf(w, " %s", arg)
		}
		fmt.Fprintf(w, "\n    \t%s", usage)
		if d := defaultText(f, defaults); d != "" {
			fmt.Fprintf(w, " (default %s)", d)
		}
		fmt.Fprintln(w)
	})
}

// argName names a flag's argument by its value's type, as
// flag.UnquoteUsage does for the flag package's own values.
func argName(f *flag.Flag) string {
	switch flagValue(f).(type) {
	case int, int64:
		return "int"
	case float64:
		return "float"
	case time.Duration:
		return "duration"
	case string, encoding.TextUnmarshaler:
		return "string"
	}
	return "value"
}

// defaultText is a flag's default as help shows it: from defaults, else
// its value unless that is the zero value (the usage says what zero
// means), with byte sizes also in KiB, MiB or GiB.
func defaultText(f *flag.Flag, defaults map[string]string) string {
	if d, ok := defaults[f.Name]; ok {
		return d
	}
	switch v := flagValue(f).(type) {
	case string:
		if v == "" {
			return ""
		}
		return strconv.Quote(v)
	case encoding.TextUnmarshaler: // flag.TextVar
		return strconv.Quote(f.Value.String())
	case bool:
		if !v {
			return ""
		}
		return "true"
	case time.Duration:
		if v == 0 {
			return ""
		}
		return v.String()
	case int, int64, float64:
		n, _ := strconv.ParseFloat(f.Value.String(), 64)
		if n == 0 {
			return ""
		}
		s := strconv.FormatFloat(n, 'f', -1, 64)
		if isByteFlag(f.Name) && n == float64(int64(n)) {
			s = bytesText(int64(n))
		}
		return s
	}
	return f.Value.String()
}

// isByteFlag reports whether a flag's value is a number of bytes.
func isByteFlag(name string) bool {
	return strings.Contains(name, "bytes") || name == "max-slot-lag" || name == "wal-tx-memory"
}

// bytesText is n, and n in KiB, MiB or GiB when that is at least 1 KiB:
// "5242880 = 5 MiB", "3000000 = 2.86 MiB".
func bytesText(n int64) string {
	s := strconv.FormatInt(n, 10)
	units := []string{"GiB", "MiB", "KiB"}
	for i, shift := range []uint{30, 20, 10} {
		if n >= 1<<shift {
			v := strconv.FormatFloat(float64(n)/float64(int64(1)<<shift), 'f', 2, 64)
			v = strings.TrimSuffix(strings.TrimRight(v, "0"), ".")
			return s + " = " + v + " " + units[i]
		}
	}
	return s
}

// flagValue is the typed value of a flag defined by the flag package.
func flagValue(f *flag.Flag) any {
	if g, ok := f.Value.(flag.Getter); ok {
		return g.Get()
	}
	return nil
}

// envName is the environment variable of a flag: --max-frame-bytes is
// MESHCAST_MAX_FRAME_BYTES.
func envName(flagName string) string {
	return "MESHCAST_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// applyEnv sets every flag whose MESHCAST_* variable lookup finds, and
// returns the names of those flags. A value the flag does not take is an
// error naming the variable and what the flag wants.
func applyEnv(fs *flag.FlagSet, lookup func(string) (string, bool)) (map[string]bool, error) {
	set := map[string]bool{}
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name == "version" {
			return // a command, not a setting
		}
		v, ok := lookup(envName(f.Name))
		if !ok || err != nil {
			return
		}
		if serr := f.Value.Set(v); serr != nil {
			err = fmt.Errorf("environment variable %s=%q: --%s wants %s", envName(f.Name), cutValue(v), f.Name, wants(f, serr))
			return
		}
		set[f.Name] = true
	})
	return set, err
}

// wants says what kind of value a flag takes, for an error about a value
// it did not.
func wants(f *flag.Flag, err error) string {
	// The flag package turns strconv's errors into two of its own.
	if err.Error() == "value out of range" {
		return "a number in range, not this one (" + err.Error() + ")"
	}
	switch flagValue(f).(type) {
	case int, int64:
		if isByteFlag(f.Name) {
			return "an integer number of bytes, such as 5242880"
		}
		return "an integer, such as 100"
	case float64:
		return "a number, such as 100 or 2.5"
	case bool:
		return "true or false"
	case time.Duration:
		return "a duration, such as 10s, 500ms or 1m30s"
	}
	return err.Error()
}

// cutValue is at most a short prefix of a bad value, for an error.
func cutValue(v string) string {
	if len(v) > 64 {
		return v[:64] + "…"
	}
	return v
}

// badValueRE matches the flag package's error for a value a flag does not
// take.
var badValueRE = regexp.MustCompile(`^invalid value (".*") for flag -([\w-]+): (.*)$`)

// explainParseError rewrites the flag package's error for a bad value
// ("parse error") to say what the flag wants, as applyEnv does.
func explainParseError(fs *flag.FlagSet, err error) error {
	m := badValueRE.FindStringSubmatch(err.Error())
	if m == nil {
		return err
	}
	v, uerr := strconv.Unquote(m[1])
	f := fs.Lookup(m[2])
	if uerr != nil || f == nil {
		return err
	}
	return fmt.Errorf("--%s %q: wants %s", f.Name, cutValue(v), wants(f, errors.New(m[3])))
}
