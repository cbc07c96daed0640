// Package tlsid derives the cluster's TLS identity from the shared cluster
// key. Every member computes the same Ed25519 key pair and self-signed
// certificate from the key, so members authenticate each other by pinning
// that certificate (mutual TLS for raft and agent-to-agent calls), and the
// operator CLI pins the API server's certificate by its SHA-256
// fingerprint. Whoever has the cluster key is a member; nobody else can
// speak raft, grant leases or read the internal API. Since every member has
// the same certificate, it cannot tell members apart: for the demo and tests.
// Per-node certificates from a cluster CA (package pki) implement the same
// Member interface and can.
package tlsid

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"
)

// Member is how a node proves who it is and checks its peers: the derived
// Identity of this package (every member the same certificate) or a node
// certificate from a cluster CA (package pki).
type Member interface {
	// ServerConfig serves TLS; with requireClient the peer must be a
	// member, otherwise a client certificate is optional but checked.
	ServerConfig(requireClient bool) *tls.Config
	// ClientConfig dials a member, presenting this node's certificate.
	ClientConfig() *tls.Config
	// Fingerprint is the SHA-256 of the certificate this node serves
	// (what the CLI pins).
	Fingerprint() string
	// ClusterID is the same on every member: it names the cluster.
	ClusterID() string
	// PeerNode returns the node a connection's peer proved to be. ""
	// (and no error) means the identity cannot tell members apart: the
	// peer is a member, but any member.
	PeerNode(cs *tls.ConnectionState) (string, error)
}

var _ Member = (*Identity)(nil)

// Identity is the cluster's certificate and key, derived from the cluster
// key: every member has the same one, so it proves membership but not
// which node is calling. For the demo and tests; production clusters
// give each node its own certificate from a cluster CA (package pki).
type Identity struct {
	Cert tls.Certificate
	DER  []byte
	// browser is served to TLS clients that cannot verify Ed25519
	// (browsers, for the web console): a self-signed ECDSA P-256
	// certificate made at start, which nothing pins. Lifeboat's own
	// clients offer Ed25519 and are served Cert.
	browser tls.Certificate
}

// Derive computes the identity from the cluster key. It is deterministic:
// Ed25519 signatures involve no randomness and every certificate field is
// fixed.
func Derive(key []byte) (*Identity, error) {
	if len(key) == 0 {
		return nil, errors.New("derive TLS identity: empty cluster key")
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte("lifeboat-tls-identity-v1"))
	priv := ed25519.NewKeyFromSeed(m.Sum(nil))
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "lifeboat cluster member"},
		NotBefore:             time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:              time.Date(2125, 1, 1, 0, 0, 0, 0, time.UTC),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(nil, tmpl, tmpl, priv.Public(), priv)
	if err != nil {
		return nil, fmt.Errorf("derive TLS identity: %w", err)
	}
	browser, err := browserCert()
	if err != nil {
		return nil, err
	}
	return &Identity{Cert: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv}, DER: der, browser: browser}, nil
}

// browserCert makes a self-signed ECDSA P-256 certificate for the web
// console's browsers (they do not verify Ed25519 certificates).
func browserCert() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("console certificate: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("console certificate: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "lifeboat console (derived identity, demo only)"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(397 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("console certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// Fingerprint is the SHA-256 of the certificate, hex encoded.
func (id *Identity) Fingerprint() string { return Fingerprint(id.DER) }

// Fingerprint returns the hex SHA-256 of a DER certificate.
func Fingerprint(der []byte) string {
	s := sha256.Sum256(der)
	return hex.EncodeToString(s[:])
}

// ClusterID is the certificate's fingerprint: the same on every member.
func (id *Identity) ClusterID() string { return id.Fingerprint() }

// PeerNode cannot tell members apart: every member presents the same
// certificate. It returns "" when the peer presented it.
func (id *Identity) PeerNode(cs *tls.ConnectionState) (string, error) {
	if cs == nil || len(cs.PeerCertificates) == 0 {
		return "", errors.New("no client certificate: internal calls need the cluster certificate")
	}
	return "", id.pin([][]byte{cs.PeerCertificates[0].Raw}, nil)
}

func (id *Identity) pin(raw [][]byte, _ [][]*x509.Certificate) error {
	if len(raw) == 0 || !bytes.Equal(raw[0], id.DER) {
		return errors.New("peer is not a member of this cluster (certificate does not match the cluster key)")
	}
	return nil
}

// ServerConfig serves TLS with the cluster identity. With requireClient,
// the peer must present the cluster identity too (raft); otherwise a client
// certificate is optional but checked when given (the API, where the CLI
// authenticates with a token instead).
func (id *Identity) ServerConfig(requireClient bool) *tls.Config {
	certs := []tls.Certificate{id.Cert}
	if !requireClient && id.browser.PrivateKey != nil {
		// The API: browsers get the ECDSA certificate (Go's server
		// serves the first certificate the client supports).
		certs = append(certs, id.browser)
	}
	c := &tls.Config{
		Certificates: certs,
		MinVersion:   tls.VersionTLS13,
		ClientAuth:   tls.RequestClientCert,
		VerifyPeerCertificate: func(raw [][]byte, chains [][]*x509.Certificate) error {
			if len(raw) == 0 && !requireClient {
				return nil
			}
			return id.pin(raw, chains)
		},
	}
	if requireClient {
		c.ClientAuth = tls.RequireAnyClientCert
	}
	return c
}

// ClientConfig dials a member: it presents the identity and accepts only a
// server that has it.
func (id *Identity) ClientConfig() *tls.Config {
	return &tls.Config{
		Certificates:          []tls.Certificate{id.Cert},
		MinVersion:            tls.VersionTLS13,
		InsecureSkipVerify:    true, // replaced by the pin below: no CA, no host names
		VerifyPeerCertificate: id.pin,
	}
}

// PinnedClientConfig trusts exactly the server certificate with the given
// SHA-256 fingerprint (for the CLI, which has no cluster key).
func PinnedClientConfig(fingerprint string) (*tls.Config, error) {
	want := strings.ToLower(strings.ReplaceAll(strings.TrimSpace(fingerprint), ":", ""))
	if len(want) != 64 {
		return nil, fmt.Errorf("TLS fingerprint %q is not a SHA-256 hex digest (64 hex digits; `lifeboat status` on a node prints it)", fingerprint)
	}
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // replaced by the pin below
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 || Fingerprint(raw[0]) != want {
				return fmt.Errorf("agent's TLS certificate does not match the fingerprint %s", want)
			}
			return nil
		},
	}, nil
}
