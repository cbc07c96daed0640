package ip

import (
	"sync"
	"time"
)

// Checks on one node share the interface's address dump for up to
// checkReadAge. A dump lists every address on the interface, so with
// 1,000 virtual IPs on eth0 each check parsed 1,000 addresses, 1,000 times
// per round of checks: a fifth of a node's CPU (measured with pprof in the
// scale benchmark). A check never uses a dump older than its own
// instance's last restore, so it never reports an address it just added
// as missing; an address removed by something else is noticed at most
// checkReadAge later.
const checkReadAge = time.Second

// linkCache holds the last dump of each interface.
type linkCache struct {
	mu    sync.Mutex
	links map[string]cachedLink
}

type cachedLink struct {
	l  link
	at time.Time
}

// hostLinks is the cache of the host's interfaces (the real system).
var hostLinks = &linkCache{links: map[string]cachedLink{}}

// link returns a dump of name taken at or after since, reading it anew
// when the cache has none.
func (c *linkCache) link(sys links, name string, since time.Time) (link, error) {
	c.mu.Lock()
	cl, ok := c.links[name]
	c.mu.Unlock()
	if ok && cl.at.After(since) {
		return cl.l, nil
	}
	at := time.Now()
	l, err := sys.Link(name)
	if err != nil {
		return l, err
	}
	c.mu.Lock()
	if cur, ok := c.links[name]; !ok || cur.at.Before(at) {
		c.links[name] = cachedLink{l: l, at: at}
	}
	c.mu.Unlock()
	return l, nil
}

// checkLink is the interface as a check sees it.
func (in *instance) checkLink() (link, error) {
	if in.checks == nil {
		return in.sys.Link(in.cfg.ifname)
	}
	since := time.Now().Add(-checkReadAge)
	if t := time.Unix(0, in.changedAt.Load()); t.After(since) {
		since = t
	}
	return in.checks.link(in.sys, in.cfg.ifname, since)
}

// changed notes that this instance changed the interface.
func (in *instance) changed() { in.changedAt.Store(time.Now().UnixNano()) }
