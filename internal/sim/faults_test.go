package sim

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/sts"
)

// TestThrottleEvery: every Nth call answers RequestLimitExceeded (503); the
// SDK, with retries off, reports it.
func TestThrottleEvery(t *testing.T) {
	e := newEnv(t)
	c := e.adminEC2()
	e.srv.SetFaults(Faults{ThrottleEvery: 3})
	var got []string
	for range 6 {
		_, err := c.DescribeRouteTables(ctx, &ec2.DescribeRouteTablesInput{})
		if err != nil {
			wantErr(t, err, "RequestLimitExceeded", http.StatusServiceUnavailable, "Request limit exceeded.")
		}
		got = append(got, apiCode(err))
	}
	want := []string{"", "", "RequestLimitExceeded", "", "", "RequestLimitExceeded"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("codes %q, want %q", got, want)
	}
	// STS throttles in its own words.
	e.srv.SetFaults(Faults{ThrottleEvery: 1})
	_, err := e.adminSTS().GetCallerIdentity(ctx, nil)
	wantErr(t, err, "Throttling", 400, "Rate exceeded")
}

// TestIgnoreDryRun: the fault makes the simulator a broken endpoint that
// carries a DryRun call out for real and answers plain success, for the
// listed actions only; a caller without the permission is still refused.
func TestIgnoreDryRun(t *testing.T) {
	e := newEnv(t)
	c := e.adminEC2()
	rtb, eni1, eni2 := e.rtb(), e.eni("node1"), e.eni("node2")
	const vip = "10.9.9.9/32"
	yes := aws.Bool(true)
	e.srv.SetFaults(Faults{IgnoreDryRun: true, Actions: []string{"ec2:CreateRoute"}})
	if _, err := c.CreateRoute(ctx, &ec2.CreateRouteInput{DryRun: yes, RouteTableId: &rtb, DestinationCidrBlock: aws.String(vip), NetworkInterfaceId: &eni1}); err != nil {
		t.Fatalf("CreateRoute DryRun with the fault: %v, want plain success", err)
	}
	if r, ok := e.w.Route(rtb, vip); !ok || r.NetworkInterfaceID != eni1 {
		t.Fatalf("the ignored DryRun did not act: %+v %v", r, ok)
	}
	// not listed: DryRun still honoured
	_, err := c.ReplaceRoute(ctx, &ec2.ReplaceRouteInput{DryRun: yes, RouteTableId: &rtb, DestinationCidrBlock: aws.String(vip), NetworkInterfaceId: &eni2})
	wantErr(t, err, "DryRunOperation", 412, "")
	// every action
	e.srv.SetFaults(Faults{IgnoreDryRun: true})
	if _, err := c.ReplaceRoute(ctx, &ec2.ReplaceRouteInput{DryRun: yes, RouteTableId: &rtb, DestinationCidrBlock: aws.String(vip), NetworkInterfaceId: &eni2}); err != nil {
		t.Fatalf("ReplaceRoute DryRun with the fault: %v", err)
	}
	if r, _ := e.w.Route(rtb, vip); r.NetworkInterfaceID != eni2 {
		t.Fatalf("the ignored DryRun did not move the route: %+v", r)
	}
	// authorization still applies
	ro := ec2.NewFromConfig(e.roleCfg("node1"))
	if err := e.w.PutRolePolicy("lifeboat-node1", PlaceholderPolicyName, []byte(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ec2:Describe*","Resource":"*"}]}`)); err != nil {
		t.Fatal(err)
	}
	_, err = ro.ReplaceRoute(ctx, &ec2.ReplaceRouteInput{DryRun: yes, RouteTableId: &rtb, DestinationCidrBlock: aws.String(vip), NetworkInterfaceId: &eni1})
	wantErr(t, err, "UnauthorizedOperation", 403, "")
	e.srv.SetFaults(Faults{})
	_, err = c.ReplaceRoute(ctx, &ec2.ReplaceRouteInput{DryRun: yes, RouteTableId: &rtb, DestinationCidrBlock: aws.String(vip), NetworkInterfaceId: &eni1})
	wantErr(t, err, "DryRunOperation", 412, "")
}

// TestThrottleRateSeeded: the same seed gives the same faults.
func TestThrottleRateSeeded(t *testing.T) {
	e := newEnv(t)
	c := e.adminEC2()
	run := func() string {
		e.srv.SetFaults(Faults{ThrottleRate: 0.5, Seed: 42})
		var b strings.Builder
		for range 20 {
			if _, err := c.DescribeAddresses(ctx, &ec2.DescribeAddressesInput{}); err != nil {
				b.WriteByte('T')
			} else {
				b.WriteByte('.')
			}
		}
		return b.String()
	}
	a, b := run(), run()
	if a != b || !strings.Contains(a, "T") || !strings.Contains(a, ".") {
		t.Fatalf("seeded runs %s and %s", a, b)
	}
}

// TestErrorRate: 5xx answers, and the SDK retries them when allowed to.
func TestErrorRate(t *testing.T) {
	e := newEnv(t)
	c := e.adminEC2()
	e.srv.SetFaults(Faults{ErrorRate: 1, Actions: []string{"ec2:DescribeInstances"}})
	seen := map[string]bool{}
	for range 2 {
		_, err := c.DescribeInstances(ctx, nil)
		if s := httpStatus(err); s < 500 {
			t.Fatalf("status %d (%v), want 5xx", s, err)
		}
		seen[apiCode(err)] = true
	}
	if !seen["InternalError"] || !seen["ServiceUnavailable"] {
		t.Fatalf("codes %v", seen)
	}
	// Other actions are untouched by an Actions-limited fault.
	must[*ec2.DescribeRouteTablesOutput](t)(c.DescribeRouteTables(ctx, &ec2.DescribeRouteTablesInput{}))
	// With the SDK's retries a transient error is invisible.
	e.srv.SetFaults(Faults{ErrorRate: 0.5, Seed: 7})
	akid, secret := e.w.AdminCredentials()
	cfg := e.cfg(akid, secret, "")
	cfg.RetryMaxAttempts = 10
	retrying := ec2.NewFromConfig(cfg)
	for range 5 {
		must[*ec2.DescribeRouteTablesOutput](t)(retrying.DescribeRouteTables(ctx, &ec2.DescribeRouteTablesInput{}))
	}
}

// TestClockSkew: a simulator clock more than 5 minutes off fails the SigV4
// time check; within the window calls work.
func TestClockSkew(t *testing.T) {
	e := newEnv(t)
	c := e.adminEC2()
	e.srv.SetFaults(Faults{ClockSkew: 4 * time.Minute})
	must[*ec2.DescribeInstancesOutput](t)(c.DescribeInstances(ctx, nil))
	e.srv.SetFaults(Faults{ClockSkew: 10 * time.Minute})
	_, err := c.DescribeInstances(ctx, nil)
	wantErr(t, err, "RequestExpired", 400, "")
	// The SDK learns the offset from the Date header of that answer and
	// signs the next call on the simulator's time: skew hides after one
	// failure, so lifeboat must measure it itself.
	must[*ec2.DescribeInstancesOutput](t)(c.DescribeInstances(ctx, nil))
	e.srv.SetFaults(Faults{ClockSkew: -10 * time.Minute})
	_, err = sts.NewFromConfig(e.cfg(AdminAccessKeyID, AdminSecretAccessKey, "")).GetCallerIdentity(ctx, nil)
	wantErr(t, err, "RequestExpired", 400, "")
	if d := time.Until(e.srv.Now()); d > -9*time.Minute {
		t.Fatalf("simulator clock is %v from real time", d)
	}
}

// TestLatency: calls take at least the injected latency.
func TestLatency(t *testing.T) {
	e := newEnv(t)
	c := e.adminEC2()
	e.srv.SetFaults(Faults{Latency: 100 * time.Millisecond})
	start := time.Now()
	must[*ec2.DescribeInstancesOutput](t)(c.DescribeInstances(ctx, nil))
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Fatalf("call took %v", d)
	}
}

