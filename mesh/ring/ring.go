// Package ring places singleton work (the WAL reader of a database, and
// anything else exactly one live node must do) on the cluster's nodes by
// consistent hashing, so that every node computes the same owner from the same
// member list without talking to the others, and a membership change moves as
// few keys as possible.
//
// It is a hash ring with virtual nodes: every node contributes vnodes points,
// and the point of its i-th virtual node is the xxhash64 of the node ID, "#" and
// the decimal i (node "a" at vnode 3 hashes "a#3"). The positions therefore
// depend only on the node itself, never on the other members.
//
// A plain ring with 128 virtual nodes per node leaves node loads uneven by
// about ±9 % (one standard deviation, 1/√128): with 10 nodes the most loaded
// one typically carries 1.3 times the keys of the least loaded. To bring that
// spread within 10 %, a key is
// looked up at several probe positions (multi-probe consistent hashing,
// Appleton and O'Reilly, 2015): each probe finds the first point clockwise of
// it, and the point closest to its probe wins. A node's share then tends to its
// share of points rather than of arc length. The owner of a key is still the
// node with the smallest score, and a node's score ignores every other node, so
// the ring keeps the properties that matter: adding a node only moves keys to
// it, removing one only moves that node's keys, and the next owner after a
// failure is the next in Owners.
//
// A Ring is immutable and safe for concurrent use; rebuild it with New when
// membership changes.
package ring

import (
	"math"
	"slices"
	"strconv"

	"github.com/cespare/xxhash/v2"
)

// DefaultVnodes is the number of virtual nodes per node used when New is
// given vnodes <= 0.
const DefaultVnodes = 128

// probes is how many positions a key is looked up at. Measured with 128
// virtual nodes, 100k keys and random node sets of 3, 5 and 10 nodes (max/min
// load, mean and worst over 20 sets, 150 for 16 probes): 1 probe (a plain ring) 1.16/1.32, 1.24/1.38,
// 1.34/1.51; 8 probes 1.05/1.11, 1.07/1.10, 1.08/1.13; 16 probes 1.03/1.08,
// 1.04/1.09, 1.06/1.10. Beyond 16 the gain is small (the 10-node spread is
// then partly the sampling noise of 100k keys). Each probe costs one bucket
// lookup and about one comparison.
const probes = 16

// Ring maps keys to nodes. The zero value and nil are empty rings.
type Ring struct {
	nodes  []string // sorted, distinct
	points []uint64 // sorted point positions
	owner  []int32  // owner[i] indexes nodes for points[i]
	probes int

	// start[t] is the index of the first point whose top bits are >= t, so a
	// lookup jumps next to its successor instead of binary searching: with
	// about one bucket per point the scan from there is about one step.
	start []int32
	shift uint // 64 - bucket bits
}

// New builds a ring over nodes with vnodes virtual nodes each (DefaultVnodes
// when vnodes <= 0). The order of nodes does not matter and duplicates are
// ignored, so every member that sees the same set builds the same ring.
func New(nodes []string, vnodes int) *Ring {
	return newRing(nodes, vnodes, probes)
}

func newRing(nodes []string, vnodes, probes int) *Ring {
	if vnodes <= 0 {
		vnodes = DefaultVnodes
	}
	ns := slices.Clone(nodes)
	slices.Sort(ns)
	ns = slices.Compact(ns)
	if len(ns) > math.MaxInt32 {
		ns = ns[:math.MaxInt32] // unreachable in practice; keeps owner indexes valid
	}

	type point struct {
		pos  uint64
		node int32
	}
	pts := make([]point, 0, len(ns)*vnodes)
	var buf []byte
	for i, n := range ns {
		for v := 0; v < vnodes; v++ {
			buf = append(buf[:0], n...)
			buf = append(buf, '#')
			buf = strconv.AppendInt(buf, int64(v), 10)
			pts = append(pts, point{xxhash.Sum64(buf), int32(i)})
		}
	}
	// Ties between positions (a 64-bit collision) go to the smaller node ID,
	// so the ring does not depend on the input order.
	slices.SortFunc(pts, func(a, b point) int {
		if a.pos != b.pos {
			if a.pos < b.pos {
				return -1
			}
			return 1
		}
		return int(a.node - b.node)
	})

	r := &Ring{
		nodes:  ns,
		points: make([]uint64, len(pts)),
		owner:  make([]int32, len(pts)),
		probes: probes,
	}
	for i, p := range pts {
		r.points[i] = p.pos
		r.owner[i] = p.node
	}
	r.index()
	return r
}

