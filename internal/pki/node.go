package pki

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/tlsid"
)

// Node is a node's TLS identity under a cluster CA: its own certificate
// and key, and the CA its peers' certificates must chain to. It implements
// tlsid.Member.
type Node struct {
	name string
	cert tls.Certificate
	ca   *x509.Certificate
	pool *x509.CertPool
}

var _ tlsid.Member = (*Node)(nil)

// LoadNode reads a node's identity from the files of the agent's tls
// section and checks that they fit: the certificate is issued by the CA,
// names node and is the key's; the key is not readable by group or others.
// Errors name the file.
func LoadNode(caFile, certFile, keyFile, node string) (*Node, error) {
	ca, err := ReadCert(caFile)
	if err != nil {
		return nil, err
	}
	if !ca.IsCA {
		return nil, fmt.Errorf("%s is not a CA certificate (use the ca.crt that lifeboat ca init wrote)", caFile)
	}
	leaf, err := ReadCert(certFile)
	if err != nil {
		return nil, err
	}
	key, err := ReadKey(keyFile)
	if err != nil {
		return nil, err
	}
	if !matches(leaf, key) {
		return nil, fmt.Errorf("%s is not the key of %s (issue both again with lifeboat node cert %s)", keyFile, certFile, node)
	}
	n := NewNode(ca, tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}, node)
	name, err := n.verify([][]byte{leaf.Raw}, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", certFile, err)
	}
	if _, err := n.verify([][]byte{leaf.Raw}, x509.ExtKeyUsageServerAuth); err != nil {
		return nil, fmt.Errorf("%s: %w", certFile, err)
	}
	if name != node {
		return nil, fmt.Errorf("%s is node %s's certificate, not %s's (issue one with lifeboat node cert %s)", certFile, name, node, node)
	}
	return n, nil
}

// NewNode makes a node identity from a CA certificate and the node's
// certificate (with its key). It checks nothing: LoadNode does.
func NewNode(ca *x509.Certificate, cert tls.Certificate, node string) *Node {
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &Node{name: node, cert: cert, ca: ca, pool: pool}
}

// verify checks a peer's certificate chain (leaf first) against the CA
// for the given use and returns the node it names.
func (n *Node) verify(raw [][]byte, use x509.ExtKeyUsage) (string, error) {
	leaf, err := n.verifyChain(raw, use)
	if err != nil {
		return "", err
	}
	name, ok := NodeName(leaf)
	if !ok {
		return "", fmt.Errorf("certificate %q is issued by the cluster CA but names no node (no %sNAME URI): issue node certificates with lifeboat node cert", leaf.Subject.CommonName, URIPrefix)
	}
	return name, nil
}

// Operator returns the operator and role the client certificate of a
// connection names (verified against the CA): ok false when there is no
// such certificate.
func (n *Node) Operator(cs *tls.ConnectionState) (name, role string, ok bool) {
	if cs == nil || len(cs.PeerCertificates) == 0 {
		return "", "", false
	}
	raw := make([][]byte, len(cs.PeerCertificates))
	for i, c := range cs.PeerCertificates {
		raw[i] = c.Raw
	}
	leaf, err := n.verifyChain(raw, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return "", "", false
	}
	return OperatorOf(leaf)
}

