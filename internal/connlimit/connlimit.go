// Package connlimit bounds what a listener lets in: a cap on the
// connections open at once (beyond it a new connection is closed at once,
// counted and logged at most every LogEvery), and, for a TLS listener, a
// deadline on the handshake, run off the accept loop so that one slow or
// silent client holds neither the loop nor a goroutine for long.
//
// An idle TCP connection that never starts its handshake costs the agent a
// file descriptor and a goroutine; without these bounds a few thousand of
// them (measured: 3,000 on the raft port took the agent from 25 to 3,029
// descriptors and from 25 to 223 MB) starve it. See docs/security.md.
package connlimit

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults.
const (
	DefaultMax              = 256
	DefaultHandshakeTimeout = 5 * time.Second
	DefaultLogEvery         = 10 * time.Second
)

// Config says how a listener is bounded.
type Config struct {
	// Name is the listener's name in log lines ("raft", "api").
	Name string
	// Max is the number of connections open at once, those still in
	// their handshake included (0: DefaultMax).
	Max int
	// TLS, when set, makes Accept return connections whose TLS handshake
	// has completed (as the server side of TLS), within HandshakeTimeout.
	// nil: Accept returns the TCP connections as they come.
	TLS *tls.Config
	// HandshakeTimeout bounds a TLS handshake (0: DefaultHandshakeTimeout).
	HandshakeTimeout time.Duration
	// Logger receives the refusals and handshake failures (nil: none).
	Logger *slog.Logger
	// LogEvery is the least time between two log lines about refused
	// connections (0: DefaultLogEvery).
	LogEvery time.Duration
	// PerHost caps the connections one address (other than a reserved
	// one) may hold open at once (0: only Max applies), so that one
	// flooding host cannot take every slot.
	PerHost int
	// Reserved, when set, says which addresses are the cluster's members:
	// their connections have a budget of Max of their own, which nobody
	// else's connections can use up (a flood on the port must not cut
	// the members' raft traffic or lease renewals).
	Reserved func(netip.Addr) bool
}

// Stats counts what a listener let in and kept out.
type Stats struct {
	// Open is the number of connections open now (in or past their
	// handshake, not yet closed).
	Open int64
	// Refused counts connections closed at once because Max were open.
	Refused uint64
	// HandshakeFailed counts TLS handshakes that failed or timed out.
	HandshakeFailed uint64
}

// Listener is a bounded net.Listener. It is safe for concurrent use.
type Listener struct {
	inner net.Listener
	cfg   Config

	open      atomic.Int64 // connections of addresses not reserved
	reserved  atomic.Int64 // connections of reserved addresses
	refused   atomic.Uint64
	hsFailed  atomic.Uint64
	ready     chan net.Conn // handshaken connections (TLS only)
	ctx       context.Context
	cancel    context.CancelFunc // ends the handshakes in progress
	closed    chan struct{}
	closeOnce sync.Once
	acceptErr error // set before closing done (TLS only)
	done      chan struct{}
	wg        sync.WaitGroup

	logMu      sync.Mutex
	lastLog    time.Time
	unreported uint64

	hostMu sync.Mutex
	hosts  map[netip.Addr]int // open connections per address not reserved (PerHost)
}

// Wrap bounds ln as cfg says. With cfg.TLS set it starts the accept loop;
// Close stops it and waits for the handshakes in progress to end.
func Wrap(ln net.Listener, cfg Config) *Listener {
	if cfg.Max <= 0 {
		cfg.Max = DefaultMax
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.LogEvery <= 0 {
		cfg.LogEvery = DefaultLogEvery
	}
	l := &Listener{inner: ln, cfg: cfg, closed: make(chan struct{}), done: make(chan struct{}), hosts: map[netip.Addr]int{}}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	if cfg.TLS != nil {
		l.ready = make(chan net.Conn)
		go l.acceptLoop()
	}
	return l
}

// Stats returns the listener's counts.
func (l *Listener) Stats() Stats {
	return Stats{Open: l.open.Load() + l.reserved.Load(), Refused: l.refused.Load(), HandshakeFailed: l.hsFailed.Load()}
}

// Addr is the address listened on.
func (l *Listener) Addr() net.Addr { return l.inner.Addr() }

// Close stops listening. Connections already returned by Accept stay
// open; those still in their handshake are closed.
func (l *Listener) Close() error {
	var err error
	l.closeOnce.Do(func() {
		close(l.closed)
		l.cancel()
		err = l.inner.Close()
		if l.cfg.TLS != nil {
			<-l.done
			l.wg.Wait()
		}
	})
	return err
}

// Accept returns the next connection within the bounds.
func (l *Listener) Accept() (net.Conn, error) {
	if l.cfg.TLS == nil {
		for {
			c, err := l.inner.Accept()
			if err != nil {
				return nil, err
			}
			if c, ok := l.admit(c); ok {
				return c, nil
			}
		}
	}
	select {
	case c := <-l.ready:
		return c, nil
	case <-l.done:
		return nil, l.acceptErr
	}
}

// admit counts c in, or closes it when its budget is full: Max for the
// reserved addresses, Max and PerHost for the others.
func (l *Listener) admit(c net.Conn) (net.Conn, bool) {
	ip := remoteIP(c.RemoteAddr())
	if ip.IsValid() && l.cfg.Reserved != nil && l.cfg.Reserved(ip) {
		if l.reserved.Add(1) > int64(l.cfg.Max) {
			l.reserved.Add(-1)
			l.refuse(c.RemoteAddr()) // counted before the peer can see the close
			_ = c.Close()
			return nil, false
		}
		return &conn{Conn: c, l: l, reserved: true}, true
	}
	if l.open.Add(1) > int64(l.cfg.Max) {
		l.open.Add(-1)
		l.refuse(c.RemoteAddr()) // counted before the peer can see the close
		_ = c.Close()
		return nil, false
	}
	if l.cfg.PerHost > 0 && ip.IsValid() {
		l.hostMu.Lock()
		if l.hosts[ip] >= l.cfg.PerHost {
			l.hostMu.Unlock()
			l.open.Add(-1)
			l.refuse(c.RemoteAddr()) // counted before the peer can see the close
			_ = c.Close()
			return nil, false
		}
		l.hosts[ip]++
		l.hostMu.Unlock()
		return &conn{Conn: c, l: l, host: ip}, true
	}
	return &conn{Conn: c, l: l}, true
}

// remoteIP is the IP of a TCP peer (the zero Addr for anything else).
func remoteIP(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(ta.IP)
		return ip.Unmap()
	}
	return netip.Addr{}
}

