package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/pki"
)

// tlsFiles issues a CA and certificates for node1 and node2 into dir.
func tlsFiles(t *testing.T, dir string) {
	t.Helper()
	ca, err := pki.NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteCA(dir, ca); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"node1", "node2"} {
		is, err := ca.Issue(n, nil, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := pki.WriteIssued(dir, n, is); err != nil {
			t.Fatal(err)
		}
	}
}

func TestLoadAgentTLS(t *testing.T) {
	dir := t.TempDir()
	tlsFiles(t, dir)
	write := func(section string) string {
		path := filepath.Join(dir, "agent.yaml")
		if err := os.WriteFile(path, []byte(goodAgent+section), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	// Relative paths are resolved against the config's directory.
	a, err := LoadAgent(write("tls:\n  ca: ca.crt\n  cert: node1.crt\n  key: node1.key\n"))
	if err != nil {
		t.Fatalf("good tls section refused: %v", err)
	}
	if !a.TLS.Enabled() || a.TLS.Cert != filepath.Join(dir, "node1.crt") {
		t.Fatalf("tls = %+v", a.TLS)
	}
	if _, err := pki.LoadNode(a.TLS.CA, a.TLS.Cert, a.TLS.Key, a.Node); err != nil {
		t.Fatalf("the loaded section does not load: %v", err)
	}

	cases := []struct {
		name, section, field, want string
		setup                      func()
	}{
		{"partial section", "tls:\n  cert: node1.crt\n", "tls.ca", "required with the rest of the tls section", nil},
		{"another node's certificate", "tls:\n  ca: ca.crt\n  cert: node2.crt\n  key: node2.key\n", "tls.cert", "node node2's certificate, not node1's", nil},
		{"key of another node", "tls:\n  ca: ca.crt\n  cert: node1.crt\n  key: node2.key\n", "tls.cert", "is not the key of", nil},
		{"node certificate as CA", "tls:\n  ca: node2.crt\n  cert: node1.crt\n  key: node1.key\n", "tls.ca", "is not a CA certificate", nil},
		{"missing file", "tls:\n  ca: ca.crt\n  cert: nope.crt\n  key: node1.key\n", "tls.cert", filepath.Join(dir, "nope.crt"), nil},
		{"key readable by others", "tls:\n  ca: ca.crt\n  cert: node1.crt\n  key: node1.key\n", "tls.key", "readable by group or others",
			func() { _ = os.Chmod(filepath.Join(dir, "node1.key"), 0o644) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup()
				defer os.Chmod(filepath.Join(dir, "node1.key"), 0o600)
			}
			_, err := LoadAgent(write(tc.section))
			e := find(t, asErrors(t, err), tc.field)
			if !strings.Contains(e.Message, tc.want) || e.Line == 0 {
				t.Fatalf("%s: %v; want %q with a line", tc.field, e, tc.want)
			}
		})
	}
}
