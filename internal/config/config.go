// Package config parses and validates the agent config file and the
// `lifeboat apply` spec files. Parsing is a pure function of the file name
// and its bytes, separate from wiring: nothing here opens sockets or starts
// anything, and only LoadAgent touches the filesystem.
//
// Every problem is reported, not only the first, as an *Errors whose entries
// name the file, the line and column, the field path and what to do, for
// example
//
//	/etc/lifeboat/agent.yaml:12:7: cluster.nodes[1].raft: "127.0.0.1" is not host:port (for example 10.0.0.2:7101)
//
// The YAML is first read into a yaml.Node tree that is walked against the
// target struct's yaml tags: this rejects unknown keys, catches type errors
// with their field path, and records the position of every field path so
// that later validation problems can be reported at the right line.
package config

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

// Error is one problem in a file.
type Error struct {
	File         string
	Line, Column int // 0 when unknown
	Field        string
	Message      string
}

func (e Error) Error() string {
	loc := e.File
	if e.Line > 0 {
		loc += ":" + strconv.Itoa(e.Line)
		if e.Column > 0 {
			loc += ":" + strconv.Itoa(e.Column)
		}
	}
	if e.Field != "" {
		loc += ": " + e.Field
	}
	return loc + ": " + e.Message
}

// Errors is every problem found in a file, in file order.
type Errors struct {
	List []Error
}

// Error lists the problems one per line.
func (e *Errors) Error() string {
	s := make([]string, len(e.List))
	for i, x := range e.List {
		s[i] = x.Error()
	}
	return strings.Join(s, "\n")
}

type pos struct{ line, col int }

// maxNodes bounds the walk, alias expansion included ("billion laughs").
const maxNodes = 1 << 18

var (
	durationType = reflect.TypeOf(spec.Duration(0))
	lineRe       = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)
)

// walker checks a yaml.Node tree against a Go type and collects problems.
type walker struct {
	file   string
	pos    map[string]pos  // field path -> position of its key or list item
	bad    map[string]bool // field paths already reported as malformed
	nulls  map[string]bool // field paths given as null (meaning "unset")
	errs   []Error
	seen   int
	active map[*yaml.Node]bool // aliases being expanded
	abort  bool                // alias cycle or size limit: stop here
}

func newWalker(file string) *walker {
	return &walker{file: file, pos: map[string]pos{}, bad: map[string]bool{},
		nulls: map[string]bool{}, active: map[*yaml.Node]bool{}}
}

func (w *walker) add(p pos, field, format string, args ...any) {
	w.errs = append(w.errs, Error{File: w.file, Line: p.line, Column: p.col, Field: field, Message: fmt.Sprintf(format, args...)})
}

// fail reports a malformed value at field path; the value is then dropped.
func (w *walker) fail(path string, n *yaml.Node, format string, args ...any) {
	p, ok := w.pos[path]
	if !ok {
		p = pos{n.Line, n.Column}
	}
	w.bad[path] = true
	w.add(p, path, format, args...)
}

// problem reports a validation finding at the line of its field path, or of
// the nearest parent path that appears in the file. Findings under a path
// already reported as malformed are dropped: they are consequences.
func (w *walker) problem(field, msg string) {
	at, found := "", false
	for q := field; ; q = parent(q) {
		if w.bad[q] {
			return
		}
		if _, ok := w.pos[q]; ok && !found {
			at, found = q, true
		}
		if q == "" {
			break
		}
	}
	w.add(w.pos[at], field, "%s", msg)
}

// mentionsBad reports whether msg refers to a field already reported as
// malformed, as in "must be less than timing.lease": the comparison was
// made against the default, so the finding is a consequence.
func (w *walker) mentionsBad(msg string) bool {
	for p := range w.bad {
		if p != "" && strings.Contains(msg, p) {
			return true
		}
	}
	return false
}

// parent strips the last element of a field path: "a.b[2]" -> "a.b" -> "a".
func parent(path string) string {
	if strings.HasSuffix(path, "]") {
		if i := strings.LastIndexByte(path, '['); i >= 0 {
			return path[:i]
		}
	}
	if i := strings.LastIndexByte(path, '.'); i >= 0 {
		return path[:i]
	}
	return ""
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// result returns the collected problems sorted by position, or nil.
func (w *walker) result() error {
	if len(w.errs) == 0 {
		return nil
	}
	slices.SortStableFunc(w.errs, func(a, b Error) int { return cmp.Or(a.Line-b.Line, a.Column-b.Column) })
	return &Errors{List: w.errs}
}

// parseErr turns an error from the yaml package into positioned problems.
func (w *walker) parseErr(err error) {
	var lines []string
	var te *yaml.TypeError
	if errors.As(err, &te) {
		lines = te.Errors
	} else {
		lines = []string{err.Error()}
	}
	for _, l := range lines {
		p := pos{}
		if m := lineRe.FindStringSubmatch(l); m != nil {
			p.line, _ = strconv.Atoi(m[1])
			l = m[2]
		}
		w.add(p, "", "%s (fix the YAML around this line)", strings.TrimPrefix(l, "yaml: "))
	}
}

// document reads the single YAML document in data. It returns nil for an
// empty file; syntax errors are recorded.
func (w *walker) document(data []byte) *yaml.Node {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if err != io.EOF {
			w.parseErr(err)
		}
		return nil
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err != io.EOF {
		if err != nil {
			w.parseErr(err)
		} else {
			w.add(pos{extra.Line, extra.Column}, "", "only one YAML document is allowed per file: remove the \"---\" separator")
		}
		return nil
	}
	if len(doc.Content) == 0 {
		return nil
	}
	return doc.Content[0]
}

// decode walks root against the type of out, then decodes it into out.
// It returns false when the tree could not be decoded at all.
func (w *walker) decode(root *yaml.Node, out any, extraKeys ...string) bool {
	w.pos[""] = pos{root.Line, root.Column}
	if !w.walk(root, reflect.TypeOf(out).Elem(), "", extraKeys) || w.abort {
		return false
	}
	if err := root.Decode(out); err != nil {
		w.parseErr(err)
		return false
	}
	return true
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a mapping"
	}
	return strconv.Quote(n.Value)
}

