package doctor

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iam"

	"github.com/lifeboat-ha/lifeboat/internal/awsapi"
	"github.com/lifeboat-ha/lifeboat/internal/kit"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

// awsPolicyStatement is one IAM policy statement as JSON.
type awsPolicyStatement struct {
	Effect   string   `json:"Effect"`
	Action   []string `json:"Action"`
	Resource []string `json:"Resource"`
}

// awsGapStatement is the statement that allows just action for the
// resource, with the resource ARNs the kit's least-privilege policy uses.
func awsGapStatement(k kit.Kit, params map[string]string, region, account, action string) string {
	var res []string
	if pd, ok := k.(kit.PolicyDeclarer); ok {
		for _, st := range pd.Policy(params, region, account) {
			if slices.Contains(st.Actions, action) {
				res = append(res, st.Resources...)
			}
		}
	}
	if len(res) == 0 {
		res = []string{"*"}
	}
	b, _ := json.Marshal(awsPolicyStatement{Effect: "Allow", Action: []string{action}, Resource: res})
	return string(b)
}

const awsDryRunNote = "Run the command on the node with no other AWS credentials in the environment or ~/.aws, so that the CLI uses the instance role as the agent does: DryRunOperation (\"Request would have succeeded\") means allowed, UnauthorizedOperation (or AccessDenied) means missing, and a plain success means the endpoint ignored --dry-run and carried the call out."

func awsCheckPermissions(ctx context.Context, env *Env) []Finding {
	if !awsUsed(env) {
		return nil
	}
	k, ok := env.Kits.Lookup("ec2")
	if !ok {
		return []Finding{{ID: awsIDPermissions, Severity: Critical, Seen: "the ec2 kit is not built into this lifeboat binary", Fix: "install a lifeboat build with the ec2 kit"}}
	}
	a := awsOpen(ctx, env)
	var fs []Finding
	var id *awsIdentity
	for _, h := range env.Hierarchies {
		for _, r := range h.Resources {
			if r.Type != "ec2" {
				continue
			}
			base := Finding{ID: awsIDPermissions, Severity: Critical, Hierarchy: h.Name, Resource: r.Name}
			var probes kit.ProbeCalls
			if env.Probes != nil {
				probes = env.Probes()
			}
			inst, err := k.New(r, kit.Env{Node: env.Node, Hierarchy: h.Name, AWS: env.AWS, Probes: probes})
			if err != nil {
				f := base
				f.Seen = fmt.Sprintf("%s cannot manage %s: %v", env.Node, r.Name, err)
				f.Fix = "give the agent an aws section in its config (region, endpoints, proxy), or fix the resource's parameters"
				fs = append(fs, f)
				continue
			}
			p, ok := inst.(kit.ReadinessProber)
			if !ok {
				continue
			}
			rd := p.Ready(ctx)
			if rd.Ready {
				continue
			}
			cmds := a.probeCommands(k, r.Params, func() string {
				if strings.Contains(rd.Reason, "instance metadata") {
					return "ENI_ID" // asking would only wait for IMDS again
				}
				return a.primary(ctx)
			})
			if len(rd.Missing) > 0 && id == nil {
				v := a.identity(ctx)
				id = &v
			}
			for _, act := range rd.Missing {
				on, code := "", ""
				for _, g := range rd.Gaps {
					if g.Action != act {
						continue
					}
					if on == "" && g.Resource != "" && g.Resource != "*" {
						on = " on " + g.Resource
					}
					if code == "" {
						code = g.Code
					}
				}
				what := "the call was refused"
				if strings.Contains(awsCommandsFor(cmds, act), "--dry-run") {
					what = "the dry run was refused"
				}
				if code != "" {
					// the code actually answered: UnauthorizedOperation,
					// AccessDenied, ...
					what += " (" + code + ")"
				}
				f := base
				f.Seen = fmt.Sprintf("%s lacks %s%s: %s, so %s could not take over hierarchy %s (resource %s)",
					env.Node, act, on, what, env.Node, h.Name, r.Name)
				f.Fix = fmt.Sprintf("Add this statement to the policy of %s: %s (`lifeboat iam-policy` prints the whole least-privilege policy). If the role already allows it, look for an explicit Deny, a permissions boundary or an organization SCP. %s",
					id.roleWords(), awsGapStatement(k, r.Params, a.region(), id.account, act), awsDryRunNote)
				f.Command = awsCommandsFor(cmds, act)
				fs = append(fs, f)
			}
			rest := rd.Problems
			if len(rest) == 0 && len(rd.Gaps) == 0 && rd.Reason != "" {
				rest = []string{rd.Reason}
			}
			if len(rest) == 0 && len(rd.Missing) > 0 {
				continue
			}
			if len(rest) == 0 {
				rest = []string{"the readiness probe failed without a reason"}
			}
			f := base
			f.Seen = fmt.Sprintf("%s cannot prove it could take over hierarchy %s (resource %s): %s", env.Node, h.Name, r.Name, strings.Join(rest, "; "))
			f.Fix = "See the reachability, credentials and imds findings for the cause; then repeat the dry runs by hand. " + awsDryRunNote
			if strings.Contains(f.Seen, awsapi.DryRunIgnored) {
				f.Fix = awsDryRunIgnoredFix(a)
			}
			f.Command = awsCommandsFor(cmds, "")
			fs = append(fs, f)
		}
	}
	return fs
}

