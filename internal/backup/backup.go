// Package backup owns lifeboat's backup file: the part of the replicated
// state an operator carries out of a cluster and back in (every
// hierarchy's spec with its policies, each hierarchy's online wish, and the
// membership as the cluster knew it), in a versioned, checksummed envelope.
// It writes that file, reads one back with every problem named (file,
// line, field), and compares a backup with a cluster's state. It does no
// I/O beyond the bytes it is given and knows no raft and no network.
//
// The file is JSON:
//
//	{
//	  "format": "lifeboat-backup",
//	  "version": 1,
//	  "checksum": "sha256:<hex of the SHA-256 of the body in compact JSON>",
//	  "body": {"created", "cluster", "lifeboat_version", "node", "feature_level",
//	           "raft_index", "members", "hierarchies", "wishes"}
//	}
//
// The checksum covers the body's bytes with the whitespace outside strings
// removed (json.Compact): re-indenting the file keeps it valid, any other
// change to the body does not. What is per-run is left out on purpose:
// owners, lease generations, epochs, reports, readiness, failure marks and
// failover history; a restored cluster places and proves everything anew.
package backup

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/spec"
	"github.com/lifeboat-ha/lifeboat/internal/state"
)

// Format names the file kind in the envelope.
const Format = "lifeboat-backup"

// Version is the envelope and body version this binary writes and reads.
const Version = 1

// MaxSize bounds a backup file: the restore request that carries it must
// stay within what the agent reads of a request body (8 MiB). 4 MiB holds
// thousands of hierarchies.
const MaxSize = 4 << 20

// Wishes: the operator's start/stop of a hierarchy.
const (
	Online  = "online"
	Offline = "offline"
)

// Member is one node of the cluster's membership as the backed-up cluster
// knew it (its static cluster.nodes).
type Member struct {
	Name    string `json:"name"`
	Witness bool   `json:"witness,omitempty"`
	Raft    string `json:"raft"`
	Gossip  string `json:"gossip"`
	API     string `json:"api"`
}

// Body is what a backup holds.
type Body struct {
	// Created is when the answering agent read the state (UTC).
	Created time.Time `json:"created"`
	// Cluster identifies the cluster: the SHA-256 fingerprint of the TLS
	// certificate derived from its key (public, not the key).
	Cluster string `json:"cluster"`
	// LifeboatVersion is the answering agent's version.
	LifeboatVersion string `json:"lifeboat_version"`
	// Node is the agent that read the state: the raft leader, after a
	// barrier, so the state holds every committed change up to RaftIndex.
	Node         string   `json:"node"`
	FeatureLevel int      `json:"feature_level"`
	RaftIndex    uint64   `json:"raft_index"`
	Members      []Member `json:"members"`
	// Hierarchies are the specs, sorted by name, with their policies
	// (switchback, failure policy, confirm_failover): the policies are
	// part of each spec.
	Hierarchies []spec.Hierarchy `json:"hierarchies"`
	// Wishes maps every hierarchy to Online or Offline.
	Wishes map[string]string `json:"wishes"`
}

// Backup is a file read back: its body and its checksum.
type Backup struct {
	Body
	Checksum string `json:"checksum"`
}

// FromState fills meta's hierarchies and wishes from s: every hierarchy
// that is not being deleted. Per-run state (owners, generations, epochs,
// reports, readiness, failure marks, failover history) is left out.
func FromState(s *state.State, meta Body) Body {
	meta.Hierarchies = nil
	meta.Wishes = map[string]string{}
	for _, name := range s.HierarchyNames() {
		a := s.Assignments[name]
		if a == nil || a.Deleting {
			continue
		}
		meta.Hierarchies = append(meta.Hierarchies, s.Hierarchies[name])
		meta.Wishes[name] = wish(a.Online)
	}
	if meta.Hierarchies == nil {
		meta.Hierarchies = []spec.Hierarchy{}
	}
	sort.Slice(meta.Members, func(i, j int) bool { return meta.Members[i].Name < meta.Members[j].Name })
	return meta
}

func wish(online bool) string {
	if online {
		return Online
	}
	return Offline
}

type envelope struct {
	Format   string          `json:"format"`
	Version  int             `json:"version"`
	Checksum string          `json:"checksum"`
	Body     json.RawMessage `json:"body"`
}

