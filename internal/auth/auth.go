// Package auth holds the API's credentials and what each may do: named
// bearer tokens, each with a role (read, operate, admin), read from a
// token file that can be reloaded while the agent runs, and the role each
// API route needs. It knows no HTTP server: the agent asks it who a token
// is and whether that role may call a route.
package auth

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
)

// Role is what a credential may do. Each role includes the ones below it.
type Role int

// The roles, weakest first.
const (
	// None: no credential (refused everywhere but the health listener).
	None Role = iota
	// Read: status, events, doctor, iam-policy, metrics.
	Read
	// Operate: switchover, start, stop, failover decisions, maintenance,
	// standby.
	Operate
	// Admin: apply, delete, membership, log level, backup and restore,
	// support bundles, token reload.
	Admin
)

func (r Role) String() string {
	switch r {
	case Read:
		return "read"
	case Operate:
		return "operate"
	case Admin:
		return "admin"
	}
	return "none"
}

// ParseRole reads a role's name.
func ParseRole(s string) (Role, error) {
	switch s {
	case "read":
		return Read, nil
	case "operate":
		return Operate, nil
	case "admin":
		return Admin, nil
	}
	return None, fmt.Errorf("unknown role %q (use read, operate or admin)", s)
}

// Token is one named credential; its secret is kept only as a hash.
type Token struct {
	Name string `json:"name"`
	Role Role   `json:"-"`
	// Certificate: the caller presented an operator certificate of the
	// cluster CA instead of a bearer token.
	Certificate bool `json:"-"`
	// Session: the caller is signed in to the web console with this
	// token (its session cookie stands for it).
	Session bool `json:"-"`
	hash    [32]byte
}

// Kind says what the credential is, for "who asked": "token",
// "certificate", or "console session of token".
func (t Token) Kind() string {
	switch {
	case t.Certificate:
		return "certificate"
	case t.Session:
		return "console session of token"
	}
	return "token"
}

// MinSecret is the shortest token secret accepted.
const MinSecret = 16

// MaxTokens bounds a token file.
const MaxTokens = 1000

// Set is the tokens the API accepts.
type Set struct {
	tokens []Token
	// Source says where they came from (a file, or the cluster key).
	Source string
}

// Tokens returns the tokens' names and roles (no secrets).
func (s *Set) Tokens() []Token {
	if s == nil {
		return nil
	}
	return append([]Token(nil), s.tokens...)
}

// Match returns the token whose secret is tok. Every token is compared,
// in constant time each, so the time taken does not say which matched or
// how much of a secret was right.
func (s *Set) Match(tok string) (Token, bool) {
	if s == nil || tok == "" {
		return Token{}, false
	}
	h := sha256.Sum256([]byte(tok))
	var found Token
	ok := 0
	for _, t := range s.tokens {
		if subtle.ConstantTimeCompare(h[:], t.hash[:]) == 1 {
			found, ok = t, 1
		}
	}
	return found, ok == 1
}

// Single is a set of one token (the demo's token derived from the
// cluster key).
func Single(name string, role Role, secret, source string) *Set {
	return &Set{tokens: []Token{{Name: name, Role: role, hash: sha256.Sum256([]byte(secret))}}, Source: source}
}

var nameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$`)

// Load reads a token file: one token per line, "NAME ROLE SECRET"
// (whitespace between), '#' starts a comment. A file of a single bare
// secret (the form before roles) is one admin token named "token-file".
// Errors name the file and the line.
func Load(path string) (*Set, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read token file %s: %w", path, err)
	}
	return Parse(path, b)
}

// Parse reads a token file's contents (name is its path, for errors).
func Parse(name string, b []byte) (*Set, error) {
	s := &Set{Source: name}
	var problems []string
	names := map[string]int{}
	secrets := map[[32]byte]int{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 4096), 64*1024)
	var lines [][]string
	var at []int
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = strings.TrimSpace(line[:i])
		}
		if line == "" {
			continue
		}
		lines = append(lines, strings.Fields(line))
		at = append(at, n)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read token file %s: %w", name, err)
	}
	if len(lines) == 1 && len(lines[0]) == 1 {
		// The form before roles: one bare secret, which could do
		// everything.
		lines[0] = []string{"token-file", "admin", lines[0][0]}
	}
	if len(lines) > MaxTokens {
		return nil, fmt.Errorf("token file %s: %d tokens, at most %d", name, len(lines), MaxTokens)
	}
	for i, f := range lines {
		where := fmt.Sprintf("%s:%d", name, at[i])
		if len(f) != 3 {
			problems = append(problems, fmt.Sprintf("%s: want NAME ROLE SECRET (for example: ci-deploy operate $(head -c 24 /dev/urandom | base64)), found %d fields", where, len(f)))
			continue
		}
		role, err := ParseRole(f[1])
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", where, err))
			continue
		}
		if !nameRe.MatchString(f[0]) {
			problems = append(problems, fmt.Sprintf("%s: token name %q: use letters, digits, '_', '.', '@', '-' (1-64)", where, f[0]))
			continue
		}
		if len(f[2]) < MinSecret {
			problems = append(problems, fmt.Sprintf("%s: the secret of %s is too short: use at least %d characters (head -c 24 /dev/urandom | base64)", where, f[0], MinSecret))
			continue
		}
		if j, dup := names[f[0]]; dup {
			problems = append(problems, fmt.Sprintf("%s: token name %s is used twice (also line %d): names must be unique, they name who asked in the history", where, f[0], j))
			continue
		}
		h := sha256.Sum256([]byte(f[2]))
		if j, dup := secrets[h]; dup {
			problems = append(problems, fmt.Sprintf("%s: the secret of %s is the same as line %d's: every token needs its own", where, f[0], j))
			continue
		}
		names[f[0]], secrets[h] = at[i], at[i]
		s.tokens = append(s.tokens, Token{Name: f[0], Role: role, hash: h})
	}
	if len(problems) > 0 {
		return nil, errors.New(strings.Join(problems, "\n"))
	}
	if len(s.tokens) == 0 {
		return nil, fmt.Errorf("token file %s holds no token: add lines NAME ROLE SECRET", name)
	}
	return s, nil
}

// Routes maps each API route (as registered: "METHOD /path/{param}") to
// the role it needs. Internal routes (cluster members only) are not here:
// they need the cluster's own credential. A route missing here is refused
// to everyone but the local socket, so a new route is safe by default.
var Routes = map[string]Role{
	"GET /v1/version":             Read,
	"GET /v1/status":              Read,
	"GET /v1/iam-policy":          Read,
	"GET /v1/doctor":              Read,
	"GET /v1/events":              Read,
	"GET /metrics":                Read,
	"GET /v1/upgrade/hierarchies": Read,

	"POST /v1/hierarchies/{name}/switchover":          Operate,
	"POST /v1/hierarchies/{name}/start":               Operate,
	"POST /v1/hierarchies/{name}/stop":                Operate,
	"POST /v1/hierarchies/{name}/failover/{decision}": Operate,
	"POST /v1/maintenance":                            Operate,
	"POST /v1/nodes/{name}/standby":                   Operate,
	"POST /v1/nodes/{name}/unstandby":                 Operate,
	"POST /v1/nodes/{name}/confirm-failover":          Operate,
	"POST /v1/upgrade/check":                          Operate,

	"POST /v1/apply":                Admin,
	"DELETE /v1/hierarchies/{name}": Admin,
	"POST /v1/nodes":                Admin,
	"POST /v1/nodes/{name}/remove":  Admin,
	"POST /v1/log-level":            Admin,
	"POST /v1/console/link":         Admin,
	"GET /v1/backup":                Admin,
	"POST /v1/restore":              Admin,
	"GET /v1/report":                Admin,
	"GET /v1/tokens":                Admin,
	"GET /debug/pprof/":             Admin,
	"GET /debug/pprof/profile":      Admin,
	"GET /debug/pprof/trace":        Admin,
	"POST /v1/tokens/reload":        Admin,
}

// Need returns the role a route needs (Admin for a route not listed).
func Need(pattern string) Role {
	if r, ok := Routes[pattern]; ok {
		return r
	}
	return Admin
}
