// Package awscli checks the simulator against the real AWS CLI: every call
// lifeboat relies on, run by /usr/bin/aws (Debian's awscli) with
// --endpoint-url, must behave as it does against AWS.
package awscli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "lifeboat-awscli-")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "lifeboat")
	if out, err := exec.Command("go", "build", "-o", binary, "../../cmd/lifeboat").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build lifeboat: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type simInfo struct {
	Endpoint        string            `json:"endpoint"`
	Region          string            `json:"region"`
	AccessKeyID     string            `json:"access_key_id"`
	SecretAccessKey string            `json:"secret_access_key"`
	Instances       map[string]string `json:"instances"`
	IMDS            map[string]string `json:"imds"`
}

// awsBinary finds Debian's AWS CLI. Without it the test is skipped on a
// developer's machine and fails in CI, which installs it.
func awsBinary(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/usr/bin/aws", "/usr/local/bin/aws"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("the AWS CLI is not installed (apt-get install awscli); .ci/run installs it")
	}
	t.Skip("AWS CLI not installed (apt-get install awscli)")
	return ""
}

// startSim runs `lifeboat sim` and returns its info.
func startSim(t *testing.T, args ...string) simInfo {
	t.Helper()
	info := filepath.Join(t.TempDir(), "sim.json")
	cmd := exec.Command(binary, append([]string{"sim", "--listen", "127.0.0.1:0", "--info", info}, args...)...)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if b, err := os.ReadFile(info); err == nil {
			var si simInfo
			if err := json.Unmarshal(b, &si); err != nil {
				t.Fatal(err)
			}
			return si
		}
		select {
		case <-done:
			t.Fatalf("lifeboat sim exited: %s", logs.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("lifeboat sim did not start: %s", logs.String())
		}
	}
}

type cli struct {
	t    *testing.T
	bin  string
	si   simInfo
	akid string
	sec  string
	tok  string // session token of temporary credentials
}

