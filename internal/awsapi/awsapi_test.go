package awsapi

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/aws/smithy-go"
)

func TestNoProxyAlwaysHasIMDS(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", "169.254.169.254"},
		{"10.0.0.0/8, .internal", "10.0.0.0/8,.internal,169.254.169.254"},
		{"169.254.169.254,x", "169.254.169.254,x"},
	} {
		if got := (Settings{NoProxy: tc.in}).NoProxyList(); got != tc.want {
			t.Errorf("NoProxyList(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// The agent's own proxy settings decide; the environment of whoever
// started the process does not.
func TestProxyFromSettingsNotEnvironment(t *testing.T) {
	t.Setenv("HTTPS_PROXY", "http://env-proxy.invalid:3128")
	t.Setenv("https_proxy", "http://env-proxy.invalid:3128")
	t.Setenv("NO_PROXY", "")
	req := func(u string) *http.Request {
		r, _ := http.NewRequest("GET", u, nil)
		return r
	}
	none := Settings{}.ProxyFunc()
	if u, _ := none(req("https://ec2.us-east-1.amazonaws.com/")); u != nil {
		t.Fatalf("no proxy configured, but %s used (from the environment)", u)
	}
	s := Settings{HTTPSProxy: "http://proxy.corp:8080", NoProxy: "vpce.internal"}
	pf := s.ProxyFunc()
	if u, _ := pf(req("https://ec2.us-east-1.amazonaws.com/")); u == nil || u.Host != "proxy.corp:8080" {
		t.Fatalf("configured proxy not used: %v", u)
	}
	if u, _ := pf(req("http://169.254.169.254/latest/api/token")); u != nil {
		t.Fatalf("metadata service proxied through %s", u)
	}
	if u, _ := pf(req("https://ec2.vpce.internal/")); u != nil {
		t.Fatalf("no_proxy host proxied through %s", u)
	}
}

type apiErr struct{ code, msg string }

func (e apiErr) Error() string                 { return e.code + ": " + e.msg }
func (e apiErr) ErrorCode() string             { return e.code }
func (e apiErr) ErrorMessage() string          { return e.msg }
func (e apiErr) ErrorFault() smithy.ErrorFault { return smithy.FaultClient }

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want Kind
	}{
		{apiErr{"DryRunOperation", "Request would have succeeded"}, KindDryRunOK},
		{apiErr{"UnauthorizedOperation", "You are not authorized"}, KindUnauthorized},
		{apiErr{"RequestLimitExceeded", "slow down"}, KindThrottled},
		{apiErr{"InternalError", "oops"}, KindUnavailable},
		{apiErr{"ExpiredToken", "expired"}, KindCredentials},
		{apiErr{"InvalidRouteTableID.NotFound", "no"}, KindNotFound},
		{apiErr{"InvalidParameterValue", "bad"}, KindOther},
		{context.DeadlineExceeded, KindUnavailable},
		{errors.New("something else"), KindOther},
	} {
		f := Classify(tc.err)
		if f.Kind != tc.want {
			t.Errorf("Classify(%v) = %s, want %s", tc.err, f.Kind, tc.want)
		}
	}
	if Classify(nil) != nil {
		t.Fatal("Classify(nil) != nil")
	}
	if !IsDryRunOK(apiErr{"DryRunOperation", ""}) || IsDryRunOK(apiErr{"UnauthorizedOperation", ""}) {
		t.Fatal("IsDryRunOK")
	}
}

func TestUnauthorizedInPlainWords(t *testing.T) {
	c := &Clients{Settings: Settings{}.withDefaults()}
	err := c.Explain(context.Background(), "node2", "ec2:ModifyNetworkInterfaceAttribute", "arn:aws:ec2:us-east-1:123456789012:network-interface/eni-1",
		apiErr{"UnauthorizedOperation", "You are not authorized to perform this operation."})
	want := `node2 lacks ec2:ModifyNetworkInterfaceAttribute on arn:aws:ec2:us-east-1:123456789012:network-interface/eni-1 (AWS answered UnauthorizedOperation, add to its role: {"Action":["ec2:ModifyNetworkInterfaceAttribute"],"Effect":"Allow","Resource":["arn:aws:ec2:us-east-1:123456789012:network-interface/eni-1"]})`
	if err == nil || err.Error() != want {
		t.Fatalf("got  %v\nwant %s", err, want)
	}
	var f *Failure
	if !errors.As(err, &f) || f.Kind != KindUnauthorized {
		t.Fatalf("not a Failure: %T", err)
	}
	// The words name the code actually answered.
	err = c.Explain(context.Background(), "node2", "sts:GetCallerIdentity", "*", apiErr{"AccessDenied", "User: x is not authorized"})
	if err == nil || !strings.Contains(err.Error(), "node2 lacks sts:GetCallerIdentity on * (AWS answered AccessDenied,") {
		t.Fatalf("AccessDenied: %v", err)
	}
	// other errors pass through unchanged
	other := apiErr{"InvalidParameterValue", "bad"}
	if got := c.Explain(context.Background(), "node2", "x", "y", other); !strings.Contains(got.Error(), "bad") {
		t.Fatalf("other error changed: %v", got)
	}
}

// A DryRun call proves a permission only when it answers DryRunOperation: a
// plain success means the endpoint ignored DryRun (and may have acted).
func TestDryRunResult(t *testing.T) {
	if f := DryRunResult(apiErr{"DryRunOperation", "Request would have succeeded, but DryRun flag is set."}); f != nil {
		t.Fatalf("DryRunOperation: %v, want nil", f)
	}
	f := DryRunResult(nil)
	if f == nil || f.Kind != KindDryRunIgnored || !strings.Contains(f.Error(), "ignores DryRun") || !strings.Contains(f.Error(), "may have acted") {
		t.Fatalf("plain success: %v, want a dry-run-ignored failure", f)
	}
	if f := DryRunResult(apiErr{"UnauthorizedOperation", "no"}); f == nil || f.Kind != KindUnauthorized {
		t.Fatalf("denied: %v", f)
	}
	if f := DryRunResult(apiErr{"RequestLimitExceeded", "slow"}); f == nil || f.Kind != KindThrottled {
		t.Fatalf("throttled: %v", f)
	}
	if IsDryRunOK(nil) {
		t.Fatal("IsDryRunOK(nil): a plain success is not a dry run that would have succeeded")
	}
}
