// Package console is lifeboat's web console: the page and its script,
// embedded in the binary (nothing is fetched from elsewhere at run time),
// and the sign-in sessions behind it.
//
// Every agent serves it on its API listener (same TLS) under /ui/. An
// operator signs in with an API token; the agent keeps a session for it,
// named by a random cookie (HttpOnly, Secure, SameSite=Strict), and the
// session's role is the token's. The page then calls the agent's own API
// with that cookie; a request that may change something must also carry
// the session's CSRF token in the X-CSRF-Token header, which a page of
// another site cannot read. A token removed or changed by a reload ends
// its sessions at their next request.
package console

import (
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"io/fs"
	"sync"
	"time"
)

//go:embed static
var static embed.FS

// Assets are the console's files (index.html, app.js, app.css).
func Assets() fs.FS {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	return sub
}

// Bounds of the session store.
const (
	// MaxSessions bounds the sessions kept at once; the oldest is
	// dropped beyond it.
	MaxSessions = 1000
	// IdleTimeout ends a session not used for that long.
	IdleTimeout = time.Hour
	// MaxAge ends any session that old.
	MaxAge = 12 * time.Hour
	// OnceTTL is how long a one-time sign-in link stays valid.
	OnceTTL = 10 * time.Minute
)

// Session is one signed-in browser.
type Session struct {
	ID      string // the cookie's value
	CSRF    string // required on every request that may change something
	Name    string // the token's name
	Role    string // the token's role when the session began
	Created time.Time
	Used    time.Time
}

// Sessions keeps the console's sessions in memory (a restart signs every
// browser out). Safe for concurrent use.
type Sessions struct {
	mu   sync.Mutex
	byID map[string]*Session
	once map[string]onceLink
	now  func() time.Time
}

type onceLink struct {
	name, role string
	expires    time.Time
}

// NewSessions returns an empty store.
func NewSessions() *Sessions {
	return &Sessions{byID: map[string]*Session{}, once: map[string]onceLink{}, now: time.Now}
}

func random() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b)
}

// Start begins a session for the token named name with role.
func (s *Sessions) Start(name, role string) Session {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireLocked()
	if len(s.byID) >= MaxSessions {
		var oldest *Session
		for _, x := range s.byID {
			if oldest == nil || x.Used.Before(oldest.Used) {
				oldest = x
			}
		}
		delete(s.byID, oldest.ID)
	}
	now := s.now()
	x := &Session{ID: random(), CSRF: random(), Name: name, Role: role, Created: now, Used: now}
	s.byID[x.ID] = x
	return *x
}

// Get returns the session with id, and marks it used.
func (s *Sessions) Get(id string) (Session, bool) {
	if id == "" {
		return Session{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	x, ok := s.byID[id]
	now := s.now()
	if !ok || now.Sub(x.Used) > IdleTimeout || now.Sub(x.Created) > MaxAge {
		delete(s.byID, id)
		return Session{}, false
	}
	x.Used = now
	return *x, true
}

// End ends the session with id.
func (s *Sessions) End(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.byID, id)
}

// CheckCSRF reports whether got is the session's CSRF token.
func (x Session) CheckCSRF(got string) bool {
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(x.CSRF)) == 1
}

// Once makes a one-time sign-in code for the token named name (the demo
// prints a link with it): valid OnceTTL, for one use.
func (s *Sessions) Once(name, role string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireLocked()
	if len(s.once) >= MaxSessions {
		clear(s.once)
	}
	code := random()
	s.once[code] = onceLink{name: name, role: role, expires: s.now().Add(OnceTTL)}
	return code
}

// Redeem uses a one-time code: it starts a session, once.
func (s *Sessions) Redeem(code string) (Session, bool) {
	s.mu.Lock()
	l, ok := s.once[code]
	delete(s.once, code)
	s.mu.Unlock()
	if !ok || s.now().After(l.expires) {
		return Session{}, false
	}
	return s.Start(l.name, l.role), true
}

func (s *Sessions) expireLocked() {
	now := s.now()
	for id, x := range s.byID {
		if now.Sub(x.Used) > IdleTimeout || now.Sub(x.Created) > MaxAge {
			delete(s.byID, id)
		}
	}
	for c, l := range s.once {
		if now.After(l.expires) {
			delete(s.once, c)
		}
	}
}
