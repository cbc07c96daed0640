package report

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/config"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

const (
	clusterKey = "q8hQ0wJ0pV3m1n3Qz5n0H1kq4o2X9yC7b6a5Z4Y3X2W="
	proxyPass  = "pr0xy-Pa55word"
	queryTok   = "qu3ry-t0ken-value"
	dbPass     = "db-pa55w0rd-in-env"
	cmdPass    = "cmd-pa55w0rd-inline"
	awsSecret  = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
	akid       = "AKIAIOSFODNN7EXAMPLE"
	apiToken   = "0123456789abcdef0123456789abcdef-api-token"
)

// The agent config with every kind of secret it can hold: the inline
// cluster key, a proxy URL with a password, an endpoint with a token in its
// query. Redacted by structure alone (no known values), none is left, and
// what a support engineer needs stays (addresses, paths, timing).
func TestRedactAgentConfigByStructure(t *testing.T) {
	yaml := `node: n1
data_dir: /var/lib/lifeboat
api:
  token_file: /etc/lifeboat/api.token
cluster:
  key: ` + clusterKey + `
  nodes:
    - {name: n1, raft: 10.0.0.1:7101, gossip: 10.0.0.1:7102, api: 10.0.0.1:7100}
aws:
  https_proxy: http://alice:` + proxyPass + `@proxy.corp:3128
  endpoints:
    ec2: https://vpce.example/?X-Amz-Security-Token=` + queryTok + `&region=eu
`
	cfg, err := config.ParseAgent("agent.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	out, err := NewRedactor().JSON(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{clusterKey, proxyPass, queryTok} {
		if bytes.Contains(out, []byte(s)) {
			t.Errorf("redacted config still holds %q:\n%s", s, out)
		}
	}
	for _, keep := range []string{"10.0.0.1:7101", "/etc/lifeboat/api.token", "alice", "proxy.corp:3128", "region=eu", "/var/lib/lifeboat"} {
		if !bytes.Contains(out, []byte(keep)) {
			t.Errorf("redacted config lost %q:\n%s", keep, out)
		}
	}
}

// Secrets in hierarchies (app kit env parameters, commands) and in any
// shape of structure: nested maps, lists, camelCase names, numbers.
func TestRedactSpecsAndNestedStructures(t *testing.T) {
	h := spec.Hierarchy{Name: "key-store", Nodes: []string{"n1"}, Resources: []spec.Resource{{Name: "db", Type: "app", Params: map[string]string{
		"env.DB_PASSWORD": dbPass,
		"restore":         "PGPASSWORD=" + cmdPass + " pg_ctl start --auth-token '" + queryTok + "'",
		"quickcheck":      "curl -H 'Authorization: Bearer " + apiToken + "' https://u:" + proxyPass + "@db.local/health",
		"remove":          "AWS_SECRET_ACCESS_KEY=" + awsSecret + " aws --profile x ec2 stop # " + akid,
	}}}}
	v := map[string]any{
		"hierarchies": map[string]spec.Hierarchy{"key-store": h},
		"creds":       []any{map[string]any{"SecretAccessKey": awsSecret, "AccessKeyId": akid, "Expiration": "2030-01-01"}},
		"headers":     map[string]string{"X-Custom": "h3ader-val"},
		"pin":         map[string]any{"apiKey": 123456789, "timeout": 5},
		"pem":         "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIB0zc2VjcmV0\n-----END EC PRIVATE KEY-----",
	}
	out, err := NewRedactor().JSON(v)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{dbPass, cmdPass, queryTok, apiToken, proxyPass, awsSecret, akid, "h3ader-val", "123456789", "MHcCAQEEIB0zc2VjcmV0"} {
		if bytes.Contains(out, []byte(s)) {
			t.Errorf("redacted output still holds %q:\n%s", s, out)
		}
	}
	// a map keyed by user data is walked, not blanked; plain values stay
	var back map[string]any
	if err := json.Unmarshal(out, &back); err != nil {
		t.Fatal(err)
	}
	hs := back["hierarchies"].(map[string]any)
	if _, ok := hs["key-store"].(map[string]any); !ok {
		t.Fatalf("hierarchy key-store blanked: %s", out)
	}
	for _, keep := range []string{"pg_ctl start", "db.local/health", `"timeout": 5`, "X-Custom", "aws --profile x ec2 stop"} {
		if !bytes.Contains(out, []byte(keep)) {
			t.Errorf("redacted output lost %q:\n%s", keep, out)
		}
	}
}

