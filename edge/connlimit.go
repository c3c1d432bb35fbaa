package edge

import (
	"net/netip"
	"sync"

	"github.com/meshcast/meshcast/mesh/quicgate"
)

// addrCounts bounds the connections one client address holds (an IPv4
// address, or an IPv6 /64: quicgate.AddrKey), so that one address cannot
// take every place of a node-wide limit. A zero limit bounds nothing.
type addrCounts struct {
	limit int
	mu    sync.Mutex
	n     map[netip.Prefix]int
}

// newAddrCounts bounds each address to share of places (at least one);
// places or share 0, or share 1 or more: no bound.
func newAddrCounts(places int, share float64) *addrCounts {
	a := &addrCounts{n: make(map[netip.Prefix]int)}
	if places > 0 && share > 0 && share < 1 {
		a.limit = max(1, int(float64(places)*share))
	}
	return a
}

// take counts one more connection from remote (host:port); false when its
// address holds its share already (nothing is counted then).
func (a *addrCounts) take(remote string) bool {
	if a.limit == 0 {
		return true
	}
	k := addrKey(remote)
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.n[k] >= a.limit {
		return false
	}
	a.n[k]++
	return true
}

// give returns a place taken for remote.
func (a *addrCounts) give(remote string) {
	if a.limit == 0 {
		return
	}
	k := addrKey(remote)
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.n[k]--; a.n[k] <= 0 {
		delete(a.n, k)
	}
}

// addrKey is remote's address unit; an unparsable remote counts as one
// unit of its own (the zero prefix).
func addrKey(remote string) netip.Prefix {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return netip.Prefix{}
	}
	return quicgate.AddrKey(ap.Addr())
}

// tooManyMessage is the refusal's text for an admit reason.
func tooManyMessage(reason string) string {
	if reason == "too_many_from_address" {
		return "Too many connected users from this address"
	}
	return "Too many connected users"
}
