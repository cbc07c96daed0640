package policy

import (
	"bytes"
	"encoding/json"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"
)

func mustParse(t testing.TB, doc string) *Document {
	t.Helper()
	d, err := Parse([]byte(doc))
	if err != nil {
		t.Fatalf("Parse(%s): %v", doc, err)
	}
	return d
}

func TestParseForms(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want *Document
	}{
		{
			name: "single statement object, string values",
			doc:  `{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ec2:ReplaceRoute","Resource":"*"}}`,
			want: &Document{Version: "2012-10-17", Statements: []Statement{
				{Effect: "Allow", Action: []string{"ec2:ReplaceRoute"}, Resource: []string{"*"}},
			}},
		},
		{
			name: "statement list, list values, Sid, Id, empty Condition, whitespace",
			doc: `{
				"Version": "2012-10-17", "Id": "lifeboat",
				"Statement": [
					{"Sid": "A", "Effect": "Allow", "Action": ["ec2:Describe*", "ec2:ReplaceRoute"],
					 "Resource": ["arn:aws:ec2:us-east-1:123456789012:route-table/*", "*"], "Condition": {}},
					{"Effect": "Deny", "NotAction": "iam:*", "NotResource": ["arn:aws:iam::123456789012:role/x"]}
				]
			}`,
			want: &Document{Version: "2012-10-17", Statements: []Statement{
				{Sid: "A", Effect: "Allow", Action: []string{"ec2:Describe*", "ec2:ReplaceRoute"},
					Resource: []string{"arn:aws:ec2:us-east-1:123456789012:route-table/*", "*"}},
				{Effect: "Deny", NotAction: []string{"iam:*"}, NotResource: []string{"arn:aws:iam::123456789012:role/x"}},
			}},
		},
		{
			name: "Version absent",
			doc:  `{"Statement":[{"Effect":"Deny","Action":"*","Resource":"*"}]}`,
			want: &Document{Statements: []Statement{{Effect: "Deny", Action: []string{"*"}, Resource: []string{"*"}}}},
		},
		{
			name: "old Version",
			doc:  `{"Version":"2008-10-17","Statement":[{"Effect":"Allow","NotAction":["s3:*"],"Resource":"*"}]}`,
			want: &Document{Version: "2008-10-17", Statements: []Statement{{Effect: "Allow", NotAction: []string{"s3:*"}, Resource: []string{"*"}}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := mustParse(t, tt.doc)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Parse:\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	// stmt wraps statement members into a document with a leading valid statement,
	// so the statement under test is "statement 1".
	stmt := func(members string) string {
		return `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"},{` + members + `}]}`
	}
	ok := `"Effect":"Allow","Action":"*","Resource":"*"`
	big := `{"Statement":{"Effect":"Allow","Action":"*","Resource":["` + strings.Repeat("arn:aws:ec2:::x", 700) + `"]}}`
	tests := []struct {
		name string
		doc  string
		want string // exact error, or a substring if it starts with "~"
	}{
		{"invalid JSON", `{"Statement":`, "~policy: invalid JSON"},
		{"trailing data", `{"Statement":{}} x`, "~policy: invalid JSON"},
		{"too large", big, "~over the 10240-byte limit"},
		{"array document", `[]`, "policy: document must be a JSON object"},
		{"null document", `null`, "policy: document must be a JSON object"},
		{"unknown top-level key", `{"Statment":[]}`, `~unknown top-level key "Statment"`},
		{"bad Version", `{"Version":"2012-10-18","Statement":{` + ok + `}}`, `policy: Version "2012-10-18" is not "2012-10-17" or "2008-10-17"`},
		{"empty Version", `{"Version":"","Statement":{` + ok + `}}`, `~Version "" is not`},
		{"numeric Version", `{"Version":2012,"Statement":{` + ok + `}}`, "policy: Version must be a string"},
		{"numeric Id", `{"Id":1,"Statement":{` + ok + `}}`, "policy: Id must be a string"},
		{"missing Statement", `{"Version":"2012-10-17"}`, "~Statement (an object or a list of objects) is required"},
		{"null Statement", `{"Statement":null}`, "~Statement (an object or a list of objects) is required"},
		{"empty Statement list", `{"Statement":[]}`, "policy: Statement must be a non-empty list"},
		{"statement not an object", `{"Statement":[{` + ok + `},"x"]}`, "policy: statement 1: must be a JSON object"},
		{"numeric Sid", stmt(`"Sid":1,` + ok), "policy: statement 1: Sid must be a string"},
		{"duplicate Sid", `{"Statement":[{"Sid":"S",` + ok + `},{"Sid":"S",` + ok + `}]}`, `policy: statement 1 (Sid S): Sid "S" is already used by statement 0`},
		{"Principal", stmt(`"Sid":"P","Principal":{"AWS":"*"},` + ok), "policy: statement 1 (Sid P): identity-based policies have no Principal"},
		{"NotPrincipal", stmt(`"NotPrincipal":"*",` + ok), "policy: statement 1: identity-based policies have no NotPrincipal"},
		{"unknown key", stmt(`"Actions":"*",` + ok), `policy: statement 1: unknown key "Actions"`},
		{"lowercase key", stmt(`"effect":"Allow",` + ok), `policy: statement 1: unknown key "effect"`},
		{"missing Effect", stmt(`"Action":"*","Resource":"*"`), "policy: statement 1: Effect (Allow or Deny) is required"},
		{"bad Effect", `{"Statement":[{` + ok + `},{` + ok + `},{"Sid":"AllowRoutes","Effect":"Permit","Action":"*","Resource":"*"}]}`,
			`policy: statement 2 (Sid AllowRoutes): Effect "Permit" is not Allow or Deny`},
		{"lowercase Effect", stmt(`"Effect":"allow","Action":"*","Resource":"*"`), `policy: statement 1: Effect "allow" is not Allow or Deny`},
		{"non-empty Condition", stmt(ok + `,"Condition":{"Bool":{"aws:SecureTransport":"true"}}`), "~statement 1: Condition is not supported"},
		{"null Condition", stmt(ok + `,"Condition":null`), "~statement 1: Condition is not supported"},
		{"Action and NotAction", stmt(ok + `,"NotAction":"s3:*"`), "policy: statement 1: has both Action and NotAction"},
		{"no Action", stmt(`"Effect":"Allow","Resource":"*"`), "policy: statement 1: needs Action or NotAction"},
		{"Resource and NotResource", stmt(ok + `,"NotResource":"*"`), "policy: statement 1: has both Resource and NotResource"},
		{"no Resource", stmt(`"Effect":"Allow","Action":"*"`), "policy: statement 1: needs Resource or NotResource"},
		{"numeric Action", stmt(`"Effect":"Allow","Action":1,"Resource":"*"`), "policy: statement 1: Action must be a string or a non-empty list of strings"},
		{"null Action", stmt(`"Effect":"Allow","Action":null,"Resource":"*"`), "policy: statement 1: Action must be a string or a non-empty list of strings"},
		{"empty Action list", stmt(`"Effect":"Allow","Action":[],"Resource":"*"`), "policy: statement 1: Action must be a string or a non-empty list of strings"},
		{"numeric Action element", stmt(`"Effect":"Allow","Action":["ec2:A",2],"Resource":"*"`), "policy: statement 1: Action[1] must be a non-empty string"},
		{"empty NotAction element", stmt(`"Effect":"Allow","NotAction":[""],"Resource":"*"`), "policy: statement 1: NotAction[0] must be a non-empty string"},
		{"Action without service", stmt(`"Effect":"Allow","Action":"ReplaceRoute","Resource":"*"`), `policy: statement 1: Action[0] "ReplaceRoute" is not "*" or "service:action"`},
		{"Action with empty service", stmt(`"Effect":"Allow","Action":":x","Resource":"*"`), `~Action[0] ":x" is not`},
		{"Action with two colons", stmt(`"Effect":"Allow","Action":["ec2:*","ec2:a:b"],"Resource":"*"`), `~Action[1] "ec2:a:b" is not`},
		{"Resource not an ARN", stmt(`"Effect":"Allow","Action":"*","Resource":"rtb-1"`), `policy: statement 1: Resource[0] "rtb-1" is not "*" or an ARN`},
		{"NotResource not an ARN", stmt(`"Effect":"Allow","Action":"*","NotResource":["*","x"]`), `policy: statement 1: NotResource[1] "x" is not "*" or an ARN`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := Parse([]byte(tt.doc))
			if err == nil {
				t.Fatalf("Parse succeeded (%+v), want error %q", d, tt.want)
			}
			if sub, ok := strings.CutPrefix(tt.want, "~"); ok {
				if !strings.Contains(err.Error(), sub) {
					t.Errorf("error %q does not contain %q", err, sub)
				}
			} else if err.Error() != tt.want {
				t.Errorf("error\n got %q\nwant %q", err, tt.want)
			}
		})
	}
}

func TestParseSizeLimitIgnoresWhitespace(t *testing.T) {
	doc := `{"Statement":` + strings.Repeat(" \n\t", 5000) + `{"Effect":"Allow","Action":"*","Resource":"*"}}`
	mustParse(t, doc)
}

const (
	rtb1 = "arn:aws:ec2:us-east-1:123456789012:route-table/rtb-1"
	rtb2 = "arn:aws:ec2:us-east-1:123456789012:route-table/rtb-2"
)

func TestEvaluate(t *testing.T) {
	role := `{"Version":"2012-10-17","Statement":[
		{"Effect":"Allow","Action":"ec2:Describe*","Resource":"*"},
		{"Sid":"AllowRoutes","Effect":"Allow","Action":["ec2:ReplaceRoute","ec2:CreateRoute"],
		 "Resource":"arn:aws:ec2:us-east-1:123456789012:route-table/*"}]}`
	deny := `{"Statement":{"Sid":"DenyReplace","Effect":"Deny","Action":"ec2:replaceroute","Resource":"*"}}`
	tests := []struct {
		name       string
		docs       []string
		req        Request
		want       Decision
		wantReason string
	}{
		{"allow by wildcard action", []string{role}, Request{"ec2:DescribeRouteTables", "*"}, Allow, "statement[0]"},
		{"action match is case-insensitive", []string{role}, Request{"EC2:describeroutetables", "*"}, Allow, "statement[0]"},
		{"allow by Sid", []string{role}, Request{"ec2:ReplaceRoute", rtb1}, Allow, "AllowRoutes"},
		{"implicit deny: other action", []string{role}, Request{"ec2:DeleteRoute", rtb1}, ImplicitDeny, ""},
		{"implicit deny: other account", []string{role}, Request{"ec2:ReplaceRoute", "arn:aws:ec2:us-east-1:999999999999:route-table/rtb-1"}, ImplicitDeny, ""},
		{"implicit deny: resource is case-sensitive", []string{role}, Request{"ec2:ReplaceRoute", "arn:aws:ec2:us-east-1:123456789012:Route-Table/rtb-1"}, ImplicitDeny, ""},
		{"implicit deny: no documents", nil, Request{"ec2:ReplaceRoute", rtb1}, ImplicitDeny, ""},
		{"explicit deny in another document wins", []string{role, deny}, Request{"ec2:ReplaceRoute", rtb1}, ExplicitDeny, "DenyReplace"},
		{"explicit deny wins regardless of order", []string{deny, role}, Request{"ec2:ReplaceRoute", rtb1}, ExplicitDeny, "DenyReplace"},
		{"deny leaves other actions allowed", []string{role, deny}, Request{"ec2:CreateRoute", rtb1}, Allow, "AllowRoutes"},
		{"explicit deny alone", []string{deny}, Request{"ec2:ReplaceRoute", rtb1}, ExplicitDeny, "DenyReplace"},
		{"star action and resource", []string{`{"Statement":{"Effect":"Allow","Action":"*","Resource":"*"}}`}, Request{"iam:PassRole", "arn:aws:iam::1:role/r"}, Allow, "statement[0]"},
		{"service wildcard", []string{`{"Statement":{"Effect":"Allow","Action":"e*:Describe*","Resource":"*"}}`}, Request{"ec2:DescribeInstances", "*"}, Allow, "statement[0]"},
		{"service wildcard no match", []string{`{"Statement":{"Effect":"Allow","Action":"e*:Describe*","Resource":"*"}}`}, Request{"iam:DescribeX", "*"}, ImplicitDeny, ""},
		{"? in action", []string{`{"Statement":{"Effect":"Allow","Action":"ec2:?eleteRoute","Resource":"*"}}`}, Request{"ec2:DeleteRoute", "*"}, Allow, "statement[0]"},
		{"? needs exactly one character", []string{`{"Statement":{"Effect":"Allow","Action":"ec2:?eleteRoute","Resource":"*"}}`}, Request{"ec2:eleteRoute", "*"}, ImplicitDeny, ""},
		{"? in resource", []string{`{"Statement":{"Sid":"Q","Effect":"Allow","Action":"*","Resource":"arn:aws:ec2:*:123456789012:route-table/rtb-?"}}`}, Request{"ec2:ReplaceRoute", rtb1}, Allow, "Q"},
		{"? in resource matches one character only", []string{`{"Statement":{"Effect":"Allow","Action":"*","Resource":"arn:aws:ec2:*:123456789012:route-table/rtb-?"}}`}, Request{"ec2:ReplaceRoute", rtb1 + "2"}, ImplicitDeny, ""},
		{"wildcard ARN segments", []string{`{"Statement":{"Effect":"Allow","Action":"*","Resource":"arn:aws:ec2:*:*:route-table/*"}}`}, Request{"ec2:ReplaceRoute", rtb2}, Allow, "statement[0]"},
		{"star resource matches literal star", []string{`{"Statement":{"Effect":"Allow","Action":"*","Resource":"*"}}`}, Request{"ec2:DescribeRouteTables", "*"}, Allow, "statement[0]"},
		{"ARN pattern does not match star request", []string{role}, Request{"ec2:ReplaceRoute", "*"}, ImplicitDeny, ""},
		{"NotAction allows others", []string{`{"Statement":{"Effect":"Allow","NotAction":"iam:*","Resource":"*"}}`}, Request{"ec2:ReplaceRoute", rtb1}, Allow, "statement[0]"},
		{"NotAction excludes case-insensitively", []string{`{"Statement":{"Effect":"Allow","NotAction":"iam:*","Resource":"*"}}`}, Request{"IAM:PassRole", "*"}, ImplicitDeny, ""},
		{"NotResource deny spares listed resource", []string{`{"Statement":[{"Effect":"Allow","Action":"*","Resource":"*"},{"Sid":"OnlyRtb1","Effect":"Deny","Action":"ec2:*","NotResource":"` + rtb1 + `"}]}`}, Request{"ec2:ReplaceRoute", rtb1}, Allow, "statement[0]"},
		{"NotResource deny hits others", []string{`{"Statement":[{"Effect":"Allow","Action":"*","Resource":"*"},{"Sid":"OnlyRtb1","Effect":"Deny","Action":"ec2:*","NotResource":"` + rtb1 + `"}]}`}, Request{"ec2:ReplaceRoute", rtb2}, ExplicitDeny, "OnlyRtb1"},
		{"first matching allow explains", []string{`{"Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"},{"Effect":"Allow","Action":"ec2:*","Resource":"*"},{"Sid":"Later","Effect":"Allow","Action":"*","Resource":"*"}]}`}, Request{"ec2:ReplaceRoute", rtb1}, Allow, "statement[1]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var docs []*Document
			for _, s := range tt.docs {
				docs = append(docs, mustParse(t, s))
			}
			docs = append(docs, nil) // nil documents are skipped
			if got := Evaluate(docs, tt.req); got != tt.want {
				t.Errorf("Evaluate(%+v) = %v, want %v", tt.req, got, tt.want)
			}
			got, reason := Explain(docs, tt.req)
			if got != tt.want || reason != tt.wantReason {
				t.Errorf("Explain(%+v) = %v, %q; want %v, %q", tt.req, got, reason, tt.want, tt.wantReason)
			}
		})
	}
}

func TestEvaluateHandBuilt(t *testing.T) {
	// A statement built by hand with neither Action nor NotAction matches nothing,
	// and an unknown Effect is ignored.
	docs := []*Document{{Statements: []Statement{
		{Effect: "Allow", Resource: []string{"*"}},
		{Effect: "allow", Action: []string{"*"}, Resource: []string{"*"}},
		{Effect: "Deny", Action: []string{"*"}},
	}}}
	if d, why := Explain(docs, Request{"ec2:ReplaceRoute", "*"}); d != ImplicitDeny || why != "" {
		t.Errorf("Explain = %v, %q; want implicitDeny", d, why)
	}
}

func TestDecisionString(t *testing.T) {
	for d, want := range map[Decision]string{ImplicitDeny: "implicitDeny", Allow: "allowed", ExplicitDeny: "explicitDeny", 7: "Decision(7)", -1: "Decision(-1)"} {
		if got := d.String(); got != want {
			t.Errorf("Decision(%d).String() = %q, want %q", int(d), got, want)
		}
	}
}

func TestAllowStatement(t *testing.T) {
	tests := []struct {
		actions, resources []string
		want               string
	}{
		{[]string{"ec2:ReplaceRoute"}, []string{rtb1}, `{"Effect":"Allow","Action":["ec2:ReplaceRoute"],"Resource":["` + rtb1 + `"]}`},
		{[]string{"ec2:DescribeRouteTables", "ec2:DescribeInstances"}, nil, `{"Effect":"Allow","Action":["ec2:DescribeRouteTables","ec2:DescribeInstances"],"Resource":["*"]}`},
		{[]string{"s3:GetObject"}, []string{"arn:aws:s3:::b/<&>"}, `{"Effect":"Allow","Action":["s3:GetObject"],"Resource":["arn:aws:s3:::b/<&>"]}`},
	}
	for _, tt := range tests {
		got := AllowStatement(tt.actions, tt.resources)
		if got != tt.want {
			t.Errorf("AllowStatement(%q, %q)\n got %s\nwant %s", tt.actions, tt.resources, got, tt.want)
		}
		// The line to add must really grant the request when added to a policy.
		d := mustParse(t, `{"Version":"2012-10-17","Statement":[`+got+`]}`)
		res := "*"
		if len(tt.resources) > 0 {
			res = tt.resources[0]
		}
		if dec := Evaluate([]*Document{d}, Request{tt.actions[0], res}); dec != Allow {
			t.Errorf("AllowStatement(%q, %q) does not allow: %v", tt.actions, tt.resources, dec)
		}
	}
	if got := AllowStatement(nil, nil); got != `{"Effect":"Allow","Action":[],"Resource":["*"]}` {
		t.Errorf("AllowStatement(nil, nil) = %s", got)
	}
}

// refMatch is the reference wildcard matcher: the pattern translated to an
// anchored regexp. ok is false if the regexp cannot be built.
func refMatch(p, s string, fold bool) (matched, ok bool) {
	var re strings.Builder
	re.WriteString(`(?s`)
	if fold {
		re.WriteString(`i`)
	}
	re.WriteString(`)\A`)
	for _, r := range p {
		switch r {
		case '*':
			re.WriteString(`.*`)
		case '?':
			re.WriteString(`.`)
		default:
			re.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	re.WriteString(`\z`)
	rx, err := regexp.Compile(re.String())
	if err != nil {
		return false, false
	}
	return rx.MatchString(s), true
}

func TestMatch(t *testing.T) {
	tests := []struct {
		p, s string
		fold bool
		want bool
	}{
		{"", "", false, true},
		{"", "a", false, false},
		{"*", "", false, true},
		{"*", "anything:at/all", false, true},
		{"?", "", false, false},
		{"?", "é", false, true}, // '?' is one character, not one byte
		{"??", "é", false, false},
		{"a?c", "abc", false, true},
		{"a*c", "ac", false, true},
		{"a*c", "abcbc", false, true},
		{"a*c", "abcb", false, false},
		{"*a*b*", "xxaxxbxx", false, true},
		{"*a*b*", "xxbxxaxx", false, false},
		{"ec2:Describe*", "EC2:DESCRIBEINSTANCES", true, true},
		{"ec2:Describe*", "EC2:DESCRIBEINSTANCES", false, false},
		{"k", "\u212a", true, true}, // Kelvin sign folds to k
		{"ß", "ẞ", true, true},
		{"**", "x", false, true},
		{"a**b", "ab", false, true},
		{"a.b", "axb", false, false}, // '.' is literal
		{"arn:aws:ec2:*:*:route-table/*", rtb1, false, true},
	}
	for _, tt := range tests {
		got, _ := match(tt.p, tt.s, tt.fold)
		if got != tt.want {
			t.Errorf("match(%q, %q, %v) = %v, want %v", tt.p, tt.s, tt.fold, got, tt.want)
		}
		if ref, _ := refMatch(tt.p, tt.s, tt.fold); ref != tt.want {
			t.Errorf("refMatch(%q, %q, %v) = %v, want %v (test table is wrong)", tt.p, tt.s, tt.fold, ref, tt.want)
		}
	}
}

// TestMatchPathological checks the matcher does not backtrack exponentially,
// by counting loop iterations rather than timing.
func TestMatchPathological(t *testing.T) {
	s := strings.Repeat("a", 100_000)
	tests := []struct {
		p        string
		maxSteps int
	}{
		// Linear: only the last star ever backtracks.
		{"a*a*a*a*a*a*a*b", 3 * len(s)},
		{"*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b", 3 * len(s)},
		// Worst case is bounded by len(p)*len(s).
		{"*" + strings.Repeat("a", 20) + "b", 21 * (len(s) + 1)},
	}
	for _, tt := range tests {
		ok, steps := match(tt.p, s, false)
		if ok {
			t.Errorf("match(%q, a...) = true", tt.p)
		}
		if steps > tt.maxSteps {
			t.Errorf("match(%q, %d a's) took %d steps, want <= %d", tt.p, len(s), steps, tt.maxSteps)
		}
		if _, steps := match(strings.ToUpper(tt.p), s, true); steps > tt.maxSteps {
			t.Errorf("folding match(%q) took %d steps, want <= %d", tt.p, steps, tt.maxSteps)
		}
	}
}

func FuzzMatch(f *testing.F) {
	for _, seed := range []struct {
		p, s string
		fold bool
	}{
		{"a*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaa", false},
		{"ec2:Describe*", "EC2:describeInstances", true},
		{"arn:aws:ec2:*:?:route-table/*", "arn:aws:ec2:us-east-1:1:route-table/rtb-1", false},
		{"*?*", "é", false},
		{"k*", "\u212aelvin", true},
		{"", "", false},
	} {
		f.Add(seed.p, seed.s, seed.fold)
	}
	f.Fuzz(func(t *testing.T, p, s string, fold bool) {
		if !utf8.ValidString(p) || !utf8.ValidString(s) {
			t.Skip("the reference regexp needs valid UTF-8")
		}
		got, steps := match(p, s, fold)
		want, ok := refMatch(p, s, fold)
		if !ok {
			t.Skip("pattern too large for regexp")
		}
		if got != want {
			t.Fatalf("match(%q, %q, %v) = %v, regexp says %v", p, s, fold, got, want)
		}
		if limit := (len(p)+1)*(len(s)+1) + len(p); steps > limit {
			t.Fatalf("match(%q, %q) took %d steps, over %d", p, s, steps, limit)
		}
	})
}

// encode renders d back to policy JSON, always in list form.
func encode(t *testing.T, d *Document) []byte {
	t.Helper()
	top := map[string]any{}
	if d.Version != "" {
		top["Version"] = d.Version
	}
	var sts []map[string]any
	for _, st := range d.Statements {
		m := map[string]any{"Effect": st.Effect}
		if st.Sid != "" {
			m["Sid"] = st.Sid
		}
		for k, v := range map[string][]string{"Action": st.Action, "NotAction": st.NotAction, "Resource": st.Resource, "NotResource": st.NotResource} {
			if len(v) > 0 {
				m[k] = v
			}
		}
		sts = append(sts, m)
	}
	top["Statement"] = sts
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(top); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// concrete turns a wildcard pattern into a string it matches.
func concrete(p string) string {
	return strings.NewReplacer("*", "", "?", "x").Replace(p)
}

func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		`{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ec2:ReplaceRoute","Resource":"*"}}`,
		`{"Statement":[{"Sid":"A","Effect":"Deny","NotAction":["iam:*","s3:?et*"],"NotResource":"arn:aws:s3:::b/*"},{"Effect":"Allow","Action":"*","Resource":"*","Condition":{}}]}`,
		`{"Version":"2008-10-17","Id":"x","Statement":[{"Effect":"Allow","Action":["ec2:*"],"Resource":["arn:aws:ec2:*:*:route-table/rtb-?"]}]}`,
		`{"Statement":[{"Effect":"Permit","Action":"*","Resource":"*"}]}`,
		`{"Statement":[{"Effect":"Allow","Principal":"*","Action":"*","Resource":"*"}]}`,
		`[]`, `null`, `{`, `"x"`,
	} {
		f.Add([]byte(seed), "ec2:ReplaceRoute", rtb1)
	}
	f.Fuzz(func(t *testing.T, data []byte, action, resource string) {
		d, err := Parse(data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "policy: ") {
				t.Fatalf("error without package prefix: %v", err)
			}
			return
		}
		if len(d.Statements) == 0 {
			t.Fatal("parsed document has no statements")
		}
		for i, st := range d.Statements {
			if st.Effect != "Allow" && st.Effect != "Deny" ||
				(len(st.Action) == 0) == (len(st.NotAction) == 0) ||
				(len(st.Resource) == 0) == (len(st.NotResource) == 0) {
				t.Fatalf("statement %d invalid after Parse: %+v", i, st)
			}
		}
		docs := []*Document{d}
		reqs := []Request{{action, resource}}
		for _, st := range d.Statements {
			if len(st.Action) > 0 && len(st.Resource) > 0 {
				reqs = append(reqs, Request{concrete(st.Action[0]), concrete(st.Resource[0])})
			}
		}
		// Round trip through canonical JSON, when that fits the size limit.
		var d2 *Document
		if re := encode(t, d); len(re) <= MaxDocumentSize {
			if d2, err = Parse(re); err != nil {
				t.Fatalf("re-parsing %s: %v", re, err)
			}
			if !reflect.DeepEqual(d, d2) {
				t.Fatalf("round trip changed document:\n%+v\n%+v", d, d2)
			}
		}
		for _, req := range reqs {
			dec, why := Explain(docs, req)
			if dec != Evaluate(docs, req) {
				t.Fatalf("Explain and Evaluate disagree on %+v", req)
			}
			if (dec == ImplicitDeny) != (why == "") {
				t.Fatalf("Explain(%+v) = %v, %q", req, dec, why)
			}
			if d2 != nil && Evaluate([]*Document{d2}, req) != dec {
				t.Fatalf("round-tripped document decides %+v differently", req)
			}
		}
		// A request built from a statement's own patterns is decided by some statement.
		for _, st := range d.Statements {
			if len(st.Action) == 0 || len(st.Resource) == 0 {
				continue
			}
			req := Request{concrete(st.Action[0]), concrete(st.Resource[0])}
			dec := Evaluate(docs, req)
			if st.Effect == "Deny" && dec != ExplicitDeny || dec == ImplicitDeny {
				t.Fatalf("statement %+v does not decide its own request %+v: %v", st, req, dec)
			}
		}
	})
}
