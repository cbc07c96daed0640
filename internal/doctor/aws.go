package doctor

// The AWS part of the checklist: what the vendor's "the EC2 resource will
// not start" checklist asks operators to verify by hand, proved by the node
// itself with the agent's own AWS settings (proxy, endpoints, timeouts,
// instance role through IMDSv2) — never the environment of whoever runs the
// doctor. Every finding carries the AWS CLI (or curl) command that
// reproduces it by hand.
//
// All package-level names here start with "aws" so that they cannot clash
// with the other checks of the package.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials/ec2rolecreds"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/lifeboat-ha/lifeboat/internal/awsapi"
	"github.com/lifeboat-ha/lifeboat/internal/kit"
	kitec2 "github.com/lifeboat-ha/lifeboat/internal/kit/ec2" // registers the ec2 kit; its parameter names
	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

// IDs of the AWS checks.
const (
	awsIDPermissions  = "permissions"
	awsIDExcess       = "excess"
	awsIDCredentials  = "credentials"
	awsIDIMDS         = "imds"
	awsIDReachability = "reachability"
	awsIDClockSkew    = "clock-skew"
)

// Thresholds.
const (
	// awsSkewCritical: AWS rejects SigV4 requests signed further off.
	awsSkewCritical = 5 * time.Minute
	awsSkewWarning  = time.Minute
	// awsCredsWarning: credentials this close to expiry are a warning.
	awsCredsWarning = 10 * time.Minute
	// awsIMDSTokenTTL is the lifetime asked for the doctor's own token.
	awsIMDSTokenTTL = "60"
)

// awsDoctorActions are what the doctor itself uses beyond the kits:
// decoding denials (the agent does too) and reading its own role's inline
// policies for the excess check.
var awsDoctorActions = []string{"sts:DecodeAuthorizationMessage", "iam:ListRolePolicies", "iam:GetRolePolicy"}

// AWSChecks are the AWS items of the checklist: permissions (dry runs of
// every call a takeover makes), excess permissions, credentials, the
// instance metadata service, reachability of the API through the agent's
// proxy, and clock skew. They report nothing, and contact neither AWS nor
// IMDS, when no hierarchy of the node has an ec2 resource.
func AWSChecks() []Check {
	return []Check{
		{ID: awsIDPermissions, Run: awsCheckPermissions},
		{ID: awsIDExcess, Run: awsCheckExcess},
		{ID: awsIDCredentials, Run: awsCheckCredentials},
		{ID: awsIDIMDS, Run: awsCheckIMDS},
		{ID: awsIDReachability, Run: awsCheckReachability},
		{ID: awsIDClockSkew, Run: awsCheckClockSkew},
	}
}

// awsUsed reports whether any hierarchy of the node uses AWS.
func awsUsed(env *Env) bool {
	for _, h := range env.Hierarchies {
		for _, r := range h.Resources {
			if r.Type == "ec2" {
				return true
			}
		}
	}
	return false
}

func awsNow(env *Env) time.Time {
	if env.Now != nil {
		return env.Now()
	}
	return time.Now()
}

// awsDefaults applies awsapi's defaults to settings that did not come
// from built clients.
func awsDefaults(s awsapi.Settings) awsapi.Settings {
	if s.CallTimeout <= 0 {
		s.CallTimeout = awsapi.DefaultCallTimeout
	}
	if s.MaxAttempts <= 0 {
		s.MaxAttempts = awsapi.DefaultMaxAttempts
	}
	return s
}

// awsSession is what one check knows about the node's AWS access.
type awsSession struct {
	env *Env
	s   awsapi.Settings
	c   *awsapi.Clients // nil when they could not be built (err says why)
	err error
	// imdsErr: the metadata service failed once in this check; do not
	// wait for it again.
	imdsErr error
	// primaryENI is this instance's interface, once looked up.
	primaryENI string
}

// awsOpen gets the node's clients from its provider (never builds others).
func awsOpen(ctx context.Context, env *Env) *awsSession {
	a := &awsSession{env: env, s: awsDefaults(env.AWSSettings)}
	if env.AWS == nil {
		a.err = errors.New("this agent has no AWS access configured (no aws section in its config)")
		return a
	}
	c, err := env.AWS(ctx)
	if err != nil {
		a.err = err
		return a
	}
	if c == nil {
		a.err = errors.New("this agent's AWS clients are missing")
		return a
	}
	a.c, a.s = c, awsDefaults(c.Settings)
	return a
}

func (a *awsSession) region() string {
	if a.c != nil && a.c.Config.Region != "" {
		return a.c.Config.Region
	}
	return a.s.Region
}

// endpoint is the URL the agent uses for svc ("" when it cannot tell).
func (a *awsSession) endpoint(svc string) string {
	if o := a.override(svc); o != "" {
		return o
	}
	if svc == "iam" {
		return "https://iam.amazonaws.com"
	}
	if r := a.region(); r != "" {
		return "https://" + svc + "." + r + ".amazonaws.com"
	}
	return ""
}

func (a *awsSession) override(svc string) string {
	switch svc {
	case "ec2":
		return a.s.Endpoints.EC2
	case "sts":
		return a.s.Endpoints.STS
	case "iam":
		return a.s.Endpoints.IAM
	}
	return ""
}

