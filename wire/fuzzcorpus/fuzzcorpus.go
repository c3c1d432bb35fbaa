// Package fuzzcorpus writes the seed corpora of the fuzz tests: files in
// Go's native corpus format ("go test fuzz v1") under
// <pkg>/testdata/fuzz/<FuzzName>/, made from real inputs (frames the
// encoders produce, realtime-js frames, pgoutput bytes captured from
// Postgres). Plain `go test` replays every file as a regression test and
// `go test -fuzz` starts from them.
//
// Each package has a TestWriteCorpus that is skipped unless
// MESHCAST_WRITE_CORPUS=1 (`make fuzz-corpus`); the files it writes are
// committed. Crashers found by fuzzing land in the same directories, under
// the hash names `go test -fuzz` gives them, and stay there.
package fuzzcorpus

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Enabled reports whether this run (re)writes seed corpora.
func Enabled() bool { return os.Getenv("MESHCAST_WRITE_CORPUS") == "1" }

// Encode returns a corpus file holding args, one fuzz argument each, in
// the order the fuzz function takes them. Supported are the types native
// fuzzing supports that the tests use: []byte, string, bool, int, int64,
// uint8, uint32, uint64.
func Encode(args ...any) ([]byte, error) {
	var b strings.Builder
	b.WriteString("go test fuzz v1\n")
	for _, a := range args {
		switch v := a.(type) {
		case []byte:
			fmt.Fprintf(&b, "[]byte(%s)\n", strconv.Quote(string(v)))
		case string:
			fmt.Fprintf(&b, "string(%s)\n", strconv.Quote(v))
		case bool:
			fmt.Fprintf(&b, "bool(%t)\n", v)
		case int:
			fmt.Fprintf(&b, "int(%d)\n", v)
		case int64:
			fmt.Fprintf(&b, "int64(%d)\n", v)
		case uint8:
			fmt.Fprintf(&b, "byte(%s)\n", strconv.QuoteRune(rune(v)))
		case uint32:
			fmt.Fprintf(&b, "uint32(%d)\n", v)
		case uint64:
			fmt.Fprintf(&b, "uint64(%d)\n", v)
		default:
			return nil, fmt.Errorf("fuzzcorpus: unsupported argument type %T", a)
		}
	}
	return []byte(b.String()), nil
}

// Write writes the seed name of the fuzz target fuzz into the current
// package's testdata/fuzz/<fuzz>/ (tests run in their package directory).
func Write(t testing.TB, fuzz, name string, args ...any) {
	t.Helper()
	data, err := Encode(args...)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join("testdata", "fuzz", fuzz)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "seed-"+name), data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// Skip skips the calling test unless corpora are being written.
func Skip(t testing.TB) {
	t.Helper()
	if !Enabled() {
		t.Skip("writes the seed corpora; run with MESHCAST_WRITE_CORPUS=1 (make fuzz-corpus)")
	}
}