// awsDryRunIgnoredFix is the fix for an EC2 endpoint that answers DryRun
// requests with success.
func awsDryRunIgnoredFix(a *awsSession) string {
	return fmt.Sprintf("The EC2 endpoint the agent uses (%s) does not honour DryRun: lifeboat proves readiness with DryRun calls, and such an endpoint carries them out instead, so readiness cannot be proven and a probe may have changed a route table or interface. Point aws.endpoints.ec2 at EC2 itself (or an interface VPC endpoint for EC2), or fix the proxy or emulator in between; then check that the routes and Elastic IPs still point at their owners (aws ec2 describe-route-tables, aws ec2 describe-addresses).",
		a.endpoint("ec2"))
}

// ---------------------------------------------------------------------------
// excess

// awsStrings is an IAM string-or-list field.
type awsStrings []string

func (s *awsStrings) UnmarshalJSON(b []byte) error {
	var one string
	if json.Unmarshal(b, &one) == nil {
		*s = []string{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return err
	}
	*s = many
	return nil
}

type awsDocStatement struct {
	Sid       string     `json:"Sid"`
	Effect    string     `json:"Effect"`
	Action    awsStrings `json:"Action"`
	NotAction awsStrings `json:"NotAction"`
}

// awsDocStatements is an IAM Statement: one object or a list.
type awsDocStatements []awsDocStatement

func (s *awsDocStatements) UnmarshalJSON(b []byte) error {
	var one awsDocStatement
	if len(b) > 0 && b[0] == '{' {
		if err := json.Unmarshal(b, &one); err != nil {
			return err
		}
		*s = []awsDocStatement{one}
		return nil
	}
	var many []awsDocStatement
	if err := json.Unmarshal(b, &many); err != nil {
		return err
	}
	*s = many
	return nil
}

type awsPolicyDoc struct {
	Statement awsDocStatements `json:"Statement"`
}

// awsParsePolicy reads a policy document as IAM returns it (URL-encoded).
func awsParsePolicy(raw string) (awsPolicyDoc, error) {
	var doc awsPolicyDoc
	s := raw
	if u, err := url.QueryUnescape(raw); err == nil {
		s = u
	}
	if err := json.Unmarshal([]byte(s), &doc); err != nil {
		if err2 := json.Unmarshal([]byte(raw), &doc); err2 != nil {
			return doc, err
		}
	}
	return doc, nil
}

// awsNeeded are the actions lifeboat needs on this node, lower-cased, and
// the kits' actions spelled for messages (the doctor's own are needed but
// not listed).
func awsNeeded(env *Env) (map[string]bool, []string) {
	need := map[string]bool{}
	var names []string
	add := func(a string) {
		if l := strings.ToLower(a); !need[l] {
			need[l] = true
			names = append(names, a)
		}
	}
	for _, h := range env.Hierarchies {
		for _, r := range h.Resources {
			k, ok := env.Kits.Lookup(r.Type)
			if !ok {
				continue
			}
			if pd, ok := k.(kit.PermissionDeclarer); ok {
				perms := pd.Permissions(r.Params)
				for _, op := range spec.SortedKeys(perms) {
					for _, act := range perms[op] {
						add(act)
					}
				}
			}
			if pd, ok := k.(kit.PolicyDeclarer); ok {
				for _, st := range pd.Policy(r.Params, "*", "*") {
					for _, act := range st.Actions {
						add(act)
					}
				}
			}
		}
	}
	sort.Strings(names)
	for _, act := range awsDoctorActions {
		need[strings.ToLower(act)] = true
	}
	return need, names
}

type awsExcess struct{ policy, pattern, why string }

// awsExcessIn lists the allowed action patterns of doc beyond need.
func awsExcessIn(policy string, doc awsPolicyDoc, need map[string]bool) []awsExcess {
	var out []awsExcess
	for _, st := range doc.Statement {
		if !strings.EqualFold(st.Effect, "Allow") {
			continue
		}
		if len(st.NotAction) > 0 {
			out = append(out, awsExcess{policy, "NotAction " + strings.Join(st.NotAction, ","), "allows every action but these"})
		}
		for _, act := range st.Action {
			switch {
			case act == "*":
				out = append(out, awsExcess{policy, act, "every action of every service"})
			case strings.ContainsAny(act, "*?"):
				out = append(out, awsExcess{policy, act, "a wildcard, including actions AWS adds later"})
			case !need[strings.ToLower(act)]:
				out = append(out, awsExcess{policy, act, "not used by lifeboat"})
			}
		}
	}
	return out
}

func (a *awsSession) iamClient() *iam.Client {
	return iam.NewFromConfig(a.c.Config, func(o *iam.Options) {
		if ep := a.s.Endpoints.IAM; ep != "" {
			o.BaseEndpoint = aws.String(ep)
		}
	})
}

func awsCheckExcess(ctx context.Context, env *Env) []Finding {
	if !awsUsed(env) || env.AWS == nil {
		return nil
	}
	a := awsOpen(ctx, env)
	if a.c == nil {
		return nil // the credentials check reports it
	}
	role, err := a.roleName(ctx)
	if err != nil {
		return []Finding{{ID: awsIDExcess, Severity: Info,
			Seen:    "cannot tell this node's instance role from instance metadata, so its policies were not checked for excess permissions: " + err.Error(),
			Fix:     "see the imds and credentials findings",
			Command: awsCurlIMDS(a.s, "meta-data/iam/security-credentials/")}}
	}
	partition, account := a.profileAccount(ctx, "aws")
	roleARN := fmt.Sprintf("arn:%s:iam::%s:role/%s", partition, account, role)
	ic := a.iamClient()
	listCmd := a.cli("iam", "list-role-policies", "--role-name", role)

	var names []string
	var marker *string
	for {
		var out *iam.ListRolePoliciesOutput
		err := a.c.Call(ctx, func(ctx context.Context) error {
			var err error
			out, err = ic.ListRolePolicies(ctx, &iam.ListRolePoliciesInput{RoleName: aws.String(role), Marker: marker})
			return err
		})
		if err != nil {
			return []Finding{awsExcessUnreadable(role, roleARN, listCmd, err)}
		}
		names = append(names, out.PolicyNames...)
		if !out.IsTruncated || out.Marker == nil || len(out.PolicyNames) == 0 {
			break
		}
		marker = out.Marker
	}
	need, needNames := awsNeeded(env)
	var ex []awsExcess
	var getCmds []string
	for _, name := range names {
		var out *iam.GetRolePolicyOutput
		err := a.c.Call(ctx, func(ctx context.Context) error {
			var err error
			out, err = ic.GetRolePolicy(ctx, &iam.GetRolePolicyInput{RoleName: aws.String(role), PolicyName: aws.String(name)})
			return err
		})
		getCmd := a.cli("iam", "get-role-policy", "--role-name", role, "--policy-name", name)
		if err != nil {
			return []Finding{awsExcessUnreadable(role, roleARN, getCmd, err)}
		}
		doc, err := awsParsePolicy(aws.ToString(out.PolicyDocument))
		if err != nil {
			return []Finding{{ID: awsIDExcess, Severity: Info,
				Seen:    fmt.Sprintf("cannot parse inline policy %s of role %s: %v", name, role, err),
				Command: getCmd}}
		}
		found := awsExcessIn(name, doc, need)
		if len(found) > 0 {
			getCmds = append(getCmds, getCmd)
		}
		ex = append(ex, found...)
	}
	if len(ex) == 0 {
		return nil
	}
	var parts []string
	for _, e := range ex {
		parts = append(parts, fmt.Sprintf("%q (policy %s: %s)", e.pattern, e.policy, e.why))
	}
	return []Finding{{ID: awsIDExcess, Severity: Info,
		Seen: fmt.Sprintf("role %s allows %d action pattern(s) lifeboat does not need: %s", role, len(ex), strings.Join(parts, ", ")),
		Fix: fmt.Sprintf("Least privilege: give the role only what `lifeboat iam-policy` prints for the configured hierarchies (%s, and sts:DecodeAuthorizationMessage to explain denials; iam:ListRolePolicies and iam:GetRolePolicy on the role itself let this check run) and remove the rest. Managed policies attached to the role were not inspected: %s",
			strings.Join(needNames, ", "), a.cli("iam", "list-attached-role-policies", "--role-name", role)),
		Command: strings.Join(append([]string{listCmd}, getCmds...), "\n")}}
}

func awsExcessUnreadable(role, roleARN, cmd string, err error) Finding {
	f := awsapi.Classify(err)
	if f != nil && f.Kind == awsapi.KindUnauthorized {
		b, _ := json.Marshal(awsPolicyStatement{Effect: "Allow", Action: []string{"iam:ListRolePolicies", "iam:GetRolePolicy"}, Resource: []string{roleARN}})
		return Finding{ID: awsIDExcess, Severity: Info,
			Seen:    fmt.Sprintf("cannot read the inline policies of role %s to look for permissions lifeboat does not need (%s)", role, f.Code),
			Fix:     fmt.Sprintf("to let lifeboat doctor check least privilege, allow the role to read its own policies: %s", b),
			Command: cmd}
	}
	return Finding{ID: awsIDExcess, Severity: Info,
		Seen:    fmt.Sprintf("cannot read the inline policies of role %s: %v", role, err),
		Fix:     "see the reachability and credentials findings",
		Command: cmd}
}

// ---------------------------------------------------------------------------
// credentials
