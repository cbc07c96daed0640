package agent

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/cluster"
)

// Lease renewals on one long-lived connection per peer (issue 11).
//
// The renewing node opens the stream with an HTTP upgrade on the peer's
// API port (POST /v1/internal/lease/stream?node=NAME, Upgrade:
// lifeboat-lease/1), authenticated as every internal call is (member
// certificate and internal token), and the peer checks that the caller's
// certificate is the named node's (actsFor): every renewal on the stream
// is then for that node, which no frame can change. After the 101 answer
// both sides exchange the binary frames of cluster/leasewire.go.
//
// Mixed versions: a peer from before the stream answers the upgrade with
// 404; the renewing node then renews with that peer over HTTP/JSON as
// before (POST /v1/internal/lease/renew, which every version keeps
// serving) and tries the stream again after legacyRetry. Each pair of
// nodes uses the best form both speak, so no feature level is needed.

// legacyRetry is how long a peer that refused the stream is renewed with
// over HTTP before the stream is tried again.
const legacyRetry = time.Minute

// streamIdle closes a renewal stream on which nothing arrived that long.
const streamIdle = apiIdleTimeout

// leaseStream is the renewing side of the stream to one peer.
type leaseStream struct {
	a    *Agent
	peer string
	addr string

	mu          sync.Mutex
	conn        *streamConn
	dialing     chan struct{} // closed when the dial under way ends
	legacyUntil time.Time
}

// streamConn is one open stream. mu guards the fields and is never held
// across I/O; wmu (a channel, so that a writer blocked on a slow peer is
// a wait testing/synctest sees) orders the writes.
type streamConn struct {
	net.Conn          // TLS
	raw      net.Conn // under TLS: closed without a close_notify that could block
	wmu      chan struct{}
	buf      []byte // under wmu

	mu       sync.Mutex
	nextID   uint32
	pending  map[uint32]pendingRenew
	lastRead time.Time
	err      error // set once the connection failed
}

// pendingRenew is a renewal sent and not yet answered.
type pendingRenew struct {
	done    func(cluster.RenewResponse, error)
	sent    time.Time
	timeout time.Duration
}

var errLegacyPeer = errors.New("peer renews over HTTP only")

// renew sends one renewal on the stream and waits for its answer (see
// sendAsync). It returns errLegacyPeer when the peer does not speak it.
func (s *leaseStream) renew(ctx context.Context, req cluster.RenewRequest) (cluster.RenewResponse, error) {
	timeout := 5 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	type result struct {
		r   cluster.RenewResponse
		err error
	}
	ch := make(chan result, 1)
	s.sendAsync(req, timeout, func(r cluster.RenewResponse, err error) { ch <- result{r, err} })
	select {
	case res := <-ch:
		return res.r, res.err
	case <-ctx.Done():
		return cluster.RenewResponse{}, fmt.Errorf("lease renewal stream to %s: %w", s.peer, ctx.Err())
	}
}

// sendAsync sends one renewal and returns without waiting: done gets the
// answer from the stream's reader, or an error (errLegacyPeer when the
// peer does not speak the stream). On an open stream it is one write
// from the caller's goroutine; only when the stream must be opened first
// does a goroutine of its own dial (bounded by timeout).
func (s *leaseStream) sendAsync(req cluster.RenewRequest, timeout time.Duration, done func(cluster.RenewResponse, error)) {
	s.mu.Lock()
	legacy := time.Now().Before(s.legacyUntil)
	c := s.conn
	s.mu.Unlock()
	switch {
	case legacy:
		done(cluster.RenewResponse{}, errLegacyPeer)
	case c != nil:
		s.sendOn(c, req, timeout, done)
	default:
		go func() {
			ctx, cancel := context.WithTimeout(s.a.ctx, timeout)
			defer cancel()
			c, err := s.get(ctx)
			if err != nil {
				done(cluster.RenewResponse{}, err)
				return
			}
			s.sendOn(c, req, timeout, done)
		}()
	}
}

func (s *leaseStream) sendOn(c *streamConn, req cluster.RenewRequest, timeout time.Duration, done func(cluster.RenewResponse, error)) {
	if err := c.send(req, timeout, done); err != nil {
		// A dead peer or a stuck connection: the next renewal dials again.
		s.drop(c, err)
		done(cluster.RenewResponse{}, fmt.Errorf("lease renewal stream to %s: %w", s.peer, err))
	}
}

