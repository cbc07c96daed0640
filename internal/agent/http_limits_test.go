package agent

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
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
