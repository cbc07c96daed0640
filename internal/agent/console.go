package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/lifeboat-ha/lifeboat/internal/api"
	"github.com/lifeboat-ha/lifeboat/internal/auth"
	"github.com/lifeboat-ha/lifeboat/internal/console"
)

// The web console (internal/console): its page under /ui/ on the API
// listener, sign-in and sign-out, and the session cookie as a credential
// for the API itself (remote handler, http.go).

// sessionCookie names the console's session cookie. The __Host- prefix
// makes browsers accept it only Secure, for this host, for path /.
const sessionCookie = "__Host-lifeboat-session"

// consoleHeaders are set on every console answer: the page runs only its
// own script, is framed by no one, and is never cached.
func consoleHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
}

// isConsolePath reports whether the path is the console's own (served
// before any credential is checked: the page and sign-in).
func isConsolePath(p string) bool { return p == "/ui" || strings.HasPrefix(p, "/ui/") }

// serveConsole serves the console's own paths.
func (a *Agent) serveConsole(w http.ResponseWriter, r *http.Request) {
	consoleHeaders(w)
	switch {
	case r.URL.Path == "/ui":
		http.Redirect(w, r, "/ui/", http.StatusMovedPermanently)
	case r.URL.Path == "/ui/login" && r.Method == http.MethodPost:
		a.consoleLogin(w, r)
	case r.URL.Path == "/ui/login" && r.Method == http.MethodGet:
		a.consoleOnce(w, r)
	case r.URL.Path == "/ui/logout" && r.Method == http.MethodPost:
		x, ok := a.consoleSession(w, r, true)
		if !ok {
			return
		}
		a.sessions.End(x.ID)
		http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode})
		a.log.Info("console sign-out", "token", x.Name, "from", r.RemoteAddr)
		writeJSON(w, struct{}{})
	case r.URL.Path == "/ui/session" && r.Method == http.MethodGet:
		// Not signed in is an answer, not an error: the page asks first.
		_, x, err := a.sessionToken(r, false)
		if err != nil {
			writeJSON(w, api.ConsoleSession{Node: a.cfg.Node})
			return
		}
		writeJSON(w, api.ConsoleSession{Name: x.Name, Role: x.Role, CSRF: x.CSRF, Node: a.cfg.Node})
	case r.URL.Path == "/ui/overview" && r.Method == http.MethodGet:
		if _, ok := a.consoleSession(w, r, false); !ok {
			return
		}
		st := a.status()
		ready, line := api.FailoverSummary(st)
		writeJSON(w, api.ConsoleOverview{Summary: line, Ready: ready, Status: st})
	case r.Method == http.MethodGet || r.Method == http.MethodHead:
		http.StripPrefix("/ui/", http.FileServerFS(console.Assets())).ServeHTTP(w, r)
	default:
		writeErr(w, http.StatusMethodNotAllowed, fmt.Errorf("%s %s: not a console request", r.Method, r.URL.Path))
	}
}

// consoleLogin starts a session for a valid API token.
func (a *Agent) consoleLogin(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(r) {
		writeErr(w, http.StatusForbidden, errors.New("sign-in from another site's page refused"))
		return
	}
	// JSON from the page's script, or the form itself when the script
	// does not run (a POST: the token never goes into a URL).
	form := strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded")
	var req api.ConsoleLogin
	if form {
		r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
		if err := r.ParseForm(); err != nil {
			writeErr(w, http.StatusBadRequest, fmt.Errorf("bad sign-in form: %w", err))
			return
		}
		req.Token = r.PostForm.Get("token")
	} else if err := json.NewDecoder(io.LimitReader(r.Body, 4<<10)).Decode(&req); err != nil {
		writeErr(w, http.StatusBadRequest, fmt.Errorf("bad sign-in request: %w", err))
		return
	}
	t, ok := a.tokens.Load().Match(strings.TrimSpace(req.Token))
	if !ok {
		a.log.Warn("console sign-in refused: unknown token", "from", r.RemoteAddr)
		writeErr(w, http.StatusUnauthorized, errors.New("unknown token"))
		return
	}
	x := a.sessions.Start(t.Name, t.Role.String())
	a.setSessionCookie(w, x)
	a.log.Info("console sign-in", "token", t.Name, "role", t.Role.String(), "from", r.RemoteAddr)
	if form {
		http.Redirect(w, r, "/ui/", http.StatusSeeOther)
		return
	}
	writeJSON(w, api.ConsoleSession{Name: x.Name, Role: x.Role, CSRF: x.CSRF, Node: a.cfg.Node})
}

