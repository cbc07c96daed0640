package agent

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/api"
	"github.com/lifeboat-ha/lifeboat/internal/auth"
	"github.com/lifeboat-ha/lifeboat/internal/config"
	"github.com/lifeboat-ha/lifeboat/internal/tlsid"
)

// soloAgent starts a one-node cluster whose API accepts the tokens of
// tokenFile, and returns it with its TCP API address and cluster key.
func soloAgent(t testing.TB, tokens string) (*Agent, string, []byte, string) {
	t.Helper()
	root := shortTempDir(t)
	ports := testFreePorts(t, 3)
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(root, "tokens")
	if err := os.WriteFile(tokenFile, []byte(tokens), 0o600); err != nil {
		t.Fatal(err)
	}
	apiAddr := fmt.Sprintf("127.0.0.1:%d", ports[2])
	yaml := fmt.Sprintf("node: solo\ndata_dir: %s\napi:\n  socket: %s\n  token_file: %s\ncluster:\n  key: %s\n  nodes:\n    - {name: solo, raft: 127.0.0.1:%d, gossip: 127.0.0.1:%d, api: %s}\n",
		filepath.Join(root, "data"), filepath.Join(root, "s.sock"), tokenFile, base64.StdEncoding.EncodeToString(key), ports[0], ports[1], apiAddr)
	cfg, err := config.ParseAgent(filepath.Join(root, "solo.yaml"), []byte(yaml))
	if err != nil {
		t.Fatalf("config: %v\n%s", err, yaml)
	}
	logs := &syncBuffer{}
	a, err := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(logs, nil)), Level: new(slog.LevelVar), Kits: testKits})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		a.Shutdown(ctx)
		if t.Failed() {
			t.Logf("--- agent log ---\n%s", logs.tail(60))
		}
	})
	return a, apiAddr, key, tokenFile
}

// Every route of the API with each role and without a token: a token
// whose role is too weak is refused (403), a missing or wrong one too
// (401), a strong enough one reaches the handler (whatever it answers
// then: 200, or 400 for the empty bodies sent here). The table of routes
// is the one the agent enforces (auth.Routes); the test also checks that
// it names every route the agent serves.
func TestRouteRoles(t *testing.T) {
	secrets := map[auth.Role]string{auth.Read: "read-secret-0123456789", auth.Operate: "operate-secret-0123456789", auth.Admin: "admin-secret-0123456789"}
	file := fmt.Sprintf("# name role secret\ngrafana read %s\noncall operate %s\ndeploy admin %s\n", secrets[auth.Read], secrets[auth.Operate], secrets[auth.Admin])
	a, addr, key, _ := soloAgent(t, file)
	id, err := tlsid.Derive(key)
	if err != nil {
		t.Fatal(err)
	}
	client := func(tok string) *api.Client {
		c, err := api.NewClient(addr, tok, 10*time.Second, id.ClientConfig())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	param := regexp.MustCompile(`\{[a-z]+\}`)
	codeOf := func(err error) int {
		var se *api.StatusError
		if errors.As(err, &se) {
			return se.Code
		}
		if err != nil {
			return -1
		}
		return http.StatusOK
	}
	for pattern, need := range auth.Routes {
		method, path, _ := strings.Cut(pattern, " ")
		path = param.ReplaceAllString(path, "nosuch")
		switch pattern {
		case "GET /v1/events":
			path += "?local=1"
		case "GET /debug/pprof/profile":
			path += "?seconds=1"
		}
		for _, role := range []auth.Role{auth.None, auth.Read, auth.Operate, auth.Admin} {
			tok := secrets[role]
			if role == auth.None {
				tok = "wrong-secret-0123456789"
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			var body any
			if method == http.MethodPost {
				body = map[string]any{}
			}
			code := codeOf(client(tok).Do(ctx, method, path, body, nil))
			cancel()
			switch {
			case role == auth.None && code != http.StatusUnauthorized:
				t.Errorf("%s with a wrong token: %d, want 401", pattern, code)
			case role != auth.None && role < need && code != http.StatusForbidden:
				t.Errorf("%s with role %s (needs %s): %d, want 403", pattern, role, need, code)
			case role >= need && (code == http.StatusUnauthorized || code == http.StatusForbidden || code == -1):
				t.Errorf("%s with role %s (needs %s): refused (%d)", pattern, role, need, code)
			}
		}
	}
	// No token at all, and the derived (demo) token when a token file
	// is set: refused.
	ctx := context.Background()
	if code := codeOf(client("").Do(ctx, "GET", "/v1/status", nil, nil)); code != http.StatusUnauthorized {
		t.Errorf("status without a token: %d", code)
	}
	if code := codeOf(client(DeriveToken(key, "lifeboat-api")).Do(ctx, "GET", "/v1/status", nil, nil)); code != http.StatusUnauthorized {
		t.Errorf("status with the derived token while a token file is set: %d", code)
	}

	// The table matches the routes the agent serves: each entry is a
	// registered pattern, and every registered public pattern is in it.
	mux := a.routes()
	for pattern := range auth.Routes {
		method, path, _ := strings.Cut(pattern, " ")
		r, _ := http.NewRequest(method, param.ReplaceAllString(path, "x"), nil)
		if _, got := mux.Handler(r); got != pattern {
			t.Errorf("auth.Routes has %q, the agent serves %q there", pattern, got)
		}
	}
	registered := regexp.MustCompile(`mux\.Handle(?:Func)?\("([A-Z]+ /[^"]*)"`)
	files, _ := filepath.Glob("*.go")
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") || f == "http_health.go" {
			continue
		}
		b, _ := os.ReadFile(f)
		for _, m := range registered.FindAllStringSubmatch(string(b), -1) {
			if strings.Contains(m[1], "/v1/internal/") {
				continue
			}
			if _, ok := auth.Routes[m[1]]; !ok {
				t.Errorf("%s: route %q has no role in auth.Routes (it would need admin)", f, m[1])
			}
		}
	}
}

