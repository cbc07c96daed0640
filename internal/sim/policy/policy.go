// Package policy parses IAM policy documents and evaluates requests against
// them the way AWS IAM does for identity-based policies: an explicit Deny
// wins, otherwise any Allow allows, otherwise the request is implicitly
// denied.
//
// Statements are numbered from 0 in both Parse errors ("statement 2") and
// Explain results ("statement[2]"), matching their index in the JSON list.
package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxDocumentSize is the largest accepted document in bytes, not counting
// whitespace outside strings (IAM's limit for inline role policies).
const MaxDocumentSize = 10240

// Document is a parsed identity-based policy.
type Document struct {
	Version    string // "2012-10-17", "2008-10-17" or "" when absent
	Statements []Statement
}

// Statement is one policy statement. In a parsed statement exactly one of
// Action/NotAction and exactly one of Resource/NotResource is non-empty.
type Statement struct {
	Sid, Effect                              string
	Action, NotAction, Resource, NotResource []string
}

// Request is one API call to authorize.
type Request struct {
	Action   string // e.g. "ec2:ReplaceRoute"
	Resource string // an ARN, or "*"
}

// Decision is the outcome of evaluating a request.
type Decision int

const (
	ImplicitDeny Decision = iota // no statement allowed the request
	Allow                        // an Allow statement matched and no Deny did
	ExplicitDeny                 // a Deny statement matched
)

func (d Decision) String() string {
	if names := []string{"implicitDeny", "allowed", "explicitDeny"}; d >= 0 && int(d) < len(names) {
		return names[d]
	}
	return fmt.Sprintf("Decision(%d)", int(d))
}

// Parse parses and validates a JSON policy document. Action, NotAction,
// Resource and NotResource may each be a string or a list of strings;
// Statement may be an object or a list of objects. Errors say what is wrong
// and where, e.g. `policy: statement 2 (Sid AllowRoutes): Effect "Permit" is
// not Allow or Deny`.
func Parse(doc []byte) (*Document, error) {
	d, err := parse(doc)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	return d, nil
}

