package config

import (
	"github.com/lifeboat-ha/lifeboat/internal/pki"
)

// TLS gives this node its own identity: a certificate from the cluster's
// CA (lifeboat ca init, lifeboat node cert) that names the node. The node
// serves raft and the API with it, presents it to its peers, and accepts
// only peers whose certificate the CA issued; an internal call that acts
// for a node must come from that node's certificate. When the section is
// left out, every node uses one identity derived from the cluster key,
// which cannot tell nodes apart (for the demo and tests only).
type TLS struct {
	// CA is the cluster CA's certificate (ca.crt).
	CA string `yaml:"ca"`
	// Cert is this node's certificate (NODE.crt).
	Cert string `yaml:"cert"`
	// Key is this node's private key (NODE.key); group and others must
	// not be able to read it.
	Key string `yaml:"key"`
}

// Enabled reports whether the node has its own certificate.
func (t TLS) Enabled() bool { return t.CA != "" || t.Cert != "" || t.Key != "" }

// validateTLS checks the section without reading files: all three or
// none.
func (a *Agent) validateTLS(add func(field, format string, args ...any)) {
	t := a.TLS
	if !t.Enabled() {
		return
	}
	for _, f := range []struct{ field, v, what string }{
		{"tls.ca", t.CA, "the cluster CA's certificate (ca.crt from lifeboat ca init)"},
		{"tls.cert", t.Cert, "this node's certificate (from lifeboat node cert " + a.Node + ")"},
		{"tls.key", t.Key, "this node's key (from lifeboat node cert " + a.Node + ")"},
	} {
		if f.v == "" {
			add(f.field, "required with the rest of the tls section: %s (or leave the whole section out)", f.what)
		}
	}
}

// loadTLS reads the tls section's files and reports, per field, what
// does not fit: the CA is not a CA, the key is readable by others or is
// not the certificate's, the certificate is not from the CA or names
// another node.
func (a *Agent) loadTLS(w *walker) {
	t := a.TLS
	if !t.Enabled() || t.CA == "" || t.Cert == "" || t.Key == "" || w.bad["tls.ca"] || w.bad["tls.cert"] || w.bad["tls.key"] {
		return
	}
	ok := true
	if ca, err := pki.ReadCert(t.CA); err != nil {
		w.problem("tls.ca", err.Error())
		ok = false
	} else if !ca.IsCA {
		w.problem("tls.ca", t.CA+" is not a CA certificate (use the ca.crt that lifeboat ca init wrote)")
		ok = false
	}
	if _, err := pki.ReadKey(t.Key); err != nil {
		w.problem("tls.key", err.Error())
		ok = false
	}
	if _, err := pki.ReadCert(t.Cert); err != nil {
		w.problem("tls.cert", err.Error())
		ok = false
	}
	if !ok {
		return
	}
	if _, err := pki.LoadNode(t.CA, t.Cert, t.Key, a.Node); err != nil {
		w.problem("tls.cert", err.Error())
	}
}
