// An external test package: internal/demo imports the agent, which may
// import this package.
package doctor_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/agent"
	"github.com/lifeboat-ha/lifeboat/internal/awsapi"
	"github.com/lifeboat-ha/lifeboat/internal/demo"
	"github.com/lifeboat-ha/lifeboat/internal/doctor"
	"github.com/lifeboat-ha/lifeboat/internal/kit/kits"
	"github.com/lifeboat-ha/lifeboat/internal/sim"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

// awsLab is the simulator with a two-node cluster, seen from node1: the
// agent's settings as its config would give them (region, endpoints,
// instance-role credentials through IMDS).
type awsLab struct {
	t     *testing.T
	sim   *demo.SimEnv
	nodes []string
	node  string
	hs    []spec.Hierarchy
	s     awsapi.Settings
}

func newAWSLab(t *testing.T) *awsLab {
	t.Helper()
	nodes := []string{"node1", "node2"}
	e, err := demo.StartSim(nodes)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	app := spec.Resource{Name: "web-app", Type: "app", Params: map[string]string{"restore": "true", "remove": "true", "quickcheck": "true"}}
	hs := []spec.Hierarchy{e.VIPHierarchy("web", nodes, app)}
	if err := e.GrantLeastPrivilege(nodes, hs); err != nil {
		t.Fatal(err)
	}
	return &awsLab{t: t, sim: e, nodes: nodes, node: "node1", hs: hs, s: awsapi.Settings{
		Region:      e.World.Region(),
		Endpoints:   awsapi.Endpoints{EC2: e.Endpoint, STS: e.Endpoint, IAM: e.Endpoint, IMDS: e.IMDS["node1"]},
		CallTimeout: 2 * time.Second,
		MaxAttempts: 1,
	}}
}

// provider builds the clients once, as the agent does.
func awsProvider(s awsapi.Settings, calls *atomic.Int32) awsapi.Provider {
	var mu sync.Mutex
	var c *awsapi.Clients
	return func(ctx context.Context) (*awsapi.Clients, error) {
		if calls != nil {
			calls.Add(1)
		}
		mu.Lock()
		defer mu.Unlock()
		if c != nil {
			return c, nil
		}
		var err error
		c, err = awsapi.New(ctx, s)
		return c, err
	}
}

func (l *awsLab) env() *doctor.Env {
	return &doctor.Env{Kits: kits.Builtin(), Node: l.node, Hierarchies: l.hs, AWSSettings: l.s, AWS: awsProvider(l.s, nil)}
}

func (l *awsLab) run(ids ...string) []doctor.Finding {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	only := map[string]bool{}
	for _, id := range ids {
		only[id] = true
	}
	fs := doctor.Run(ctx, l.env(), doctor.AWSChecks(), only)
	for _, f := range fs {
		l.t.Logf("%s %s [%s/%s] %s\n    fix: %s\n    cmd: %s", f.Severity, f.ID, f.Hierarchy, f.Resource, f.Seen, f.Fix, f.Command)
	}
	return fs
}

func (l *awsLab) instanceID() string {
	in, ok := l.sim.World.InstanceByName(l.node)
	if !ok {
		l.t.Fatalf("no instance %s", l.node)
	}
	return in.ID
}

func (l *awsLab) eni() string {
	ids := l.sim.World.InstanceNetworkInterfaces(l.instanceID())
	if len(ids) == 0 {
		l.t.Fatal("node has no interface")
	}
	return ids[0]
}

// putPolicy replaces node1's role policy.
func (l *awsLab) putPolicy(doc any) {
	l.t.Helper()
	b, err := json.Marshal(doc)
	if err != nil {
		l.t.Fatal(err)
	}
	if err := l.sim.World.PutRolePolicy(l.sim.Role(l.node), "lifeboat", b); err != nil {
		l.t.Fatal(err)
	}
}

// only returns the findings of one check with a severity.
func only(fs []doctor.Finding, id, sev string) []doctor.Finding {
	var out []doctor.Finding
	for _, f := range fs {
		if f.ID == id && (sev == "" || f.Severity == sev) {
			out = append(out, f)
		}
	}
	return out
}

