package sim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/sim/policy"
)

// IAMNamespace is the XML namespace of IAM Query API answers.
const IAMNamespace = "https://iam.amazonaws.com/doc/2010-05-08/"

// ec2TrustPolicy is the AssumeRolePolicyDocument of every simulated role:
// the trust policy the console gives an EC2 instance role.
const ec2TrustPolicy = `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}`

// iamActions are the IAM Query API actions the simulator answers: a role's
// inline policies. IAM is global, so any region in the credential scope is
// accepted. Every action needs iam:<Action> on the role's ARN; the checks
// run in AWS's order: parameter validation, authorization, existence.
// Policy changes take effect for the next call of any service.
var iamActions map[string]func(*request) (any, *APIError)

func init() {
	iamActions = map[string]func(*request) (any, *APIError){
		"GetRole":          iamGetRole,
		"PutRolePolicy":    iamPutRolePolicy,
		"GetRolePolicy":    iamGetRolePolicy,
		"DeleteRolePolicy": iamDeleteRolePolicy,
		"ListRolePolicies": iamListRolePolicies,
	}
}

// iamNameRe is IAM's pattern for role and policy names.
var iamNameRe = regexp.MustCompile(`^[\w+=,.@-]+$`)

// iamName reads a required role or policy name parameter, validated as
// IAM does (the constraint names the parameter in camelCase).
func (r *request) iamName(param string, maxLen int) (string, *APIError) {
	field := strings.ToLower(param[:1]) + param[1:]
	v, ok := r.params[param]
	if !ok || len(v) == 0 {
		return "", errorf(http.StatusBadRequest, "ValidationError", "1 validation error detected: Value null at '%s' failed to satisfy constraint: Member must not be null", field)
	}
	name := v[0]
	switch {
	case len(name) < 1 || len(name) > maxLen:
		return "", errorf(http.StatusBadRequest, "ValidationError", "1 validation error detected: Value '%s' at '%s' failed to satisfy constraint: Member must have length between 1 and %d", name, field, maxLen)
	case !iamNameRe.MatchString(name):
		return "", errorf(http.StatusBadRequest, "ValidationError", "1 validation error detected: Value '%s' at '%s' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]+", name, field)
	}
	return name, nil
}

// iamRole validates RoleName, authorizes the action on the role's ARN and
// returns the role.
func (r *request) iamRole() (*Role, *APIError) {
	name, e := r.iamName("RoleName", 64)
	if e != nil {
		return nil, e
	}
	if e := r.check("iam:"+r.action, r.w.roleARN(name)); e != nil {
		return nil, e
	}
	role := r.w.role(name)
	if role == nil {
		return nil, errorf(http.StatusNotFound, "NoSuchEntity", "The role with name %s cannot be found.", name)
	}
	return role, nil
}

func (w *World) roleARN(name string) string {
	return fmt.Sprintf("arn:aws:iam::%s:role/%s", w.st.AccountID, name)
}

// iamEscape URL-encodes a policy document as IAM returns it: every byte but
// RFC 3986's unreserved characters percent-encoded (spaces as %20, which
// the AWS CLI's unquote decodes; the SDKs hand the string over as is).
func iamEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.' || c == '~' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

func iamTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05Z") }

type iamRoleXML struct {
	Path                     string   `xml:"Path"`
	AssumeRolePolicyDocument string   `xml:"AssumeRolePolicyDocument"`
	MaxSessionDuration       int      `xml:"MaxSessionDuration"`
	RoleID                   string   `xml:"RoleId"`
	RoleLastUsed             struct{} `xml:"RoleLastUsed"`
	RoleName                 string   `xml:"RoleName"`
	Arn                      string   `xml:"Arn"`
	CreateDate               string   `xml:"CreateDate"`
}

type getRoleResult struct {
	Role iamRoleXML `xml:"Role"`
}

