package agent

import (
	"bytes"
	"context"
	"net/http/httptest"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/auth"
)

// fuzzRoutes is every route that reads a request body, in a fixed order.
func fuzzRoutes() []string {
	var out []string
	for p := range auth.Routes {
		if strings.HasPrefix(p, "POST ") || strings.HasPrefix(p, "DELETE ") {
			out = append(out, p)
		}
	}
	out = append(out, "POST /v1/internal/apply", "POST /v1/internal/lease/renew", "POST /v1/internal/lease/attest", "POST /v1/internal/members")
	sort.Strings(out)
	return out
}

// FuzzAPIBodies sends arbitrary bodies to every route that reads one, as
// the local root socket (and as a cluster member for the internal
// routes) would: the agent must answer (any status) and never panic or
// hang. go test runs the seeds; go test -fuzz FuzzAPIBodies explores.
func FuzzAPIBodies(f *testing.F) {
	routes := fuzzRoutes()
	seeds := []string{``, `{}`, `null`, `[]`, `"x"`, `{"hierarchies":[{"name":"h","nodes":["solo"],"resources":[{"name":"r","type":"app","params":{"restore":"true"}}]}]}`,
		`{"scope":"hierarchy","name":"h","on":true}`, `{"name":"n4","raft":"127.0.0.1:1","gossip":"127.0.0.1:2","api":"127.0.0.1:3"}`,
		`{"level":"debug"}`, `{"node":"solo","gen":18446744073709551615,"voters":["a"]}`, `{"wait_ms":-5,"min_age_ms":9223372036854775807}`,
		`{"op":"remove","member":{"name":"solo"}}`, `{"kind":"put-hierarchies","v":1,"body":{}}`, "\x00\xff{", strings.Repeat(`{"a":`, 10000)}
	for i := range routes {
		for _, s := range seeds {
			f.Add(uint8(i), []byte(s))
		}
	}
	a, _, _, _ := soloAgent(f, "fuzz admin fuzz-secret-0123456789\n")
	mux := a.routes()
	param := regexp.MustCompile(`\{[a-z]+\}`)
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		pattern := routes[int(route)%len(routes)]
		method, path, _ := strings.Cut(pattern, " ")
		path = param.ReplaceAllString(path, "h")
		r := httptest.NewRequest(method, path, bytes.NewReader(body))
		level := accessLocal
		if strings.Contains(path, "/internal/") {
			level = accessInternal
		}
		ctx, cancel := context.WithTimeout(context.WithValue(r.Context(), authKey, level), 5e9)
		defer cancel()
		w := httptest.NewRecorder()
		done := make(chan struct{})
		go func() {
			defer close(done)
			mux.ServeHTTP(w, r.WithContext(ctx))
		}()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			t.Fatalf("%s with body %q: no answer within 20s (its context ended after 5s)\n%s", pattern, body, buf[:n])
		}
		if w.Code == 0 {
			t.Fatalf("%s: no answer", pattern)
		}
	})
}