func one(t *testing.T, fs []doctor.Finding, id, sev string) doctor.Finding {
	t.Helper()
	got := only(fs, id, sev)
	if len(got) != 1 {
		t.Fatalf("want exactly one %s %s finding, got %d of %d: %+v", sev, id, len(got), len(fs), fs)
	}
	if got[0].Node != "node1" {
		t.Errorf("finding node = %q, want node1", got[0].Node)
	}
	return got[0]
}

func contains(t *testing.T, what, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			t.Errorf("%s does not contain %q:\n%s", what, sub, s)
		}
	}
}

func TestAWSHealthyHasNoCriticalOrWarning(t *testing.T) {
	l := newAWSLab(t)
	start := time.Now()
	fs := l.run()
	for _, f := range fs {
		if f.Severity != doctor.Info {
			t.Errorf("healthy setup: %s %s: %s", f.Severity, f.ID, f.Seen)
		}
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the AWS checks took %s on a healthy simulator", d)
	}
	contains(t, "imds", one(t, fs, "imds", doctor.Info).Seen, "IMDSv2 works", l.instanceID(), l.eni(), "us-east-1")
	cred := one(t, fs, "credentials", doctor.Info)
	contains(t, "credentials", cred.Seen, "instance role", "assumed-role/lifeboat-node1", "expire at")
	reach := only(fs, "reachability", doctor.Info)
	if len(reach) != 2 {
		t.Fatalf("want 2 reachability findings (STS, EC2), got %+v", reach)
	}
	for _, f := range reach {
		contains(t, "reachability", f.Seen, "answered in", "directly (no proxy configured")
	}
	// The least-privilege policy does not let the role read itself.
	ex := one(t, fs, "excess", doctor.Info)
	contains(t, "excess", ex.Seen, "cannot read the inline policies of role lifeboat-node1", "AccessDenied")
	contains(t, "excess fix", ex.Fix, "iam:ListRolePolicies", "iam:GetRolePolicy", "arn:aws:iam::"+l.sim.World.AccountID()+":role/lifeboat-node1")
	contains(t, "excess command", ex.Command, "aws iam list-role-policies --role-name lifeboat-node1 --endpoint-url "+l.sim.Endpoint)
	if len(only(fs, "permissions", "")) != 0 || len(only(fs, "clock-skew", "")) != 0 {
		t.Errorf("permissions or clock-skew reported on a healthy setup")
	}
}

// leastPrivilegeWithout is the policy `lifeboat iam-policy` prints, minus
// some actions.
func (l *awsLab) leastPrivilegeWithout(drop ...string) agent.PolicyDocument {
	doc := agent.LeastPrivilege(kits.Builtin(), l.hs, l.sim.World.Region(), l.sim.World.AccountID())
	var sts []agent.PolicyStatement
	for _, st := range doc.Statement {
		st.Action = slices.DeleteFunc(slices.Clone(st.Action), func(a string) bool { return slices.Contains(drop, a) })
		if len(st.Action) > 0 {
			sts = append(sts, st)
		}
	}
	doc.Statement = sts
	return doc
}

func TestAWSPermissionsNamesTheMissingAction(t *testing.T) {
	l := newAWSLab(t)
	l.putPolicy(l.leastPrivilegeWithout("ec2:ModifyNetworkInterfaceAttribute"))
	fs := l.run("permissions")
	f := one(t, fs, "permissions", doctor.Critical)
	if f.Hierarchy != "web" || f.Resource != "web-vip" {
		t.Errorf("finding for %s/%s, want web/web-vip", f.Hierarchy, f.Resource)
	}
	contains(t, "seen", f.Seen, "lacks ec2:ModifyNetworkInterfaceAttribute", "the dry run was refused (UnauthorizedOperation)", "could not take over hierarchy web")
	contains(t, "fix", f.Fix, `{"Effect":"Allow","Action":["ec2:ModifyNetworkInterfaceAttribute"],"Resource":["arn:aws:ec2:us-east-1:`+l.sim.World.AccountID()+`:network-interface/*"]}`,
		"lifeboat-node1")
	want := "aws ec2 modify-network-interface-attribute --network-interface-id " + l.eni() + " --no-source-dest-check --dry-run --region us-east-1 --endpoint-url " + l.sim.Endpoint
	if f.Command != want {
		t.Errorf("command:\n got %s\nwant %s", f.Command, want)
	}
	if len(fs) != 1 {
		t.Errorf("want only the one finding, got %d", len(fs))
	}
}

