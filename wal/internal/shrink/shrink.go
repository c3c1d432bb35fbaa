// Package shrink holds a map that gives its memory back. Go's maps keep
// the buckets they grew to when entries go, so a map that once held a
// million subscriptions holds their room for good; the wal package's
// indexes of subscriptions use this one instead.
package shrink

// Map is a map that is copied into a new, smaller one once it has fallen
// to a quarter of the largest size it had since it was made (and that
// size was at least 64). The zero Map is empty and ready to use; M may be
// read directly (nil until the first Put) but is changed only through Put
// and Delete.
type Map[K comparable, V any] struct {
	M    map[K]V
	peak int
}

// Put sets k to v.
func (s *Map[K, V]) Put(k K, v V) {
	if s.M == nil {
		s.M = map[K]V{}
	}
	s.M[k] = v
	s.peak = max(s.peak, len(s.M))
}

// Delete removes k, and copies the map once it has shrunk enough.
func (s *Map[K, V]) Delete(k K) {
	delete(s.M, k)
	if s.peak >= 64 && len(s.M) < s.peak/4 {
		fresh := make(map[K]V, len(s.M))
		for k, v := range s.M {
			fresh[k] = v
		}
		s.M, s.peak = fresh, len(fresh)
	}
}

// Len is the number of entries.
func (s *Map[K, V]) Len() int { return len(s.M) }
