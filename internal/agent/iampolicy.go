package agent

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/lifeboat-ha/lifeboat/internal/cluster"
	"github.com/lifeboat-ha/lifeboat/internal/kit"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
	"github.com/lifeboat-ha/lifeboat/internal/upgrade"
)

// PolicyDocument is an IAM policy document.
type PolicyDocument struct {
	Version   string            `json:"Version"`
	Statement []PolicyStatement `json:"Statement"`
}

// PolicyStatement is one statement of a PolicyDocument.
type PolicyStatement struct {
	Sid      string   `json:"Sid"`
	Effect   string   `json:"Effect"`
	Action   []string `json:"Action"`
	Resource []string `json:"Resource"`
}

// LeastPrivilege builds the policy the configured hierarchies need: each
// cloud kit's statements, merged by resource set, plus
// sts:DecodeAuthorizationMessage so that a denial can be explained.
func LeastPrivilege(kr *kit.Registry, hs []spec.Hierarchy, region, account string) PolicyDocument {
	byRes := map[string]map[string]bool{}
	for _, h := range hs {
		for _, r := range h.Resources {
			k, ok := kr.Lookup(r.Type)
			if !ok {
				continue
			}
			var sts []kit.Statement
			if pd, ok := k.(kit.PolicyDeclarer); ok {
				sts = pd.Policy(r.Params, region, account)
			} else if pd, ok := k.(kit.PermissionDeclarer); ok {
				var acts []string
				for _, as := range pd.Permissions(r.Params) {
					acts = append(acts, as...)
				}
				sts = []kit.Statement{{Actions: acts, Resources: []string{"*"}}}
			}
			for _, st := range sts {
				if len(st.Actions) == 0 {
					continue
				}
				res := append([]string(nil), st.Resources...)
				sort.Strings(res)
				key := strings.Join(res, "\n")
				if byRes[key] == nil {
					byRes[key] = map[string]bool{}
				}
				for _, a := range st.Actions {
					byRes[key][a] = true
				}
			}
		}
	}
	doc := PolicyDocument{Version: "2012-10-17", Statement: []PolicyStatement{}}
	if len(byRes) == 0 {
		return doc
	}
	if byRes["*"] == nil {
		byRes["*"] = map[string]bool{}
	}
	byRes["*"]["sts:DecodeAuthorizationMessage"] = true
	keys := make([]string, 0, len(byRes))
	for k := range byRes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		acts := spec.SortedKeys(byRes[k])
		doc.Statement = append(doc.Statement, PolicyStatement{Sid: fmt.Sprintf("Lifeboat%d", i+1), Effect: "Allow", Action: acts, Resource: strings.Split(k, "\n")})
	}
	return doc
}

// handleIAMPolicy answers GET /v1/iam-policy[?hierarchy=H].
func (a *Agent) handleIAMPolicy(w http.ResponseWriter, r *http.Request) {
	want := r.URL.Query().Get("hierarchy")
	var hs []spec.Hierarchy
	a.c.FSM.View(func(s *cluster.State) {
		for _, n := range s.HierarchyNames() {
			if want == "" || n == want {
				hs = append(hs, s.Hierarchies[n])
			}
		}
	})
	if want != "" && len(hs) == 0 {
		writeErr(w, http.StatusNotFound, fmt.Errorf("hierarchy %q does not exist", want))
		return
	}
	doc := LeastPrivilege(a.kits, hs, "*", "*")
	if len(doc.Statement) > 0 {
		// Cloud resources are configured: name this account and region.
		region, account := a.identity(r.Context())
		doc = LeastPrivilege(a.kits, hs, region, account)
	}
	if since := r.URL.Query().Get("since"); since != "" {
		doc = Since(a.kits, doc, since)
	}
	writeJSON(w, doc)
}

// identity returns this node's AWS region and account, or "*" for what it
// cannot find out.
func (a *Agent) identity(ctx context.Context) (region, account string) {
	region, account = "*", "*"
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := a.aws.get(ctx)
	if err != nil {
		return
	}
	region = c.Config.Region
	if out, err := c.STS.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{}); err == nil && out.Account != nil {
		account = *out.Account
	}
	return
}

// Since keeps only the actions a version later than since first needed:
// what a rolling upgrade from since adds to the roles.
func Since(kr *kit.Registry, doc PolicyDocument, since string) PolicyDocument {
	out := PolicyDocument{Version: doc.Version, Statement: []PolicyStatement{}}
	for _, st := range doc.Statement {
		var acts []string
		for _, a := range st.Action {
			if v := kr.FirstNeeded(a); v == "" || upgrade.Newer(v, since) {
				acts = append(acts, a)
			}
		}
		if len(acts) > 0 {
			st.Action = acts
			out.Statement = append(out.Statement, st)
		}
	}
	return out
}
