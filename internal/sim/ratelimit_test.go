package sim

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

// TestRateLimits: with EC2's request-rate buckets on, each action has a
// bucket of its own: a burst beyond the capacity is answered as EC2
// answers (RequestLimitExceeded, 503), a throttled call takes no token,
// the bucket refills at its rate, and other actions are not affected.
func TestRateLimits(t *testing.T) {
	// The simulator's clock stands still but for advance: refills happen
	// when the test says, however slow the machine.
	e := &env{t: t, w: DefaultWorld([]string{"node1", "node2"})}
	base := time.Now()
	e.srv = New(e.w, Options{Now: func() time.Time { return base.Add(time.Duration(e.offset.Load())) }})
	ts := httptest.NewServer(e.srv.Handler())
	t.Cleanup(ts.Close)
	e.url = ts.URL
	c := e.adminEC2()
	rtb, eni := e.rtb(), e.eni("node1")
	e.srv.SetFaults(Faults{RateLimits: &RateLimits{Mutating: Bucket{Capacity: 3, Refill: 2}}})
	replace := func() error {
		_, err := c.CreateRoute(ctx, &ec2.CreateRouteInput{RouteTableId: aws.String(rtb), DestinationCidrBlock: aws.String("10.9.0.1/32"), NetworkInterfaceId: aws.String(eni)})
		if apiCode(err) == "RouteAlreadyExists" {
			return nil
		}
		return err
	}
	var codes []string
	for range 5 {
		err := replace()
		if err != nil {
			wantErr(t, err, "RequestLimitExceeded", http.StatusServiceUnavailable, "Request limit exceeded.")
		}
		codes = append(codes, apiCode(err))
	}
	if want := "[   RequestLimitExceeded RequestLimitExceeded]"; fmt.Sprint(codes) != want {
		t.Fatalf("a burst of 5 against a bucket of 3: %q, want %s", codes, want)
	}
	// Another action's bucket is full.
	for range 10 {
		if _, err := c.DescribeRouteTables(ctx, &ec2.DescribeRouteTablesInput{RouteTableIds: []string{rtb}}); err != nil {
			t.Fatalf("DescribeRouteTables throttled by CreateRoute's bucket: %v", err)
		}
	}
	// Half a second refills one token at 2 per second.
	e.advance(500 * time.Millisecond)
	if err := replace(); err != nil {
		t.Fatalf("after a refill: %v", err)
	}
	if err := replace(); apiCode(err) != "RequestLimitExceeded" {
		t.Fatalf("second call after one refilled token: %v, want RequestLimitExceeded", err)
	}
	st := e.srv.RateLimitStats()
	if st.Admitted["CreateRoute"] != 4 || st.Throttled["CreateRoute"] != 3 || st.Admitted["DescribeRouteTables"] != 10 {
		t.Errorf("stats %+v, want CreateRoute 4 admitted and 3 throttled, DescribeRouteTables 10 admitted", st)
	}
	// Off: nothing is throttled.
	e.srv.SetFaults(Faults{})
	for range 10 {
		if err := replace(); err != nil {
			t.Fatalf("rate limits off: %v", err)
		}
	}
}

func TestRateLimitDefaultsAndCategories(t *testing.T) {
	var rl RateLimits
	for cat, want := range map[string]Bucket{CategoryMutating: {200, 5}, CategoryNonMutating: {100, 20}, CategoryUnfiltered: {50, 10}} {
		if got := rl.Bucket(cat); got != want {
			t.Errorf("default %s bucket %+v, want AWS's %+v", cat, got, want)
		}
	}
	for _, c := range []struct {
		action string
		params url.Values
		want   string
	}{
		{"ReplaceRoute", url.Values{"RouteTableId": {"rtb-1"}}, CategoryMutating},
		{"ModifyNetworkInterfaceAttribute", nil, CategoryMutating},
		{"DescribeRouteTables", url.Values{"RouteTableId.1": {"rtb-1"}}, CategoryNonMutating},
		{"DescribeRouteTables", url.Values{"Filter.1.Name": {"vpc-id"}}, CategoryNonMutating},
		{"DescribeNetworkInterfaceAttribute", url.Values{"NetworkInterfaceId": {"eni-1"}}, CategoryNonMutating},
		{"DescribeAddresses", url.Values{"AllocationId.1": {"eipalloc-1"}}, CategoryNonMutating},
		{"DescribeRouteTables", url.Values{"Version": {"2016-11-15"}}, CategoryUnfiltered},
	} {
		if got := EC2Category(c.action, c.params); got != c.want {
			t.Errorf("EC2Category(%s, %v) = %s, want %s", c.action, c.params, got, c.want)
		}
	}
	// The control endpoint's JSON form, and its checks.
	var f Faults
	if err := json.Unmarshal([]byte(`{"rateLimits": {"mutating": {"capacity": 20, "refill": 5}}}`), &f); err != nil || f.RateLimits == nil || f.RateLimits.Bucket(CategoryMutating) != (Bucket{20, 5}) {
		t.Fatalf("rateLimits JSON: %+v, %v", f.RateLimits, err)
	}
	if err := json.Unmarshal([]byte(`{"rateLimits": {"mutating": {"capacity": 0, "refill": 5}}}`), &f); err == nil {
		t.Fatal("a bucket of capacity 0 accepted")
	}
	b, _ := json.Marshal(Faults{RateLimits: &RateLimits{}})
	if string(b) != `{"rateLimits":{}}` {
		t.Errorf("rate limits with AWS's defaults marshal as %s", b)
	}
}