// via says how the agent reaches rawURL: through which proxy, or directly.
func (a *awsSession) via(rawURL string) string {
	p := awsProxyFor(a.s, rawURL)
	switch {
	case p != "":
		return "through proxy " + p
	case a.s.HTTPSProxy == "" && a.s.HTTPProxy == "":
		return "directly (no proxy configured for the agent)"
	default:
		return "directly (the agent's proxy settings do not apply to this host)"
	}
}

// awsProxyFor returns the proxy the agent's transport uses for rawURL.
func awsProxyFor(s awsapi.Settings, rawURL string) string {
	req, err := http.NewRequest(http.MethodGet, rawURL, nil)
	if err != nil {
		return ""
	}
	u, err := s.ProxyFunc()(req)
	if err != nil || u == nil {
		return ""
	}
	return awsRedact(u)
}

// awsRedact drops a password from a proxy URL.
func awsRedact(u *url.URL) string {
	if u.User != nil {
		if _, ok := u.User.Password(); ok {
			c := *u
			c.User = url.UserPassword(u.User.Username(), "xxxxx")
			return c.String()
		}
	}
	return u.String()
}

func awsRedactString(p string) string {
	if u, err := url.Parse(p); err == nil && u.Host != "" {
		return awsRedact(u)
	}
	return p
}

var awsShellSafe = regexp.MustCompile(`^[A-Za-z0-9_./:=,@%+\-]+$`)

func awsQuote(s string) string {
	if awsShellSafe.MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// proxyEnv is the environment prefix that makes the AWS CLI use the
// agent's proxy settings (the CLI would otherwise use the shell's).
func (a *awsSession) proxyEnv() []string {
	var out []string
	if a.s.HTTPSProxy != "" {
		out = append(out, "HTTPS_PROXY="+awsQuote(awsRedactString(a.s.HTTPSProxy)))
	}
	if a.s.HTTPProxy != "" {
		out = append(out, "HTTP_PROXY="+awsQuote(awsRedactString(a.s.HTTPProxy)))
	}
	if len(out) > 0 {
		out = append(out, "NO_PROXY="+awsQuote(a.s.NoProxyList()))
	}
	return out
}

// cli is an AWS CLI command as the agent would make the call: same
// region, endpoint and proxy.
func (a *awsSession) cli(svc string, args ...string) string {
	parts := a.proxyEnv()
	parts = append(parts, "aws", svc)
	for _, x := range args {
		parts = append(parts, awsQuote(x))
	}
	if r := a.region(); svc != "iam" && r != "" {
		parts = append(parts, "--region", awsQuote(r))
	}
	if ep := a.override(svc); ep != "" {
		parts = append(parts, "--endpoint-url", awsQuote(ep))
	}
	return strings.Join(parts, " ")
}

// imdsBase is the metadata service the agent uses.
func awsIMDSBase(s awsapi.Settings) string {
	if s.Endpoints.IMDS != "" {
		return strings.TrimRight(s.Endpoints.IMDS, "/")
	}
	return "http://" + awsapi.IMDSAddress
}

// awsCurlIMDS is the curl command reading path with an IMDSv2 token.
func awsCurlIMDS(s awsapi.Settings, path string) string {
	base := awsIMDSBase(s)
	return fmt.Sprintf("TOKEN=$(curl -sS --noproxy '*' -X PUT %s/latest/api/token -H 'X-aws-ec2-metadata-token-ttl-seconds: 60') && curl -sS --noproxy '*' -H \"X-aws-ec2-metadata-token: $TOKEN\" %s/latest/%s",
		base, base, path)
}

// meta reads one metadata path through the agent's IMDS client.
func (a *awsSession) meta(ctx context.Context, path string) (string, error) {
	if a.c == nil || a.c.IMDS == nil {
		return "", a.err
	}
	if a.imdsErr != nil {
		return "", a.imdsErr
	}
	var v string
	err := a.c.Call(ctx, func(ctx context.Context) error {
		out, err := a.c.IMDS.GetMetadata(ctx, &imds.GetMetadataInput{Path: path})
		if err != nil {
			return err
		}
		defer out.Content.Close()
		b, err := io.ReadAll(io.LimitReader(out.Content, 64<<10))
		v = strings.TrimSpace(string(b))
		return err
	})
	var nf interface{ HTTPStatusCode() int }
	if err != nil && !(errors.As(err, &nf) && nf.HTTPStatusCode() == http.StatusNotFound) {
		a.imdsErr = err
	}
	return v, err
}

// eni is the interface a resource acts on: its eni parameter or this
// instance's primary interface, as the kit finds it.
func (a *awsSession) eni(ctx context.Context, p map[string]string) string {
	if e := p[kitec2.ParamENI]; e != "" {
		return e
	}
	if a.primaryENI != "" {
		return a.primaryENI
	}
	a.primaryENI = "ENI_ID"
	mac, err := a.meta(ctx, "mac")
	if err == nil && mac != "" {
		if id, err := a.meta(ctx, "network/interfaces/macs/"+mac+"/interface-id"); err == nil && id != "" {
			a.primaryENI = id
		}
	}
	return a.primaryENI
}

// awsIdentity is who the node is on AWS.
type awsIdentity struct {
	partition, account, role string
}

// identity asks STS (no permission needed), falling back to IMDS.
func (a *awsSession) identity(ctx context.Context) awsIdentity {
	id := awsIdentity{partition: "aws", account: "*"}
	if a.c == nil {
		return id
	}
	var out *sts.GetCallerIdentityOutput
	err := a.c.Call(ctx, func(ctx context.Context) error {
		var err error
		out, err = a.c.STS.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
		return err
	})
	if err == nil && out.Arn != nil {
		// arn:aws:sts::123456789012:assumed-role/ROLE/SESSION
		parts := strings.SplitN(*out.Arn, ":", 6)
		if len(parts) == 6 {
			id.partition, id.account = parts[1], parts[4]
			if rest, ok := strings.CutPrefix(parts[5], "assumed-role/"); ok {
				id.role, _, _ = strings.Cut(rest, "/")
			}
		}
	}
	if id.role == "" {
		id.role, _ = a.roleName(ctx)
	}
	if id.account == "*" {
		id.partition, id.account = a.profileAccount(ctx, id.partition)
	}
	return id
}

// roleName is the instance role as IMDS lists it.
func (a *awsSession) roleName(ctx context.Context) (string, error) {
	v, err := a.meta(ctx, "iam/security-credentials/")
	if err != nil {
		return "", err
	}
	for _, l := range strings.Split(v, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			return l, nil
		}
	}
	return "", errors.New("the instance has no IAM role (no instance profile attached)")
}

