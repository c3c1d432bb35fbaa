package ring

import (
	"strconv"
	"testing"
)

func BenchmarkOwner(b *testing.B) {
	for _, n := range []int{3, 10, 50} {
		b.Run(strconv.Itoa(n)+"nodes", func(b *testing.B) {
			r := New(nodeNames(n), 0)
			keys := make([]string, 1024)
			for i := range keys {
				keys[i] = "db-" + strconv.Itoa(i)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				if _, ok := r.Owner(keys[i&1023]); !ok {
					b.Fatal("empty ring")
				}
			}
		})
	}
}

func nodeNames(n int) []string {
	s := make([]string, n)
	for i := range s {
		s[i] = "node-" + strconv.Itoa(i)
	}
	return s
}
