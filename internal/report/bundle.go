package report

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"regexp"
	"sort"
	"strings"
	"time"
)

// Format is the bundle layout's version, in the manifest.
const Format = 1

// Bounds of a bundle's parts.
const (
	// MaxPart bounds one file (a longer one is cut and marked truncated).
	MaxPart = 4 << 20
	// MaxNodeFiles bounds how many files one node may contribute.
	MaxNodeFiles = 16
	// MaxBundle bounds the whole bundle, uncompressed, when it is read.
	MaxBundle = 256 << 20
)

// ManifestName is the manifest's name inside the bundle's directory.
const ManifestName = "manifest.json"

// Manifest describes a bundle: the first file of its directory.
type Manifest struct {
	Format  int       `json:"format"`
	Created time.Time `json:"created"`
	// RequestedBy names who asked: "root on node1 (local socket)" or "API
	// token from 10.0.0.5:51234".
	RequestedBy string `json:"requested_by"`
	// Node is the agent that assembled the bundle, Version its version.
	Node    string `json:"node"`
	Version string `json:"version"`
	// Cluster identifies the cluster: the start of its certificate's
	// fingerprint (the cluster has no name of its own).
	Cluster string `json:"cluster"`
	// Dir is the directory every file of the bundle is under.
	Dir   string      `json:"dir"`
	Nodes []NodeEntry `json:"nodes"`
	Files []FileEntry `json:"files"`
}

// NodeEntry says whether a node's parts are in the bundle, and if not why.
type NodeEntry struct {
	Name    string `json:"name"`
	Reached bool   `json:"reached"`
	Version string `json:"version,omitempty"`
	Error   string `json:"error,omitempty"`
}

// FileEntry is one file of the bundle, named relative to Dir.
type FileEntry struct {
	Name      string `json:"name"`
	Size      int64  `json:"size"`
	SHA256    string `json:"sha256"`
	Truncated bool   `json:"truncated,omitempty"`
}

// File is one part: a name relative to the bundle's directory and its
// content.
type File struct {
	Name      string `json:"name"`
	Data      []byte `json:"data"`
	Truncated bool   `json:"truncated,omitempty"`
}

// NodePart is what one node contributes (GET /v1/internal/report).
type NodePart struct {
	Node    string `json:"node"`
	Version string `json:"version"`
	Files   []File `json:"files"`
}

// Unreached returns the nodes whose parts are missing.
func (m Manifest) Unreached() []NodeEntry {
	var out []NodeEntry
	for _, n := range m.Nodes {
		if !n.Reached {
			out = append(out, n)
		}
	}
	return out
}

// Limit cuts data to max bytes, marking the file truncated.
func Limit(name string, data []byte, max int) File {
	if len(data) <= max {
		return File{Name: name, Data: data}
	}
	return File{Name: name, Data: data[:max], Truncated: true}
}

// Tail keeps the newest whole lines of data (lines end with '\n') that
// fit in max bytes, marking the file truncated when any were dropped.
func Tail(name string, data []byte, max int) File {
	if len(data) <= max {
		return File{Name: name, Data: data}
	}
	cut := data[len(data)-max:]
	if data[len(data)-max-1] != '\n' {
		// drop the partial first line
		if i := bytes.IndexByte(cut, '\n'); i >= 0 {
			cut = cut[i+1:]
		} else {
			cut = nil
		}
	}
	return File{Name: name, Data: cut, Truncated: true}
}

var partName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// CheckPart validates a node's contribution before it goes into a bundle:
// the node named, at most MaxNodeFiles files with plain names, each
// within MaxPart.
func CheckPart(p NodePart, node string) error {
	if p.Node != node {
		return fmt.Errorf("answered as node %q", p.Node)
	}
	if len(p.Files) > MaxNodeFiles {
		return fmt.Errorf("sent %d files, more than the %d allowed", len(p.Files), MaxNodeFiles)
	}
	seen := map[string]bool{}
	for _, f := range p.Files {
		if !partName.MatchString(f.Name) || seen[f.Name] {
			return fmt.Errorf("sent a file named %q (a plain name, once)", f.Name)
		}
		seen[f.Name] = true
		if len(f.Data) > MaxPart {
			return fmt.Errorf("sent %s with %d bytes, more than %d", f.Name, len(f.Data), MaxPart)
		}
	}
	return nil
}

