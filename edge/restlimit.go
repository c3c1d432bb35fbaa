package edge

import (
	"net"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// restLimiter bounds the messages REST requests publish per second per
// client address: a WebSocket or WebTransport client is limited per
// connection, but REST requests are many short connections, so without
// it one API key holder could push any rate at a topic's subscribers.
type restLimiter struct {
	perSec float64
	burst  int

	mu sync.Mutex
	by map[string]*rate.Limiter
}

// restLimiterAddrs bounds the addresses restLimiter remembers. Past it,
// the addresses whose buckets are full (idle for a second or more) are
// forgotten; if all are busy, all are: the bound on memory wins over the
// accuracy of the limit during a flood from that many addresses.
const restLimiterAddrs = 4096

// newRESTLimiter returns nil (no limit) when perSec is not positive.
func newRESTLimiter(perSec float64, batch int) *restLimiter {
	if perSec <= 0 {
		return nil
	}
	return &restLimiter{perSec: perSec, burst: max(burst(perSec), batch), by: make(map[string]*rate.Limiter)}
}

// allow takes n messages from remote's bucket (remote as in
// http.Request.RemoteAddr); false refuses the request.
func (l *restLimiter) allow(remote string, n int) bool {
	if l == nil {
		return true
	}
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	lim := l.by[host]
	if lim == nil {
		if len(l.by) >= restLimiterAddrs {
			for h, v := range l.by {
				if v.Tokens() >= float64(l.burst) {
					delete(l.by, h)
				}
			}
			if len(l.by) >= restLimiterAddrs {
				clear(l.by)
			}
		}
		lim = rate.NewLimiter(rate.Limit(l.perSec), l.burst)
		l.by[host] = lim
	}
	return lim.AllowN(time.Now(), n)
}