// get returns the open stream, or opens one. No lock is held while it
// dials: a renewal that finds a dial under way waits for it or for its
// own deadline, whichever comes first.
func (s *leaseStream) get(ctx context.Context) (*streamConn, error) {
	for {
		s.mu.Lock()
		if time.Now().Before(s.legacyUntil) {
			s.mu.Unlock()
			return nil, errLegacyPeer
		}
		if c := s.conn; c != nil {
			s.mu.Unlock()
			return c, nil
		}
		if d := s.dialing; d != nil {
			s.mu.Unlock()
			select {
			case <-d:
				continue
			case <-ctx.Done():
				return nil, fmt.Errorf("lease renewal stream to %s: %w", s.peer, ctx.Err())
			}
		}
		d := make(chan struct{})
		s.dialing = d
		s.mu.Unlock()
		c, err := s.open(ctx)
		s.mu.Lock()
		s.dialing = nil
		switch {
		case err == nil:
			s.conn = c
		case errors.Is(err, errLegacyPeer):
			s.legacyUntil = time.Now().Add(legacyRetry)
			s.a.log.Info("lease renewals with this peer over HTTP: it does not speak the renewal stream (an older version)", "peer", s.peer)
		}
		s.mu.Unlock()
		close(d)
		if err == nil {
			// The stream ends with the agent.
			context.AfterFunc(s.a.ctx, func() { s.drop(c, net.ErrClosed) })
		}
		return c, err
	}
}

// drop closes c and forgets it, if it is still the stream's.
func (s *leaseStream) drop(c *streamConn, err error) {
	s.mu.Lock()
	if s.conn == c {
		s.conn = nil
	}
	s.mu.Unlock()
	c.stop(err)
}

// close ends the stream (the agent stops, or the peer's address changed).
func (s *leaseStream) close() {
	s.mu.Lock()
	c := s.conn
	s.conn = nil
	s.mu.Unlock()
	if c != nil {
		c.stop(net.ErrClosed)
	}
}

// open dials the peer and upgrades the connection to a renewal stream.
func (s *leaseStream) open(ctx context.Context) (*streamConn, error) {
	a := s.a
	var raw net.Conn
	var err error
	if a.net != nil {
		raw, err = a.net.DialAPI(ctx, a.cfg.Node, s.addr)
	} else {
		var d net.Dialer
		raw, err = d.DialContext(ctx, "tcp", s.addr)
	}
	if err != nil {
		return nil, fmt.Errorf("lease renewal stream to %s: %w", s.peer, err)
	}
	cfg := a.peerTLS(s.peer).Clone()
	if cfg.ServerName == "" {
		cfg.ServerName, _, _ = net.SplitHostPort(s.addr)
	}
	tc := tls.Client(raw, cfg)
	fail := func(err error) (*streamConn, error) {
		_ = tc.Close()
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = tc.SetDeadline(dl)
	}
	if err := tc.HandshakeContext(ctx); err != nil {
		return fail(fmt.Errorf("lease renewal stream to %s: %w", s.peer, err))
	}
	u := &url.URL{Scheme: "https", Host: s.addr, Path: "/v1/internal/lease/stream", RawQuery: "node=" + url.QueryEscape(a.cfg.Node)}
	hreq, _ := http.NewRequest(http.MethodPost, u.String(), nil)
	hreq.Header.Set("Authorization", "Bearer "+a.internalToken)
	hreq.Header.Set("Connection", "Upgrade")
	hreq.Header.Set("Upgrade", cluster.LeaseProto)
	if err := hreq.Write(tc); err != nil {
		return fail(fmt.Errorf("lease renewal stream to %s: %w", s.peer, err))
	}
	br := bufio.NewReaderSize(tc, 512)
	resp, err := http.ReadResponse(br, hreq)
	if err != nil {
		return fail(fmt.Errorf("lease renewal stream to %s: %w", s.peer, err))
	}
	_ = resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusSwitchingProtocols && strings.EqualFold(resp.Header.Get("Upgrade"), cluster.LeaseProto):
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusMethodNotAllowed:
		return fail(errLegacyPeer)
	default:
		return fail(fmt.Errorf("lease renewal stream to %s: upgrade answered %s", s.peer, resp.Status))
	}
	_ = tc.SetDeadline(time.Time{})
	c := &streamConn{Conn: tc, raw: raw, pending: map[uint32]pendingRenew{}, lastRead: time.Now(), wmu: make(chan struct{}, 1)}
	go c.read(br, s)
	return c, nil
}

// errStreamStuck: renewals went unanswered past their timeout and nothing
// at all came back since.
var errStreamStuck = errors.New("no answer on the stream since the renewals that timed out")