// The commands doctor prints to reproduce a check stay runnable: shell
// variables and command substitutions are not secrets, a TTL is not.
func TestRedactKeepsReproductionCommands(t *testing.T) {
	cmd := `TOKEN=$(curl -sS -X PUT http://169.254.169.254/latest/api/token -H 'X-aws-ec2-metadata-token-ttl-seconds: 21600') && curl -sS -H "X-aws-ec2-metadata-token: $TOKEN" http://169.254.169.254/latest/meta-data/instance-id`
	if got := NewRedactor().String(cmd); got != cmd {
		t.Fatalf("changed:\n%s\n%s", cmd, got)
	}
	if got := NewRedactor().String(`curl -H "X-aws-ec2-metadata-token: AQAEAKx1c2VjcmV0dG9rZW4="`); strings.Contains(got, "AQAEAKx1c2VjcmV0dG9rZW4=") {
		t.Fatalf("a literal token kept: %s", got)
	}
}

// Known values go wherever they appear, in any file, and Leaks finds them.
func TestRedactKnownValues(t *testing.T) {
	r := NewRedactor(clusterKey, apiToken, "short", "")
	text := "msg=\"joined with key " + clusterKey + "\" peer=" + apiToken + " short"
	got := r.String(text)
	if strings.Contains(got, clusterKey) || strings.Contains(got, apiToken) || !strings.Contains(got, "short") {
		t.Fatalf("String: %q", got)
	}
	b := r.Bytes([]byte(text))
	if r.Leaks(b) != 0 || r.Leaks([]byte(text)) != 2 {
		t.Fatalf("Bytes left %d leaks: %q", r.Leaks(b), b)
	}
}

func TestSecretName(t *testing.T) {
	for name, want := range map[string]bool{
		"key": true, "cluster.key": true, "token": true, "SecretAccessKey": true, "env.DB_PASSWORD": true, "apiKey": true,
		"Authorization": true, "headers": true, "credentials": true,
		"key_file": false, "token_file": false, "headers_file": false, "name": false, "monkey": false, "tokenizer": false,
		"nodes": false, "raft": false, "keyboard": false, "X-aws-ec2-metadata-token-ttl-seconds": false, "secret_name": false,
	} {
		if got := SecretName(name); got != want {
			t.Errorf("SecretName(%q) = %v, want %v", name, got, want)
		}
	}
}

func sampleFiles() []File {
	return []File{
		{Name: "status.json", Data: []byte(`{"leader":"n1"}`)},
		{Name: "nodes/n1/logs.txt", Data: []byte("line\n"), Truncated: true},
		{Name: "nodes/n1/events.jsonl", Data: []byte(`{"seq":1}` + "\n")},
	}
}

// A bundle is one directory: the manifest first, listing every other file
// with its size and SHA-256, files mode 0600; Read checks all of it.
func TestBundleLayoutAndChecksums(t *testing.T) {
	var buf bytes.Buffer
	when := time.Date(2026, 12, 2, 18, 0, 0, 0, time.UTC)
	m, err := Write(&buf, Manifest{Created: when, Node: "n1", Dir: "lifeboat-report-x", RequestedBy: "root on n1 (local socket)",
		Nodes: []NodeEntry{{Name: "n2", Error: "connection refused"}, {Name: "n1", Reached: true, Version: "1.0"}}}, sampleFiles())
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Files) != 3 || m.Format != Format {
		t.Fatalf("manifest %+v", m)
	}
	// raw layout
	zr, err := gzip.NewReader(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var names []string
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		names = append(names, h.Name)
		if h.Typeflag == tar.TypeReg && h.Mode != 0o600 || h.Typeflag == tar.TypeDir && h.Mode != 0o700 {
			t.Errorf("%s has mode %o", h.Name, h.Mode)
		}
	}
	want := "lifeboat-report-x/ lifeboat-report-x/manifest.json lifeboat-report-x/status.json lifeboat-report-x/nodes/ lifeboat-report-x/nodes/n1/ lifeboat-report-x/nodes/n1/logs.txt lifeboat-report-x/nodes/n1/events.jsonl"
	if strings.Join(names, " ") != want {
		t.Fatalf("entries %v, want %s", names, want)
	}
	got, files, err := Read(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if string(files["nodes/n1/logs.txt"]) != "line\n" || len(files) != 3 {
		t.Fatalf("files %v", files)
	}
	if got.Nodes[0].Name != "n1" || !got.Nodes[0].Reached || len(got.Unreached()) != 1 || got.Unreached()[0].Error != "connection refused" {
		t.Fatalf("nodes %+v", got.Nodes)
	}
	sum := sha256.Sum256([]byte(`{"leader":"n1"}`))
	if !got.Files[1].Truncated || got.Files[0].Name != "status.json" || got.Files[0].SHA256 != hex.EncodeToString(sum[:]) || got.Files[0].Size != 15 {
		t.Fatalf("files %+v", got.Files)
	}
}