// refuse counts a refused connection and logs, at most every LogEvery,
// how many there were since the last line.
func (l *Listener) refuse(from net.Addr) {
	l.refused.Add(1)
	if l.cfg.Logger == nil {
		return
	}
	now := time.Now()
	l.logMu.Lock()
	l.unreported++
	if now.Sub(l.lastLog) < l.cfg.LogEvery {
		l.logMu.Unlock()
		return
	}
	n := l.unreported
	l.unreported, l.lastLog = 0, now
	l.logMu.Unlock()
	l.cfg.Logger.Warn(fmt.Sprintf("%s listener: too many connections open, new ones closed at once (a flood, or a client that does not close its connections)", l.cfg.Name),
		"listener", l.cfg.Name, "max", l.cfg.Max, "refused", n, "last_from", addrString(from))
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

// acceptLoop accepts TCP connections and handshakes each in a goroutine
// of its own under HandshakeTimeout (TLS only).
func (l *Listener) acceptLoop() {
	defer close(l.done)
	var delay time.Duration
	for {
		c, err := l.inner.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				// Out of file descriptors and the like: back off as
				// net/http does rather than spin.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				select {
				case <-time.After(delay):
					continue
				case <-l.closed:
				}
			}
			select {
			case <-l.closed:
				err = net.ErrClosed
			default:
			}
			l.acceptErr = err
			return
		}
		delay = 0
		c, ok := l.admit(c)
		if !ok {
			continue
		}
		l.wg.Add(1)
		go l.handshake(c)
	}
}

func isTemporary(err error) bool {
	t, ok := err.(interface{ Temporary() bool })
	return ok && t.Temporary()
}

// handshake completes the TLS handshake of c within HandshakeTimeout and
// hands the connection to Accept.
func (l *Listener) handshake(c net.Conn) {
	defer l.wg.Done()
	tc := tls.Server(c, l.cfg.TLS)
	// HandshakeContext closes the connection when ctx ends: at the
	// deadline, or when the listener closes.
	ctx, cancel := context.WithTimeout(l.ctx, l.cfg.HandshakeTimeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		l.hsFailed.Add(1)
		if l.cfg.Logger != nil {
			l.cfg.Logger.Debug("TLS handshake failed", "listener", l.cfg.Name, "from", addrString(c.RemoteAddr()), "error", err)
		}
		_ = tc.Close()
		return
	}
	select {
	case l.ready <- tc:
	case <-l.closed:
		_ = tc.Close()
	}
}

// conn is a connection counted by its listener until it is closed.
type conn struct {
	net.Conn
	l        *Listener
	reserved bool       // counted in the reserved budget
	host     netip.Addr // counted against PerHost (when valid)
	once     sync.Once
}

// ConnectionState is the TLS state of the connection (zero when it is not
// TLS), for servers that need the peer's certificate.
func (c *conn) ConnectionState() tls.ConnectionState {
	if tc, ok := c.Conn.(*tls.Conn); ok {
		return tc.ConnectionState()
	}
	return tls.ConnectionState{}
}

func (c *conn) Close() error {
	c.once.Do(func() {
		if c.reserved {
			c.l.reserved.Add(-1)
			return
		}
		c.l.open.Add(-1)
		if c.host.IsValid() {
			c.l.hostMu.Lock()
			if c.l.hosts[c.host]--; c.l.hosts[c.host] <= 0 {
				delete(c.l.hosts, c.host)
			}
			c.l.hostMu.Unlock()
		}
	})
	return c.Conn.Close()
}

var _ net.Listener = (*Listener)(nil)