// consoleOnce redeems a one-time sign-in link (lifeboat demo prints one).
func (a *Agent) consoleOnce(w http.ResponseWriter, r *http.Request) {
	x, ok := a.sessions.Redeem(r.URL.Query().Get("once"))
	if !ok {
		http.Error(w, "This sign-in link is not valid (used already, or older than 10 minutes). Sign in with a token at /ui/.", http.StatusUnauthorized)
		return
	}
	a.setSessionCookie(w, x)
	a.log.Info("console sign-in by one-time link", "token", x.Name, "role", x.Role, "from", r.RemoteAddr)
	http.Redirect(w, r, "/ui/", http.StatusSeeOther)
}

func (a *Agent) setSessionCookie(w http.ResponseWriter, x console.Session) {
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: x.ID, Path: "/", HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode,
		MaxAge: int(console.MaxAge.Seconds())})
}

// consoleSession returns the request's session; it answers 401 (or 403
// for a missing CSRF token when mutating) and returns false otherwise.
func (a *Agent) consoleSession(w http.ResponseWriter, r *http.Request, mutating bool) (console.Session, bool) {
	_, x, err := a.sessionToken(r, mutating)
	if err != nil {
		code := http.StatusUnauthorized
		if errors.Is(err, errCSRF) {
			code = http.StatusForbidden
		}
		writeErr(w, code, err)
		return console.Session{}, false
	}
	return x, true
}

var errCSRF = errors.New("missing or wrong X-CSRF-Token, or a request from another site's page: refused (sign in to the console again)")

// sessionToken is the credential of a request made with the console's
// session cookie: the token the session began with, as long as a token
// of that name and role is still in force (a reload that removed or
// changed it ends the session). A request that may change something must
// carry the session's CSRF token and come from the console's own origin.
func (a *Agent) sessionToken(r *http.Request, mutating bool) (auth.Token, console.Session, error) {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return auth.Token{}, console.Session{}, errors.New("not signed in")
	}
	x, ok := a.sessions.Get(c.Value)
	if !ok {
		return auth.Token{}, console.Session{}, errors.New("the console session has ended: sign in again")
	}
	var t auth.Token
	found := false
	for _, cur := range a.tokens.Load().Tokens() {
		if cur.Name == x.Name && cur.Role.String() == x.Role {
			t, found = cur, true
			break
		}
	}
	if !found {
		a.sessions.End(x.ID)
		return auth.Token{}, console.Session{}, fmt.Errorf("token %s is no longer in force with role %s: sign in again", x.Name, x.Role)
	}
	if mutating && (!x.CheckCSRF(r.Header.Get("X-CSRF-Token")) || !sameOrigin(r)) {
		a.log.Warn("console request refused: CSRF check failed", "method", r.Method, "path", r.URL.Path, "token", x.Name, "from", r.RemoteAddr)
		return auth.Token{}, console.Session{}, errCSRF
	}
	t.Session = true
	return t, x, nil
}

// sameOrigin reports whether a browser's request comes from a page of
// this origin: an Origin header, when the browser sends one, must name
// the host the request was sent to.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return r.Header.Get("Sec-Fetch-Site") == "" || r.Header.Get("Sec-Fetch-Site") == "same-origin"
	}
	u, err := url.Parse(o)
	return err == nil && u.Scheme == "https" && u.Host == r.Host
}

// handleConsoleOnce makes a one-time sign-in link (admin; lifeboat demo
// prints one): for the caller's own token, or, through the local socket,
// for the first admin token in force.
func (a *Agent) handleConsoleOnce(w http.ResponseWriter, r *http.Request) {
	t, ok := r.Context().Value(tokenKey).(auth.Token)
	if !ok || t.Certificate {
		ok = false
		for _, cur := range a.tokens.Load().Tokens() {
			if cur.Role == auth.Admin {
				t, ok = cur, true
				break
			}
		}
	}
	if !ok {
		writeErr(w, http.StatusConflict, errors.New("no admin token in api.token_file to make a sign-in link for: add one (NAME admin SECRET)"))
		return
	}
	code := a.sessions.Once(t.Name, t.Role.String())
	writeJSON(w, api.ConsoleLink{Path: "/ui/login?once=" + code})
}
