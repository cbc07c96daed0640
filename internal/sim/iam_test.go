package sim

import (
	"encoding/json"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/iam"

	"github.com/lifeboat-ha/lifeboat/internal/sim/policy"
)

func (e *env) adminIAM() *iam.Client {
	akid, secret := e.w.AdminCredentials()
	return iam.NewFromConfig(e.cfg(akid, secret, ""))
}

// policyJSON builds a policy allowing actions on "*".
func policyJSON(actions ...string) string {
	return `{"Version":"2012-10-17","Statement":[` + policy.AllowStatement(actions, nil) + `]}`
}

// decodeDoc undoes IAM's URL encoding of a policy document, as the AWS CLI
// does (the SDK hands the encoded string over).
func decodeDoc(t *testing.T, enc *string) string {
	t.Helper()
	s, err := url.PathUnescape(aws.ToString(enc))
	if err != nil {
		t.Fatalf("document %q is not URL-encoded: %v", aws.ToString(enc), err)
	}
	return s
}

// TestIAMRolePolicies: put, get, list and delete a role's inline policies
// through the real SDK, and GetRole.
func TestIAMRolePolicies(t *testing.T) {
	e := newEnv(t)
	c := e.adminIAM()
	role := aws.String("lifeboat-node1")

	lp := must[*iam.ListRolePoliciesOutput](t)(c.ListRolePolicies(ctx, &iam.ListRolePoliciesInput{RoleName: role}))
	if !slices.Equal(lp.PolicyNames, []string{PlaceholderPolicyName}) || lp.IsTruncated {
		t.Fatalf("ListRolePolicies: %+v", lp)
	}
	gp := must[*iam.GetRolePolicyOutput](t)(c.GetRolePolicy(ctx, &iam.GetRolePolicyInput{RoleName: role, PolicyName: aws.String(PlaceholderPolicyName)}))
	raw := aws.ToString(gp.PolicyDocument)
	if strings.ContainsAny(raw, `{}":, `) || !strings.HasPrefix(raw, "%7B%22Version%22%3A%222012-10-17%22") {
		t.Fatalf("PolicyDocument not URL-encoded as IAM does: %s", raw)
	}
	if got, want := decodeDoc(t, gp.PolicyDocument), string(e.w.RolePolicies("lifeboat-node1")[PlaceholderPolicyName]); got != want {
		t.Fatalf("GetRolePolicy document:\n%s\nwant\n%s", got, want)
	}
	if aws.ToString(gp.RoleName) != "lifeboat-node1" || aws.ToString(gp.PolicyName) != PlaceholderPolicyName {
		t.Fatalf("GetRolePolicy: %+v", gp)
	}

	doc := "{\n  \"Version\": \"2012-10-17\",\n  \"Statement\": [{\"Sid\": \"Read only\", \"Effect\": \"Allow\", \"Action\": \"ec2:Describe*\", \"Resource\": \"*\"}]\n}"
	must[*iam.PutRolePolicyOutput](t)(c.PutRolePolicy(ctx, &iam.PutRolePolicyInput{RoleName: role, PolicyName: aws.String("extra"), PolicyDocument: &doc}))
	lp = must[*iam.ListRolePoliciesOutput](t)(c.ListRolePolicies(ctx, &iam.ListRolePoliciesInput{RoleName: role}))
	if !slices.Equal(lp.PolicyNames, []string{"extra", PlaceholderPolicyName}) {
		t.Fatalf("ListRolePolicies after put: %v", lp.PolicyNames)
	}
	gp = must[*iam.GetRolePolicyOutput](t)(c.GetRolePolicy(ctx, &iam.GetRolePolicyInput{RoleName: role, PolicyName: aws.String("extra")}))
	if got := decodeDoc(t, gp.PolicyDocument); got != `{"Version":"2012-10-17","Statement":[{"Sid":"Read only","Effect":"Allow","Action":"ec2:Describe*","Resource":"*"}]}` {
		t.Fatalf("stored document: %s", got)
	}
	if !strings.Contains(aws.ToString(gp.PolicyDocument), "Read%20only") {
		t.Fatalf("spaces must be %%20: %s", aws.ToString(gp.PolicyDocument))
	}

	// pagination
	lp = must[*iam.ListRolePoliciesOutput](t)(c.ListRolePolicies(ctx, &iam.ListRolePoliciesInput{RoleName: role, MaxItems: aws.Int32(1)}))
	if !slices.Equal(lp.PolicyNames, []string{"extra"}) || !lp.IsTruncated || lp.Marker == nil {
		t.Fatalf("first page: %+v", lp)
	}
	lp = must[*iam.ListRolePoliciesOutput](t)(c.ListRolePolicies(ctx, &iam.ListRolePoliciesInput{RoleName: role, MaxItems: aws.Int32(1), Marker: lp.Marker}))
	if !slices.Equal(lp.PolicyNames, []string{PlaceholderPolicyName}) || lp.IsTruncated {
		t.Fatalf("second page: %+v", lp)
	}

	must[*iam.DeleteRolePolicyOutput](t)(c.DeleteRolePolicy(ctx, &iam.DeleteRolePolicyInput{RoleName: role, PolicyName: aws.String("extra")}))
	lp = must[*iam.ListRolePoliciesOutput](t)(c.ListRolePolicies(ctx, &iam.ListRolePoliciesInput{RoleName: role}))
	if !slices.Equal(lp.PolicyNames, []string{PlaceholderPolicyName}) {
		t.Fatalf("ListRolePolicies after delete: %v", lp.PolicyNames)
	}
	_, err := c.DeleteRolePolicy(ctx, &iam.DeleteRolePolicyInput{RoleName: role, PolicyName: aws.String("extra")})
	wantErr(t, err, "NoSuchEntity", 404, "The role policy with name extra cannot be found.")
	must[*iam.DeleteRolePolicyOutput](t)(c.DeleteRolePolicy(ctx, &iam.DeleteRolePolicyInput{RoleName: role, PolicyName: aws.String(PlaceholderPolicyName)}))
	lp = must[*iam.ListRolePoliciesOutput](t)(c.ListRolePolicies(ctx, &iam.ListRolePoliciesInput{RoleName: role}))
	if len(lp.PolicyNames) != 0 || lp.IsTruncated {
		t.Fatalf("ListRolePolicies of a role without policies: %+v", lp)
	}

	gr := must[*iam.GetRoleOutput](t)(c.GetRole(ctx, &iam.GetRoleInput{RoleName: role}))
	r := gr.Role
	if aws.ToString(r.Arn) != "arn:aws:iam::123456789012:role/lifeboat-node1" || aws.ToString(r.RoleName) != "lifeboat-node1" ||
		!strings.HasPrefix(aws.ToString(r.RoleId), "AROA") || aws.ToString(r.Path) != "/" || r.CreateDate == nil || r.CreateDate.IsZero() ||
		aws.ToInt32(r.MaxSessionDuration) != 3600 {
		t.Fatalf("GetRole: %+v", r)
	}
	var trust struct {
		Statement []struct {
			Effect    string
			Principal struct{ Service string }
			Action    string
		}
	}
	if err := json.Unmarshal([]byte(decodeDoc(t, r.AssumeRolePolicyDocument)), &trust); err != nil || len(trust.Statement) != 1 ||
		trust.Statement[0].Principal.Service != "ec2.amazonaws.com" || trust.Statement[0].Action != "sts:AssumeRole" {
		t.Fatalf("AssumeRolePolicyDocument %q: %+v %v", aws.ToString(r.AssumeRolePolicyDocument), trust, err)
	}
}