// run calls the AWS CLI with a clean environment: only what is set here.
func (c cli) run(args ...string) (string, string, int) {
	c.t.Helper()
	home := c.t.TempDir()
	cmd := exec.Command(c.bin, append([]string{"--endpoint-url", c.si.Endpoint, "--output", "json", "--no-cli-pager"}, args...)...)
	cmd.Env = []string{
		"PATH=/usr/bin:/bin", "HOME=" + home,
		"AWS_ACCESS_KEY_ID=" + c.akid, "AWS_SECRET_ACCESS_KEY=" + c.sec,
		"AWS_DEFAULT_REGION=" + c.si.Region, "AWS_EC2_METADATA_DISABLED=true",
		"AWS_CONFIG_FILE=" + filepath.Join(home, "none"), "AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(home, "none"),
	}
	if c.tok != "" {
		cmd.Env = append(cmd.Env, "AWS_SESSION_TOKEN="+c.tok)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		c.t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

// ok runs a call that must succeed and decodes its JSON output.
func (c cli) ok(v any, args ...string) {
	c.t.Helper()
	out, errOut, code := c.run(args...)
	if code != 0 {
		c.t.Fatalf("aws %s: exit %d: %s", strings.Join(args, " "), code, errOut)
	}
	if v != nil {
		if err := json.Unmarshal([]byte(out), v); err != nil {
			c.t.Fatalf("aws %s: output %q: %v", strings.Join(args, " "), out, err)
		}
	}
}

// fails runs a call that must fail with the given AWS error code.
func (c cli) fails(code string, args ...string) string {
	c.t.Helper()
	_, errOut, exit := c.run(args...)
	if exit == 0 || !strings.Contains(errOut, "("+code+")") {
		c.t.Fatalf("aws %s: exit %d, want error %s: %s", strings.Join(args, " "), exit, code, errOut)
	}
	return errOut
}

func TestEC2AndSTSWithTheAWSCLI(t *testing.T) {
	bin := awsBinary(t)
	si := startSim(t)
	c := cli{t: t, bin: bin, si: si, akid: si.AccessKeyID, sec: si.SecretAccessKey}

	var id struct{ Account, Arn string }
	c.ok(&id, "sts", "get-caller-identity")
	if id.Account != "123456789012" || !strings.HasPrefix(id.Arn, "arn:aws:iam::123456789012:") {
		t.Fatalf("get-caller-identity: %+v", id)
	}

	var insts struct {
		Reservations []struct {
			Instances []struct {
				InstanceId        string
				NetworkInterfaces []struct{ NetworkInterfaceId string }
			}
		}
	}
	c.ok(&insts, "ec2", "describe-instances")
	eniOf := map[string]string{}
	for _, r := range insts.Reservations {
		for _, i := range r.Instances {
			if len(i.NetworkInterfaces) > 0 {
				eniOf[i.InstanceId] = i.NetworkInterfaces[0].NetworkInterfaceId
			}
		}
	}
	if len(eniOf) != 3 {
		t.Fatalf("describe-instances: want 3 instances with ENIs, got %v", eniOf)
	}
	eni1, eni2 := eniOf[si.Instances["node1"]], eniOf[si.Instances["node2"]]
	if eni1 == "" || eni2 == "" {
		t.Fatalf("no ENI for node1/node2: %v %v", si.Instances, eniOf)
	}
	var enis struct {
		NetworkInterfaces []struct{ NetworkInterfaceId string }
	}
	c.ok(&enis, "ec2", "describe-network-interfaces", "--network-interface-ids", eni1)
	if len(enis.NetworkInterfaces) != 1 || enis.NetworkInterfaces[0].NetworkInterfaceId != eni1 {
		t.Fatalf("describe-network-interfaces: %+v", enis)
	}

	// route table: create, replace, delete a /32 route to an ENI
	var rts struct {
		RouteTables []struct {
			RouteTableId string
			Routes       []struct{ DestinationCidrBlock, NetworkInterfaceId string }
		}
	}
	c.ok(&rts, "ec2", "describe-route-tables")
	if len(rts.RouteTables) == 0 {
		t.Fatal("no route tables")
	}
	rtb := rts.RouteTables[0].RouteTableId
	vip := "10.99.0.10/32"
	c.fails("DryRunOperation", "ec2", "create-route", "--dry-run", "--route-table-id", rtb, "--destination-cidr-block", vip, "--network-interface-id", eni1)
	c.ok(nil, "ec2", "create-route", "--route-table-id", rtb, "--destination-cidr-block", vip, "--network-interface-id", eni1)
	c.fails("RouteAlreadyExists", "ec2", "create-route", "--route-table-id", rtb, "--destination-cidr-block", vip, "--network-interface-id", eni1)
	c.ok(nil, "ec2", "replace-route", "--route-table-id", rtb, "--destination-cidr-block", vip, "--network-interface-id", eni2)
	c.ok(&rts, "ec2", "describe-route-tables", "--route-table-ids", rtb)
	found := false
	for _, r := range rts.RouteTables[0].Routes {
		if r.DestinationCidrBlock == vip {
			found = r.NetworkInterfaceId == eni2
		}
	}
	if !found {
		t.Fatalf("route %s does not point at %s: %+v", vip, eni2, rts.RouteTables[0].Routes)
	}
	c.ok(nil, "ec2", "delete-route", "--route-table-id", rtb, "--destination-cidr-block", vip)
	// as AWS answers: InvalidParameterValue for replace-route, InvalidRoute.NotFound for delete-route
	c.fails("InvalidParameterValue", "ec2", "replace-route", "--route-table-id", rtb, "--destination-cidr-block", vip, "--network-interface-id", eni2)
	c.fails("InvalidRoute.NotFound", "ec2", "delete-route", "--route-table-id", rtb, "--destination-cidr-block", vip)
	c.fails("InvalidRouteTableID.NotFound", "ec2", "describe-route-tables", "--route-table-ids", "rtb-0000000000000dead")

	// source/destination check
	var attr struct{ SourceDestCheck struct{ Value bool } }
	c.ok(&attr, "ec2", "describe-network-interface-attribute", "--network-interface-id", eni1, "--attribute", "sourceDestCheck")
	if !attr.SourceDestCheck.Value {
		t.Fatal("source/dest check should start enabled")
	}
	c.fails("DryRunOperation", "ec2", "modify-network-interface-attribute", "--dry-run", "--network-interface-id", eni1, "--no-source-dest-check")
	c.ok(nil, "ec2", "modify-network-interface-attribute", "--network-interface-id", eni1, "--no-source-dest-check")
	c.ok(&attr, "ec2", "describe-network-interface-attribute", "--network-interface-id", eni1, "--attribute", "sourceDestCheck")
	if attr.SourceDestCheck.Value {
		t.Fatal("source/dest check still enabled after modify")
	}

	// Elastic IP: allocate, associate, re-associate, disassociate
	var alloc struct{ AllocationId, PublicIp string }
	c.ok(&alloc, "ec2", "allocate-address", "--domain", "vpc")
	var assoc struct{ AssociationId string }
	c.ok(&assoc, "ec2", "associate-address", "--allocation-id", alloc.AllocationId, "--network-interface-id", eni1)
	c.fails("Resource.AlreadyAssociated", "ec2", "associate-address", "--allocation-id", alloc.AllocationId, "--network-interface-id", eni2, "--no-allow-reassociation")
	c.ok(&assoc, "ec2", "associate-address", "--allocation-id", alloc.AllocationId, "--network-interface-id", eni2, "--allow-reassociation")
	var addrs struct {
		Addresses []struct{ AllocationId, AssociationId, NetworkInterfaceId string }
	}
	c.ok(&addrs, "ec2", "describe-addresses", "--allocation-ids", alloc.AllocationId)
	if len(addrs.Addresses) != 1 || addrs.Addresses[0].NetworkInterfaceId != eni2 {
		t.Fatalf("describe-addresses after re-association: %+v", addrs)
	}
	c.ok(nil, "ec2", "disassociate-address", "--association-id", assoc.AssociationId)
	var after struct {
		Addresses []struct{ AllocationId, AssociationId, NetworkInterfaceId string }
	}
	c.ok(&after, "ec2", "describe-addresses", "--allocation-ids", alloc.AllocationId)
	if len(after.Addresses) != 1 || after.Addresses[0].AssociationId != "" {
		t.Fatalf("still associated: %+v", after)
	}

	// wrong secret: refused as AWS does
	bad := c
	bad.sec = "not-the-secret"
	bad.fails("AuthFailure", "ec2", "describe-route-tables")
}

// A principal without a permission gets UnauthorizedOperation with an
// encoded message, which sts decode-authorization-message turns into the
// action and resource.
func TestUnauthorizedDecodedWithTheAWSCLI(t *testing.T) {
	bin := awsBinary(t)
	si := startSim(t)
	// Take the default world, add a user limited to Describe*, and run a
	// second simulator with it.
	resp, err := http.Get(si.Endpoint + "/_sim/world")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var world map[string]any
	if err := json.Unmarshal(body, &world); err != nil {
		t.Fatalf("world JSON: %v: %s", err, body)
	}
	users, _ := world["users"].([]any)
	world["users"] = append(users, map[string]any{"name": "readonly", "policies": map[string]any{
		"describe": map[string]any{"Version": "2012-10-17", "Statement": []any{map[string]any{"Effect": "Allow", "Action": "ec2:Describe*", "Resource": "*"}}},
	}})
	creds, _ := world["credentials"].([]any)
	world["credentials"] = append(creds, map[string]any{"accessKeyId": "AKIAREADONLY00000001", "secretAccessKey": "readonly-secret-readonly-secret-0001", "user": "readonly"})
	wf := filepath.Join(t.TempDir(), "world.json")
	b, _ := json.Marshal(world)
	if err := os.WriteFile(wf, b, 0o600); err != nil {
		t.Fatal(err)
	}
	si2 := startSim(t, "--world", wf)
	ro := cli{t: t, bin: bin, si: si2, akid: "AKIAREADONLY00000001", sec: "readonly-secret-readonly-secret-0001"}
	admin := cli{t: t, bin: bin, si: si2, akid: si2.AccessKeyID, sec: si2.SecretAccessKey}

	var rts struct {
		RouteTables []struct{ RouteTableId string }
	}
	ro.ok(&rts, "ec2", "describe-route-tables")
	rtb := rts.RouteTables[0].RouteTableId
	var insts struct {
		Reservations []struct {
			Instances []struct {
				NetworkInterfaces []struct{ NetworkInterfaceId string }
			}
		}
	}
	ro.ok(&insts, "ec2", "describe-instances")
	eni := insts.Reservations[0].Instances[0].NetworkInterfaces[0].NetworkInterfaceId

	errOut := ro.fails("UnauthorizedOperation", "ec2", "create-route", "--dry-run", "--route-table-id", rtb, "--destination-cidr-block", "10.99.0.10/32", "--network-interface-id", eni)
	m := regexp.MustCompile(`Encoded authorization failure message: (\S+)`).FindStringSubmatch(errOut)
	if m == nil {
		t.Fatalf("no encoded message in %q", errOut)
	}
	ro.fails("UnauthorizedOperation", "ec2", "modify-network-interface-attribute", "--network-interface-id", eni, "--no-source-dest-check")

	var dec struct{ DecodedMessage string }
	admin.ok(&dec, "sts", "decode-authorization-message", "--encoded-message", m[1])
	var msg struct {
		Allowed bool `json:"allowed"`
		Context struct {
			Action   string `json:"action"`
			Resource string `json:"resource"`
		} `json:"context"`
	}
	if err := json.Unmarshal([]byte(dec.DecodedMessage), &msg); err != nil {
		t.Fatalf("decoded message %q: %v", dec.DecodedMessage, err)
	}
	if msg.Allowed || msg.Context.Action != "ec2:CreateRoute" || !strings.Contains(msg.Context.Resource, rtb) {
		t.Fatalf("decoded message: %+v", msg)
	}
}

// imdsGet fetches one IMDSv2 path with plain HTTP: PUT a token, then GET.
func imdsGet(t *testing.T, base, path string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPut, base+"/latest/api/token", nil)
	req.Header.Set("X-aws-ec2-metadata-token-ttl-seconds", "300")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("IMDS token: %d %s", resp.StatusCode, tok)
	}
	req, _ = http.NewRequest(http.MethodGet, base+path, nil)
	req.Header.Set("X-aws-ec2-metadata-token", string(tok))
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("IMDS GET %s: %d %s", path, resp.StatusCode, body)
	}
	return string(body)
}