// Encode writes b as a backup file (indented JSON ending in a newline) and
// returns it with its checksum ("sha256:<hex>").
func Encode(b Body) ([]byte, string, error) {
	raw, err := json.Marshal(b)
	if err != nil {
		return nil, "", fmt.Errorf("encode backup body: %w", err)
	}
	sum := checksum(raw)
	out, err := json.MarshalIndent(envelope{Format: Format, Version: Version, Checksum: sum, Body: raw}, "", "  ")
	if err != nil {
		return nil, "", fmt.Errorf("encode backup: %w", err)
	}
	return append(out, '\n'), sum, nil
}

// checksum hashes compact JSON.
func checksum(compact []byte) string {
	h := sha256.Sum256(compact)
	return "sha256:" + hex.EncodeToString(h[:])
}

// Why a backup file is refused; an *Error wraps one of them.
var (
	// ErrNotBackup: not JSON, or not a lifeboat backup.
	ErrNotBackup = errors.New("not a lifeboat backup")
	// ErrTruncated: the file ends early.
	ErrTruncated = errors.New("truncated")
	// ErrVersion: a version this binary does not read.
	ErrVersion = errors.New("unknown backup version")
	// ErrChecksum: the body does not match the checksum.
	ErrChecksum = errors.New("checksum mismatch")
	// ErrInvalid: intact, but what it holds cannot be applied.
	ErrInvalid = errors.New("invalid backup")
)

// Error is a refused backup file: every problem found, each naming the file.
type Error struct {
	File     string
	Kind     error
	Problems []string
}

func (e *Error) Error() string {
	var b strings.Builder
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.File)
		if !strings.HasPrefix(p, ":") {
			b.WriteString(": ")
		}
		b.WriteString(p)
	}
	return b.String()
}

// Unwrap returns the kind (ErrChecksum, ...).
func (e *Error) Unwrap() error { return e.Kind }

func refuse(file string, kind error, format string, args ...any) *Error {
	return &Error{File: file, Kind: kind, Problems: []string{fmt.Sprintf(format, args...)}}
}

// Decode reads a backup file named name (for messages). It checks the
// format, the version and the checksum, then what the body holds: unique
// names, a wish for every hierarchy, and every spec with validate (the
// validation `lifeboat apply` uses; Hierarchy.Validate(nil) when nil),
// before defaults are filled. The specs come back normalized.
func Decode(name string, data []byte, validate func(*spec.Hierarchy) []spec.Problem) (*Backup, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, refuse(name, ErrNotBackup, "the file is empty: not a lifeboat backup (write one with lifeboat backup -o FILE)")
	}
	if len(data) > MaxSize {
		return nil, refuse(name, ErrNotBackup, "the file is %d bytes, more than a backup may be (%d): not a lifeboat backup", len(data), MaxSize)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		return nil, syntaxError(name, data, err)
	}
	var format string
	if err := json.Unmarshal(top["format"], &format); err != nil || format != Format {
		return nil, refuse(name, ErrNotBackup, "not a lifeboat backup: the \"format\" field is %s, want %q", shown(top["format"]), Format)
	}
	for k := range top {
		switch k {
		case "format", "version", "checksum", "body":
		default:
			return nil, refuse(name, ErrNotBackup, "unknown field %q in the backup's envelope (fields: format, version, checksum, body): the file is damaged or was edited", k)
		}
	}
	var version int
	if err := json.Unmarshal(top["version"], &version); err != nil || version < 1 {
		return nil, refuse(name, ErrVersion, "the \"version\" field is %s, not a backup version this binary knows (it reads version %d): the file is damaged or was edited", shown(top["version"]), Version)
	}
	if version > Version {
		return nil, refuse(name, ErrVersion, "backup version %d was written by a newer lifeboat (this binary reads version %d): restore it with that version or later", version, Version)
	}
	var sum string
	if err := json.Unmarshal(top["checksum"], &sum); err != nil || !validChecksum(sum) {
		return nil, refuse(name, ErrChecksum, "the \"checksum\" field is %s, want \"sha256:\" and 64 hex digits: the file is damaged or was edited", shown(top["checksum"]))
	}
	rawBody := top["body"]
	if len(rawBody) == 0 || string(rawBody) == "null" {
		return nil, refuse(name, ErrInvalid, "the backup has no \"body\": the file is damaged or was edited")
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, rawBody); err != nil {
		return nil, syntaxError(name, data, err)
	}
	if got := checksum(compact.Bytes()); got != sum {
		return nil, refuse(name, ErrChecksum, "checksum mismatch: the file says %s, its body hashes to %s: the file is damaged or was edited, and restore refuses it (use an intact copy or take a new backup)", short(sum), short(got))
	}
	var b Backup
	dec := json.NewDecoder(bytes.NewReader(rawBody))
	dec.DisallowUnknownFields() // a newer writer raises the version
	if err := dec.Decode(&b.Body); err != nil {
		return nil, refuse(name, ErrInvalid, "body: %v", err)
	}
	b.Checksum = sum
	if problems := check(&b.Body, validate); len(problems) > 0 {
		return nil, &Error{File: name, Kind: ErrInvalid, Problems: problems}
	}
	for i := range b.Hierarchies {
		b.Hierarchies[i].Normalize()
	}
	return &b, nil
}