// profileAccount reads partition and account from the instance profile ARN.
func (a *awsSession) profileAccount(ctx context.Context, partition string) (string, string) {
	v, err := a.meta(ctx, "iam/info")
	if err != nil {
		return partition, "*"
	}
	var info struct{ InstanceProfileArn string }
	if json.Unmarshal([]byte(v), &info) != nil {
		return partition, "*"
	}
	parts := strings.SplitN(info.InstanceProfileArn, ":", 6)
	if len(parts) == 6 && parts[4] != "" {
		return parts[1], parts[4]
	}
	return partition, "*"
}

func (id awsIdentity) roleWords() string {
	if id.role == "" {
		return "this node's instance role"
	}
	return "the instance role " + id.role
}

// ---------------------------------------------------------------------------
// permissions

type awsProbeCmd struct{ action, cmd string }

// probeCommands are the dry-run CLI calls of the kit's readiness probe for
// one resource, in the probe's order.
func (a *awsSession) probeCommands(p map[string]string, eni string) []awsProbeCmd {
	var out []awsProbeCmd
	add := func(action string, args ...string) {
		out = append(out, awsProbeCmd{action, a.cli("ec2", args...)})
	}
	if p[kitec2.ParamMode] == kitec2.ModeEIP {
		alloc := p[kitec2.ParamAllocationID]
		args := []string{"associate-address", "--allocation-id", alloc, "--network-interface-id", eni}
		if ip := p[kitec2.ParamPrivateIP]; ip != "" {
			args = append(args, "--private-ip-address", ip)
		}
		add("ec2:AssociateAddress", append(args, "--allow-reassociation", "--dry-run")...)
		add("ec2:DescribeAddresses", "describe-addresses", "--allocation-ids", alloc, "--dry-run")
		return out
	}
	cidr := p[kitec2.ParamCIDR]
	for _, rtb := range strings.Split(p[kitec2.ParamRouteTables], ",") {
		if rtb = strings.TrimSpace(rtb); rtb == "" {
			continue
		}
		add("ec2:CreateRoute", "create-route", "--route-table-id", rtb, "--destination-cidr-block", cidr, "--network-interface-id", eni, "--dry-run")
		add("ec2:ReplaceRoute", "replace-route", "--route-table-id", rtb, "--destination-cidr-block", cidr, "--network-interface-id", eni, "--dry-run")
		add("ec2:DescribeRouteTables", "describe-route-tables", "--route-table-ids", rtb, "--dry-run")
	}
	add("ec2:ModifyNetworkInterfaceAttribute", "modify-network-interface-attribute", "--network-interface-id", eni, "--no-source-dest-check", "--dry-run")
	add("ec2:DescribeNetworkInterfaceAttribute", "describe-network-interface-attribute", "--network-interface-id", eni, "--attribute", "sourceDestCheck", "--dry-run")
	return out
}

func awsCommandsFor(cmds []awsProbeCmd, action string) string {
	var out []string
	for _, c := range cmds {
		if action == "" || c.action == action {
			out = append(out, c.cmd)
		}
	}
	return strings.Join(out, "\n")
}

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

var awsLacksRe = regexp.MustCompile(`lacks (\S+) on (\S+)`)

const awsDryRunNote = "Run the command on the node with no other AWS credentials in the environment or ~/.aws, so that the CLI uses the instance role as the agent does: DryRunOperation (\"Request would have succeeded\") means allowed, UnauthorizedOperation means missing."

