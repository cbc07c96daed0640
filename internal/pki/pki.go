// Package pki owns the cluster's certificate authority and the per-node
// certificates it issues. A node certificate names its node in a URI SAN
// (lifeboat://node/NAME), so that a node's peers can tell which node is
// calling, not only that the caller belongs to the cluster (which is all the
// key-derived identity of package tlsid proves). The operator creates the CA
// once (lifeboat ca init), keeps its key off the nodes, and issues one
// certificate per node (lifeboat node cert); renewing a certificate is
// issuing it again.
//
// Keys are ECDSA P-256. DeriveCA makes a CA from the cluster key, for the
// demo and tests only: whoever holds the cluster key can then issue any
// node's certificate, so it proves no more than the key does.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

// URIPrefix starts the URI SAN that names a node.
const URIPrefix = "lifeboat://node/"

// DefaultNodeValidity is how long a node certificate is valid unless told.
const DefaultNodeValidity = 365 * 24 * time.Hour

// caValidity is how long a CA certificate is valid.
const caValidity = 10 * 365 * 24 * time.Hour

// CA is a certificate authority: its certificate and private key.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// NewCA makes a CA with a fresh random key, valid ten years from now.
func NewCA(name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("create CA key: %w", err)
	}
	now := time.Now().Add(-time.Hour) // tolerate clock skew between nodes
	return selfSign(key, name, now, now.Add(caValidity))
}

// DeriveCA makes the CA that belongs to a cluster key: the same key gives
// the same CA key pair and subject on every machine (the certificate's
// signature bytes may differ, which does not matter for verification). For
// the demo and tests only (see the package comment).
func DeriveCA(clusterKey []byte) (*CA, error) {
	if len(clusterKey) == 0 {
		return nil, errors.New("derive CA: empty cluster key")
	}
	var key *ecdsa.PrivateKey
	for i := uint32(0); key == nil; i++ {
		m := hmac.New(sha256.New, clusterKey)
		m.Write([]byte("lifeboat-ca-v1"))
		_ = binary.Write(m, binary.BigEndian, i)
		// A 32-byte value is a valid P-256 scalar unless it is zero or
		// not below the group order (about 2^-32 of values): try again.
		key, _ = ecdsa.ParseRawPrivateKey(elliptic.P256(), m.Sum(nil))
	}
	return selfSign(key, "lifeboat derived CA", time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2125, 1, 1, 0, 0, 0, 0, time.UTC))
}

func selfSign(key *ecdsa.PrivateKey, name string, from, until time.Time) (*CA, error) {
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"lifeboat"}},
		NotBefore:             from,
		NotAfter:              until,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("sign CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	return &CA{Cert: cert, Key: key}, nil
}

func randomSerial() (*big.Int, error) {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("certificate serial number: %w", err)
	}
	return s.Add(s, big.NewInt(1)), nil
}

// Issued is a node certificate and its key, PEM encoded.
type Issued struct {
	CertPEM, KeyPEM []byte
	Cert            *x509.Certificate
}

// Issue makes a certificate for node, valid for validity (0: a year) from
// now, with hosts (IP addresses or DNS names) as SANs besides the node's
// URI. The certificate serves both ends of a connection (server and
// client authentication).
func (ca *CA) Issue(node string, hosts []string, validity time.Duration) (*Issued, error) {
	if !spec.ValidName(node) {
		return nil, fmt.Errorf("issue a certificate: %q is not a valid node name (letters, digits, '-', '_', '.', 1-63 characters)", node)
	}
	if validity == 0 {
		validity = DefaultNodeValidity
	}
	if validity < 0 {
		return nil, fmt.Errorf("issue a certificate for %s: validity %v is negative", node, validity)
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: node, Organization: []string{"lifeboat"}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:        []*url.URL{{Scheme: "lifeboat", Host: "node", Path: "/" + node}},
	}
	for _, h := range hosts {
		h = strings.TrimSpace(h)
		switch {
		case h == "":
		case net.ParseIP(h) != nil:
			tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(h))
		default:
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	return ca.sign(node, tmpl, validity)
}

// sign makes a new key and a certificate for it from tmpl (its subject,
// uses and names), valid from an hour ago for validity, signed by the CA.
func (ca *CA) sign(name string, tmpl *x509.Certificate, validity time.Duration) (*Issued, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("create key for %s: %w", name, err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl.SerialNumber = serial
	tmpl.NotBefore, tmpl.NotAfter = now.Add(-time.Hour), now.Add(validity)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, fmt.Errorf("sign certificate for %s: %w", name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse certificate for %s: %w", name, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode key for %s: %w", name, err)
	}
	return &Issued{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		Cert:    cert,
	}, nil
}

// CertPEM is the CA certificate, PEM encoded.
func (ca *CA) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw})
}