// iamGetRole: the world keeps no creation date, so CreateDate is the
// earliest launch time of an instance with the role (2024-01-01 if none).
func iamGetRole(r *request) (any, *APIError) {
	role, e := r.iamRole()
	if e != nil {
		return nil, e
	}
	created := time.Time{}
	for _, in := range r.w.st.Instances {
		if in.Role == role.Name {
			if t := r.w.launchTime(in.ID); created.IsZero() || t.Before(created) {
				created = t
			}
		}
	}
	if created.IsZero() {
		created = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	return &getRoleResult{Role: iamRoleXML{
		Path: "/", AssumeRolePolicyDocument: iamEscape(ec2TrustPolicy), MaxSessionDuration: 3600,
		RoleID: role.ID, RoleName: role.Name, Arn: r.w.roleARN(role.Name), CreateDate: iamTime(created),
	}}, nil
}

// iamPutRolePolicy validates the document with policy.Parse: a document
// it rejects answers MalformedPolicyDocument with the parse error, one over
// the inline size limit LimitExceeded (409).
func iamPutRolePolicy(r *request) (any, *APIError) {
	name, e := r.iamName("RoleName", 64)
	if e != nil {
		return nil, e
	}
	pname, e := r.iamName("PolicyName", 128)
	if e != nil {
		return nil, e
	}
	docs, ok := r.params["PolicyDocument"]
	if !ok || len(docs) == 0 {
		return nil, errorf(http.StatusBadRequest, "ValidationError", "1 validation error detected: Value null at 'policyDocument' failed to satisfy constraint: Member must not be null")
	}
	doc := []byte(docs[0])
	if e := r.check("iam:PutRolePolicy", r.w.roleARN(name)); e != nil {
		return nil, e
	}
	role := r.w.role(name)
	if role == nil {
		return nil, errorf(http.StatusNotFound, "NoSuchEntity", "The role with name %s cannot be found.", name)
	}
	var compact bytes.Buffer
	if json.Compact(&compact, doc) == nil && compact.Len() > policy.MaxDocumentSize {
		return nil, errorf(http.StatusConflict, "LimitExceeded", "Maximum policy size of %d bytes exceeded for role %s", policy.MaxDocumentSize, name)
	}
	if _, err := policy.Parse(doc); err != nil {
		return nil, errorf(http.StatusBadRequest, "MalformedPolicyDocument", "%s", strings.TrimPrefix(err.Error(), "policy: "))
	}
	if role.Policies == nil {
		role.Policies = map[string]json.RawMessage{}
	}
	old, had := role.Policies[pname]
	role.Policies[pname] = json.RawMessage(slices.Clone(compact.Bytes()))
	if err := r.w.reparse(); err != nil { // cannot happen: the document parsed
		if had {
			role.Policies[pname] = old
		} else {
			delete(role.Policies, pname)
		}
		_ = r.w.reparse()
		return nil, errorf(http.StatusBadRequest, "MalformedPolicyDocument", "%v", err)
	}
	return nil, nil
}

type getRolePolicyResult struct {
	RoleName       string `xml:"RoleName"`
	PolicyName     string `xml:"PolicyName"`
	PolicyDocument string `xml:"PolicyDocument"`
}

// iamGetRolePolicy returns the document URL-encoded, as IAM does. The
// world stores documents compacted, so whitespace is not preserved.
func iamGetRolePolicy(r *request) (any, *APIError) {
	role, pname, doc, e := r.rolePolicy("iam:GetRolePolicy")
	if e != nil {
		return nil, e
	}
	return &getRolePolicyResult{RoleName: role.Name, PolicyName: pname, PolicyDocument: iamEscape(string(doc))}, nil
}

// rolePolicy reads RoleName and PolicyName, authorizes action on the role
// and finds the inline policy, in IAM's order: parameters, permission,
// existence.
func (r *request) rolePolicy(action string) (*Role, string, json.RawMessage, *APIError) {
	name, e := r.iamName("RoleName", 64)
	if e != nil {
		return nil, "", nil, e
	}
	pname, e := r.iamName("PolicyName", 128)
	if e != nil {
		return nil, "", nil, e
	}
	if e := r.check(action, r.w.roleARN(name)); e != nil {
		return nil, "", nil, e
	}
	role := r.w.role(name)
	if role == nil {
		return nil, "", nil, errorf(http.StatusNotFound, "NoSuchEntity", "The role with name %s cannot be found.", name)
	}
	doc, ok := role.Policies[pname]
	if !ok {
		return nil, "", nil, errorf(http.StatusNotFound, "NoSuchEntity", "The role policy with name %s cannot be found.", pname)
	}
	return role, pname, doc, nil
}

func iamDeleteRolePolicy(r *request) (any, *APIError) {
	role, pname, _, e := r.rolePolicy("iam:DeleteRolePolicy")
	if e != nil {
		return nil, e
	}
	delete(role.Policies, pname)
	if err := r.w.reparse(); err != nil { // cannot happen: the others parsed before
		return nil, errorf(http.StatusInternalServerError, "ServiceFailure", "%v", err)
	}
	return nil, nil
}

// memberList is an AWS Query list: always present, <member> per item.
type memberList struct {
	Members []string `xml:"member"`
}

type listRolePoliciesResult struct {
	PolicyNames memberList `xml:"PolicyNames"`
	IsTruncated bool       `xml:"IsTruncated"`
	Marker      string     `xml:"Marker,omitempty"`
}

// iamListRolePolicies lists policy names in order, paginated with MaxItems
// (1..1000, default 100) and Marker (the last name of the previous page).
func iamListRolePolicies(r *request) (any, *APIError) {
	maxItems := 100
	if v := r.params.Get("MaxItems"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return nil, errorf(http.StatusBadRequest, "ValidationError", "1 validation error detected: Value '%s' at 'maxItems' failed to satisfy constraint: Member must have value between 1 and 1000", v)
		}
		maxItems = n
	}
	role, e := r.iamRole()
	if e != nil {
		return nil, e
	}
	names := sortedKeys(role.Policies)
	if m := r.params.Get("Marker"); m != "" {
		i, found := slices.BinarySearch(names, m)
		if found {
			i++
		}
		names = names[i:]
	}
	out := &listRolePoliciesResult{PolicyNames: memberList{names}}
	if len(names) > maxItems {
		out.PolicyNames.Members, out.IsTruncated, out.Marker = names[:maxItems], true, names[maxItems-1]
	}
	return out, nil
}
