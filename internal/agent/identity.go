package agent

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"

	"github.com/lifeboat-ha/lifeboat/internal/auth"
	"github.com/lifeboat-ha/lifeboat/internal/cluster"
	"github.com/lifeboat-ha/lifeboat/internal/config"
	"github.com/lifeboat-ha/lifeboat/internal/pki"
	"github.com/lifeboat-ha/lifeboat/internal/tlsid"
)

// Node identities.
//
// With a tls section, each node has its own certificate from the cluster
// CA, naming the node (package pki). Raft, the API and agent-to-agent
// calls use it, and peers are accepted only with a node certificate of
// that CA. An internal call that acts for a node must then come from that
// node's certificate: a lease renewal for node X, and a forwarded command
// by which X speaks for itself (its join, its reports, readiness, doctor
// findings, leaving) are refused with 403 unless the caller proved to be
// X; commands only the leader makes (assign, revoke, release, the feature
// level, expiring a failure mark) are never accepted forwarded. Commands
// an operator asked for through any node (switchover, standby, apply…)
// are forwarded by whichever node took the request and carry no node
// identity to check: a node's certificate still lets it ask for those.
//
// Without a tls section every node presents the one certificate derived
// from the cluster key: the checks below cannot tell nodes apart and let
// any member act for any node, as before. That mode is for the demo and
// tests only.

// loadIdentity returns the node's TLS identity: its own certificate when
// the config has a tls section, the key-derived one otherwise.
func loadIdentity(cfg *config.Agent, key []byte) (tlsid.Member, error) {
	if !cfg.TLS.Enabled() {
		return tlsid.Derive(key)
	}
	id, err := pki.LoadNode(cfg.TLS.CA, cfg.TLS.Cert, cfg.TLS.Key, cfg.Node)
	if err != nil {
		return nil, fmt.Errorf("load this node's certificate (tls section): %w", err)
	}
	return id, nil
}

// peerTLS is the TLS config for calls to node: with node certificates the
// server must prove to be that node; with the derived identity, any member.
func (a *Agent) peerTLS(node string) *tls.Config {
	if f, ok := a.tls.(interface{ ClientConfigFor(string) *tls.Config }); ok {
		return f.ClientConfigFor(node)
	}
	return a.tls.ClientConfig()
}

// peerNode returns the node the caller of a request proved to be with its
// client certificate (verified against the cluster CA in the handshake):
// "" when the identity cannot tell nodes apart (the derived identity).
// It fails when the caller presented no member certificate.
func (a *Agent) peerNode(r *http.Request) (string, error) {
	return a.tls.PeerNode(r.TLS)
}

// actsFor checks that an internal request acting for node comes from that
// node's certificate; otherwise it answers 403, logs, and returns false.
func (a *Agent) actsFor(w http.ResponseWriter, r *http.Request, what, node string) bool {
	peer, err := a.peerNode(r)
	if err == nil && (peer == "" || peer == node) {
		return true
	}
	if err == nil {
		err = fmt.Errorf("%s for node %s refused: the caller's certificate is node %s's", what, node, peer)
	}
	a.log.Warn("internal request refused: node identity", "path", r.URL.Path, "claims", node, "peer", peer, "from", r.RemoteAddr, "error", err)
	writeErr(w, http.StatusForbidden, err)
	return false
}

// forwardedFromSelf checks a command forwarded to the leader
// (POST /v1/internal/apply, body raw) against the caller's certificate:
// a command by which a node speaks for itself must come from that node,
// and a command only the leader makes is refused. It answers 403 and
// returns false when the command does not pass; one it cannot decode is
// left to the handler, which reports that.
func (a *Agent) forwardedFromSelf(w http.ResponseWriter, r *http.Request, raw []byte) bool {
	peer, err := a.peerNode(r)
	if err == nil && peer == "" {
		return true // the derived identity: any member
	}
	if err != nil {
		return a.actsFor(w, r, "forwarded command", "")
	}
	cmd, _, derr := cluster.DecodeWire(raw)
	if derr != nil || cmd == nil {
		return true
	}
	if err := checkActor(cmd, peer); err != nil {
		a.log.Warn("internal request refused: node identity", "path", r.URL.Path, "kind", cmd.Kind(), "peer", peer, "from", r.RemoteAddr, "error", err)
		writeErr(w, http.StatusForbidden, err)
		return false
	}
	return true
}

// errLeaderOnly marks a command no node may forward.
var errLeaderOnly = errors.New("only the leader makes this command; it is never forwarded")

// checkActor reports why node may not forward cmd (nil: it may).
func checkActor(cmd cluster.Cmd, node string) error {
	var self string
	switch c := cmd.(type) {
	case cluster.Batch:
		for _, sub := range c.Cmds {
			if err := checkActor(sub, node); err != nil {
				return err
			}
		}
		return nil
	case cluster.Join:
		self = c.Node
	case cluster.Report:
		self = c.Node
	case cluster.Leaving:
		self = c.Node
	case cluster.SetReadiness:
		self = c.Node
	case cluster.SetFindings:
		self = c.Node
	case cluster.Assign, cluster.Revoke, cluster.Release, cluster.SetLevel, cluster.ExpireMark:
		return fmt.Errorf("forwarded %s from node %s refused: %w", cmd.Kind(), node, errLeaderOnly)
	default:
		return nil // an operator's request, forwarded by the node that took it
	}
	if self != node {
		return fmt.Errorf("forwarded %s for node %s refused: the caller's certificate is node %s's", cmd.Kind(), self, node)
	}
	return nil
}

// operatorCert returns the operator a request's client certificate names,
// with its role, when the node runs with a cluster CA (tls section) and
// the certificate is an operator certificate of that CA.
func (a *Agent) operatorCert(r *http.Request) (auth.Token, bool) {
	op, ok := a.tls.(interface {
		Operator(*tls.ConnectionState) (string, string, bool)
	})
	if !ok {
		return auth.Token{}, false
	}
	name, role, ok := op.Operator(r.TLS)
	if !ok {
		return auth.Token{}, false
	}
	rl, err := auth.ParseRole(role)
	if err != nil {
		return auth.Token{}, false
	}
	return auth.Token{Name: name, Role: rl, Certificate: true}, true
}