func TestAWSPermissionsTwoMissingRouteActions(t *testing.T) {
	l := newAWSLab(t)
	// (ReplaceRoute cannot be probed while the route does not exist: EC2
	// answers InvalidParameterValue, "There is no route defined for ...",
	// before it looks at DryRun.)
	l.putPolicy(l.leastPrivilegeWithout("ec2:CreateRoute", "ec2:DescribeRouteTables"))
	fs := only(l.run("permissions"), "permissions", doctor.Critical)
	if len(fs) != 2 {
		t.Fatalf("want a finding per missing action, got %+v", fs)
	}
	rtb := l.sim.World.State().RouteTables[0].ID
	byAction := map[string]doctor.Finding{}
	for _, f := range fs {
		for _, a := range []string{"ec2:CreateRoute", "ec2:DescribeRouteTables"} {
			if strings.Contains(f.Seen, "lacks "+a) {
				byAction[a] = f
			}
		}
	}
	create, describe := byAction["ec2:CreateRoute"], byAction["ec2:DescribeRouteTables"]
	contains(t, "command", create.Command, "aws ec2 create-route --route-table-id "+rtb+" --destination-cidr-block 10.0.100.10/32 --network-interface-id "+l.eni()+" --dry-run")
	contains(t, "fix", create.Fix, `"Action":["ec2:CreateRoute"],"Resource":["arn:aws:ec2:us-east-1:`+l.sim.World.AccountID()+":route-table/"+rtb+`"]}`)
	contains(t, "command", describe.Command, "aws ec2 describe-route-tables --route-table-ids "+rtb+" --dry-run")
	contains(t, "fix", describe.Fix, `"Action":["ec2:DescribeRouteTables"],"Resource":["*"]}`)
}

func TestAWSExcessWildcard(t *testing.T) {
	l := newAWSLab(t)
	roleARN := fmt.Sprintf("arn:aws:iam::%s:role/%s", l.sim.World.AccountID(), l.sim.Role(l.node))
	l.putPolicy(map[string]any{"Version": "2012-10-17", "Statement": []any{
		map[string]any{"Effect": "Allow", "Action": []string{"ec2:*", "sts:DecodeAuthorizationMessage"}, "Resource": "*"},
		map[string]any{"Effect": "Allow", "Action": []string{"iam:ListRolePolicies", "iam:GetRolePolicy"}, "Resource": roleARN},
	}})
	fs := l.run("excess", "permissions")
	f := one(t, fs, "excess", doctor.Info)
	contains(t, "seen", f.Seen, `"ec2:*"`, "policy lifeboat", "wildcard")
	if strings.Contains(f.Seen, "iam:GetRolePolicy") || strings.Contains(f.Seen, "sts:Decode") {
		t.Errorf("needed actions reported as excess: %s", f.Seen)
	}
	contains(t, "fix", f.Fix, "lifeboat iam-policy", "ec2:ModifyNetworkInterfaceAttribute")
	contains(t, "command", f.Command, "aws iam get-role-policy --role-name lifeboat-node1 --policy-name lifeboat --endpoint-url "+l.sim.Endpoint)
	if n := len(only(fs, "permissions", "")); n != 0 {
		t.Errorf("ec2:* allows everything, but permissions reported %d findings", n)
	}
}

func TestAWSCredentialsRejectedAsExpired(t *testing.T) {
	l := newAWSLab(t)
	l.sim.Server.SetFaults(sim.Faults{ExpireCredentials: true})
	f := one(t, l.run("credentials"), "credentials", doctor.Critical)
	contains(t, "seen", f.Seen, "credentials rejected as expired", "ExpiredToken", "instance role")
	contains(t, "command", f.Command, "aws sts get-caller-identity --region us-east-1 --endpoint-url "+l.sim.Endpoint)
}