// TestIAMErrors: the error codes, statuses and messages IAM answers.
func TestIAMErrors(t *testing.T) {
	e := newEnv(t)
	c := e.adminIAM()
	role := aws.String("lifeboat-node1")

	_, err := c.GetRole(ctx, &iam.GetRoleInput{RoleName: aws.String("nope")})
	wantErr(t, err, "NoSuchEntity", 404, "The role with name nope cannot be found.")
	_, err = c.ListRolePolicies(ctx, &iam.ListRolePoliciesInput{RoleName: aws.String("nope")})
	wantErr(t, err, "NoSuchEntity", 404, "nope")
	_, err = c.GetRolePolicy(ctx, &iam.GetRolePolicyInput{RoleName: role, PolicyName: aws.String("nope")})
	wantErr(t, err, "NoSuchEntity", 404, "The role policy with name nope cannot be found.")
	_, err = c.PutRolePolicy(ctx, &iam.PutRolePolicyInput{RoleName: aws.String("nope"), PolicyName: aws.String("p"), PolicyDocument: aws.String(policyJSON("ec2:*"))})
	wantErr(t, err, "NoSuchEntity", 404, "nope")

	bad := `{"Version":"2012-10-17","Statement":[{"Effect":"Permit","Action":"ec2:*","Resource":"*"}]}`
	_, err = c.PutRolePolicy(ctx, &iam.PutRolePolicyInput{RoleName: role, PolicyName: aws.String("p"), PolicyDocument: &bad})
	wantErr(t, err, "MalformedPolicyDocument", 400, `"Permit"`)
	_, err = c.PutRolePolicy(ctx, &iam.PutRolePolicyInput{RoleName: role, PolicyName: aws.String("p"), PolicyDocument: aws.String(`{"Statement":`)})
	wantErr(t, err, "MalformedPolicyDocument", 400, "invalid JSON")
	huge := policyJSON(slices.Repeat([]string{"ec2:DescribeInstances"}, 600)...)
	_, err = c.PutRolePolicy(ctx, &iam.PutRolePolicyInput{RoleName: role, PolicyName: aws.String("p"), PolicyDocument: &huge})
	wantErr(t, err, "LimitExceeded", 409, "Maximum policy size of 10240 bytes exceeded for role lifeboat-node1")
	if _, ok := e.w.RolePolicies("lifeboat-node1")["p"]; ok {
		t.Fatal("a rejected policy was stored")
	}
	_, err = c.GetRole(ctx, &iam.GetRoleInput{RoleName: aws.String("no spaces")})
	wantErr(t, err, "ValidationError", 400, "at 'roleName' failed to satisfy constraint")
	_, err = c.ListRolePolicies(ctx, &iam.ListRolePoliciesInput{RoleName: role, MaxItems: aws.Int32(0)})
	wantErr(t, err, "ValidationError", 400, "maxItems")

	// IAM is global: any region in the credential scope is accepted.
	akid, secret := e.w.AdminCredentials()
	cfg := e.cfg(akid, secret, "")
	cfg.Region = "eu-west-1"
	must[*iam.GetRoleOutput](t)(iam.NewFromConfig(cfg).GetRole(ctx, &iam.GetRoleInput{RoleName: role}))
}