func TestFaultsJSON(t *testing.T) {
	f := Faults{Latency: 250 * time.Millisecond, ThrottleEvery: 3, ErrorRate: 0.1, ClockSkew: -10 * time.Minute, ExpireCredentials: true, IgnoreDryRun: true, Seed: 9, Actions: []string{"ec2:ReplaceRoute"}}
	data, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), `"latency":"250ms"`) || !strings.Contains(string(data), `"clockSkew":"-10m0s"`) {
		t.Fatalf("JSON: %s", data)
	}
	var back Faults
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), `"ignoreDryRun":true`) {
		t.Fatalf("JSON: %s", data)
	}
	if back.Latency != f.Latency || back.ClockSkew != f.ClockSkew || back.Seed != 9 || back.Actions[0] != "ec2:ReplaceRoute" || !back.ExpireCredentials || !back.IgnoreDryRun {
		t.Fatalf("round trip: %+v", back)
	}
	for _, bad := range []string{`{"latency":"soon"}`, `{"errorRate":2}`, `{"colour":1}`, `{"actions":["ReplaceRoute"]}`} {
		if err := json.Unmarshal([]byte(bad), &back); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}

// TestControlEndpoints: /_sim/faults and /_sim/world for loopback callers.
func TestControlEndpoints(t *testing.T) {
	e := newEnv(t)
	req, _ := http.NewRequest(http.MethodPut, e.url+"/_sim/faults", strings.NewReader(`{"throttleEvery":2,"latency":"1ms"}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || e.srv.Faults().ThrottleEvery != 2 || e.srv.Faults().Latency != time.Millisecond {
		t.Fatalf("PUT faults: %d %s", resp.StatusCode, body)
	}
	resp, err = http.Get(e.url + "/_sim/faults")
	if err != nil {
		t.Fatal(err)
	}
	var f Faults
	if err := json.NewDecoder(resp.Body).Decode(&f); err != nil || f.ThrottleEvery != 2 {
		t.Fatalf("GET faults: %+v %v", f, err)
	}
	resp.Body.Close()
	req, _ = http.NewRequest(http.MethodPut, e.url+"/_sim/faults", strings.NewReader(`{"throttleEvery":-1}`))
	req.Header.Set("Content-Type", "application/json")
	resp, _ = http.DefaultClient.Do(req)
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("bad faults: status %d", resp.StatusCode)
	}

	resp, err = http.Get(e.url + "/_sim/world")
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	w, err := ParseWorld(data)
	if err != nil {
		t.Fatalf("world JSON does not load back: %v", err)
	}
	if len(w.State().Instances) != 2 {
		t.Fatalf("world: %s", data)
	}

	// Not from elsewhere.
	rec := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodGet, "/_sim/world", nil)
	r.RemoteAddr = "192.0.2.7:40000"
	e.srv.Handler().ServeHTTP(rec, r)
	if rec.Code != http.StatusForbidden {
		t.Fatalf("remote control: %d", rec.Code)
	}
	remote := New(DefaultWorld(nil), Options{AllowRemoteControl: true})
	rec = httptest.NewRecorder()
	remote.Handler().ServeHTTP(rec, r)
	if rec.Code != 200 {
		t.Fatalf("remote control allowed: %d", rec.Code)
	}
}

// TestControlRefusesWebPages: a page open in the operator's browser can
// reach loopback, but not drive the controls: a form POST (no JSON
// content type), a foreign Origin or a cross-site fetch is refused and
// changes nothing; the simulator's own origin and plain clients work.
func TestControlRefusesWebPages(t *testing.T) {
	e := newEnv(t)
	host := strings.TrimPrefix(e.url, "http://")
	cases := []struct {
		name, method, path, ctype, body string
		header                          map[string]string
		want                            int
	}{
		{"form POST", http.MethodPost, "/_sim/faults", "application/x-www-form-urlencoded", `{"throttleEvery":1}`, nil, http.StatusUnsupportedMediaType},
		{"text/plain POST", http.MethodPost, "/_sim/faults", "text/plain", `{"throttleEvery":1}`, nil, http.StatusUnsupportedMediaType},
		{"PUT without type", http.MethodPut, "/_sim/faults", "", `{"throttleEvery":1}`, nil, http.StatusUnsupportedMediaType},
		{"IMDS form POST", http.MethodPost, "/_sim/imds/node1", "multipart/form-data; boundary=x", `{"down":true}`, nil, http.StatusUnsupportedMediaType},
		{"foreign origin", http.MethodPut, "/_sim/faults", "application/json", `{"throttleEvery":1}`, map[string]string{"Origin": "http://evil.example"}, http.StatusForbidden},
		{"foreign origin same port other host", http.MethodPut, "/_sim/imds/node1", "application/json", `{"down":true}`, map[string]string{"Origin": "http://localhost.evil.example"}, http.StatusForbidden},
		{"foreign origin GET", http.MethodGet, "/_sim/world", "", "", map[string]string{"Origin": "http://evil.example"}, http.StatusForbidden},
		{"cross-site fetch", http.MethodPut, "/_sim/faults", "application/json", `{"throttleEvery":1}`, map[string]string{"Sec-Fetch-Site": "cross-site"}, http.StatusForbidden},
		{"DELETE from foreign origin", http.MethodDelete, "/_sim/imds/node1", "", "", map[string]string{"Origin": "null"}, http.StatusForbidden},
	}
	for _, c := range cases {
		req, _ := http.NewRequest(c.method, e.url+c.path, strings.NewReader(c.body))
		if c.ctype != "" {
			req.Header.Set("Content-Type", c.ctype)
		}
		for k, v := range c.header {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("%s: status %d, want %d: %s", c.name, resp.StatusCode, c.want, body)
		}
	}
	if f := e.srv.Faults(); f.ThrottleEvery != 0 {
		t.Fatalf("a refused request changed the faults: %+v", f)
	}
	if o := e.srv.IMDSOptions(e.instance("node1").ID); o.Down {
		t.Fatalf("a refused request changed IMDS options: %+v", o)
	}
	// The simulator's own origin, with a JSON body, is accepted.
	req, _ := http.NewRequest(http.MethodPost, e.url+"/_sim/faults", strings.NewReader(`{"throttleEvery":3}`))
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("Origin", "http://"+host)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || e.srv.Faults().ThrottleEvery != 3 {
		t.Fatalf("same-origin JSON POST: %d, faults %+v", resp.StatusCode, e.srv.Faults())
	}
}