// An admin edits a node role's inline policy with aws iam; the node, using
// the credentials its IMDS hands out, loses and regains
// ec2:ModifyNetworkInterfaceAttribute.
func TestIAMAndInstanceRoleWithTheAWSCLI(t *testing.T) {
	bin := awsBinary(t)
	si := startSim(t)
	admin := cli{t: t, bin: bin, si: si, akid: si.AccessKeyID, sec: si.SecretAccessKey}
	if len(si.IMDS) != 3 || si.IMDS["node2"] == "" {
		t.Fatalf("info has no IMDS URLs: %+v", si.IMDS)
	}

	var list struct{ PolicyNames []string }
	admin.ok(&list, "iam", "list-role-policies", "--role-name", "lifeboat-node2")
	if len(list.PolicyNames) != 1 || list.PolicyNames[0] != "lifeboat" {
		t.Fatalf("list-role-policies: %+v", list)
	}
	type document struct {
		Version   string
		Statement []struct {
			Effect   string
			Action   []string
			Resource any
		}
	}
	// the CLI decodes IAM's URL-encoded documents into JSON objects
	var got struct {
		RoleName, PolicyName string
		PolicyDocument       document
	}
	admin.ok(&got, "iam", "get-role-policy", "--role-name", "lifeboat-node2", "--policy-name", "lifeboat")
	if got.RoleName != "lifeboat-node2" || got.PolicyName != "lifeboat" || len(got.PolicyDocument.Statement) != 1 ||
		!slices.Contains(got.PolicyDocument.Statement[0].Action, "ec2:ModifyNetworkInterfaceAttribute") {
		t.Fatalf("get-role-policy: %+v", got)
	}

	// Remove ec2:ModifyNetworkInterfaceAttribute.
	reduced := got.PolicyDocument
	reduced.Statement = slices.Clone(reduced.Statement)
	reduced.Statement[0].Action = slices.DeleteFunc(slices.Clone(reduced.Statement[0].Action), func(a string) bool {
		return a == "ec2:ModifyNetworkInterfaceAttribute"
	})
	dir := t.TempDir()
	reducedFile, fullFile, badFile := filepath.Join(dir, "reduced.json"), filepath.Join(dir, "full.json"), filepath.Join(dir, "bad.json")
	for f, v := range map[string]any{reducedFile: reduced, fullFile: got.PolicyDocument} {
		b, _ := json.MarshalIndent(v, "", "  ")
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(badFile, []byte(`{"Version":"2012-10-17","Statement":[{"Effect":"Permit","Action":"ec2:*","Resource":"*"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	admin.fails("MalformedPolicyDocument", "iam", "put-role-policy", "--role-name", "lifeboat-node2", "--policy-name", "lifeboat", "--policy-document", "file://"+badFile)
	admin.ok(nil, "iam", "put-role-policy", "--role-name", "lifeboat-node2", "--policy-name", "lifeboat", "--policy-document", "file://"+reducedFile)
	admin.ok(&got, "iam", "get-role-policy", "--role-name", "lifeboat-node2", "--policy-name", "lifeboat")
	if slices.Contains(got.PolicyDocument.Statement[0].Action, "ec2:ModifyNetworkInterfaceAttribute") || len(got.PolicyDocument.Statement[0].Action) == 0 {
		t.Fatalf("after put-role-policy: %+v", got.PolicyDocument)
	}

	// node2's credentials from its IMDS.
	role := strings.TrimSpace(imdsGet(t, si.IMDS["node2"], "/latest/meta-data/iam/security-credentials/"))
	if role != "lifeboat-node2" {
		t.Fatalf("IMDS role %q", role)
	}
	var creds struct{ Code, AccessKeyId, SecretAccessKey, Token, Expiration string }
	if err := json.Unmarshal([]byte(imdsGet(t, si.IMDS["node2"], "/latest/meta-data/iam/security-credentials/"+role)), &creds); err != nil || creds.Code != "Success" {
		t.Fatalf("IMDS credentials: %+v %v", creds, err)
	}
	node2 := cli{t: t, bin: bin, si: si, akid: creds.AccessKeyId, sec: creds.SecretAccessKey, tok: creds.Token}
	var id struct{ Arn string }
	node2.ok(&id, "sts", "get-caller-identity")
	if want := "arn:aws:sts::123456789012:assumed-role/lifeboat-node2/" + si.Instances["node2"]; id.Arn != want {
		t.Fatalf("node2 is %q, want %q", id.Arn, want)
	}
	var insts struct {
		Reservations []struct {
			Instances []struct {
				NetworkInterfaces []struct{ NetworkInterfaceId string }
			}
		}
	}
	node2.ok(&insts, "ec2", "describe-instances", "--instance-ids", si.Instances["node2"])
	eni := insts.Reservations[0].Instances[0].NetworkInterfaces[0].NetworkInterfaceId
	modify := []string{"ec2", "modify-network-interface-attribute", "--dry-run", "--network-interface-id", eni, "--no-source-dest-check"}
	node2.fails("UnauthorizedOperation", modify...)
	node2.fails("AccessDenied", "iam", "put-role-policy", "--role-name", "lifeboat-node2", "--policy-name", "lifeboat", "--policy-document", "file://"+fullFile)

	admin.ok(nil, "iam", "put-role-policy", "--role-name", "lifeboat-node2", "--policy-name", "lifeboat", "--policy-document", "file://"+fullFile)
	node2.fails("DryRunOperation", modify...)

	// Delete the policy: the role is left with nothing.
	admin.ok(nil, "iam", "delete-role-policy", "--role-name", "lifeboat-node2", "--policy-name", "lifeboat")
	admin.ok(&list, "iam", "list-role-policies", "--role-name", "lifeboat-node2")
	if len(list.PolicyNames) != 0 {
		t.Fatalf("list-role-policies after delete: %+v", list)
	}
	admin.fails("NoSuchEntity", "iam", "get-role-policy", "--role-name", "lifeboat-node2", "--policy-name", "lifeboat")
	admin.fails("NoSuchEntity", "iam", "delete-role-policy", "--role-name", "lifeboat-node2", "--policy-name", "lifeboat")
	node2.fails("UnauthorizedOperation", modify...)

	var r struct {
		Role struct {
			RoleName, RoleId, Arn, Path, CreateDate string
			AssumeRolePolicyDocument                struct {
				Statement []struct {
					Principal struct{ Service string }
					Action    string
				}
			}
		}
	}
	// IAM is global: the CLI may sign for any region
	global := admin
	global.si.Region = "eu-west-1"
	global.ok(&r, "iam", "get-role", "--role-name", "lifeboat-node2")
	if r.Role.RoleName != "lifeboat-node2" || r.Role.Arn != "arn:aws:iam::123456789012:role/lifeboat-node2" || r.Role.Path != "/" ||
		!strings.HasPrefix(r.Role.RoleId, "AROA") || r.Role.CreateDate == "" || len(r.Role.AssumeRolePolicyDocument.Statement) != 1 ||
		r.Role.AssumeRolePolicyDocument.Statement[0].Principal.Service != "ec2.amazonaws.com" {
		t.Fatalf("get-role: %+v", r.Role)
	}
	admin.fails("NoSuchEntity", "iam", "get-role", "--role-name", "lifeboat-node9")
}

// The AWS CLI on an instance with no keys configured finds the instance
// role through the metadata service (IMDSv2), as it does on EC2.
func TestInstanceRoleThroughIMDSWithTheAWSCLI(t *testing.T) {
	bin := awsBinary(t)
	si := startSim(t)
	home := t.TempDir()
	cmd := exec.Command(bin, "--endpoint-url", si.Endpoint, "--output", "json", "--no-cli-pager", "sts", "get-caller-identity")
	cmd.Env = []string{
		"PATH=/usr/bin:/bin", "HOME=" + home, "AWS_DEFAULT_REGION=" + si.Region,
		"AWS_CONFIG_FILE=" + filepath.Join(home, "none"), "AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(home, "none"),
		"AWS_EC2_METADATA_SERVICE_ENDPOINT=" + si.IMDS["node1"] + "/",
		"AWS_EC2_METADATA_V1_DISABLED=true",
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("get-caller-identity with IMDS credentials: %v: %s", err, errb.String())
	}
	var id struct{ Arn string }
	if err := json.Unmarshal(out.Bytes(), &id); err != nil {
		t.Fatal(err)
	}
	want := "arn:aws:sts::123456789012:assumed-role/lifeboat-node1/" + si.Instances["node1"]
	if id.Arn != want {
		t.Fatalf("caller %q, want %q", id.Arn, want)
	}
}

// `lifeboat sim faults` changes the running simulator's faults; the AWS
// CLI sees them.
func TestSimFaultsCommand(t *testing.T) {
	bin := awsBinary(t)
	si := startSim(t)
	c := cli{t: t, bin: bin, si: si, akid: si.AccessKeyID, sec: si.SecretAccessKey}
	faults := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(binary, append([]string{"sim", "faults", "--endpoint", si.Endpoint}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("sim faults %v: %v: %s", args, err, out)
		}
		return string(out)
	}
	if out := faults("--throttle-rate", "1", "--actions", "ec2:DescribeRouteTables"); !strings.Contains(out, `"throttleRate": 1`) {
		t.Fatalf("set: %s", out)
	}
	c.fails("RequestLimitExceeded", "ec2", "describe-route-tables")
	c.ok(nil, "ec2", "describe-addresses") // other actions are not affected
	if out := faults(); !strings.Contains(out, "ec2:DescribeRouteTables") {
		t.Fatalf("show: %s", out)
	}
	faults("--clear")
	c.ok(nil, "ec2", "describe-route-tables")
}
