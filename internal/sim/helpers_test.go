package sim

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// env is a simulator behind an httptest server, with a clock the test can
// move (offset from real time, since the SDK signs with real time).
type env struct {
	t      *testing.T
	w      *World
	srv    *Server
	url    string
	offset atomic.Int64
}

func newEnv(t *testing.T, nodes ...string) *env {
	t.Helper()
	if len(nodes) == 0 {
		nodes = []string{"node1", "node2"}
	}
	e := &env{t: t, w: DefaultWorld(nodes)}
	e.srv = New(e.w, Options{Now: func() time.Time { return time.Now().Add(time.Duration(e.offset.Load())) }})
	ts := httptest.NewServer(e.srv.Handler())
	t.Cleanup(ts.Close)
	e.url = ts.URL
	return e
}

func (e *env) advance(d time.Duration) { e.offset.Add(int64(d)) }

func (e *env) cfg(akid, secret, token string) aws.Config {
	return aws.Config{
		Region:           DefaultRegion,
		Credentials:      credentials.NewStaticCredentialsProvider(akid, secret, token),
		BaseEndpoint:     aws.String(e.url),
		RetryMaxAttempts: 1,
	}
}

func (e *env) adminEC2() *ec2.Client {
	akid, secret := e.w.AdminCredentials()
	return ec2.NewFromConfig(e.cfg(akid, secret, ""))
}

func (e *env) adminSTS() *sts.Client {
	akid, secret := e.w.AdminCredentials()
	return sts.NewFromConfig(e.cfg(akid, secret, ""))
}

func (e *env) roleCfg(node string) aws.Config {
	akid, secret, token, _ := e.w.IssueRoleCredentials("lifeboat-"+node, time.Hour)
	return e.cfg(akid, secret, token)
}

func (e *env) instance(node string) Instance {
	e.t.Helper()
	in, ok := e.w.InstanceByName(node)
	if !ok {
		e.t.Fatalf("no instance for %s", node)
	}
	return in
}

func (e *env) eni(node string) string {
	e.t.Helper()
	return e.w.InstanceNetworkInterfaces(e.instance(node).ID)[0]
}

func (e *env) rtb() string { return e.w.State().RouteTables[0].ID }

func (e *env) eip() string { return e.w.State().Addresses[0].AllocationID }

var ctx = context.Background()

// apiCode returns the AWS error code of err ("" if it is not an API error).
func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

func httpStatus(err error) int {
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

// wantErr fails unless err is an API error with the code, HTTP status (0:
// any) and a message containing msg.
func wantErr(t *testing.T, err error, code string, status int, msg string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got success, want %s", code)
	}
	if got := apiCode(err); got != code {
		t.Fatalf("error code %q, want %q (err: %v)", got, code, err)
	}
	if status != 0 && httpStatus(err) != status {
		t.Fatalf("HTTP status %d, want %d (err: %v)", httpStatus(err), status, err)
	}
	var ae smithy.APIError
	errors.As(err, &ae)
	if !strings.Contains(ae.ErrorMessage(), msg) {
		t.Fatalf("message %q does not contain %q", ae.ErrorMessage(), msg)
	}
}

func must[T any](t *testing.T) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}
