// Package report builds and reads lifeboat's support bundle (`lifeboat
// report`): a gzipped tar with a manifest (when, who asked, which nodes
// were reached, every file's size and SHA-256) and each node's parts. It
// owns the redaction every part goes through before it leaves a node:
// secrets are removed by structure (a scalar under a secret-looking name,
// a URL's password, a bearer credential, a PEM private key, NAME=value
// pairs with a secret-looking NAME) and by value (the node's own known
// secrets, wherever they appear). It does no I/O of its own.
package report

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"unicode"
)

// Redacted replaces a secret value.
const Redacted = "[REDACTED]"

// urlRedacted replaces a password or query value inside a URL (brackets
// would be escaped there).
const urlRedacted = "REDACTED"

// minSecret: known secret values shorter than this are not searched for
// (a one-letter "secret" would blank out every occurrence of the letter).
const minSecret = 8

// Redactor removes secrets from what goes into a bundle.
type Redactor struct {
	secrets []string // longest first
}

// NewRedactor returns a redactor that, besides redacting by structure,
// replaces every occurrence of the given secret values (the cluster key in
// every encoding, tokens, the content of token files).
func NewRedactor(secrets ...string) *Redactor {
	seen := map[string]bool{}
	r := &Redactor{}
	for _, s := range secrets {
		s = strings.TrimSpace(s)
		if len(s) < minSecret || seen[s] {
			continue
		}
		seen[s] = true
		r.secrets = append(r.secrets, s)
	}
	sort.Slice(r.secrets, func(i, j int) bool { return len(r.secrets[i]) > len(r.secrets[j]) })
	return r
}

// secretWords are the words of a field name that mark its value secret.
var secretWords = map[string]bool{
	"secret": true, "secrets": true, "token": true, "tokens": true, "password": true, "passwords": true,
	"passwd": true, "pass": true, "pwd": true, "passphrase": true, "credential": true, "credentials": true,
	"creds": true, "key": true, "keys": true, "apikey": true, "privatekey": true, "accesskey": true,
	"secretkey": true, "auth": true, "authorization": true, "cookie": true, "cookies": true,
	"session": true, "signature": true, "bearer": true, "private": true, "header": true, "headers": true,
	"psk": true, "otp": true, "salt": true,
}

// plainWords: a field whose last word is one of these is about a secret,
// not the secret itself: a file (key_file, token_file, headers_file: the
// path stays, the content never enters a bundle), a lifetime
// (X-aws-ec2-metadata-token-ttl-seconds), a name or a type.
var plainWords = map[string]bool{"file": true, "path": true, "dir": true, "socket": true,
	"ttl": true, "seconds": true, "timeout": true, "expiry": true, "expires": true, "expiration": true,
	"name": true, "type": true, "length": true, "count": true}

// words splits a field name into lower-case words at non-letters and
// camelCase boundaries: "aws.SecretAccessKey" -> aws, secret, access, key.
func words(name string) []string {
	var out []string
	var cur []rune
	flush := func() {
		if len(cur) > 0 {
			out = append(out, strings.ToLower(string(cur)))
			cur = cur[:0]
		}
	}
	rs := []rune(name)
	for i, c := range rs {
		switch {
		case !unicode.IsLetter(c) && !unicode.IsDigit(c):
			flush()
		case unicode.IsUpper(c) && i > 0 && (unicode.IsLower(rs[i-1]) || i+1 < len(rs) && unicode.IsLower(rs[i+1]) && unicode.IsUpper(rs[i-1])):
			flush()
			cur = append(cur, c)
		default:
			cur = append(cur, c)
		}
	}
	flush()
	return out
}

// SecretName reports whether a field called name holds a secret: one of
// its words is secret-looking (token, password, key, credentials, ...)
// and it does not name a file.
func SecretName(name string) bool {
	ws := words(name)
	if len(ws) == 0 || plainWords[ws[len(ws)-1]] {
		return false
	}
	for _, w := range append(ws, strings.Join(ws, "")) {
		if secretWords[w] {
			return true
		}
		for _, part := range secretParts {
			if strings.Contains(w, part) {
				return true
			}
		}
	}
	return false
}

// secretParts mark a word secret wherever they appear in it (PGPASSWORD,
// dbsecret, apikeys).
var secretParts = []string{"password", "passwd", "passphrase", "secret", "credential", "apikey", "privatekey", "accesskey"}