// send writes a renewal frame; its answer goes to done. Renewals left
// unanswered past their timeout are failed first (done with an error);
// when nothing at all came back since the oldest of them, the stream is
// stuck and send fails without writing. When send returns an error, done
// was not called and is not registered.
func (c *streamConn) send(req cluster.RenewRequest, timeout time.Duration, done func(cluster.RenewResponse, error)) error {
	now := time.Now()
	var expired []pendingRenew
	var oldest time.Time
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return c.err
	}
	for id, p := range c.pending {
		if now.Sub(p.sent) >= p.timeout {
			expired = append(expired, p)
			delete(c.pending, id)
			if oldest.IsZero() || p.sent.Before(oldest) {
				oldest = p.sent
			}
		}
	}
	stuck := len(expired) > 0 && c.lastRead.Before(oldest)
	var id uint32
	if !stuck {
		c.nextID++
		id = c.nextID
		c.pending[id] = pendingRenew{done: done, sent: now, timeout: timeout}
	}
	c.mu.Unlock()
	for _, p := range expired {
		p.done(cluster.RenewResponse{}, fmt.Errorf("no answer within %v", p.timeout))
	}
	if stuck {
		return errStreamStuck
	}
	c.wmu <- struct{}{}
	defer func() { <-c.wmu }()
	var err error
	c.buf, err = cluster.AppendRenewFrame(c.buf[:0], id, req)
	if err == nil {
		_ = c.SetWriteDeadline(now.Add(timeout))
		_, err = c.Write(c.buf)
	}
	if err != nil && c.forget(id) {
		return err
	}
	return nil // a write error found the renewal failed already (stop)
}

// read hands answers to their waiters until the connection fails.
func (c *streamConn) read(br *bufio.Reader, s *leaseStream) {
	var buf []byte
	for {
		kind, p, next, err := cluster.ReadLeaseFrame(br, buf)
		buf = next
		if err == nil && kind != cluster.FrameAnswer {
			err = fmt.Errorf("%w: kind %d from the voter", cluster.ErrLeaseFrame, kind)
		}
		var id uint32
		var r cluster.RenewResponse
		if err == nil {
			id, r, err = cluster.DecodeAnswerFrame(p)
		}
		if err != nil {
			s.drop(c, err)
			return
		}
		c.mu.Lock()
		c.lastRead = time.Now()
		pr, ok := c.pending[id]
		delete(c.pending, id)
		c.mu.Unlock()
		if ok {
			pr.done(r, nil)
		}
	}
}

// stop closes the connection and fails the renewals waiting on it.
func (c *streamConn) stop(err error) {
	var failed []pendingRenew
	c.mu.Lock()
	if c.err == nil {
		c.err = err
		for id, p := range c.pending {
			failed = append(failed, p)
			delete(c.pending, id)
		}
	}
	c.mu.Unlock()
	_ = c.raw.Close()
	for _, p := range failed {
		p.done(cluster.RenewResponse{}, err)
	}
}

// forget removes a renewal that is still pending, and reports whether it was.
func (c *streamConn) forget(id uint32) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.pending[id]
	delete(c.pending, id)
	return ok
}

// handleLeaseStream is the voter's side: it takes the connection over and
// answers renewals for the node the upgrade named until it closes.
func (a *Agent) handleLeaseStream(w http.ResponseWriter, r *http.Request) {
	node := r.URL.Query().Get("node")
	if node == "" {
		writeErr(w, http.StatusBadRequest, errors.New("lease renewal stream: no node named"))
		return
	}
	if !a.actsFor(w, r, "lease renewal stream", node) {
		return
	}
	if !strings.EqualFold(r.Header.Get("Upgrade"), cluster.LeaseProto) {
		writeErr(w, http.StatusBadRequest, fmt.Errorf("lease renewal stream: upgrade to %s expected", cluster.LeaseProto))
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		writeErr(w, http.StatusInternalServerError, fmt.Errorf("lease renewal stream: %w", err))
		return
	}
	defer conn.Close()
	stop := context.AfterFunc(a.ctx, func() { _ = conn.Close() })
	defer stop()
	_ = conn.SetDeadline(time.Time{})
	_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + cluster.LeaseProto + "\r\n\r\n")
	if err := brw.Flush(); err != nil {
		return
	}
	var in, out []byte
	for {
		_ = conn.SetReadDeadline(time.Now().Add(streamIdle))
		var kind byte
		var p []byte
		kind, p, in, err = cluster.ReadLeaseFrame(brw.Reader, in)
		if err != nil {
			return
		}
		if kind != cluster.FrameRenew {
			a.log.Warn("lease renewal stream closed: unexpected frame", "peer", node, "kind", kind, "from", r.RemoteAddr)
			return
		}
		id, req, err := cluster.DecodeRenewFrame(p, node)
		if err != nil {
			a.log.Warn("lease renewal stream closed: "+err.Error(), "peer", node, "from", r.RemoteAddr)
			return
		}
		out, err = cluster.AppendAnswerFrame(out[:0], id, a.c.Leases.HandleRenew(req))
		if err != nil {
			return
		}
		_ = conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Write(out); err != nil {
			return
		}
	}
}
