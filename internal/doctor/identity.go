package doctor

import (
	"context"
	"fmt"
	"time"
)

// certWarn and certCritical: how long before its certificate expires a
// node is warned, and when it becomes critical (an expired certificate is
// refused by every peer: the node drops out of the cluster).
const (
	certWarn     = 30 * 24 * time.Hour
	certCritical = 7 * 24 * time.Hour
)

// checkNodeCert warns before this node's certificate (the agent's tls
// section) expires. Nothing is checked without one (the derived identity
// does not expire).
func checkNodeCert(_ context.Context, env *Env) []Finding {
	if env.CertNotAfter.IsZero() {
		return nil
	}
	left := env.CertNotAfter.Sub(env.Now())
	fix := fmt.Sprintf("issue it again (lifeboat node cert %s --ca DIR --out DIR), copy it to the node and restart its agent", env.Node)
	f := Finding{ID: "node-certificate", Node: env.Node, Fix: fix}
	switch {
	case left <= 0:
		f.Severity = Critical
		f.Seen = fmt.Sprintf("%s's certificate expired at %s: its peers refuse it", env.Node, env.CertNotAfter.UTC().Format(time.RFC3339))
	case left < certCritical:
		f.Severity = Critical
		f.Seen = fmt.Sprintf("%s's certificate expires in %s (%s): then its peers refuse it", env.Node, left.Round(time.Hour), env.CertNotAfter.UTC().Format(time.RFC3339))
	case left < certWarn:
		f.Severity = Warning
		f.Seen = fmt.Sprintf("%s's certificate expires in %d days (%s)", env.Node, int(left.Hours()/24), env.CertNotAfter.UTC().Format(time.RFC3339))
	default:
		return nil
	}
	return []Finding{f}
}
