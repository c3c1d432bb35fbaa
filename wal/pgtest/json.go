package pgtest

import (
	"encoding/json"
	"math/big"
	"strings"
)

// SameJSON reports whether two JSON texts are the same value, as tests
// that take Postgres's to_jsonb as the oracle compare them: objects
// whatever their key order (jsonb has its own), numbers by exact decimal
// value (jsonb prints 1e30 as 1000000000000000000000000000000, and an int8
// beyond 2^53 must not be rounded by the comparison).
func SameJSON(a, b []byte) bool {
	va, err1 := decodeExact(a)
	vb, err2 := decodeExact(b)
	return err1 == nil && err2 == nil && sameValue(va, vb)
}

func decodeExact(b []byte) (any, error) {
	d := json.NewDecoder(strings.NewReader(string(b)))
	d.UseNumber()
	var v any
	err := d.Decode(&v)
	return v, err
}

func sameValue(a, b any) bool {
	switch a := a.(type) {
	case json.Number:
		b, ok := b.(json.Number)
		if !ok {
			return false
		}
		ra, ok1 := new(big.Rat).SetString(a.String())
		rb, ok2 := new(big.Rat).SetString(b.String())
		return ok1 && ok2 && ra.Cmp(rb) == 0
	case map[string]any:
		b, ok := b.(map[string]any)
		if !ok || len(a) != len(b) {
			return false
		}
		for k, v := range a {
			if w, ok := b[k]; !ok || !sameValue(v, w) {
				return false
			}
		}
		return true
	case []any:
		b, ok := b.([]any)
		if !ok || len(a) != len(b) {
			return false
		}
		for i := range a {
			if !sameValue(a[i], b[i]) {
				return false
			}
		}
		return true
	}
	return a == b
}