// index builds start: one bucket per point, rounded up to a power of two.
func (r *Ring) index() {
	bits := uint(1)
	for bits < 31 && 1<<bits < len(r.points) {
		bits++
	}
	r.shift = 64 - bits
	r.start = make([]int32, 1<<bits+1)
	i := 0
	for t := range r.start {
		for i < len(r.points) && r.points[i]>>r.shift < uint64(t) {
			i++
		}
		r.start[t] = int32(i)
	}
}

// Len returns the number of distinct nodes.
func (r *Ring) Len() int {
	if r == nil {
		return 0
	}
	return len(r.nodes)
}

// Nodes returns the distinct nodes, sorted. The caller may modify the slice.
func (r *Ring) Nodes() []string {
	if r == nil {
		return nil
	}
	return slices.Clone(r.nodes)
}

// Owner returns the node that owns key, and false when the ring is empty.
func (r *Ring) Owner(key string) (string, bool) {
	if r.Len() == 0 {
		return "", false
	}
	h := xxhash.Sum64String(key)
	best, bestDist := 0, uint64(math.MaxUint64)
	for j := 0; j < r.probes; j++ {
		p := probe(h, j)
		i := r.successor(p)
		// Unsigned subtraction measures clockwise distance across the wrap.
		d := r.points[i] - p
		if d < bestDist || (d == bestDist && r.owner[i] < r.owner[best]) {
			best, bestDist = i, d
		}
	}
	return r.nodes[r.owner[best]], true
}

// Owners returns up to n distinct nodes for key in failover order: the first
// is Owner(key), and each next one is the node that would own key if all
// nodes before it were removed from the ring. It returns nil when n <= 0 or
// the ring is empty, and all nodes when n exceeds Len.
func (r *Ring) Owners(key string, n int) []string {
	if n <= 0 || r.Len() == 0 {
		return nil
	}
	n = min(n, len(r.nodes))
	// A node's score is its smallest clockwise distance from any probe; the
	// owner is the node with the smallest score, and the failover order is the
	// order of scores. A node among the n best is among the first n distinct
	// nodes clockwise of the probe that gives its score (otherwise n nodes
	// would score better), so walking that far from each probe finds them all.
	score := make([]uint64, len(r.nodes))
	for i := range score {
		score[i] = math.MaxUint64
	}
	seen := make([]int, len(r.nodes)) // probe number+1 that last saw a node
	h := xxhash.Sum64String(key)
	for j := 0; j < r.probes; j++ {
		p := probe(h, j)
		i := r.successor(p)
		for found, steps := 0, 0; found < n && steps < len(r.points); steps++ {
			o := r.owner[i]
			if seen[o] != j+1 {
				seen[o] = j + 1
				found++
				score[o] = min(score[o], r.points[i]-p)
			}
			if i++; i == len(r.points) {
				i = 0
			}
		}
	}
	idx := make([]int32, 0, len(r.nodes))
	for i := range score {
		if seen[i] != 0 {
			idx = append(idx, int32(i))
		}
	}
	slices.SortFunc(idx, func(a, b int32) int {
		if score[a] != score[b] {
			if score[a] < score[b] {
				return -1
			}
			return 1
		}
		return int(a - b)
	})
	out := make([]string, 0, n)
	for _, i := range idx[:min(n, len(idx))] {
		out = append(out, r.nodes[i])
	}
	return out
}

// successor returns the index of the first point at or clockwise of p.
func (r *Ring) successor(p uint64) int {
	t := p >> r.shift
	i, end := int(r.start[t]), int(r.start[t+1])
	// Only the bucket of p can hold its successor; past it, the successor
	// is the first point of a later bucket, which is end.
	for i < end && r.points[i] < p {
		i++
	}
	if i == len(r.points) {
		i = 0
	}
	return i
}

// probe derives the j-th probe position of a key hash with the splitmix64
// finaliser, so a key costs one xxhash however many probes there are.
func probe(h uint64, j int) uint64 {
	z := h + uint64(j)*0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}