// TestIAMAccessDenied: a role may not read or change IAM unless a policy
// allows iam:<Action> on the role's ARN.
func TestIAMAccessDenied(t *testing.T) {
	e := newEnv(t)
	admin := e.adminIAM()
	node1 := iam.NewFromConfig(e.roleCfg("node1"))
	inst := e.instance("node1")
	who := "arn:aws:sts::123456789012:assumed-role/lifeboat-node1/" + inst.ID

	_, err := node1.GetRolePolicy(ctx, &iam.GetRolePolicyInput{RoleName: aws.String("lifeboat-node1"), PolicyName: aws.String(PlaceholderPolicyName)})
	wantErr(t, err, "AccessDenied", 403, "User: "+who+" is not authorized to perform: iam:GetRolePolicy on resource: arn:aws:iam::123456789012:role/lifeboat-node1")
	_, err = node1.PutRolePolicy(ctx, &iam.PutRolePolicyInput{RoleName: aws.String("lifeboat-node1"), PolicyName: aws.String("escalate"), PolicyDocument: aws.String(policyJSON("*"))})
	wantErr(t, err, "AccessDenied", 403, "iam:PutRolePolicy on resource: arn:aws:iam::123456789012:role/lifeboat-node1")
	// authorization comes before existence, as on AWS
	_, err = node1.GetRole(ctx, &iam.GetRoleInput{RoleName: aws.String("nope")})
	wantErr(t, err, "AccessDenied", 403, "iam:GetRole on resource: arn:aws:iam::123456789012:role/nope")

	// Let node1 read its own role's policies, and only those.
	self := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["iam:GetRolePolicy","iam:ListRolePolicies"],"Resource":"arn:aws:iam::123456789012:role/lifeboat-node1"}]}`
	must[*iam.PutRolePolicyOutput](t)(admin.PutRolePolicy(ctx, &iam.PutRolePolicyInput{RoleName: aws.String("lifeboat-node1"), PolicyName: aws.String("self"), PolicyDocument: &self}))
	lp := must[*iam.ListRolePoliciesOutput](t)(node1.ListRolePolicies(ctx, &iam.ListRolePoliciesInput{RoleName: aws.String("lifeboat-node1")}))
	if !slices.Equal(lp.PolicyNames, []string{PlaceholderPolicyName, "self"}) {
		t.Fatalf("ListRolePolicies as node1: %v", lp.PolicyNames)
	}
	must[*iam.GetRolePolicyOutput](t)(node1.GetRolePolicy(ctx, &iam.GetRolePolicyInput{RoleName: aws.String("lifeboat-node1"), PolicyName: aws.String("self")}))
	_, err = node1.GetRolePolicy(ctx, &iam.GetRolePolicyInput{RoleName: aws.String("lifeboat-node2"), PolicyName: aws.String(PlaceholderPolicyName)})
	wantErr(t, err, "AccessDenied", 403, "on resource: arn:aws:iam::123456789012:role/lifeboat-node2")
}

// TestIAMPolicyChangeTakesEffect: removing ec2:ModifyNetworkInterfaceAttribute
// from lifeboat-node2 with PutRolePolicy makes the role's next call
// UnauthorizedOperation; putting it back allows it again.
func TestIAMPolicyChangeTakesEffect(t *testing.T) {
	e := newEnv(t)
	admin := e.adminIAM()
	node2 := ec2.NewFromConfig(e.roleCfg("node2"))
	eni := e.eni("node2")
	modify := func() error {
		_, err := node2.ModifyNetworkInterfaceAttribute(ctx, &ec2.ModifyNetworkInterfaceAttributeInput{DryRun: aws.Bool(true),
			NetworkInterfaceId: &eni, SourceDestCheck: &types.AttributeBooleanValue{Value: aws.Bool(false)}})
		return err
	}
	put := func(actions []string) {
		t.Helper()
		must[*iam.PutRolePolicyOutput](t)(admin.PutRolePolicy(ctx, &iam.PutRolePolicyInput{RoleName: aws.String("lifeboat-node2"),
			PolicyName: aws.String(PlaceholderPolicyName), PolicyDocument: aws.String(policyJSON(actions...))}))
	}
	wantErr(t, modify(), "DryRunOperation", 412, "Request would have succeeded")

	put(slices.DeleteFunc(slices.Clone(PlaceholderActions), func(a string) bool { return a == "ec2:ModifyNetworkInterfaceAttribute" }))
	wantErr(t, modify(), "UnauthorizedOperation", 403, "Encoded authorization failure message")
	// the rest of the role's permissions are untouched
	must[*ec2.DescribeNetworkInterfacesOutput](t)(node2.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{eni}}))

	put(PlaceholderActions)
	wantErr(t, modify(), "DryRunOperation", 412, "Request would have succeeded")

	// Deleting the only policy leaves the role allowed nothing.
	must[*iam.DeleteRolePolicyOutput](t)(admin.DeleteRolePolicy(ctx, &iam.DeleteRolePolicyInput{RoleName: aws.String("lifeboat-node2"), PolicyName: aws.String(PlaceholderPolicyName)}))
	_, err := node2.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{})
	wantErr(t, err, "UnauthorizedOperation", 403, "")
}