// Write writes the bundle as a gzipped tar: the directory m.Dir, the
// manifest (with m.Files filled in from files) first, then every file, all
// mode 0600. It returns the manifest as written.
func Write(w io.Writer, m Manifest, files []File) (Manifest, error) {
	if m.Format == 0 {
		m.Format = Format
	}
	if !partName.MatchString(m.Dir) {
		return m, fmt.Errorf("write bundle: directory name %q is not a plain name", m.Dir)
	}
	m.Files = nil
	seen := map[string]bool{ManifestName: true}
	for _, f := range files {
		if err := checkName(f.Name); err != nil {
			return m, fmt.Errorf("write bundle: %w", err)
		}
		if seen[f.Name] {
			return m, fmt.Errorf("write bundle: %s twice", f.Name)
		}
		seen[f.Name] = true
		sum := sha256.Sum256(f.Data)
		m.Files = append(m.Files, FileEntry{Name: f.Name, Size: int64(len(f.Data)), SHA256: hex.EncodeToString(sum[:]), Truncated: f.Truncated})
	}
	sort.Slice(m.Nodes, func(i, j int) bool { return m.Nodes[i].Name < m.Nodes[j].Name })
	man, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return m, fmt.Errorf("write bundle: encode manifest: %w", err)
	}
	zw := gzip.NewWriter(w)
	tw := tar.NewWriter(zw)
	mod := m.Created
	if mod.IsZero() {
		mod = time.Now()
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: m.Dir + "/", Mode: 0o700, ModTime: mod}); err != nil {
		return m, fmt.Errorf("write bundle: %w", err)
	}
	put := func(name string, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: m.Dir + "/" + name, Mode: 0o600, Size: int64(len(data)), ModTime: mod}); err != nil {
			return fmt.Errorf("write bundle: %s: %w", name, err)
		}
		if _, err := tw.Write(data); err != nil {
			return fmt.Errorf("write bundle: %s: %w", name, err)
		}
		return nil
	}
	if err := put(ManifestName, append(man, '\n')); err != nil {
		return m, err
	}
	dirs := map[string]bool{}
	for _, f := range files {
		if d := path.Dir(f.Name); d != "." && !dirs[d] {
			for _, sub := range parents(d) {
				if !dirs[sub] {
					dirs[sub] = true
					if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: m.Dir + "/" + sub + "/", Mode: 0o700, ModTime: mod}); err != nil {
						return m, fmt.Errorf("write bundle: %w", err)
					}
				}
			}
		}
		if err := put(f.Name, f.Data); err != nil {
			return m, err
		}
	}
	if err := tw.Close(); err != nil {
		return m, fmt.Errorf("write bundle: %w", err)
	}
	if err := zw.Close(); err != nil {
		return m, fmt.Errorf("write bundle: %w", err)
	}
	return m, nil
}

// parents lists d and the directories above it, outermost first:
// nodes/n1 -> nodes, nodes/n1.
func parents(d string) []string {
	var out []string
	for ; d != "." && d != "/"; d = path.Dir(d) {
		out = append([]string{d}, out...)
	}
	return out
}

// checkName accepts a relative path of plain names (nodes/node1/logs.txt).
func checkName(name string) error {
	if name == "" || path.Clean(name) != name || strings.HasPrefix(name, "/") || strings.HasPrefix(name, "..") {
		return fmt.Errorf("file name %q is not a plain relative path", name)
	}
	for _, p := range strings.Split(name, "/") {
		if !partName.MatchString(p) {
			return fmt.Errorf("file name %q: %q is not a plain name", name, p)
		}
	}
	return nil
}

// Read reads a bundle and checks it against its manifest: every file
// listed is there with its size and checksum, nothing else is, and
// nothing lies outside the bundle's directory. At most MaxBundle bytes are
// read. The files are returned by their names relative to the directory.
func Read(r io.Reader) (Manifest, map[string][]byte, error) {
	var m Manifest
	zr, err := gzip.NewReader(r)
	if err != nil {
		return m, nil, fmt.Errorf("read bundle: not a gzip file: %w", err)
	}
	defer zr.Close()
	tr := tar.NewReader(io.LimitReader(zr, MaxBundle))
	files := map[string][]byte{}
	var dir string
	var total int64
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return m, nil, fmt.Errorf("read bundle: %w", err)
		}
		if h.Typeflag == tar.TypeDir {
			continue
		}
		if h.Typeflag != tar.TypeReg {
			return m, nil, fmt.Errorf("read bundle: %s is not a regular file", h.Name)
		}
		d, name, ok := strings.Cut(h.Name, "/")
		if !ok || dir != "" && d != dir {
			return m, nil, fmt.Errorf("read bundle: %s is outside the bundle's directory", h.Name)
		}
		dir = d
		if err := checkName(name); err != nil {
			return m, nil, fmt.Errorf("read bundle: %w", err)
		}
		if total += h.Size; total > MaxBundle {
			return m, nil, fmt.Errorf("read bundle: more than %d bytes", MaxBundle)
		}
		b, err := io.ReadAll(io.LimitReader(tr, h.Size))
		if err != nil {
			return m, nil, fmt.Errorf("read bundle: %s: %w", name, err)
		}
		files[name] = b
	}
	mb, ok := files[ManifestName]
	if !ok {
		return m, nil, fmt.Errorf("read bundle: no %s", ManifestName)
	}
	if err := json.Unmarshal(mb, &m); err != nil {
		return m, nil, fmt.Errorf("read bundle: %s: %w", ManifestName, err)
	}
	if m.Dir != dir {
		return m, nil, fmt.Errorf("read bundle: the manifest names directory %q, the files are under %q", m.Dir, dir)
	}
	listed := map[string]bool{ManifestName: true}
	for _, f := range m.Files {
		listed[f.Name] = true
		b, ok := files[f.Name]
		if !ok {
			return m, nil, fmt.Errorf("read bundle: %s is listed in the manifest but missing", f.Name)
		}
		sum := sha256.Sum256(b)
		if int64(len(b)) != f.Size || hex.EncodeToString(sum[:]) != f.SHA256 {
			return m, nil, fmt.Errorf("read bundle: %s does not match its checksum in the manifest", f.Name)
		}
	}
	for name := range files {
		if !listed[name] {
			return m, nil, fmt.Errorf("read bundle: %s is not listed in the manifest", name)
		}
	}
	delete(files, ManifestName)
	return m, files, nil
}
