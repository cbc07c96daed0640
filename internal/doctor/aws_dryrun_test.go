package doctor_test

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/lifeboat-ha/lifeboat/internal/awsapi"
	"github.com/lifeboat-ha/lifeboat/internal/doctor"
	"github.com/lifeboat-ha/lifeboat/internal/sim"
)

// rewritingEndpoint is a reverse proxy to target that rewrites every
// answer's body: an endpoint that answers in other words than the
// simulator.
func rewritingEndpoint(t *testing.T, target string, rewrite func([]byte) []byte) string {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ModifyResponse = func(resp *http.Response) error {
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		b = rewrite(b)
		resp.Body = io.NopCloser(bytes.NewReader(b))
		resp.ContentLength = int64(len(b))
		resp.Header.Set("Content-Length", strconv.Itoa(len(b)))
		return nil
	}
	ts := httptest.NewServer(rp)
	t.Cleanup(ts.Close)
	return ts.URL
}

// The permission finding names the error code the endpoint actually
// answered, not always UnauthorizedOperation.
func TestAWSPermissionsNamesTheCodeAnswered(t *testing.T) {
	l := newAWSLab(t)
	l.s.Endpoints.EC2 = rewritingEndpoint(t, l.sim.Endpoint, func(b []byte) []byte {
		return bytes.ReplaceAll(b, []byte("<Code>UnauthorizedOperation</Code>"), []byte("<Code>AccessDenied</Code>"))
	})
	l.putPolicy(l.leastPrivilegeWithout("ec2:ModifyNetworkInterfaceAttribute"))
	f := one(t, l.run("permissions"), "permissions", doctor.Critical)
	contains(t, "seen", f.Seen, "lacks ec2:ModifyNetworkInterfaceAttribute", "the dry run was refused (AccessDenied)")
	if strings.Contains(f.Seen, "UnauthorizedOperation") {
		t.Errorf("seen names a code the endpoint did not answer: %s", f.Seen)
	}
}

// 0.2.0's new permission: without ec2:DescribeNetworkInterfaces the node is
// NOT READY, and the finding gives the statement and the command.
func TestAWSPermissionsMissingDescribeNetworkInterfaces(t *testing.T) {
	l := newAWSLab(t)
	l.putPolicy(l.leastPrivilegeWithout("ec2:DescribeNetworkInterfaces"))
	fs := l.run("permissions")
	f := one(t, fs, "permissions", doctor.Critical)
	contains(t, "seen", f.Seen, "lacks ec2:DescribeNetworkInterfaces: the call was refused (UnauthorizedOperation)", "could not take over hierarchy web")
	contains(t, "fix", f.Fix, `{"Effect":"Allow","Action":["ec2:DescribeNetworkInterfaces"],"Resource":["*"]}`)
	want := "aws ec2 describe-network-interfaces --network-interface-ids " + l.eni() + " --region us-east-1 --endpoint-url " + l.sim.Endpoint
	if f.Command != want {
		t.Errorf("command:\n got %s\nwant %s", f.Command, want)
	}
}

// An EC2 endpoint that ignores DryRun: the permissions and reachability
// checks say so loudly, and the readiness probe sent no mutating dry run
// (which such an endpoint would carry out).
func TestAWSEndpointIgnoresDryRun(t *testing.T) {
	l := newAWSLab(t)
	rtb := l.sim.World.State().RouteTables[0].ID
	before, _ := l.sim.World.RouteTable(rtb)
	l.sim.Server.SetFaults(sim.Faults{IgnoreDryRun: true})
	fs := l.run("permissions", "reachability")
	perms := only(fs, "permissions", doctor.Critical)
	if len(perms) == 0 {
		t.Fatalf("no critical permissions finding: %+v", fs)
	}
	for _, f := range perms {
		contains(t, "seen", f.Seen, awsapi.DryRunIgnored)
		contains(t, "fix", f.Fix, "does not honour DryRun", l.sim.Endpoint)
		if strings.Contains(f.Seen, "lacks ") {
			t.Errorf("an ignored DryRun reported as a missing permission: %s", f.Seen)
		}
	}
	reach := one(t, fs, "reachability", doctor.Critical)
	contains(t, "reachability", reach.Seen, "EC2 DescribeRouteTables (dry run)", awsapi.DryRunIgnored)
	after, _ := l.sim.World.RouteTable(rtb)
	if len(after.Routes) != len(before.Routes) {
		t.Errorf("the probes changed route table %s: %+v -> %+v", rtb, before.Routes, after.Routes)
	}
	if e, _ := l.sim.World.NetworkInterface(l.eni()); e.SourceDestCheck == nil || !*e.SourceDestCheck {
		t.Error("the probes turned the source/destination check off")
	}
	if a, _ := l.sim.World.Address(l.sim.World.State().Addresses[0].AllocationID); a.AssociationID != "" {
		t.Errorf("the probes associated the Elastic IP: %+v", a)
	}
}
