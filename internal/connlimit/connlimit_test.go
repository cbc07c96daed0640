package connlimit

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/tlsid"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// waitFor polls cond (the listener's counters change in its own
// goroutines, with nothing to wait on from outside).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func listen(t *testing.T, cfg Config) *Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := Wrap(ln, cfg)
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func dial(t *testing.T, addr net.Addr) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// closedByServer waits until the server end of c is closed: a read
// returns EOF or a reset, not a timeout.
func closedByServer(t *testing.T, c net.Conn, within time.Duration) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(within))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	if err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection still open after %s (read: %v)", within, err)
	}
}

// Beyond Max, a new connection is closed at once and counted; closing an
// admitted one makes room again.
func TestCapClosesConnectionsBeyondMax(t *testing.T) {
	logs := &lockedBuffer{}
	l := listen(t, Config{Name: "test", Max: 2, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	accepted := make(chan net.Conn, 10)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	dial(t, l.Addr())
	dial(t, l.Addr())
	first, second := <-accepted, <-accepted
	defer second.Close()
	third := dial(t, l.Addr())
	closedByServer(t, third, 5*time.Second)
	if st := l.Stats(); st.Refused != 1 || st.Open != 2 {
		t.Fatalf("stats %+v, want 1 refused and 2 open", st)
	}
	waitFor(t, "the refusal logged", func() bool { return strings.Contains(logs.String(), "refused=1") })
	if !strings.Contains(logs.String(), "max=2") {
		t.Errorf("no log line counting the refusal:\n%s", logs.String())
	}
	_ = first.Close()
	_ = first.Close() // counted once
	fourth := dial(t, l.Addr())
	select {
	case c := <-accepted:
		defer c.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("no connection accepted after one closed")
	}
	_ = fourth
	if st := l.Stats(); st.Open != 2 {
		t.Fatalf("stats %+v, want 2 open", st)
	}
}

// A client that opens TCP and never starts its handshake is closed at the
// handshake deadline, and does not hold up a real client meanwhile.
func TestTLSHandshakeDeadline(t *testing.T) {
	id, err := tlsid.Derive([]byte("connlimit test key"))
	if err != nil {
		t.Fatal(err)
	}
	l := listen(t, Config{Name: "test", Max: 8, TLS: id.ServerConfig(true), HandshakeTimeout: 300 * time.Millisecond})
	silent := dial(t, l.Addr())

	type result struct {
		c   net.Conn
		err error
	}
	got := make(chan result, 1)
	go func() {
		c, err := l.Accept()
		got <- result{c, err}
	}()
	client, err := tls.Dial("tcp", l.Addr().String(), id.ClientConfig())
	if err != nil {
		t.Fatalf("real client: %v", err)
	}
	defer client.Close()
	r := <-got
	if r.err != nil {
		t.Fatalf("accept: %v", r.err)
	}
	defer r.c.Close()
	if tc, ok := r.c.(*tls.Conn); !ok || !tc.ConnectionState().HandshakeComplete {
		t.Fatalf("accepted %T, want a handshaken *tls.Conn", r.c)
	}
	// Mutual TLS is kept: the server saw the client's certificate.
	if n := len(r.c.(*tls.Conn).ConnectionState().PeerCertificates); n == 0 {
		t.Error("no client certificate on the accepted connection")
	}
	start := time.Now()
	closedByServer(t, silent, 5*time.Second)
	t.Logf("silent client closed after %s", time.Since(start).Round(time.Millisecond))
	waitFor(t, "1 failed handshake and 1 open", func() bool {
		st := l.Stats()
		return st.HandshakeFailed == 1 && st.Open == 1
	})
}

// A client without the cluster certificate is refused by the handshake,
// as before.
func TestTLSRequiresClientCertificate(t *testing.T) {
	id, err := tlsid.Derive([]byte("connlimit test key"))
	if err != nil {
		t.Fatal(err)
	}
	l := listen(t, Config{Name: "test", TLS: id.ServerConfig(true)})
	go func() {
		if c, err := l.Accept(); err == nil {
			c.Close()
		}
	}()
	cfg := id.ClientConfig()
	cfg.Certificates = nil
	c, err := tls.Dial("tcp", l.Addr().String(), cfg)
	if err == nil {
		// TLS 1.3: the server's refusal arrives with the first read.
		_, err = io.ReadAll(c)
		c.Close()
	}
	if err == nil {
		t.Fatal("a client without a certificate was let in")
	}
}

// Close ends the accept loop and the handshakes in progress.
func TestCloseEndsHandshakes(t *testing.T) {
	id, err := tlsid.Derive([]byte("connlimit test key"))
	if err != nil {
		t.Fatal(err)
	}
	l := listen(t, Config{Name: "test", TLS: id.ServerConfig(true), HandshakeTimeout: time.Hour})
	silent := dial(t, l.Addr())
	waitFor(t, "the silent client counted", func() bool { return l.Stats().Open == 1 })
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	closedByServer(t, silent, 5*time.Second)
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v, want net.ErrClosed", err)
	}
}
