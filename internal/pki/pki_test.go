package pki

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/tlsid"
)

// handshake runs a TLS handshake over loopback TCP and returns the
// server's error, the client's error and the server's view of the
// connection.
//
//lint:ignore ST1008 two errors, the server's and the client's
func handshake(t *testing.T, server, client *tls.Config) (error, error, tls.ConnectionState) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	type res struct {
		err error
		cs  tls.ConnectionState
	}
	done := make(chan res, 1)
	go func() {
		conn, err := l.Accept()
		if err != nil {
			done <- res{err: err}
			return
		}
		defer conn.Close()
		srv := tls.Server(conn, server)
		err = srv.Handshake()
		if err == nil {
			_, err = io.WriteString(srv, "x")
		}
		done <- res{err: err, cs: srv.ConnectionState()}
	}()
	conn, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cli := tls.Client(conn, client)
	cerr := cli.Handshake()
	if cerr == nil {
		// TLS 1.3: the server checks the client's certificate after the
		// client's handshake is done; the first read tells.
		_, cerr = cli.Read(make([]byte, 1))
	}
	conn.Close()
	r := <-done
	return r.err, cerr, r.cs
}

// issueFiles issues a certificate for node and writes it into dir.
func issueFiles(t *testing.T, ca *CA, dir, node string) (certPath, keyPath string) {
	t.Helper()
	is, err := ca.Issue(node, []string{"127.0.0.1", "node.example"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, k, err := WriteIssued(dir, node, is)
	if err != nil {
		t.Fatal(err)
	}
	return c, k
}

func load(t *testing.T, ca *CA, dir, node string) *Node {
	t.Helper()
	caFile := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(caFile, ca.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	c, k := issueFiles(t, ca, dir, node)
	n, err := LoadNode(caFile, c, k, node)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestDeriveCAIsDeterministicPerKey(t *testing.T) {
	a1, err := DeriveCA([]byte("key-one-key-one-key-one-key-one!"))
	if err != nil {
		t.Fatal(err)
	}
	a2, _ := DeriveCA([]byte("key-one-key-one-key-one-key-one!"))
	b, _ := DeriveCA([]byte("key-two-key-two-key-two-key-two!"))
	if KeyID(a1.Cert) != KeyID(a2.Cert) {
		t.Fatal("same cluster key gave different CA keys")
	}
	if KeyID(a1.Cert) == KeyID(b.Cert) {
		t.Fatal("different cluster keys gave the same CA key")
	}
	if _, err := DeriveCA(nil); err == nil {
		t.Fatal("empty key accepted")
	}
	// A certificate issued by one derivation verifies against another
	// (each machine derives its own copy of the CA certificate).
	dir := t.TempDir()
	n1 := load(t, a1, dir, "node1")
	n2 := load(t, a2, t.TempDir(), "node2")
	if s, c, _ := handshake(t, n1.ServerConfig(true), n2.ClientConfig()); s != nil || c != nil {
		t.Fatalf("nodes of two derivations of one CA could not talk: server %v, client %v", s, c)
	}
}

func TestIssueNamesTheNode(t *testing.T) {
	ca, err := NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	is, err := ca.Issue("node-1", []string{"10.0.0.5", "node1.internal", " "}, 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if name, ok := NodeName(is.Cert); !ok || name != "node-1" {
		t.Fatalf("NodeName = %q, %v; want node-1", name, ok)
	}
	if len(is.Cert.URIs) != 1 || is.Cert.URIs[0].String() != URIPrefix+"node-1" {
		t.Fatalf("URI SANs = %v", is.Cert.URIs)
	}
	if len(is.Cert.IPAddresses) != 1 || is.Cert.IPAddresses[0].String() != "10.0.0.5" || len(is.Cert.DNSNames) != 1 || is.Cert.DNSNames[0] != "node1.internal" {
		t.Fatalf("host SANs: IPs %v, DNS %v", is.Cert.IPAddresses, is.Cert.DNSNames)
	}
	if d := time.Until(is.Cert.NotAfter); d < 47*time.Hour || d > 48*time.Hour {
		t.Fatalf("valid for %v more, want about 48h", d)
	}
	if is.Cert.IsCA {
		t.Fatal("a node certificate is a CA")
	}
	for _, bad := range []string{"", "a/b", "node 1", strings.Repeat("n", 64)} {
		if _, err := ca.Issue(bad, nil, 0); err == nil {
			t.Errorf("node name %q accepted", bad)
		}
	}
	if _, err := ca.Issue("n", nil, -time.Hour); err == nil {
		t.Error("negative validity accepted")
	}
}

func TestWriteAndLoadCA(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	ca, err := NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteCA(dir, ca); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, CAKeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("ca.key: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	back, err := LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if KeyID(back.Cert) != KeyID(ca.Cert) || !back.Key.Equal(ca.Key) {
		t.Fatal("loaded CA differs from the written one")
	}
	if err := WriteCA(dir, ca); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("second ca init over the first: %v; want a refusal", err)
	}
	if err := os.Chmod(filepath.Join(dir, CAKeyFile), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCA(dir); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("world-readable CA key: %v; want a refusal", err)
	}
}

func TestLoadNodeChecks(t *testing.T) {
	dir := t.TempDir()
	ca, _ := NewCA("test CA")
	other, _ := NewCA("other CA")
	caFile := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(caFile, ca.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	c1, k1 := issueFiles(t, ca, dir, "node1")
	c2, k2 := issueFiles(t, ca, dir, "node2")
	foreign, foreignKey := issueFiles(t, other, filepath.Join(dir, "other"), "node1")
	if _, err := LoadNode(caFile, c1, k1, "node1"); err != nil {
		t.Fatalf("good files refused: %v", err)
	}
	cases := []struct {
		name                string
		ca, cert, key, node string
		want                string
		chmod               string
	}{
		{"another node's certificate", caFile, c2, k2, "node1", "node node2's certificate, not node1's", ""},
		{"key of another certificate", caFile, c1, k2, "node1", "is not the key of", ""},
		{"certificate of another CA", caFile, foreign, foreignKey, "node1", "not a node certificate of this cluster's CA", ""},
		{"node certificate as CA", c1, c1, k1, "node1", "not a CA certificate", ""},
		{"missing file", caFile, filepath.Join(dir, "nope.crt"), k1, "node1", "no such file", ""},
		{"key readable by others", caFile, c1, k1, "node1", "readable by group or others", k1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.chmod != "" {
				if err := os.Chmod(tc.chmod, 0o640); err != nil {
					t.Fatal(err)
				}
				defer os.Chmod(tc.chmod, 0o600)
			}
			_, err := LoadNode(tc.ca, tc.cert, tc.key, tc.node)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v; want %q", err, tc.want)
			}
		})
	}
}

func TestNodeHandshakes(t *testing.T) {
	ca, _ := NewCA("test CA")
	other, _ := NewCA("other CA")
	n1 := load(t, ca, t.TempDir(), "node1")
	n2 := load(t, ca, t.TempDir(), "node2")
	outsider := load(t, other, t.TempDir(), "node2")
	derived, _ := tlsid.Derive([]byte("cluster-key-cluster-key-cluster!"))

	s, c, cs := handshake(t, n1.ServerConfig(true), n2.ClientConfig())
	if s != nil || c != nil {
		t.Fatalf("nodes could not talk: server %v, client %v", s, c)
	}
	if name, err := n1.PeerNode(&cs); err != nil || name != "node2" {
		t.Fatalf("PeerNode = %q, %v; want node2", name, err)
	}
	if s, _, _ := handshake(t, n1.ServerConfig(true), outsider.ClientConfig()); s == nil {
		t.Fatal("server accepted a certificate of another CA")
	}
	if s, _, _ := handshake(t, n1.ServerConfig(false), outsider.ClientConfig()); s == nil {
		t.Fatal("API accepted a certificate of another CA")
	}
	if s, _, _ := handshake(t, n1.ServerConfig(true), derived.ClientConfig()); s == nil {
		t.Fatal("server accepted the key-derived certificate")
	}
	if _, c, _ := handshake(t, outsider.ServerConfig(false), n1.ClientConfig()); c == nil || !strings.Contains(c.Error(), "not a node certificate") {
		t.Fatalf("client accepted a server of another CA: %v", c)
	}
	// Dialling a named node: the server must be that node.
	if s, c, _ := handshake(t, n1.ServerConfig(true), n2.ClientConfigFor("node1")); s != nil || c != nil {
		t.Fatalf("dialling node1 by name: server %v, client %v", s, c)
	}
	if _, c, _ := handshake(t, n1.ServerConfig(true), n2.ClientConfigFor("node3")); c == nil || !strings.Contains(c.Error(), "is node node1's") {
		t.Fatalf("node1 answered in node3's place: %v", c)
	}
	noCert := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}
	if s, _, _ := handshake(t, n1.ServerConfig(true), noCert); s == nil {
		t.Fatal("raft server accepted a client without a certificate")
	}
	s, c, cs = handshake(t, n1.ServerConfig(false), noCert)
	if s != nil || c != nil {
		t.Fatalf("API refused a client without a certificate (the CLI): %v %v", s, c)
	}
	if _, err := n1.PeerNode(&cs); err == nil {
		t.Fatal("PeerNode named a node for a client without a certificate")
	}
	// The CLI pins the node's own certificate.
	pinned, err := tlsid.PinnedClientConfig(n1.Fingerprint())
	if err != nil {
		t.Fatal(err)
	}
	if s, c, _ := handshake(t, n1.ServerConfig(false), pinned); s != nil || c != nil {
		t.Fatalf("pinned CLI refused: %v %v", s, c)
	}
	if n1.ClusterID() != n2.ClusterID() || n1.ClusterID() == outsider.ClusterID() {
		t.Fatal("ClusterID does not name the CA")
	}
}

// An operator certificate names the operator and role, serves only as a
// client, and is no node's.
func TestIssueOperator(t *testing.T) {
	ca, err := NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	is, err := ca.IssueOperator("anna", "operate", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if name, role, ok := OperatorOf(is.Cert); !ok || name != "anna" || role != "operate" {
		t.Errorf("OperatorOf = %q %q %v", name, role, ok)
	}
	if _, ok := NodeName(is.Cert); ok {
		t.Error("an operator certificate names a node")
	}
	for _, u := range is.Cert.ExtKeyUsage {
		if u == x509.ExtKeyUsageServerAuth {
			t.Error("an operator certificate may serve")
		}
	}
	for _, bad := range [][2]string{{"anna", "root"}, {"anna", ""}, {"b/d", "read"}} {
		if _, err := ca.IssueOperator(bad[0], bad[1], time.Hour); err == nil {
			t.Errorf("IssueOperator(%q, %q) accepted", bad[0], bad[1])
		}
	}
	node, err := ca.Issue("n1", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, ok := OperatorOf(node.Cert); ok {
		t.Error("a node certificate names an operator")
	}
}
