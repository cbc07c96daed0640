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
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/lifeboat-ha/lifeboat/internal/awsapi"
	"github.com/lifeboat-ha/lifeboat/internal/kit"
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
	a := &awsSession{env: env, s: awsDefaults(env.AWSSettings), imdsErr: env.imdsErr}
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
		a.env.imdsErr = err // and for the rest of this run
	}
	return v, err
}

// primary is this instance's primary interface, as the metadata service
// lists it ("ENI_ID" when it cannot tell).
func (a *awsSession) primary(ctx context.Context) string {
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

// probeCommands are the CLI calls of the kit's readiness probe for one
// resource, in the probe's order (for the ec2 kit: the dry runs of the
// read-only calls, the interface's VPC in route mode, a plain read whose
// answer shows VpcId, then the dry runs of the calls that change
// something); none when the kit does not describe its probe.
func (a *awsSession) probeCommands(k kit.Kit, p map[string]string, primary func() string) []awsProbeCmd {
	pe, ok := k.(kit.ProbeExplainer)
	if !ok {
		return nil
	}
	var out []awsProbeCmd
	for _, pc := range pe.ProbeCommands(p, primary) {
		out = append(out, awsProbeCmd{pc.Action, a.cli(pc.Service, pc.Args...)})
	}
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
