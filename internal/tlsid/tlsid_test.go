package tlsid

import (
	"crypto/tls"
	"io"
	"net"
	"strings"
	"testing"
)

func TestDeriveIsDeterministicPerKey(t *testing.T) {
	a1, err := Derive([]byte("key-one-key-one-key-one-key-one!"))
	if err != nil {
		t.Fatal(err)
	}
	a2, _ := Derive([]byte("key-one-key-one-key-one-key-one!"))
	b, _ := Derive([]byte("key-two-key-two-key-two-key-two!"))
	if a1.Fingerprint() != a2.Fingerprint() {
		t.Fatal("same key gave different identities")
	}
	if a1.Fingerprint() == b.Fingerprint() {
		t.Fatal("different keys gave the same identity")
	}
	if _, err := Derive(nil); err == nil {
		t.Fatal("empty key accepted")
	}
}

// handshake runs a TLS handshake over a loopback TCP connection and
// returns the server's and the client's error.
func handshake(server, client *tls.Config) (error, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err, err
	}
	defer l.Close()
	errc := make(chan error, 1)
	go func() {
		conn, err := l.Accept()
		if err != nil {
			errc <- err
			return
		}
		defer conn.Close()
		srv := tls.Server(conn, server)
		err = srv.Handshake()
		if err == nil {
			_, err = io.WriteString(srv, "x")
		}
		errc <- err
	}()
	conn, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		return err, err
	}
	defer conn.Close()
	cli := tls.Client(conn, client)
	cerr := cli.Handshake()
	if cerr == nil {
		// TLS 1.3 servers check the client's certificate after the
		// client's handshake is done: the first read tells.
		_, cerr = cli.Read(make([]byte, 1))
	}
	conn.Close()
	return <-errc, cerr
}

func TestMutualPinning(t *testing.T) {
	member, _ := Derive([]byte("cluster-key-cluster-key-cluster!"))
	outsider, _ := Derive([]byte("another-key-another-key-another!"))

	if s, c := handshake(member.ServerConfig(true), member.ClientConfig()); s != nil || c != nil {
		t.Fatalf("members could not talk: server %v, client %v", s, c)
	}
	if s, _ := handshake(member.ServerConfig(true), outsider.ClientConfig()); s == nil {
		t.Fatal("raft server accepted an outsider's certificate")
	}
	if _, c := handshake(outsider.ServerConfig(true), member.ClientConfig()); c == nil || !strings.Contains(c.Error(), "not a member") {
		t.Fatalf("member accepted an outsider server: %v", c)
	}
	noCert := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}
	if s, _ := handshake(member.ServerConfig(true), noCert); s == nil {
		t.Fatal("raft server accepted a client without a certificate")
	}
	// the API accepts a client without a certificate (the CLI) ...
	if s, c := handshake(member.ServerConfig(false), noCert); s != nil || c != nil {
		t.Fatalf("API refused a client without a certificate: %v %v", s, c)
	}
	// ... but not one with a wrong certificate
	if s, _ := handshake(member.ServerConfig(false), outsider.ClientConfig()); s == nil {
		t.Fatal("API accepted an outsider's certificate")
	}
}

func TestPinnedClient(t *testing.T) {
	member, _ := Derive([]byte("cluster-key-cluster-key-cluster!"))
	cfg, err := PinnedClientConfig(strings.ToUpper(member.Fingerprint()))
	if err != nil {
		t.Fatal(err)
	}
	if s, c := handshake(member.ServerConfig(false), cfg); s != nil || c != nil {
		t.Fatalf("pinned client refused the right server: %v %v", s, c)
	}
	outsider, _ := Derive([]byte("another-key-another-key-another!"))
	if _, c := handshake(outsider.ServerConfig(false), cfg); c == nil {
		t.Fatal("pinned client accepted the wrong server")
	}
	if _, err := PinnedClientConfig("abc"); err == nil {
		t.Fatal("short fingerprint accepted")
	}
}