func parse(doc []byte) (*Document, error) {
	var compact bytes.Buffer
	if err := json.Compact(&compact, doc); err != nil {
		return nil, fmt.Errorf("invalid JSON: %v", err)
	}
	if compact.Len() > MaxDocumentSize {
		return nil, fmt.Errorf("document is %d bytes without whitespace, over the %d-byte limit for inline role policies", compact.Len(), MaxDocumentSize)
	}
	top, err := object(doc)
	if err != nil {
		return nil, errors.New("document must be a JSON object")
	}
	if k := firstUnknown(top, "Version", "Id", "Statement"); k != "" {
		return nil, fmt.Errorf("unknown top-level key %q (want Version, Id, Statement)", k)
	}
	d := &Document{}
	if raw, ok := top["Version"]; ok {
		if d.Version, err = str(raw); err != nil {
			return nil, errors.New("Version must be a string")
		}
		if d.Version != "2012-10-17" && d.Version != "2008-10-17" {
			return nil, fmt.Errorf("Version %q is not \"2012-10-17\" or \"2008-10-17\"", d.Version)
		}
	}
	if raw, ok := top["Id"]; ok {
		if _, err := str(raw); err != nil {
			return nil, errors.New("Id must be a string")
		}
	}
	raw := top["Statement"]
	var list []json.RawMessage
	switch firstByte(raw) {
	case '{':
		list = []json.RawMessage{raw}
	case '[':
		if json.Unmarshal(raw, &list) != nil || len(list) == 0 {
			return nil, errors.New("Statement must be a non-empty list")
		}
	default:
		return nil, errors.New("Statement (an object or a list of objects) is required")
	}
	sids := map[string]int{}
	for i, raw := range list {
		st, err := parseStatement(raw)
		where := fmt.Sprintf("statement %d", i)
		if st.Sid != "" {
			where += fmt.Sprintf(" (Sid %s)", st.Sid)
		}
		if j, dup := sids[st.Sid]; err == nil && dup && st.Sid != "" {
			err = fmt.Errorf("Sid %q is already used by statement %d", st.Sid, j)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		sids[st.Sid] = i
		d.Statements = append(d.Statements, st)
	}
	return d, nil
}

// parseStatement parses one statement. On error it still returns the Sid if
// it could be read, so that the caller can name the statement.
func parseStatement(raw json.RawMessage) (st Statement, err error) {
	m, err := object(raw)
	if err != nil {
		return st, errors.New("must be a JSON object")
	}
	if s, ok := m["Sid"]; ok {
		if st.Sid, err = str(s); err != nil {
			return st, errors.New("Sid must be a string")
		}
	}
	for _, k := range []string{"Principal", "NotPrincipal"} {
		if _, ok := m[k]; ok {
			return st, fmt.Errorf("identity-based policies have no %s", k)
		}
	}
	if k := firstUnknown(m, "Sid", "Effect", "Action", "NotAction", "Resource", "NotResource", "Condition"); k != "" {
		return st, fmt.Errorf("unknown key %q", k)
	}
	if st.Effect, err = str(m["Effect"]); err != nil {
		return st, errors.New("Effect (Allow or Deny) is required")
	}
	if st.Effect != "Allow" && st.Effect != "Deny" {
		return st, fmt.Errorf("Effect %q is not Allow or Deny", st.Effect)
	}
	if c, ok := m["Condition"]; ok {
		if cm, err := object(c); err != nil || len(cm) != 0 {
			return st, errors.New("Condition is not supported (only an empty Condition {} is accepted)")
		}
	}
	for _, p := range []struct {
		key, not      string
		dstKey, dstNo *[]string
		valid         func(string) bool
		want          string
	}{
		{"Action", "NotAction", &st.Action, &st.NotAction, validAction, `"*" or "service:action"`},
		{"Resource", "NotResource", &st.Resource, &st.NotResource, validResource, `"*" or an ARN`},
	} {
		raw, dst := m[p.key], p.dstKey
		switch _, hasNot := m[p.not]; {
		case raw != nil && hasNot:
			return st, fmt.Errorf("has both %s and %s", p.key, p.not)
		case raw == nil && !hasNot:
			return st, fmt.Errorf("needs %s or %s", p.key, p.not)
		case hasNot:
			p.key, raw, dst = p.not, m[p.not], p.dstNo
		}
		if *dst, err = strList(p.key, raw); err != nil {
			return st, err
		}
		for i, v := range *dst {
			if !p.valid(v) {
				return st, fmt.Errorf("%s[%d] %q is not %s", p.key, i, v, p.want)
			}
		}
	}
	return st, nil
}

func validAction(a string) bool {
	svc, act, ok := strings.Cut(a, ":")
	return a == "*" || ok && svc != "" && act != "" && !strings.Contains(act, ":")
}

func validResource(r string) bool { return r == "*" || strings.HasPrefix(r, "arn:") }

// object decodes a JSON object into its raw members; null is an error.
func object(raw []byte) (m map[string]json.RawMessage, err error) {
	if firstByte(raw) != '{' {
		return nil, errors.New("not an object")
	}
	return m, json.Unmarshal(raw, &m)
}

// firstUnknown returns the alphabetically first key of m not in known.
func firstUnknown(m map[string]json.RawMessage, known ...string) string {
	var unknown []string
	for k := range m {
		if !slices.Contains(known, k) {
			unknown = append(unknown, k)
		}
	}
	slices.Sort(unknown)
	return strings.Join(unknown[:min(1, len(unknown))], "")
}

func firstByte(raw []byte) byte {
	if raw = bytes.TrimLeft(raw, " \t\r\n"); len(raw) > 0 {
		return raw[0]
	}
	return 0
}

// str decodes a JSON string; anything else (including null) is an error.
func str(raw json.RawMessage) (s string, err error) {
	if firstByte(raw) != '"' {
		return "", errors.New("not a string")
	}
	return s, json.Unmarshal(raw, &s)
}

func strList(key string, raw json.RawMessage) ([]string, error) {
	if firstByte(raw) == '"' {
		raw = append(append([]byte{'['}, raw...), ']')
	}
	var items []json.RawMessage
	if firstByte(raw) != '[' || json.Unmarshal(raw, &items) != nil || len(items) == 0 {
		return nil, fmt.Errorf("%s must be a string or a non-empty list of strings", key)
	}
	out := make([]string, len(items))
	for i, it := range items {
		var err error
		if out[i], err = str(it); err != nil || out[i] == "" {
			return nil, fmt.Errorf("%s[%d] must be a non-empty string", key, i)
		}
	}
	return out, nil
}

// Evaluate decides req against the union of docs (nil documents are skipped).
func Evaluate(docs []*Document, req Request) Decision {
	d, _ := Explain(docs, req)
	return d
}

// Explain returns the decision and the Sid (or statement index
// "statement[2]") of the statement that decided it ("" for implicit deny):
// the first matching Deny in any document, else the first matching Allow.
func Explain(docs []*Document, req Request) (Decision, string) {
	for _, effect := range []string{"Deny", "Allow"} {
		for _, doc := range docs {
			if doc == nil {
				continue
			}
			for i, st := range doc.Statements {
				if st.Effect != effect || !st.matches(req) {
					continue
				}
				name := st.Sid
				if name == "" {
					name = fmt.Sprintf("statement[%d]", i)
				}
				if effect == "Deny" {
					return ExplicitDeny, name
				}
				return Allow, name
			}
		}
	}
	return ImplicitDeny, ""
}

func (st *Statement) matches(req Request) bool {
	return matchSet(st.Action, st.NotAction, req.Action, true) &&
		matchSet(st.Resource, st.NotResource, req.Resource, false)
}

// matchSet reports whether s matches any of yes or, if yes is empty, none of
// no. A statement with neither (possible only if built by hand) matches
// nothing.
func matchSet(yes, no []string, s string, fold bool) bool {
	if len(yes) == 0 && len(no) == 0 {
		return false
	}
	for _, p := range yes {
		if ok, _ := match(p, s, fold); ok {
			return true
		}
	}
	for _, p := range no {
		if ok, _ := match(p, s, fold); ok {
			return false
		}
	}
	return len(yes) == 0
}

// match reports whether s matches the wildcard pattern p ('*' matches any
// run of characters, '?' exactly one), case-insensitively if fold is set.
// It only ever backtracks to the most recent '*', so it takes at most about
// len(p)*len(s) steps, and linear time on typical patterns; steps counts
// loop iterations for tests.
func match(p, s string, fold bool) (ok bool, steps int) {
	pi, si := 0, 0
	star, mark := -1, 0 // where p resumes after the last '*', and where s resumes
	for si < len(s) {
		steps++
		pr, pw := utf8.DecodeRuneInString(p[pi:])
		sr, sw := utf8.DecodeRuneInString(s[si:])
		switch {
		case pi < len(p) && pr == '*':
			pi++
			star, mark = pi, si
		case pi < len(p) && (pr == '?' || pr == sr || fold && equalFold(pr, sr)):
			pi += pw
			si += sw
		case star >= 0:
			_, mw := utf8.DecodeRuneInString(s[mark:])
			mark += mw
			pi, si = star, mark
		default:
			return false, steps
		}
	}
	for pi < len(p) && p[pi] == '*' {
		steps++
		pi++
	}
	return pi == len(p), steps
}

// equalFold reports whether a and b are in the same Unicode case-folding
// orbit, like strings.EqualFold does for single runes.
func equalFold(a, b rune) bool {
	for r := unicode.SimpleFold(a); r != a; r = unicode.SimpleFold(r) {
		if r == b {
			return true
		}
	}
	return false
}

// AllowStatement builds the JSON of a minimal Allow statement for the given
// actions and resources, e.g.
// {"Effect":"Allow","Action":["ec2:ReplaceRoute"],"Resource":["arn:..."]}.
// No resources means "*" (for actions without resource-level permissions).
func AllowStatement(actions, resources []string) string {
	if len(resources) == 0 {
		resources = []string{"*"}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(struct {
		Effect           string
		Action, Resource []string
	}{"Allow", append([]string{}, actions...), resources})
	return strings.TrimSuffix(buf.String(), "\n")
}
