package agent

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/config"
)

// A request body has bodyTimeout to arrive; once read, a handler that
// runs longer than that is not cut (its context stays alive), and a body
// trickled past the timeout fails the read.
func TestBodyDeadline(t *testing.T) {
	const timeout = 300 * time.Millisecond
	type result struct {
		body   string
		err    error
		ctxErr error
	}
	got := make(chan result, 1)
	srv := httptest.NewServer(bodyDeadline(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err == nil {
			select { // a long handler: a switchover wait
			case <-r.Context().Done():
			case <-time.After(3 * timeout):
			}
		}
		got <- result{string(b), err, r.Context().Err()}
		_, _ = io.WriteString(w, "done")
	}), timeout))
	defer srv.Close()

	resp, err := http.Post(srv.URL, "application/json", strings.NewReader(`{"to":"node2"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if r := <-got; r.err != nil || r.ctxErr != nil || r.body != `{"to":"node2"}` {
		t.Fatalf("long handler after a prompt body: %+v, want the body and a live context", r)
	}

	// A body sent a byte at a time, past the timeout.
	c, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		for ctx.Err() == nil {
			if _, err := c.Write([]byte("x")); err != nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	select {
	case r := <-got:
		if r.err == nil {
			t.Fatalf("a trickled body was read whole: %q", r.body)
		}
		t.Logf("trickled body cut: %v after %d bytes", r.err, len(r.body))
	case <-time.After(10 * timeout):
		t.Fatal("a trickled body was not cut at the body timeout")
	}
}

// api.max_connections sets the cap of the API listeners, and with it the
// share one address other than a member's may hold (a quarter).
func TestListenerCapFromConfig(t *testing.T) {
	for _, tc := range []struct {
		max     int
		refused uint64 // of 5 connections from one non-member address
	}{{16, 1}, {256, 0}} {
		a := &Agent{cfg: &config.Agent{API: config.API{MaxConnections: tc.max}}, log: slog.New(slog.DiscardHandler)}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		bl := a.boundedListener("api", ln)
		accepted := make(chan net.Conn, 8)
		go func() {
			for {
				c, err := bl.Accept()
				if err != nil {
					return
				}
				accepted <- c
			}
		}()
		var conns []net.Conn
		for range 5 {
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, c)
		}
		want := 5 - int(tc.refused)
		for range want {
			c := <-accepted
			defer c.Close()
		}
		if tc.refused > 0 {
			// The one over the share is closed at once.
			_ = conns[4].SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := conns[4].Read(make([]byte, 1)); err != io.EOF {
				t.Errorf("max %d: 5th connection from one address: read %v, want EOF (closed)", tc.max, err)
			}
		}
		if st := a.listeners.stats()["api"]; st.Refused != tc.refused {
			t.Errorf("max %d: refused %d, want %d", tc.max, st.Refused, tc.refused)
		}
		for _, c := range conns {
			c.Close()
		}
		bl.Close()
	}
}
