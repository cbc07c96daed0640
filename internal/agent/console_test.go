package agent

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/api"
)

// browser is a test client that behaves as a browser does with the
// console: a cookie jar, and Origin on requests that change something.
type browser struct {
	t      *testing.T
	base   string
	client *http.Client
	csrf   string
	origin string // "" sends none
}

func newBrowser(t *testing.T, addr string) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, base: "https://" + addr, origin: "https://" + addr, client: &http.Client{
		Jar: jar, Timeout: 10 * time.Second,
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, // the derived certificate: not what is tested here
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

func (b *browser) do(method, path string, body any, withCSRF bool) (*http.Response, string) {
	b.t.Helper()
	var rd io.Reader
	if body != nil {
		j, _ := json.Marshal(body)
		rd = bytes.NewReader(j)
	}
	req, _ := http.NewRequest(method, b.base+path, rd)
	if method != "GET" && b.origin != "" {
		req.Header.Set("Origin", b.origin)
	}
	if withCSRF {
		req.Header.Set("X-CSRF-Token", b.csrf)
	}
	resp, err := b.client.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp, string(out)
}

func (b *browser) login(token string) int {
	b.t.Helper()
	resp, body := b.do("POST", "/ui/login", api.ConsoleLogin{Token: token}, false)
	if resp.StatusCode == 200 {
		var s api.ConsoleSession
		_ = json.Unmarshal([]byte(body), &s)
		b.csrf = s.CSRF
	}
	return resp.StatusCode
}

// The console's credentials: sign-in with a token, the session cookie's
// attributes, the role kept from the token, the CSRF token and origin
// required on every change, sessions ended by a token reload and by
// sign-out, and one-time links.
func TestConsoleSessions(t *testing.T) {
	a, addr, _, file := soloAgent(t, "ops admin admin-secret-0123456789\nduty operate operate-secret-0123456789\nview read read-secret-0123456789\n")
	waitUntil(t, 20*time.Second, "a leader", func() (bool, string) { st := a.status(); return st.Leader != "", st.Leader })

	// The page: no credential needed, strict headers.
	b := newBrowser(t, addr)
	resp, body := b.do("GET", "/ui/", nil, false)
	if resp.StatusCode != 200 || !strings.Contains(body, `<script src="/ui/app.js"`) || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "script-src 'self'") ||
		resp.Header.Get("X-Frame-Options") != "DENY" {
		t.Fatalf("GET /ui/: %d %v\n%.200s", resp.StatusCode, resp.Header, body)
	}
	if resp, _ := b.do("GET", "/ui/app.js", nil, false); resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Type"), "javascript") {
		t.Fatalf("GET /ui/app.js: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	// Not signed in: the API and the overview refuse.
	if resp, _ := b.do("GET", "/ui/overview", nil, false); resp.StatusCode != 401 {
		t.Fatalf("overview before sign-in: %d", resp.StatusCode)
	}
	if code := b.login("wrong-secret-0123456789"); code != 401 {
		t.Fatalf("sign-in with an unknown token: %d", code)
	}

	// A read session: sees, cannot act.
	if code := b.login("read-secret-0123456789"); code != 200 {
		t.Fatalf("sign-in: %d", code)
	}
	u, _ := url.Parse(b.base)
	cookies := b.client.Jar.Cookies(u)
	if len(cookies) != 1 || cookies[0].Name != sessionCookie {
		t.Fatalf("cookies: %v", cookies)
	}
	resp, _ = b.do("POST", "/ui/login", api.ConsoleLogin{Token: "read-secret-0123456789"}, false)
	raw := strings.Join(resp.Header.Values("Set-Cookie"), "\n")
	for _, attr := range []string{"HttpOnly", "Secure", "SameSite=Strict", "Path=/"} {
		if !strings.Contains(raw, attr) {
			t.Errorf("session cookie lacks %s: %s", attr, raw)
		}
	}
	var s api.ConsoleSession
	_ = json.Unmarshal([]byte(mustBody(b.do("GET", "/ui/session", nil, false))), &s)
	b.csrf = s.CSRF
	if s.Name != "view" || s.Role != "read" || len(s.CSRF) != 64 || s.Node != "solo" {
		t.Fatalf("session: %+v", s)
	}
	var ov api.ConsoleOverview
	if err := json.Unmarshal([]byte(mustBody(b.do("GET", "/ui/overview", nil, false))), &ov); err != nil || !strings.HasPrefix(ov.Summary, "READY") || ov.Status.Node != "solo" {
		t.Fatalf("overview: %v %+v", err, ov)
	}
	if resp, _ := b.do("GET", "/v1/status", nil, false); resp.StatusCode != 200 {
		t.Fatalf("status with a read session: %d", resp.StatusCode)
	}
	if resp, body := b.do("POST", "/v1/maintenance", api.MaintenanceRequest{Scope: "cluster", On: true}, true); resp.StatusCode != 403 || !strings.Contains(body, "role read") {
		t.Fatalf("maintenance with a read session: %d %s", resp.StatusCode, body)
	}

	// An operate session: acts only with the CSRF token, from its origin.
	if code := b.login("operate-secret-0123456789"); code != 200 {
		t.Fatal(code)
	}
	on := api.MaintenanceRequest{Scope: "cluster", On: true, Reason: "console test"}
	if resp, body := b.do("POST", "/v1/maintenance", on, false); resp.StatusCode != 403 || !strings.Contains(body, "X-CSRF-Token") {
		t.Fatalf("a change without the CSRF token: %d %s", resp.StatusCode, body)
	}
	b.origin = "https://evil.example"
	if resp, _ := b.do("POST", "/v1/maintenance", on, true); resp.StatusCode != 403 {
		t.Fatalf("a change from another origin: %d", resp.StatusCode)
	}
	b.origin = b.base
	if resp, body := b.do("POST", "/v1/maintenance", on, true); resp.StatusCode != 200 {
		t.Fatalf("maintenance with an operate session: %d %s", resp.StatusCode, body)
	}
	if m := a.status().Maintenance; m == nil || !strings.Contains(m.By, "console session of token duty (operate)") {
		t.Fatalf("maintenance not recorded with the console's token: %+v", m)
	}

	// A reload that drops the token ends its sessions.
	if err := os.WriteFile(file, []byte("ops admin admin-secret-0123456789\nview read read-secret-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := a.ReloadTokens(); err != nil {
		t.Fatal(err)
	}
	if resp, body := b.do("GET", "/v1/status", nil, false); resp.StatusCode != 401 || !strings.Contains(body, "no longer in force") {
		t.Fatalf("a session of a removed token: %d %s", resp.StatusCode, body)
	}

	// Sign-out ends the session.
	b.login("admin-secret-0123456789")
	if resp, _ := b.do("POST", "/ui/logout", nil, true); resp.StatusCode != 200 {
		t.Fatalf("sign-out: %d", resp.StatusCode)
	}
	if resp, body := b.do("GET", "/ui/session", nil, false); resp.StatusCode != 200 || !strings.Contains(body, `"name":""`) {
		t.Fatalf("session after sign-out: %d %s", resp.StatusCode, body)
	}

	// A one-time link, made with an admin token, signs in once.
	var link api.ConsoleLink
	req, _ := http.NewRequest("POST", b.base+"/v1/console/link", nil)
	req.Header.Set("Authorization", "Bearer admin-secret-0123456789")
	lr, err := b.client.Do(req)
	if err != nil || lr.StatusCode != 200 {
		t.Fatalf("console link: %v %v", err, lr)
	}
	_ = json.NewDecoder(lr.Body).Decode(&link)
	lr.Body.Close()
	fresh := newBrowser(t, addr)
	if resp, _ := fresh.do("GET", link.Path, nil, false); resp.StatusCode != 303 || resp.Header.Get("Location") != "/ui/" {
		t.Fatalf("one-time link: %d %v", resp.StatusCode, resp.Header)
	}
	if resp, body := fresh.do("GET", "/ui/session", nil, false); resp.StatusCode != 200 || !strings.Contains(body, `"role":"admin"`) {
		t.Fatalf("session from the link: %d %s", resp.StatusCode, body)
	}
	if resp, _ := newBrowser(t, addr).do("GET", link.Path, nil, false); resp.StatusCode != 401 {
		t.Fatalf("a one-time link used twice: %d", resp.StatusCode)
	}
}

func mustBody(_ *http.Response, body string) string { return body }