func awsCheckPermissions(ctx context.Context, env *Env) []Finding {
	if !awsUsed(env) {
		return nil
	}
	k, ok := kit.Lookup("ec2")
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
			inst, err := k.New(r, kit.Env{Node: env.Node, Hierarchy: h.Name, AWS: env.AWS})
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
			eni := r.Params[kitec2.ParamENI]
			switch {
			case eni != "":
			case strings.Contains(rd.Reason, "instance metadata"):
				eni = "ENI_ID" // asking would only wait for IMDS again
			default:
				eni = a.eni(ctx, r.Params)
			}
			cmds := a.probeCommands(r.Params, eni)
			if len(rd.Missing) > 0 && id == nil {
				v := a.identity(ctx)
				id = &v
			}
			var reasons []string
			for _, x := range strings.Split(rd.Reason, "; ") {
				if x = strings.TrimSpace(x); x != "" {
					reasons = append(reasons, x)
				}
			}
			explained := map[int]bool{}
			for _, act := range rd.Missing {
				on := ""
				for i, x := range reasons {
					if m := awsLacksRe.FindStringSubmatch(x); m != nil && m[1] == act {
						explained[i] = true
						if on == "" && m[2] != "*" {
							on = " on " + m[2]
						}
					} else if strings.Contains(x, act+" ") {
						explained[i] = true
					}
				}
				f := base
				f.Seen = fmt.Sprintf("%s lacks %s%s: the dry run was refused (UnauthorizedOperation), so %s could not take over hierarchy %s (resource %s)",
					env.Node, act, on, env.Node, h.Name, r.Name)
				f.Fix = fmt.Sprintf("Add this statement to the policy of %s: %s (`lifeboat iam-policy` prints the whole least-privilege policy). If the role already allows it, look for an explicit Deny, a permissions boundary or an organization SCP. %s",
					id.roleWords(), awsGapStatement(k, r.Params, a.region(), id.account, act), awsDryRunNote)
				f.Command = awsCommandsFor(cmds, act)
				fs = append(fs, f)
			}
			var rest []string
			for i, x := range reasons {
				if !explained[i] {
					rest = append(rest, x)
				}
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
			f.Command = awsCommandsFor(cmds, "")
			fs = append(fs, f)
		}
	}
	return fs
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
			k, ok := kit.Lookup(r.Type)
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

func awsCheckCredentials(ctx context.Context, env *Env) []Finding {
	if !awsUsed(env) || env.AWS == nil {
		return nil
	}
	a := awsOpen(ctx, env)
	base := Finding{ID: awsIDCredentials}
	if a.c == nil {
		f := base
		f.Severity = Critical
		f.Seen = "cannot set up this node's AWS access: " + a.err.Error()
		f.Fix = "set aws.region in the agent config, or make the instance metadata service reachable (see the imds finding)"
		f.Command = awsCurlIMDS(a.s, "meta-data/placement/region")
		return []Finding{f}
	}
	instanceRole := a.s.Credentials == nil
	source := "the instance role, through the instance metadata service at " + awsIMDSBase(a.s)
	if !instanceRole {
		source = "credentials configured in the agent (not the instance role)"
	}
	credsCmd := awsCurlIMDS(a.s, "meta-data/iam/security-credentials/")
	rctx, cancel := context.WithTimeout(ctx, a.s.CallTimeout)
	creds, err := a.c.Config.Credentials.Retrieve(rctx)
	cancel()
	if err != nil {
		f := base
		f.Severity = Critical
		f.Seen = fmt.Sprintf("cannot get AWS credentials from %s: %v", source, err)
		f.Fix = "Attach an instance profile (IAM role) to the instance: aws ec2 associate-iam-instance-profile --instance-id INSTANCE_ID --iam-instance-profile Name=PROFILE; make sure the metadata service answers (see the imds finding)."
		f.Command = credsCmd
		return []Finding{f}
	}
	var who *sts.GetCallerIdentityOutput
	err = a.c.Call(ctx, func(ctx context.Context) error {
		var err error
		who, err = a.c.STS.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
		return err
	})
	stsCmd := a.cli("sts", "get-caller-identity")
	if fl := awsapi.Classify(err); fl != nil && fl.Kind == awsapi.KindCredentials {
		f := base
		f.Severity = Critical
		f.Command = stsCmd
		switch fl.Code {
		case "ExpiredToken":
			f.Seen = fmt.Sprintf("credentials rejected as expired by AWS (ExpiredToken: %s); they come from %s", fl.Message, source)
			f.Fix = "The instance metadata service should hand out a fresh set well before expiry; check the instance's IAM role association (aws ec2 describe-iam-instance-profile-associations) and this node's clock (see clock-skew), then restart the agent to drop its cached set."
		case "RequestExpired", "SignatureDoesNotMatch":
			f.Seen = fmt.Sprintf("AWS rejected this node's signed request (%s: %s)", fl.Code, fl.Message)
			f.Fix = "Usually this node's clock is more than 5 minutes off: see the clock-skew finding and synchronize the clock (chrony with 169.254.169.123)."
		default:
			f.Seen = fmt.Sprintf("credentials rejected by AWS (%s: %s); they come from %s", fl.Code, fl.Message, source)
			f.Fix = "Check the instance's IAM role association and that the role still exists: aws ec2 describe-iam-instance-profile-associations --filters Name=instance-id,Values=INSTANCE_ID"
		}
		return []Finding{f}
	}
	identity := ""
	if who != nil && who.Arn != nil {
		identity = " as " + *who.Arn
	}
	now := awsNow(env)
	if !creds.CanExpire {
		f := base
		f.Severity = Info
		f.Seen = fmt.Sprintf("credentials%s from %s; they do not expire", identity, source)
		f.Command = stsCmd
		return []Finding{f}
	}
	left := creds.Expires.Sub(now)
	f := base
	f.Command = stsCmd + "\n" + credsCmd
	switch {
	case left <= 0:
		f.Severity = Critical
		f.Seen = fmt.Sprintf("credentials%s from %s expired at %s (%s ago)", identity, source, creds.Expires.UTC().Format(time.RFC3339), (-left).Round(time.Second))
		f.Fix = "The metadata service is not handing out fresh credentials: check the instance's IAM role association and this node's clock (see clock-skew)."
	case left < awsCredsWarning:
		// The agent's cached set may simply be due for its refresh: ask
		// the metadata service what it hands out now.
		if instanceRole {
			fctx, cancel := context.WithTimeout(ctx, a.s.CallTimeout)
			fresh, err := ec2rolecreds.New(func(o *ec2rolecreds.Options) { o.Client = a.c.IMDS }).Retrieve(fctx)
			cancel()
			if err == nil && fresh.Expires.Sub(now) >= awsCredsWarning {
				f.Severity = Info
				f.Seen = fmt.Sprintf("credentials%s from %s: the set in use expires at %s (in %s); the metadata service already hands out a newer set (until %s), which the agent picks up then",
					identity, source, creds.Expires.UTC().Format(time.RFC3339), left.Round(time.Second), fresh.Expires.UTC().Format(time.RFC3339))
				return []Finding{f}
			}
		}
		f.Severity = Warning
		f.Seen = fmt.Sprintf("credentials%s from %s expire within %s: at %s (in %s), and no longer-lived set is available",
			identity, source, awsCredsWarning, creds.Expires.UTC().Format(time.RFC3339), left.Round(time.Second))
		f.Fix = "A failover after expiry would fail unless fresh credentials arrive: check the role's maximum session duration and the instance's IAM role association (aws ec2 describe-iam-instance-profile-associations), and that the metadata service rotates them."
	default:
		f.Severity = Info
		f.Seen = fmt.Sprintf("credentials%s from %s expire at %s (in %s); the agent refreshes them before then",
			identity, source, creds.Expires.UTC().Format(time.RFC3339), left.Round(time.Second))
	}
	return []Finding{f}
}

