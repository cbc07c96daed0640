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
	pending  map[uint32]chan cluster.RenewResponse
	lastRead time.Time
	err      error // set once the connection failed
}

var errLegacyPeer = errors.New("peer renews over HTTP only")

// renew sends one renewal on the stream, opening it if needed. It returns
// errLegacyPeer when the peer does not speak it.
func (s *leaseStream) renew(ctx context.Context, req cluster.RenewRequest) (cluster.RenewResponse, error) {
	c, err := s.get(ctx)
	if err != nil {
		return cluster.RenewResponse{}, err
	}
	ch := make(chan cluster.RenewResponse, 1)
	sent := time.Now()
	id, err := c.send(ctx, req, ch)
	if err != nil {
		s.drop(c, err)
		return cluster.RenewResponse{}, fmt.Errorf("lease renewal stream to %s: %w", s.peer, err)
	}
	select {
	case r, ok := <-ch:
		if !ok { // closed by stop: the connection failed
			return cluster.RenewResponse{}, fmt.Errorf("lease renewal stream to %s: %w", s.peer, c.failure())
		}
		return r, nil
	case <-ctx.Done():
		c.forget(id)
		if !c.readSince(sent) {
			// Nothing came back at all: a dead peer or a stuck
			// connection. The next renewal dials again.
			s.drop(c, ctx.Err())
		}
		return cluster.RenewResponse{}, fmt.Errorf("lease renewal stream to %s: %w", s.peer, ctx.Err())
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
	c := &streamConn{Conn: tc, raw: raw, pending: map[uint32]chan cluster.RenewResponse{}, lastRead: time.Now(), wmu: make(chan struct{}, 1)}
	go c.read(br, s)
	return c, nil
}

// send writes a renewal frame; its answer goes to ch.
func (c *streamConn) send(ctx context.Context, req cluster.RenewRequest, ch chan cluster.RenewResponse) (uint32, error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return 0, c.err
	}
	c.nextID++
	id := c.nextID
	c.pending[id] = ch
	c.mu.Unlock()
	select {
	case c.wmu <- struct{}{}:
	case <-ctx.Done():
		c.forget(id)
		return 0, ctx.Err()
	}
	defer func() { <-c.wmu }()
	var err error
	c.buf, err = cluster.AppendRenewFrame(c.buf[:0], id, req)
	if err != nil {
		c.forget(id)
		return 0, err
	}
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(5 * time.Second)
	}
	_ = c.SetWriteDeadline(dl)
	_, err = c.Write(c.buf)
	return id, err
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
		ch := c.pending[id]
		delete(c.pending, id)
		c.mu.Unlock()
		if ch != nil {
			ch <- r
		}
	}
}

// stop closes the connection and fails the renewals waiting on it.
func (c *streamConn) stop(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
		for id, ch := range c.pending {
			close(ch)
			delete(c.pending, id)
		}
	}
	c.mu.Unlock()
	_ = c.raw.Close()
}

func (c *streamConn) failure() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *streamConn) forget(id uint32) {
	c.mu.Lock()
	delete(c.pending, id)
	c.mu.Unlock()
}

func (c *streamConn) readSince(t time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.lastRead.Before(t)
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
