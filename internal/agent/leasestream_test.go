package agent

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/cluster"
	"github.com/lifeboat-ha/lifeboat/internal/config"
	"github.com/lifeboat-ha/lifeboat/internal/tlsid"
)

// renewer is the renewing side of the stream only: an agent with a name,
// an identity and the internal token, calling peer at addr.
func renewer(ctx context.Context, node string, id tlsid.Member, token, peer, addr string) *rpc {
	a := &Agent{cfg: &config.Agent{Node: node}, internalToken: token, tls: id, ctx: ctx, log: slog.New(slog.DiscardHandler)}
	a.cfg.Cluster.Nodes = []config.Node{{Name: peer, API: addr}}
	return newRPC(a)
}

// The stream speaks for the node its upgrade named, which the caller's
// certificate must be: node2's certificate cannot open one for solo; solo's
// own can, and its renewals on it are granted. Several renewals share one
// connection.
func TestLeaseStreamSpeaksForItsCertificate(t *testing.T) {
	a, addr, internal, ca, logs := identityAgent(t)
	dir := t.TempDir()
	self := issue(t, ca, dir, "solo")
	other := issue(t, ca, dir, "node2")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for a.joinedGen.Load() == 0 {
		select {
		case <-ctx.Done():
			t.Fatal("the node never joined")
		case <-time.After(20 * time.Millisecond):
		}
	}
	req := cluster.RenewRequest{Node: "solo", Gen: a.joinedGen.Load(), Voters: []string{"solo"}}

	impostor := renewer(ctx, "solo", other, internal, "solo", addr)
	if r, err := impostor.Renew(ctx, "solo", req); err == nil || r.Granted || !strings.Contains(err.Error(), "403") {
		t.Errorf("stream for solo with node2's certificate: %+v, %v; want the upgrade refused (403)", r, err)
	}
	if !strings.Contains(logs.tail(1000), "lease renewal stream for node solo refused") {
		t.Errorf("refusal not logged:\n%s", logs.tail(20))
	}

	own := renewer(ctx, "solo", self, internal, "solo", addr)
	for i := range 3 {
		r, err := own.Renew(ctx, "solo", req)
		if err != nil || !r.Granted {
			t.Fatalf("renewal %d on solo's own stream: %+v, %v", i, r, err)
		}
	}
	pc, _ := own.peer("solo")
	pc.stream.mu.Lock()
	c := pc.stream.conn
	pc.stream.mu.Unlock()
	c.mu.Lock()
	shared := c.nextID == 3
	c.mu.Unlock()
	if !shared {
		t.Errorf("three renewals did not share one stream")
	}
	// A renewal for a generation the voter does not know is refused on
	// the stream with the voter's reason.
	r, err := own.Renew(ctx, "solo", cluster.RenewRequest{Node: "solo", Gen: req.Gen + 5, Voters: req.Voters})
	if err != nil || r.Granted || !strings.Contains(r.Reason, "not yet known") {
		t.Errorf("renewal of an unknown generation: %+v, %v", r, err)
	}
}

// A peer from before the stream answers the upgrade with 404: renewals
// with it go over HTTP/JSON, and the stream is not tried again on every
// renewal.
func TestLeaseStreamFallsBackToHTTPForOlderPeers(t *testing.T) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	id, err := tlsid.Derive(key)
	if err != nil {
		t.Fatal(err)
	}
	var upgrades, renewals atomic.Int32
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/internal/lease/renew", func(w http.ResponseWriter, r *http.Request) {
		renewals.Add(1)
		_ = json.NewEncoder(w).Encode(cluster.RenewResponse{Granted: true})
	})
	old := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/internal/lease/stream" {
			upgrades.Add(1)
		}
		mux.ServeHTTP(w, r) // 404 for the stream: the route does not exist
	}))
	old.TLS = id.ServerConfig(true)
	old.StartTLS()
	defer old.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := renewer(ctx, "node1", id, "internal", "old", old.Listener.Addr().String())
	for i := range 3 {
		ans, err := r.Renew(ctx, "old", cluster.RenewRequest{Node: "node1", Gen: 1})
		if err != nil || !ans.Granted {
			t.Fatalf("renewal %d with an older peer: %+v, %v", i, ans, err)
		}
	}
	if renewals.Load() != 3 || upgrades.Load() != 1 {
		t.Errorf("%d renewals over HTTP and %d upgrade attempts, want 3 and 1", renewals.Load(), upgrades.Load())
	}
}

// Renewals left unanswered past their timeout are failed at the next send;
// when nothing at all came back since the oldest of them, the stream is
// stuck: the send fails without writing (the caller dials again), and an
// answer that did come keeps a stream from being called stuck.
func TestLeaseStreamFailsUnansweredRenewals(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		near, far := net.Pipe()
		defer near.Close()
		frames := make(chan uint32, 8)
		go func() { // the voter: reads renewals, answers none
			var buf []byte
			for {
				_, p, next, err := cluster.ReadLeaseFrame(far, buf)
				buf = next
				if err != nil {
					return
				}
				id, _, _ := cluster.DecodeRenewFrame(p, "n1")
				frames <- id
			}
		}()
		c := &streamConn{Conn: near, raw: near, pending: map[uint32]pendingRenew{}, lastRead: time.Now(), wmu: make(chan struct{}, 1)}
		var errs []error
		done := func(_ cluster.RenewResponse, err error) { errs = append(errs, err) }
		req := cluster.RenewRequest{Node: "n1", Gen: 1}
		time.Sleep(time.Millisecond) // the stream opened (and read) a moment before
		if err := c.send(req, 50*time.Millisecond, done); err != nil {
			t.Fatal(err)
		}
		<-frames
		time.Sleep(60 * time.Millisecond)
		if err := c.send(req, 50*time.Millisecond, done); !errors.Is(err, errStreamStuck) {
			t.Fatalf("send after an unanswered renewal and nothing read: %v, want %v", err, errStreamStuck)
		}
		if len(errs) != 1 || errs[0] == nil || !strings.Contains(errs[0].Error(), "no answer within 50ms") {
			t.Fatalf("the unanswered renewal's result: %v", errs)
		}
		// Something was read after the next renewal went out: not stuck.
		if err := c.send(req, 50*time.Millisecond, done); err != nil {
			t.Fatal(err)
		}
		<-frames
		c.mu.Lock()
		c.lastRead = time.Now().Add(time.Millisecond)
		c.mu.Unlock()
		time.Sleep(60 * time.Millisecond)
		if err := c.send(req, 50*time.Millisecond, done); err != nil {
			t.Fatalf("send on a stream that answers: %v", err)
		}
		<-frames
		if len(errs) != 2 {
			t.Fatalf("results %v, want the second unanswered renewal failed too", errs)
		}
		c.stop(errors.New("closed"))
		if len(errs) != 3 || errs[2] == nil || errs[2].Error() != "closed" {
			t.Fatalf("results %v: the renewal pending at stop fails with stop's error", errs)
		}
	})
}