// Tokens rotate without a restart: a reload takes a changed file; a
// file that does not parse is refused and the tokens in force stay; the
// history names the token that asked.
func TestTokenReload(t *testing.T) {
	a, addr, key, file := soloAgent(t, "ops admin first-secret-0123456789\n")
	id, _ := tlsid.Derive(key)
	do := func(tok, method, path string, out any) error {
		c, _ := api.NewClient(addr, tok, 10*time.Second, id.ClientConfig())
		return c.Do(context.Background(), method, path, nil, out)
	}
	if err := do("first-secret-0123456789", "GET", "/v1/version", nil); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte("ops admin second-secret-0123456789\nviewer read viewer-secret-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var tl api.TokenList
	if err := do("first-secret-0123456789", "POST", "/v1/tokens/reload", &tl); err != nil {
		t.Fatal(err)
	}
	if len(tl.Tokens) != 2 || tl.Tokens[1].Name != "viewer" || tl.Tokens[1].Role != "read" {
		t.Fatalf("after reload: %+v", tl)
	}
	if err := do("first-secret-0123456789", "GET", "/v1/version", nil); err == nil {
		t.Fatal("the rotated-out secret still works")
	}
	if err := do("second-secret-0123456789", "GET", "/v1/version", nil); err != nil {
		t.Fatal(err)
	}
	// A broken file: refused with the line, the old tokens stay.
	if err := os.WriteFile(file, []byte("ops admin short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := a.ReloadTokens()
	if err == nil || !strings.Contains(err.Error(), file+":1") || !strings.Contains(err.Error(), "too short") {
		t.Fatalf("reload of a broken file: %v", err)
	}
	if err := do("second-secret-0123456789", "GET", "/v1/version", nil); err != nil {
		t.Fatalf("a failed reload dropped the tokens in force: %v", err)
	}
	// A file others may read: refused, with the chmod to run.
	if err := os.WriteFile(file, []byte("ops admin third-secret-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(file, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := a.ReloadTokens(); err == nil || !strings.Contains(err.Error(), "chmod 600 "+file) {
		t.Fatalf("reload of a world-readable file: %v", err)
	}
	// who asked: the token's name and role.
	if err := do("second-secret-0123456789", "POST", "/v1/maintenance", nil); err == nil {
		t.Fatal("maintenance without a scope accepted")
	}
	r, _ := http.NewRequest("POST", "/", nil)
	r.RemoteAddr = "10.1.2.3:4567"
	r = r.WithContext(context.WithValue(context.WithValue(r.Context(), authKey, accessAPI), tokenKey, auth.Token{Name: "ops", Role: auth.Admin}))
	if got := a.who(r); !strings.HasPrefix(got, "token ops (admin) from 10.1.2.3:4567") {
		t.Errorf("who = %q", got)
	}
}
