package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/api"
	"github.com/lifeboat-ha/lifeboat/internal/demo"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

// The health listener (health_listen) answers 200 for a hierarchy only on
// the node that has it in service, 503 on the others, 404 for an unknown
// hierarchy or any other path, and follows a switchover.
func TestHealthEndpoint(t *testing.T) {
	ports := map[string]string{}
	for _, n := range three {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ports[n] = l.Addr().String()
		l.Close()
	}
	c := startCluster(t, demo.Options{NodeConfig: func(node string) string { return "health_listen: " + ports[node] + "\n" }})
	apply(t, c, flagHierarchy("hc", three, spec.SwitchbackIntelligent, 1, ""))
	waitFor(t, c, "node2", 10*time.Second, "hc online on node1", onlineOn("hc", "node1"))
	hc := &http.Client{Timeout: 2 * time.Second}
	get := func(node, path string) (int, string) {
		t.Helper()
		resp, err := hc.Get("http://" + ports[node] + path)
		if err != nil {
			t.Fatalf("GET %s on %s: %v", path, node, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	expect := func(owner string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			var seen []string
			ok := true
			for _, n := range three {
				code, body := get(n, "/health/hc")
				want := http.StatusServiceUnavailable
				if n == owner {
					want = http.StatusOK
				}
				seen = append(seen, fmt.Sprintf("%s %d %q", n, code, strings.TrimSpace(body)))
				ok = ok && code == want
			}
			if ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("health with hc on %s: %s", owner, strings.Join(seen, "; "))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	expect("node1")
	for _, path := range []string{"/health/nosuch", "/v1/status", "/metrics", "/"} {
		if code, _ := get("node1", path); code != http.StatusNotFound {
			t.Errorf("GET %s on the health listener: %d, want 404", path, code)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Client("node1").Do(ctx, "POST", "/v1/hierarchies/hc/switchover", api.MoveRequest{To: "node3"}, nil); err != nil {
		t.Fatal(err)
	}
	expect("node3")
}