// Value returns v (anything encoding/json takes) as generic JSON values
// (maps, slices, strings, numbers) with every secret removed: scalars
// under a secret name are replaced, containers are walked (a map keyed by
// user data, such as hierarchy names, is never blanked as a whole), and
// every string is passed through String.
func (r *Redactor) Value(v any) (any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("redact: encode: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var g any
	if err := dec.Decode(&g); err != nil {
		return nil, fmt.Errorf("redact: decode: %w", err)
	}
	return r.walk("", g), nil
}

// JSON is Value encoded as indented JSON.
func (r *Redactor) JSON(v any) ([]byte, error) {
	g, err := r.Value(v)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // commands with && stay readable
	enc.SetIndent("", "  ")
	if err := enc.Encode(g); err != nil {
		return nil, fmt.Errorf("redact: encode: %w", err)
	}
	return buf.Bytes(), nil
}

func (r *Redactor) walk(name string, v any) any {
	secret := SecretName(name)
	switch x := v.(type) {
	case map[string]any:
		// A flat map under a secret name (headers, credentials) has
		// secret values whatever their keys are; a map of structures
		// (hierarchies by name) is walked field by field.
		flat := secret
		for _, e := range x {
			switch e.(type) {
			case map[string]any, []any:
				flat = false
			}
		}
		out := make(map[string]any, len(x))
		for k, e := range x {
			if flat && e != nil && e != "" {
				out[r.String(k)] = Redacted
				continue
			}
			out[r.String(k)] = r.walk(k, e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = r.walk(name, e)
		}
		return out
	case string:
		if secret && x != "" {
			return Redacted
		}
		return r.String(x)
	case json.Number:
		if secret {
			return Redacted
		}
		return x
	}
	return v // bool, nil
}

var (
	urlRe    = regexp.MustCompile(`[a-zA-Z][a-zA-Z0-9+.-]*://[^\s"'<>` + "`" + `]+`)
	pemRe    = regexp.MustCompile(`-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----[\s\S]*?(-----END [A-Z0-9 ]*PRIVATE KEY-----|$)`)
	bearerRe = regexp.MustCompile(`(?i)\b(bearer)(\s+)[A-Za-z0-9._~+/=-]{8,}`)
	authRe   = regexp.MustCompile(`(?i)(authorization\s*[:=]\s*)(?:basic\s+|bearer\s+|digest\s+)?[^\s"',;]+`)
	// NAME=value and NAME: value with a secret-looking NAME, in commands
	// and log lines: PGPASSWORD=x, --password=x, api_key: "x", token=x.
	assignRe = regexp.MustCompile(`(?i)([A-Za-z0-9_.-]*(?:password|passwd|passphrase|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|credentials?)[A-Za-z0-9_.-]*)(\s*[=:]\s*|\s+)("[^"]*"|'[^']*'|[^\s"',;&|)]+)`)
	// AWS access key ids.
	akidRe = regexp.MustCompile(`\b(AKIA|ASIA)[0-9A-Z]{16}\b`)
)

// String removes secrets from free text: the known secret values, a
// URL's password and secret query parameters, bearer and basic
// credentials, PEM private keys, NAME=value pairs with a secret-looking
// NAME (a path value is kept) and AWS access key ids.
func (r *Redactor) String(s string) string {
	for _, sec := range r.secrets {
		s = strings.ReplaceAll(s, sec, Redacted)
	}
	if s == "" {
		return s
	}
	s = pemRe.ReplaceAllString(s, Redacted)
	s = urlRe.ReplaceAllStringFunc(s, redactURL)
	s = bearerRe.ReplaceAllString(s, "$1$2"+Redacted)
	s = authRe.ReplaceAllString(s, "$1"+Redacted)
	s = assignRe.ReplaceAllStringFunc(s, func(m string) string {
		sub := assignRe.FindStringSubmatch(m)
		name, sep, val := sub[1], sub[2], strings.Trim(sub[3], `"'`)
		switch {
		case !SecretName(name), val == "", val == Redacted, val == urlRedacted:
			return m
		case strings.HasPrefix(val, "$"):
			// a shell variable or command substitution ($TOKEN,
			// $(curl ...)), not the value itself
			return m
		case strings.TrimSpace(sep) == "" && !strings.HasPrefix(name, "-"):
			// "NAME value" counts only as a flag: --password value
			return m
		}
		return name + sep + Redacted
	})
	s = akidRe.ReplaceAllString(s, Redacted)
	// again: a URL re-encoded above may have decoded a secret's
	// characters (%41 -> A)
	for _, sec := range r.secrets {
		s = strings.ReplaceAll(s, sec, Redacted)
	}
	return s
}

// redactURL removes the password and secret query values of one URL.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	changed := false
	if u.User != nil {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), urlRedacted)
			changed = true
		}
	}
	if u.RawQuery != "" {
		q := u.Query()
		for k, vs := range q {
			if SecretName(k) || strings.HasPrefix(strings.ToLower(k), "x-amz-") && strings.Contains(strings.ToLower(k), "signature") || strings.EqualFold(k, "X-Amz-Credential") || strings.EqualFold(k, "X-Amz-Security-Token") {
				for i := range vs {
					vs[i] = urlRedacted
				}
				changed = true
			}
		}
		if changed {
			u.RawQuery = q.Encode()
		}
	}
	if !changed {
		return raw
	}
	return u.String()
}

// Bytes replaces every known secret value in b (the last pass over each
// file of a bundle, whatever its format).
func (r *Redactor) Bytes(b []byte) []byte {
	for _, sec := range r.secrets {
		b = bytes.ReplaceAll(b, []byte(sec), []byte(Redacted))
	}
	return b
}

// Leaks returns the known secret values found in b (for tests and as a
// last check before a bundle is written).
func (r *Redactor) Leaks(b []byte) int {
	n := 0
	for _, sec := range r.secrets {
		if bytes.Contains(b, []byte(sec)) {
			n++
		}
	}
	return n
}