// KeyPEM is the CA key, PEM encoded (PKCS #8).
func (ca *CA) KeyPEM() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(ca.Key)
	if err != nil {
		return nil, fmt.Errorf("encode CA key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// OperatorURIPrefix starts the URI SAN that names an operator; the role
// follows as ?role=ROLE.
const OperatorURIPrefix = "lifeboat://operator/"

// DefaultOperatorValidity is an operator certificate's validity when none
// is given: shorter than a node's, people change.
const DefaultOperatorValidity = 90 * 24 * time.Hour

// IssueOperator makes a client certificate for an operator (a person or a
// tool) with role (read, operate, admin) in its URI SAN
// (lifeboat://operator/NAME?role=ROLE): the API accepts it instead of a
// token. It is valid for validity (0: 90 days) and for client
// authentication only, so it can never serve as a node.
func (ca *CA) IssueOperator(name, role string, validity time.Duration) (*Issued, error) {
	if !spec.ValidName(name) {
		return nil, fmt.Errorf("issue an operator certificate: %q is not a valid name (letters, digits, '-', '_', '.', 1-63 characters)", name)
	}
	switch role {
	case "read", "operate", "admin":
	default:
		return nil, fmt.Errorf("issue an operator certificate for %s: unknown role %q (use read, operate or admin)", name, role)
	}
	if validity == 0 {
		validity = DefaultOperatorValidity
	}
	if validity < 0 {
		return nil, fmt.Errorf("issue an operator certificate for %s: validity %v is negative", name, validity)
	}
	return ca.sign(name, &x509.Certificate{
		Subject:     pkix.Name{CommonName: name, Organization: []string{"lifeboat operators"}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs:        []*url.URL{{Scheme: "lifeboat", Host: "operator", Path: "/" + name, RawQuery: "role=" + role}},
	}, validity)
}

// OperatorOf returns the operator and role a certificate names in its URI
// SAN (ok false for any other certificate).
func OperatorOf(c *x509.Certificate) (name, role string, ok bool) {
	for _, u := range c.URIs {
		if u.Scheme == "lifeboat" && u.Host == "operator" {
			name = strings.TrimPrefix(u.Path, "/")
			role = u.Query().Get("role")
			if spec.ValidName(name) && (role == "read" || role == "operate" || role == "admin") {
				return name, role, true
			}
		}
	}
	return "", "", false
}

// NodeName returns the node a certificate names in its URI SAN.
func NodeName(c *x509.Certificate) (string, bool) {
	for _, u := range c.URIs {
		if u.Scheme == "lifeboat" && u.Host == "node" {
			name := strings.TrimPrefix(u.Path, "/")
			if spec.ValidName(name) {
				return name, true
			}
		}
	}
	return "", false
}

// KeyID identifies a public key: the hex SHA-256 of its SubjectPublicKeyInfo.
// A CA's key ID is the same on every node even where its certificate was
// signed again (DeriveCA), so it names the cluster.
func KeyID(c *x509.Certificate) string {
	s := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return hex.EncodeToString(s[:])
}

// matches reports whether priv is the key of cert.
func matches(cert *x509.Certificate, priv crypto.Signer) bool {
	pub, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	return ok && pub.Equal(priv.Public())
}