// verifyChain checks a certificate chain (leaf first) against the CA for
// the given use and returns the leaf.
func (n *Node) verifyChain(raw [][]byte, use x509.ExtKeyUsage) (*x509.Certificate, error) {
	if len(raw) == 0 {
		return nil, errors.New("peer presented no certificate: only nodes with a certificate from the cluster CA may connect")
	}
	certs := make([]*x509.Certificate, len(raw))
	for i, r := range raw {
		c, err := x509.ParseCertificate(r)
		if err != nil {
			return nil, fmt.Errorf("peer's certificate: %w", err)
		}
		certs[i] = c
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	opts := x509.VerifyOptions{Roots: n.pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{use}, CurrentTime: time.Now()}
	if _, err := certs[0].Verify(opts); err != nil {
		return nil, fmt.Errorf("certificate %q is not a node certificate of this cluster's CA %q: %w", certs[0].Subject.CommonName, n.ca.Subject.CommonName, err)
	}
	return certs[0], nil
}

// Name is the node this identity belongs to.
func (n *Node) Name() string { return n.name }

// NotAfter is when the node's certificate expires.
func (n *Node) NotAfter() time.Time {
	if n.cert.Leaf == nil {
		return time.Time{}
	}
	return n.cert.Leaf.NotAfter
}

// ServerConfig serves TLS with the node's certificate. With requireClient
// the peer must present a node certificate of the cluster (raft);
// otherwise a client certificate is optional but verified when given (the
// API: the CLI authenticates with a token instead).
func (n *Node) ServerConfig(requireClient bool) *tls.Config {
	c := &tls.Config{
		Certificates: []tls.Certificate{n.cert},
		MinVersion:   tls.VersionTLS13,
		ClientAuth:   tls.RequestClientCert,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 && !requireClient {
				return nil
			}
			if requireClient {
				_, err := n.verify(raw, x509.ExtKeyUsageClientAuth)
				return err
			}
			// The API: a node's certificate, or an operator's.
			leaf, err := n.verifyChain(raw, x509.ExtKeyUsageClientAuth)
			if err != nil {
				return err
			}
			if _, ok := NodeName(leaf); ok {
				return nil
			}
			if _, _, ok := OperatorOf(leaf); ok {
				return nil
			}
			return fmt.Errorf("certificate %q is issued by the cluster CA but names neither a node nor an operator", leaf.Subject.CommonName)
		},
	}
	if requireClient {
		c.ClientAuth = tls.RequireAnyClientCert
	}
	return c
}

// ClientConfig dials a node: it presents this node's certificate and
// accepts any node certificate of the cluster (nodes are dialled by
// address, which a certificate need not list).
func (n *Node) ClientConfig() *tls.Config {
	return &tls.Config{
		Certificates:       []tls.Certificate{n.cert},
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // replaced by the CA check below: peers are dialled by address
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			_, err := n.verify(raw, x509.ExtKeyUsageServerAuth)
			return err
		},
	}
}

// ClientConfigFor dials node: like ClientConfig, but the server must
// also prove to be that node (another node's certificate is refused), so
// that no member can answer in another's place.
func (n *Node) ClientConfigFor(node string) *tls.Config {
	c := n.ClientConfig()
	c.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
		name, err := n.verify(raw, x509.ExtKeyUsageServerAuth)
		if err == nil && name != node {
			err = fmt.Errorf("dialled node %s but the server's certificate is node %s's (check the node's api address in the membership)", node, name)
		}
		return err
	}
	return c
}

// Fingerprint is the SHA-256 of this node's certificate, hex encoded (what
// a CLI pins to reach this node's API).
func (n *Node) Fingerprint() string {
	s := sha256.Sum256(n.cert.Certificate[0])
	return hex.EncodeToString(s[:])
}

// ClusterID names the cluster: the CA's key ID.
func (n *Node) ClusterID() string { return KeyID(n.ca) }

// PeerNode returns the node whose certificate the peer of a connection
// presented (verified against the CA during the handshake).
func (n *Node) PeerNode(cs *tls.ConnectionState) (string, error) {
	if cs == nil || len(cs.PeerCertificates) == 0 {
		return "", errors.New("no client certificate: internal calls need the caller's node certificate")
	}
	raw := make([][]byte, len(cs.PeerCertificates))
	for i, c := range cs.PeerCertificates {
		raw[i] = c.Raw
	}
	// Verified in the handshake already; checked again so that the
	// answer never depends on how the listener was configured.
	return n.verify(raw, x509.ExtKeyUsageClientAuth)
}

// CLIClientConfig trusts any node certificate the CA in caFile issued (for
// the CLI, which has no certificate of its own and may talk to any node):
// the alternative to pinning one node's certificate by its fingerprint.
func CLIClientConfig(caFile string) (*tls.Config, error) {
	ca, err := ReadCert(caFile)
	if err != nil {
		return nil, err
	}
	if !ca.IsCA {
		return nil, fmt.Errorf("%s is not a CA certificate (use the cluster's ca.crt)", caFile)
	}
	n := NewNode(ca, tls.Certificate{}, "")
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // replaced by the CA check below: nodes are reached by address
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			_, err := n.verify(raw, x509.ExtKeyUsageServerAuth)
			return err
		},
	}, nil
}