// ---------------------------------------------------------------------------
// imds

const awsHopLimitNote = "If lifeboat runs in a container, the IMDSv2 token answer needs a hop limit of at least 2: aws ec2 modify-instance-metadata-options --instance-id INSTANCE_ID --http-put-response-hop-limit 2."

func awsCheckIMDS(ctx context.Context, env *Env) []Finding {
	if !awsUsed(env) || env.AWS == nil {
		return nil
	}
	// Settings only: the agent's clients are not needed (building them may
	// itself ask IMDS for the region).
	s := awsDefaults(env.AWSSettings)
	base := awsIMDSBase(s)
	hc := s.HTTPClient() // the agent's transport rules; IMDS is never proxied
	hc.Timeout = s.CallTimeout
	defer hc.CloseIdleConnections()
	a := &awsSession{env: env, s: s}
	var fs []Finding
	if p := awsProxyFor(s, base+"/latest/api/token"); p != "" {
		fs = append(fs, Finding{ID: awsIDIMDS, Severity: Warning,
			Seen: fmt.Sprintf("the agent sends metadata requests to %s through proxy %s", base, p),
			Fix:  "add the metadata endpoint's host to aws.no_proxy in the agent config"})
	}
	reproduce := awsCurlIMDS(s, "meta-data/instance-id")

	do := func(method, path, token string) (int, string, error) {
		req, err := http.NewRequestWithContext(ctx, method, base+path, nil)
		if err != nil {
			return 0, "", err
		}
		if method == http.MethodPut {
			req.Header.Set("X-Aws-Ec2-Metadata-Token-Ttl-Seconds", awsIMDSTokenTTL)
		}
		if token != "" {
			req.Header.Set("X-Aws-Ec2-Metadata-Token", token)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return resp.StatusCode, strings.TrimSpace(string(b)), err
	}

	start := time.Now()
	status, token, err := do(http.MethodPut, "/latest/api/token", "")
	took := time.Since(start)
	if err != nil && awsHopLimitSignature(ctx, base, err, s.CallTimeout) {
		return append(fs, Finding{ID: awsIDIMDS, Severity: Critical,
			Seen:    fmt.Sprintf("the instance metadata service at %s accepts connections but its answer to the IMDSv2 token request never arrives (%s): the instance's metadata hop limit is too low for this network path (a container behind the host needs 2)", base, awsNetWords(err, s.CallTimeout)),
			Fix:     "Raise the hop limit: aws ec2 modify-instance-metadata-options --instance-id INSTANCE_ID --http-put-response-hop-limit 2 --http-tokens required --http-endpoint enabled, or run the agent in the host's network namespace.",
			Command: reproduce})
	}
	if err != nil {
		return append(fs, Finding{ID: awsIDIMDS, Severity: Critical,
			Seen: fmt.Sprintf("the instance metadata service at %s did not answer the IMDSv2 token request: %s", base, awsNetWords(err, s.CallTimeout)),
			Fix: "Without instance metadata the node has no credentials and cannot find its network interface. Check that the metadata service is enabled (aws ec2 modify-instance-metadata-options --instance-id INSTANCE_ID --http-endpoint enabled --http-tokens required) and that no host firewall rule blocks " +
				awsapi.IMDSAddress + ". " + awsHopLimitNote,
			Command: reproduce})
	}
	if status != http.StatusOK {
		v1Status, instanceID, v1Err := do(http.MethodGet, "/latest/meta-data/instance-id", "")
		if v1Err == nil && v1Status == http.StatusOK {
			if a.s.Region == "" {
				if st, r, err := do(http.MethodGet, "/latest/meta-data/placement/region", ""); err == nil && st == http.StatusOK {
					a.s.Region = r
				}
			}
			modify := a.cli("ec2", "modify-instance-metadata-options", "--instance-id", instanceID, "--http-tokens", "required", "--http-endpoint", "enabled")
			return append(fs, Finding{ID: awsIDIMDS, Severity: Critical,
				Seen: fmt.Sprintf("IMDSv1-only: the metadata service at %s refused the IMDSv2 token request (HTTP %d) but answers requests without a token; lifeboat needs IMDSv2", base, status),
				Fix: fmt.Sprintf("Turn IMDSv2 on for the instance: %s. A token request is also refused when it carries X-Forwarded-For (a local proxy in the path). %s",
					modify, awsHopLimitNote),
				Command: fmt.Sprintf("curl -sS --noproxy '*' -i -X PUT %s/latest/api/token -H 'X-aws-ec2-metadata-token-ttl-seconds: 60'", base)})
		}
		return append(fs, Finding{ID: awsIDIMDS, Severity: Critical,
			Seen:    fmt.Sprintf("the metadata service at %s refused the IMDSv2 token request (HTTP %d: %s)", base, status, awsShort(token)),
			Fix:     "Check the instance's metadata options: aws ec2 describe-instances --instance-ids INSTANCE_ID --query 'Reservations[].Instances[].MetadataOptions'. " + awsHopLimitNote,
			Command: reproduce})
	}

	get := func(path string) (string, *Finding) {
		st, body, err := do(http.MethodGet, "/latest/meta-data/"+path, token)
		switch {
		case err != nil:
			return "", &Finding{ID: awsIDIMDS, Severity: Critical,
				Seen:    fmt.Sprintf("the metadata service at %s gave a token but did not answer meta-data/%s: %s", base, path, awsNetWords(err, s.CallTimeout)),
				Command: awsCurlIMDS(s, "meta-data/"+path)}
		case st != http.StatusOK || body == "":
			return "", &Finding{ID: awsIDIMDS, Severity: Critical,
				Seen:    fmt.Sprintf("the metadata service at %s answered HTTP %d for meta-data/%s, which lifeboat uses", base, st, path),
				Fix:     "lifeboat reads the instance id, its MAC, the interface id of that MAC and the region from instance metadata; without them it cannot find the interface to route to",
				Command: awsCurlIMDS(s, "meta-data/"+path)}
		}
		return body, nil
	}
	instanceID, f := get("instance-id")
	if f != nil {
		return append(fs, *f)
	}
	mac, f := get("mac")
	if f != nil {
		return append(fs, *f)
	}
	eni, f := get("network/interfaces/macs/" + mac + "/interface-id")
	if f != nil {
		return append(fs, *f)
	}
	region, f := get("placement/region")
	if f != nil {
		return append(fs, *f)
	}
	if s.Region != "" && s.Region != region {
		fs = append(fs, Finding{ID: awsIDIMDS, Severity: Warning,
			Seen:    fmt.Sprintf("the agent is configured for region %s but this instance runs in %s", s.Region, region),
			Fix:     fmt.Sprintf("set aws.region to %s in the agent config (or leave it empty to take it from instance metadata)", region),
			Command: awsCurlIMDS(s, "meta-data/placement/region")})
	}
	return append(fs, Finding{ID: awsIDIMDS, Severity: Info,
		Seen: fmt.Sprintf("IMDSv2 works at %s (token in %s): instance %s, interface %s (MAC %s), region %s",
			base, awsDuration(took), instanceID, eni, mac, region),
		Command: reproduce})
}

func awsShort(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 120 {
		return s[:120] + "…"
	}
	return s
}

// ---------------------------------------------------------------------------
// reachability

// awsNetWords describes a failure to get any answer, in plain words.
func awsNetWords(err error, timeout time.Duration) string {
	w, ok := awsNetCause(err, timeout)
	if !ok {
		return err.Error()
	}
	return w
}

// awsNetCause says why no answer came, when err is a network-level failure
// (no HTTP answer at all).
func awsNetCause(err error, timeout time.Duration) (string, bool) {
	var dnsErr *net.DNSError
	var opErr *net.OpError
	proxy := ""
	if errors.As(err, &opErr) && opErr.Op == "proxyconnect" {
		proxy = " (the proxy)"
	}
	var unknownCA x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var invalid x509.CertificateInvalidError
	var verify *tls.CertificateVerificationError
	var record tls.RecordHeaderError
	var ne net.Error
	var fl *awsapi.Failure
	switch {
	case errors.As(err, &dnsErr):
		return fmt.Sprintf("cannot resolve %s%s (%s)", dnsErr.Name, proxy, dnsErr.Err), true
	case errors.As(err, &unknownCA):
		return "TLS failed: the certificate is signed by an unknown authority (a TLS-inspecting proxy or firewall? add its CA to the system trust store): " + unknownCA.Error(), true
	case errors.As(err, &hostErr):
		return "TLS failed: the certificate does not match the host name: " + hostErr.Error(), true
	case errors.As(err, &invalid):
		return "TLS failed: the certificate is invalid: " + invalid.Error(), true
	case errors.As(err, &verify):
		return "TLS failed: the certificate could not be verified: " + verify.Error(), true
	case errors.As(err, &record):
		return "TLS failed: the other end does not speak TLS (an http:// URL given as https://?)", true
	case errors.Is(err, syscall.ECONNREFUSED):
		addr := ""
		if opErr != nil && opErr.Addr != nil {
			addr = " by " + opErr.Addr.String()
		}
		return "connection refused" + addr + proxy, true
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "the connection was closed without an answer" + proxy, true
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout(),
		errors.As(err, &fl) && fl.Code == "Timeout":
		return fmt.Sprintf("no answer within %s%s", timeout, proxy), true
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "no route to the host" + proxy, true
	case opErr != nil:
		return opErr.Error(), true
	case strings.Contains(err.Error(), "tls:") || strings.Contains(err.Error(), "x509:"):
		return "TLS failed: " + err.Error(), true
	}
	var rse *smithyhttp.RequestSendError
	if errors.As(err, &rse) {
		return "the request could not be sent: " + rse.Err.Error(), true
	}
	return "", false
}

type awsReach struct {
	name, svc, op string
	call          func(ctx context.Context) error
	cmd           string
}

func awsCheckReachability(ctx context.Context, env *Env) []Finding {
	if !awsUsed(env) || env.AWS == nil {
		return nil
	}
	a := awsOpen(ctx, env)
	if a.c == nil {
		return nil // the credentials check reports it
	}
	// Credentials first: a failure to get them is not the API's.
	rctx, cancel := context.WithTimeout(ctx, a.s.CallTimeout)
	_, credsErr := a.c.Config.Credentials.Retrieve(rctx)
	cancel()
	one := func(o *sts.Options) { o.RetryMaxAttempts = 1 }
	oneEC2 := func(o *ec2.Options) { o.RetryMaxAttempts = 1 }
	probes := []awsReach{
		{"STS", "sts", "GetCallerIdentity", func(ctx context.Context) error {
			_, err := a.c.STS.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{}, one)
			return err
		}, a.cli("sts", "get-caller-identity")},
		{"EC2", "ec2", "DescribeRouteTables (dry run)", func(ctx context.Context) error {
			_, err := a.c.EC2.DescribeRouteTables(ctx, &ec2.DescribeRouteTablesInput{DryRun: aws.Bool(true)}, oneEC2)
			return err
		}, a.cli("ec2", "describe-route-tables", "--dry-run")},
	}
	var fs []Finding
	for _, p := range probes {
		ep := a.endpoint(p.svc)
		via := a.via(ep)
		f := Finding{ID: awsIDReachability, Command: p.cmd}
		var err error
		start := time.Now()
		if credsErr != nil {
			err = a.unsignedGet(ctx, ep)
		} else {
			err = a.c.Call(ctx, p.call)
		}
		took := awsDuration(time.Since(start))
		what := fmt.Sprintf("%s %s at %s %s", p.name, p.op, ep, via)
		if credsErr != nil {
			what = fmt.Sprintf("%s at %s %s (unsigned request: this node has no credentials, see the credentials finding)", p.name, ep, via)
		}
		fl := awsapi.Classify(err)
		var re *smithyhttp.ResponseError
		switch {
		case err == nil || fl.Kind == awsapi.KindDryRunOK:
			f.Severity = Info
			f.Seen = fmt.Sprintf("%s answered in %s", what, took)
		case fl.Kind == awsapi.KindThrottled:
			f.Severity = Warning
			f.Seen = fmt.Sprintf("%s: AWS throttled the call (%s) after %s", what, fl.Code, took)
			f.Fix = "lifeboat retries with backoff, but a takeover competes with whatever else calls the API in this account and region: find the heavy callers in CloudTrail, or ask AWS for a higher limit"
		case errors.As(err, &re) && re.HTTPStatusCode() >= 500:
			f.Severity = Warning
			f.Seen = fmt.Sprintf("%s: AWS answered 5xx (HTTP %d %s) after %s", what, re.HTTPStatusCode(), fl.Code, took)
			f.Fix = "a service-side problem: lifeboat treats it as unknown and retries; check the AWS Health Dashboard for " + a.region()
		default:
			if why, ok := awsNetCause(err, a.s.CallTimeout); ok {
				f.Severity = Critical
				f.Seen = fmt.Sprintf("cannot reach %s: %s (after %s)", what, why, took)
				f.Fix = awsReachFix(a, ep, why)
				break
			}
			// AWS answered, with an error another check explains.
			f.Severity = Info
			f.Seen = fmt.Sprintf("%s answered in %s (%s; see the permissions and credentials findings)", what, took, awsShort(fl.Error()))
		}
		fs = append(fs, f)
	}
	return fs
}