// rewrite builds a bundle from raw entries, to feed Read what Write never
// writes.
func rewrite(t *testing.T, entries map[string][]byte, order []string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, n := range order {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: n, Mode: 0o600, Size: int64(len(entries[n]))}); err != nil {
			t.Fatal(err)
		}
		_, _ = tw.Write(entries[n])
	}
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

func TestReadRejectsTamperedBundles(t *testing.T) {
	var buf bytes.Buffer
	if _, err := Write(&buf, Manifest{Dir: "r"}, sampleFiles()); err != nil {
		t.Fatal(err)
	}
	_, files, err := Read(&buf)
	if err != nil {
		t.Fatal(err)
	}
	var m Manifest
	buf.Reset()
	m, _ = Write(&buf, Manifest{Dir: "r"}, sampleFiles())
	man, _ := json.Marshal(m)
	base := map[string][]byte{"r/manifest.json": man}
	order := []string{"r/manifest.json"}
	for n, b := range files {
		base["r/"+n] = b
		order = append(order, "r/"+n)
	}
	cases := map[string]func(map[string][]byte, []string) []string{
		"changed byte": func(e map[string][]byte, o []string) []string {
			e["r/status.json"] = []byte(`{"leader":"n2"}`)
			return o
		},
		"missing file": func(e map[string][]byte, o []string) []string { return o[:len(o)-1] },
		"extra file": func(e map[string][]byte, o []string) []string {
			e["r/extra.txt"] = []byte("x")
			return append(o, "r/extra.txt")
		},
		"escape": func(e map[string][]byte, o []string) []string {
			e["r/../etc/passwd"] = []byte("x")
			return append(o, "r/../etc/passwd")
		},
		"two dirs": func(e map[string][]byte, o []string) []string {
			e["s/status.json"] = []byte("x")
			return append(o, "s/status.json")
		},
	}
	for name, mutate := range cases {
		e := map[string][]byte{}
		for k, v := range base {
			e[k] = v
		}
		o := mutate(e, append([]string(nil), order...))
		if _, _, err := Read(bytes.NewReader(rewrite(t, e, o))); err == nil {
			t.Errorf("%s: Read accepted it", name)
		}
	}
	if _, _, err := Read(bytes.NewReader(rewrite(t, base, order))); err != nil {
		t.Fatalf("untouched copy: %v", err)
	}
	if _, err := Write(&bytes.Buffer{}, Manifest{Dir: "r"}, []File{{Name: "../x"}}); err == nil {
		t.Error("Write took a file name outside its directory")
	}
}

func TestPartBounds(t *testing.T) {
	f := Tail("events.jsonl", []byte("aaaa\nbbbb\ncccc\n"), 12)
	if string(f.Data) != "bbbb\ncccc\n" || !f.Truncated {
		t.Fatalf("Tail: %q %v", f.Data, f.Truncated)
	}
	f = Tail("events.jsonl", []byte("aaaa\nbbbb\ncccc\n"), 10)
	if string(f.Data) != "bbbb\ncccc\n" || !f.Truncated {
		t.Fatalf("Tail: %q %v", f.Data, f.Truncated)
	}
	if f := Tail("x", []byte("ab\n"), 10); f.Truncated || string(f.Data) != "ab\n" {
		t.Fatalf("Tail under the bound: %+v", f)
	}
	if f := Limit("x", bytes.Repeat([]byte("z"), 100), 10); len(f.Data) != 10 || !f.Truncated {
		t.Fatalf("Limit: %+v", f)
	}
	ok := NodePart{Node: "n1", Files: []File{{Name: "logs.txt"}}}
	if err := CheckPart(ok, "n1"); err != nil {
		t.Fatal(err)
	}
	bad := []NodePart{
		{Node: "n2", Files: ok.Files},
		{Node: "n1", Files: []File{{Name: "../logs.txt"}}},
		{Node: "n1", Files: []File{{Name: "a"}, {Name: "a"}}},
		{Node: "n1", Files: []File{{Name: "big", Data: make([]byte, MaxPart+1)}}},
		{Node: "n1", Files: make([]File, MaxNodeFiles+1)},
	}
	for i, p := range bad {
		if err := CheckPart(p, "n1"); err == nil {
			t.Errorf("bad part %d accepted", i)
		}
	}
}