// walk checks n against t. It returns false when n is malformed and must be
// dropped by the caller so that decoding the tree cannot fail.
func (w *walker) walk(n *yaml.Node, t reflect.Type, path string, extraKeys []string) bool {
	if w.seen++; w.abort || w.seen > maxNodes {
		if !w.abort {
			w.abort = true
			w.add(pos{n.Line, n.Column}, path, "document too large or uses too many aliases (at most %d values)", maxNodes)
		}
		return false
	}
	if n.Kind == yaml.AliasNode {
		if n.Alias == nil || w.active[n] {
			w.abort = true
			w.fail(path, n, "alias *%s refers to a value that contains it: remove the loop", n.Value)
			return false
		}
		w.active[n] = true
		defer delete(w.active, n)
		return w.walk(n.Alias, t, path, extraKeys)
	}
	if n.Kind == 0 || n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		w.nulls[path] = true
		return true
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch k := t.Kind(); {
	case (k == reflect.Struct || k == reflect.Map) && n.Kind != yaml.MappingNode:
		w.fail(path, n, "expected a mapping of keys (key: value), found %s", describe(n))
	case k == reflect.Struct || k == reflect.Map:
		w.mapping(n, t, path, extraKeys)
		return true
	case k == reflect.Slice && n.Kind != yaml.SequenceNode:
		w.fail(path, n, "expected a list ([a, b] or lines starting with \"- \"), found %s", describe(n))
	case k == reflect.Slice:
		for i, c := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			w.pos[p] = pos{c.Line, c.Column}
			if !w.walk(c, t.Elem(), p, nil) {
				n.Content[i] = &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Line: c.Line, Column: c.Column}
			}
		}
		return true
	default:
		return w.scalar(n, t, path)
	}
	return false
}

func (w *walker) scalar(n *yaml.Node, t reflect.Type, path string) bool {
	isInt := t != durationType && t.Kind() >= reflect.Int && t.Kind() <= reflect.Int64
	want := map[bool]string{true: "a whole number such as 2"}[isInt]
	switch {
	case t == durationType:
		want = "a duration such as \"500ms\" or \"2s\""
	case t.Kind() == reflect.Bool:
		want = "true or false"
	case t.Kind() == reflect.String:
		want = "a string"
	}
	switch {
	case n.Kind != yaml.ScalarNode:
		w.fail(path, n, "expected %s, found %s", want, describe(n))
	case isInt && n.ShortTag() != "!!int":
		w.fail(path, n, "%q is not %s", n.Value, want)
	default:
		err := n.Decode(reflect.New(t).Interface())
		if err == nil {
			return true
		}
		if t == durationType {
			w.fail(path, n, "%v", err)
		} else {
			w.fail(path, n, "%q is not %s", n.Value, want)
		}
	}
	return false
}

// mapping checks the keys of a struct or map[string]T and walks the values.
// Unknown, duplicate and malformed entries are reported and dropped.
func (w *walker) mapping(n *yaml.Node, t reflect.Type, path string, extraKeys []string) {
	var fields map[string]reflect.Type
	var names []string
	if t.Kind() == reflect.Struct {
		fields = map[string]reflect.Type{}
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "" {
				name = strings.ToLower(f.Name)
			}
			if f.IsExported() && name != "-" {
				fields[name] = f.Type
				names = append(names, name)
			}
		}
	}
	names = append(names, extraKeys...)
	seen := map[string]int{}
	var kept []*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		p, ft := join(path, k.Value), reflect.Type(nil)
		if fields == nil {
			ft = t.Elem()
		} else {
			ft = fields[k.Value]
		}
		switch line, dup := seen[k.Value]; {
		case k.Kind != yaml.ScalarNode:
			w.add(pos{k.Line, k.Column}, path, "keys must be plain names, found %s", describe(k))
		case dup:
			w.add(pos{k.Line, k.Column}, p, "key given twice (first at line %d): remove one", line)
		case k.Value == "<<":
			w.add(pos{k.Line, k.Column}, p, "merge keys (<<) are not supported: write the keys out")
		case ft == nil:
			w.add(pos{k.Line, k.Column}, p, "unknown key %q%s", k.Value, suggest(k.Value, names))
		default:
			seen[k.Value] = k.Line
			w.pos[p] = pos{k.Line, k.Column}
			if w.walk(v, ft, p, nil) {
				kept = append(kept, k, v)
			}
		}
	}
	n.Content = kept
}

// suggest names the closest known key within edit distance 2, or lists the
// known keys.
func suggest(key string, known []string) string {
	best, bestD := "", 3
	for _, k := range known {
		if d := distance(strings.ToLower(key), k); d < bestD {
			best, bestD = k, d
		}
	}
	if best != "" {
		return fmt.Sprintf(" (did you mean %q?)", best)
	}
	if len(known) == 0 {
		return ""
	}
	return " (known keys: " + strings.Join(known, ", ") + ")"
}

// distance is the Levenshtein edit distance between a and b.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := prev[j-1]
			if a[i-1] != b[j-1] {
				c++
			}
			cur[j] = min(c, prev[j]+1, cur[j-1]+1)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