// awsDuration rounds a measured latency for people.
func awsDuration(d time.Duration) string {
	if d < time.Millisecond {
		return "<1ms"
	}
	return d.Round(time.Millisecond).String()
}

func awsReachFix(a *awsSession, ep, why string) string {
	proxy := awsProxyFor(a.s, ep)
	var b strings.Builder
	switch {
	case strings.HasPrefix(why, "cannot resolve"):
		b.WriteString("Fix name resolution on this node (/etc/resolv.conf, the VPC's DNS support), or point aws.endpoints at a reachable VPC endpoint. ")
	case strings.HasPrefix(why, "TLS failed"):
		b.WriteString("Make the certificate chain verifiable: add the intercepting proxy's CA to the system trust store, or exclude AWS endpoints from TLS inspection. ")
	}
	if proxy != "" {
		fmt.Fprintf(&b, "The agent goes through proxy %s (its aws.http_proxy/aws.https_proxy settings, not the shell's variables): check that the proxy runs and lets it through to %s, or add the endpoint's host to aws.no_proxy. ", proxy, ep)
	} else {
		fmt.Fprintf(&b, "The agent connects directly to %s (no proxy for it in its config): if this network needs a proxy, set aws.https_proxy in the agent config; in a VPC without internet access, create an interface VPC endpoint and set aws.endpoints. ", ep)
	}
	b.WriteString("Check security groups, network ACLs and host firewalls for outbound HTTPS.")
	return b.String()
}