func TestAWSCredentialsExpireSoon(t *testing.T) {
	l := newAWSLab(t)
	l.sim.Server.SetIMDSOptions(l.instanceID(), sim.IMDSOptions{CredentialTTL: 5 * time.Minute})
	f := one(t, l.run("credentials"), "credentials", doctor.Warning)
	contains(t, "seen", f.Seen, "expire within 10m0s")
}

func TestAWSIMDSDown(t *testing.T) {
	l := newAWSLab(t)
	l.sim.Server.SetIMDSOptions(l.instanceID(), sim.IMDSOptions{Down: true})
	start := time.Now()
	f := one(t, l.run("imds"), "imds", doctor.Critical)
	contains(t, "seen", f.Seen, "did not answer the IMDSv2 token request", l.sim.IMDS["node1"])
	contains(t, "fix", f.Fix, "hop limit")
	contains(t, "command", f.Command, "curl", "/latest/api/token")
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %s", d)
	}
}

// A hop limit too low: the token request is accepted, its answer never
// arrives; the finding names the hop limit and how to raise it.
func TestAWSIMDSHopLimit(t *testing.T) {
	l := newAWSLab(t)
	l.s.CallTimeout = 500 * time.Millisecond
	l.sim.Server.SetIMDSOptions(l.instanceID(), sim.IMDSOptions{HopLimitExceeded: true})
	f := one(t, l.run("imds"), "imds", doctor.Critical)
	contains(t, "seen", f.Seen, "accepts connections", "hop limit is too low")
	contains(t, "fix", f.Fix, "--http-put-response-hop-limit 2")
	// A service that is down is not mistaken for a hop limit.
	l.sim.Server.SetIMDSOptions(l.instanceID(), sim.IMDSOptions{Down: true})
	f = one(t, l.run("imds"), "imds", doctor.Critical)
	if strings.Contains(f.Seen, "hop limit is too low") {
		t.Fatalf("IMDS down reported as a hop limit: %s", f.Seen)
	}
}

func TestAWSIMDSv1Only(t *testing.T) {
	l := newAWSLab(t)
	l.sim.Server.SetIMDSOptions(l.instanceID(), sim.IMDSOptions{V1Only: true})
	f := one(t, l.run("imds"), "imds", doctor.Critical)
	contains(t, "seen", f.Seen, "IMDSv1-only", "HTTP 403", "lifeboat needs IMDSv2")
	contains(t, "fix", f.Fix, "aws ec2 modify-instance-metadata-options --instance-id "+l.instanceID()+" --http-tokens required --http-endpoint enabled --region us-east-1")
}

// closedPort is an address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestAWSReachabilityEndpointUnreachable(t *testing.T) {
	l := newAWSLab(t)
	dead := "http://" + closedPort(t)
	l.s.Endpoints.EC2 = dead
	fs := l.run("reachability")
	f := one(t, fs, "reachability", doctor.Critical)
	contains(t, "seen", f.Seen, "cannot reach EC2", dead, "connection refused", "directly")
	contains(t, "command", f.Command, "aws ec2 describe-route-tables --dry-run --region us-east-1 --endpoint-url "+dead)
	contains(t, "sts", one(t, fs, "reachability", doctor.Info).Seen, "STS GetCallerIdentity", "answered in")
}

func TestAWSReachabilityThrottledAnd5xx(t *testing.T) {
	l := newAWSLab(t)
	l.sim.Server.SetFaults(sim.Faults{ThrottleEvery: 1, Actions: []string{"sts:GetCallerIdentity"}})
	f := one(t, l.run("reachability"), "reachability", doctor.Warning)
	contains(t, "throttled", f.Seen, "STS", "throttled", "Throttling")

	l.sim.Server.SetFaults(sim.Faults{ErrorRate: 1, Actions: []string{"ec2:DescribeRouteTables"}})
	f = one(t, l.run("reachability"), "reachability", doctor.Warning)
	contains(t, "5xx", f.Seen, "EC2", "AWS answered 5xx", "HTTP 500")
}