// check reports every problem with what the body holds.
func check(b *Body, validate func(*spec.Hierarchy) []spec.Problem) []string {
	if validate == nil {
		validate = func(h *spec.Hierarchy) []spec.Problem { return h.Validate(nil) }
	}
	var ps []string
	add := func(format string, args ...any) { ps = append(ps, fmt.Sprintf(format, args...)) }
	names := map[string]int{}
	for i := range b.Hierarchies {
		h := &b.Hierarchies[i]
		for _, p := range validate(h) {
			add("body.hierarchies[%d] (%s): %s: %s", i, h.Name, p.Field, p.Message)
		}
		if j, dup := names[h.Name]; dup {
			add("body.hierarchies[%d]: hierarchy %q is also hierarchies[%d]: names must be unique", i, h.Name, j)
			continue
		}
		names[h.Name] = i
		switch w, ok := b.Wishes[h.Name]; {
		case !ok:
			add("body.wishes: no wish for hierarchy %q (want %q or %q)", h.Name, Online, Offline)
		case w != Online && w != Offline:
			add("body.wishes.%s: %q is neither %q nor %q", h.Name, w, Online, Offline)
		}
	}
	for _, n := range spec.SortedKeys(b.Wishes) {
		if _, ok := names[n]; !ok {
			add("body.wishes.%s: no hierarchy of that name in the backup", n)
		}
	}
	members := map[string]bool{}
	for i, m := range b.Members {
		if !spec.ValidName(m.Name) {
			add("body.members[%d]: %q is not a valid node name", i, m.Name)
		}
		if members[m.Name] {
			add("body.members[%d]: node %q is listed twice", i, m.Name)
		}
		members[m.Name] = true
	}
	return ps
}

func validChecksum(s string) bool {
	h, ok := strings.CutPrefix(s, "sha256:")
	if !ok || len(h) != 64 {
		return false
	}
	_, err := hex.DecodeString(h)
	return err == nil && strings.ToLower(h) == h
}

// short abbreviates a checksum for messages.
func short(sum string) string {
	if len(sum) > len("sha256:")+16 {
		return sum[:len("sha256:")+16] + "…"
	}
	return sum
}

// shown quotes a raw field for a message.
func shown(raw json.RawMessage) string {
	if len(raw) == 0 {
		return "missing"
	}
	if len(raw) > 40 {
		return string(raw[:40]) + "…"
	}
	return string(raw)
}

// syntaxError names where the JSON breaks, and says "truncated" when it
// ends early.
func syntaxError(name string, data []byte, err error) *Error {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se) && strings.Contains(se.Error(), "unexpected end"):
		return refuse(name, ErrTruncated, "the file ends early (%d bytes): it is truncated; use an intact copy", len(data))
	case errors.As(err, &se):
		line, col := position(data, se.Offset)
		return refuse(name, ErrNotBackup, ":%d:%d: not valid JSON (%v): the file is damaged or not a lifeboat backup", line, col, se)
	case errors.As(err, &te):
		return refuse(name, ErrNotBackup, "not a lifeboat backup: expected a JSON object with format, version, checksum and body")
	}
	return refuse(name, ErrNotBackup, "not a lifeboat backup: %v", err)
}

// position turns a byte offset into a line and column (1-based).
func position(data []byte, off int64) (int, int) {
	if off > int64(len(data)) {
		off = int64(len(data))
	}
	line, col := 1, 1
	for _, c := range data[:max(off-1, 0)] {
		if c == '\n' {
			line, col = line+1, 1
		} else {
			col++
		}
	}
	return line, col
}