// unsignedGet sends a plain GET to the endpoint through the agent's HTTP
// client: any HTTP answer means it is reachable.
func (a *awsSession) unsignedGet(ctx context.Context, ep string) error {
	_, err := a.plainGet(ctx, ep)
	return err
}

// plainGet GETs rawURL through the agent's transport and returns the
// answer's headers.
func (a *awsSession) plainGet(ctx context.Context, rawURL string) (http.Header, error) {
	if rawURL == "" {
		return nil, errors.New("no endpoint: the region is unknown")
	}
	ctx, cancel := context.WithTimeout(ctx, a.s.CallTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, err
	}
	var hc aws.HTTPClient
	if a.c != nil && a.c.Config.HTTPClient != nil {
		hc = a.c.Config.HTTPClient
	} else {
		c := a.s.HTTPClient()
		defer c.CloseIdleConnections()
		hc = c
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return resp.Header, nil
}

// ---------------------------------------------------------------------------
// clock-skew

func awsCheckClockSkew(ctx context.Context, env *Env) []Finding {
	if !awsUsed(env) || env.AWS == nil {
		return nil
	}
	a := awsOpen(ctx, env)
	ep := a.endpoint("ec2")
	if ep == "" {
		return nil // no region: the credentials check reports it
	}
	t0 := awsNow(env)
	h, err := a.plainGet(ctx, ep)
	t1 := awsNow(env)
	curl := fmt.Sprintf("curl -sSI %s %s | grep -i '^date:'; date -u", awsCurlProxy(a.s, ep), awsQuote(ep))
	if err != nil {
		return []Finding{{ID: awsIDClockSkew, Severity: Info,
			Seen:    fmt.Sprintf("cannot compare this node's clock with AWS's: no answer from %s (%s)", ep, awsNetWords(err, a.s.CallTimeout)),
			Fix:     "see the reachability finding",
			Command: curl}}
	}
	awsTime, err := http.ParseTime(h.Get("Date"))
	if err != nil {
		return []Finding{{ID: awsIDClockSkew, Severity: Info,
			Seen:    fmt.Sprintf("cannot compare this node's clock with AWS's: %s answered without a usable Date header (%q)", ep, h.Get("Date")),
			Command: curl}}
	}
	local := t0.Add(t1.Sub(t0) / 2)
	skew := local.Sub(awsTime) // positive: this node is ahead
	abs := skew
	if abs < 0 {
		abs = -abs
	}
	if abs <= awsSkewWarning {
		return nil
	}
	dir := "ahead of"
	if skew < 0 {
		dir = "behind"
	}
	f := Finding{ID: awsIDClockSkew, Command: curl,
		Fix: "Synchronize the clock with chrony (or another NTP client) against the Amazon Time Sync Service: add `server 169.254.169.123 prefer iburst minpoll 4 maxpoll 4` to /etc/chrony.conf (/etc/chrony/chrony.conf on Debian and Ubuntu), run `systemctl enable --now chronyd` (chrony on Debian and Ubuntu), and check with `chronyc tracking`."}
	seen := fmt.Sprintf("this node's clock is %s %s AWS's (the EC2 endpoint %s says %s, this node %s)",
		abs.Round(time.Second), dir, ep, awsTime.UTC().Format(time.RFC3339), local.UTC().Format(time.RFC3339))
	if abs > awsSkewCritical {
		f.Severity = Critical
		f.Seen = seen + ": AWS rejects requests signed more than 5 minutes off (SigV4), so every API call of a failover would fail"
	} else {
		f.Severity = Warning
		f.Seen = seen + ": still within the 5 minutes SigV4 allows, but drifting"
	}
	return []Finding{f}
}

// awsCurlProxy is curl's proxy option matching the agent's decision.
func awsCurlProxy(s awsapi.Settings, ep string) string {
	if p := awsProxyFor(s, ep); p != "" {
		return "--proxy " + awsQuote(p)
	}
	return "--noproxy '*'"
}

// awsHopLimitSignature reports whether a failed token request looks like a
// hop limit too low: it timed out although a TCP connection to the
// metadata service opens at once (a down or firewalled service refuses,
// resets or never connects).
func awsHopLimitSignature(ctx context.Context, base string, err error, timeout time.Duration) bool {
	var ne net.Error
	if !(errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()) {
		return false
	}
	u, perr := url.Parse(base)
	if perr != nil {
		return false
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "80")
	}
	d := net.Dialer{Timeout: min(timeout, time.Second)}
	c, derr := d.DialContext(ctx, "tcp", host)
	if derr != nil {
		return false
	}
	c.Close()
	return true
}