// forwardProxy is an HTTP proxy that sends every request for host to
// target instead, counting them.
func forwardProxy(t *testing.T, host, target string, hits *atomic.Int32) string {
	t.Helper()
	p := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.URL.Host != host {
			http.Error(rw, "proxy: unknown host "+r.URL.Host, http.StatusBadGateway)
			return
		}
		u := *r.URL
		u.Host = target
		out, err := http.NewRequestWithContext(r.Context(), r.Method, u.String(), r.Body)
		if err != nil {
			http.Error(rw, err.Error(), http.StatusBadGateway)
			return
		}
		out.Header = r.Header.Clone()
		out.Host, out.ContentLength = r.Host, r.ContentLength
		resp, err := http.DefaultTransport.RoundTrip(out)
		if err != nil {
			http.Error(rw, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for k, v := range resp.Header {
			rw.Header()[k] = v
		}
		rw.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(rw, resp.Body)
	}))
	t.Cleanup(p.Close)
	return p.URL
}

// The agent's own proxy setting is used (and named); a dead proxy is a
// critical finding that says so.
func TestAWSReachabilityThroughTheAgentsProxy(t *testing.T) {
	l := newAWSLab(t)
	simAddr := strings.TrimPrefix(l.sim.Endpoint, "http://")
	_, port, _ := net.SplitHostPort(simAddr)
	host := "aws-sim.lifeboat.invalid:" + port // resolved by the proxy only
	var hits atomic.Int32
	proxy := forwardProxy(t, host, simAddr, &hits)
	l.s.HTTPProxy = proxy
	l.s.Endpoints.EC2, l.s.Endpoints.STS, l.s.Endpoints.IAM = "http://"+host, "http://"+host, "http://"+host
	fs := l.run("reachability", "clock-skew")
	for _, f := range only(fs, "reachability", "") {
		if f.Severity != doctor.Info {
			t.Errorf("through a working proxy: %s %s", f.Severity, f.Seen)
		}
		contains(t, "seen", f.Seen, "through proxy "+proxy)
		contains(t, "command", f.Command, "HTTP_PROXY="+proxy, "NO_PROXY=169.254.169.254 aws ")
	}
	if len(only(fs, "reachability", "")) != 2 || hits.Load() == 0 {
		t.Fatalf("the proxy saw %d requests; findings %+v", hits.Load(), fs)
	}

	l.s.HTTPProxy = "http://" + closedPort(t)
	fs = only(l.run("reachability"), "reachability", doctor.Critical)
	if len(fs) != 2 {
		t.Fatalf("a dead proxy: want STS and EC2 critical, got %+v", fs)
	}
	for _, f := range fs {
		contains(t, "seen", f.Seen, "cannot reach", "through proxy "+l.s.HTTPProxy, "connection refused", "(the proxy)")
		contains(t, "fix", f.Fix, "aws.http_proxy/aws.https_proxy settings, not the shell's variables")
	}
}

func TestAWSReachabilityCannotResolve(t *testing.T) {
	const host = "no-such-endpoint.lifeboat.invalid"
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var dnsErr *net.DNSError
	if _, err := net.DefaultResolver.LookupHost(ctx, host); !errors.As(err, &dnsErr) || !dnsErr.IsNotFound {
		t.Skipf("this machine's resolver does not answer NXDOMAIN quickly: %v", err)
	}
	l := newAWSLab(t)
	l.s.Endpoints.STS = "http://" + host
	f := one(t, l.run("reachability"), "reachability", doctor.Critical)
	contains(t, "seen", f.Seen, "cannot reach STS", "cannot resolve "+host)
}

func TestAWSClockSkew(t *testing.T) {
	for _, tc := range []struct {
		skew time.Duration
		sev  string
		dir  string
	}{
		{10 * time.Minute, doctor.Critical, "behind"},
		{-10 * time.Minute, doctor.Critical, "ahead of"},
		{2 * time.Minute, doctor.Warning, "behind"},
		{20 * time.Second, "", ""},
	} {
		t.Run(tc.skew.String(), func(t *testing.T) {
			l := newAWSLab(t)
			l.sim.Server.SetFaults(sim.Faults{ClockSkew: tc.skew})
			fs := l.run("clock-skew")
			if tc.sev == "" {
				if len(fs) != 0 {
					t.Fatalf("skew %s reported: %+v", tc.skew, fs)
				}
				return
			}
			f := one(t, fs, "clock-skew", tc.sev)
			contains(t, "seen", f.Seen, tc.dir+" AWS's", l.sim.Endpoint)
			contains(t, "fix", f.Fix, "chrony", "169.254.169.123")
			contains(t, "command", f.Command, "curl -sSI --noproxy '*' "+l.sim.Endpoint, "date -u")
		})
	}
}

// countingListener accepts and counts connections, answering nothing.
func countingListener(t *testing.T) (string, *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return "http://" + ln.Addr().String(), &n
}

func TestAWSChecksSkippedWithoutEC2Resources(t *testing.T) {
	ep, conns := countingListener(t)
	imdsURL, imdsConns := countingListener(t)
	s := awsapi.Settings{Region: "us-east-1", Endpoints: awsapi.Endpoints{EC2: ep, STS: ep, IAM: ep, IMDS: imdsURL}, CallTimeout: time.Second, MaxAttempts: 1}
	var calls atomic.Int32
	env := &doctor.Env{Kits: kits.Builtin(), Node: "node1", AWSSettings: s, AWS: awsProvider(s, &calls), Hierarchies: []spec.Hierarchy{{
		Name: "web", Nodes: []string{"node1", "node2"},
		Resources: []spec.Resource{{Name: "web-app", Type: "app", Params: map[string]string{"restore": "true", "remove": "true", "quickcheck": "true"}}},
	}}}
	start := time.Now()
	fs := doctor.Run(context.Background(), env, doctor.AWSChecks(), nil)
	if len(fs) != 0 {
		t.Errorf("no ec2 resource, but findings: %+v", fs)
	}
	time.Sleep(20 * time.Millisecond) // let a stray connection be counted
	if calls.Load() != 0 || conns.Load() != 0 || imdsConns.Load() != 0 {
		t.Errorf("AWS contacted without ec2 resources: %d client builds, %d API and %d IMDS connections", calls.Load(), conns.Load(), imdsConns.Load())
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("took %s", d)
	}
}

func TestAWSNoAWSAccessConfigured(t *testing.T) {
	imdsURL, imdsConns := countingListener(t)
	hs := []spec.Hierarchy{{Name: "web", Nodes: []string{"node1"}, Resources: []spec.Resource{
		{Name: "web-vip", Type: "ec2", Params: map[string]string{"mode": "route", "cidr": "10.0.100.10/32", "route_tables": "rtb-1"}},
	}}}
	env := &doctor.Env{Kits: kits.Builtin(), Node: "node1", Hierarchies: hs, AWSSettings: awsapi.Settings{Endpoints: awsapi.Endpoints{IMDS: imdsURL}}}
	fs := doctor.Run(context.Background(), env, doctor.AWSChecks(), nil)
	f := one(t, fs, "permissions", doctor.Critical)
	contains(t, "seen", f.Seen, "no AWS access configured")
	if len(fs) != 1 || imdsConns.Load() != 0 {
		t.Errorf("want only the permissions finding and no IMDS call, got %d findings, %d connections", len(fs), imdsConns.Load())
	}
}

// The commands carry the agent's proxy, never a password.
func TestAWSCommandsRedactProxyPassword(t *testing.T) {
	l := newAWSLab(t)
	l.s.HTTPSProxy = (&url.URL{Scheme: "http", User: url.UserPassword("ops", "s3cret"), Host: closedPort(t)}).String()
	fs := l.run("reachability")
	for _, f := range fs {
		if strings.Contains(f.Command+f.Seen+f.Fix, "s3cret") {
			t.Errorf("password in finding: %+v", f)
		}
	}
	if len(fs) == 0 || !strings.Contains(fs[0].Command, "HTTPS_PROXY=http://ops:xxxxx@") {
		t.Errorf("commands do not carry the agent's proxy: %+v", fs)
	}
}
