package doctor

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/awsapi"
	"github.com/lifeboat-ha/lifeboat/internal/sim"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

// awsVIPLab is node1 of a simulated account whose interface has the
// secondary private address 10.0.1.50, seen through its metadata service
// (the only AWS service the ip-aws check asks).
type awsVIPLab struct {
	t        *testing.T
	eni, mac string
	imds     *httptest.Server
	requests atomic.Int32
}

func newAWSVIPLab(t *testing.T) *awsVIPLab {
	t.Helper()
	st := sim.DefaultWorld([]string{"node1", "node2"}).State()
	st.NetworkInterfaces[0].SecondaryPrivateIPs = []string{"10.0.1.50"}
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	w, err := sim.ParseWorld(b)
	if err != nil {
		t.Fatal(err)
	}
	in, ok := w.InstanceByName("node1")
	if !ok {
		t.Fatal("no instance for node1")
	}
	l := &awsVIPLab{t: t, eni: w.InstanceNetworkInterfaces(in.ID)[0]}
	n, _ := w.NetworkInterface(l.eni)
	l.mac = n.MAC
	h := sim.New(w, sim.Options{}).IMDSHandler(in.ID)
	l.imds = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		l.requests.Add(1)
		h.ServeHTTP(rw, r)
	}))
	t.Cleanup(l.imds.Close)
	return l
}

// env is node1 running hs with eth0 carrying mac.
func (l *awsVIPLab) env(hs []spec.Hierarchy, mac string) *Env {
	env := netEnv(l.t, hs, link("eth0", 2, true, true, "10.0.1.10/24"))
	ls, _ := env.Links()
	ls[0].MAC, _ = net.ParseMAC(mac)
	env.Links = func() ([]Link, error) { return ls, nil }
	env.AWSSettings = awsapi.Settings{Region: "us-east-1", Endpoints: awsapi.Endpoints{IMDS: l.imds.URL}, CallTimeout: 2 * time.Second, MaxAttempts: 1}
	var once sync.Once
	var c *awsapi.Clients
	var cerr error
	env.AWS = func(ctx context.Context) (*awsapi.Clients, error) {
		once.Do(func() { c, cerr = awsapi.New(ctx, env.AWSSettings) })
		return c, cerr
	}
	return env
}

func routeResource(cidr string) spec.Resource {
	return spec.Resource{Name: "vip-route", Type: "ec2", Params: map[string]string{"mode": "route", "cidr": cidr, "route_tables": "rtb-00000000000000001"}}
}

func TestIPAWS(t *testing.T) {
	l := newAWSVIPLab(t)
	for _, tc := range []struct {
		name    string
		hs      []spec.Hierarchy
		mac     string // of eth0; "" is the ENI's
		sev     string
		phrases []string
		asks    bool // the metadata service is asked
	}{
		{"routed by the hierarchy's ec2 resource", []spec.Hierarchy{ipHierarchy("web", "10.0.100.10/32", "eth0", routeResource("10.0.100.10/32"))}, "", "", nil, false},
		{"routed by a wider route", []spec.Hierarchy{ipHierarchy("web", "10.0.100.10/32", "eth0", routeResource("10.0.100.0/24"))}, "", "", nil, false},
		{"neither routed nor assigned", []spec.Hierarchy{ipHierarchy("web", "10.0.1.60/24", "eth0")}, "", Critical,
			[]string{"10.0.1.60 is neither routed to " + l.eni + " by a route table nor a secondary private address of it: traffic to it never reaches this node"}, true},
		{"routed only by another hierarchy", []spec.Hierarchy{ipHierarchy("web", "10.0.100.10/32", "eth0"),
			{Name: "net", Nodes: []string{"node1"}, Resources: []spec.Resource{routeResource("10.0.100.10/32")}}}, "", Critical,
			[]string{"neither routed to " + l.eni, "hierarchy net has an ec2 route resource for it, but hierarchies move independently"}, true},
		{"a secondary private address", []spec.Hierarchy{ipHierarchy("web", "10.0.1.50/24", "eth0")}, "", Info,
			[]string{"10.0.1.50 is a secondary private address of " + l.eni, "no other node can take it over"}, true},
		{"the interface's primary address", []spec.Hierarchy{ipHierarchy("web", "10.0.1.10/24", "eth0")}, "", "", nil, true},
		{"an interface the metadata service does not know: the primary one is asked", []spec.Hierarchy{ipHierarchy("web", "10.0.1.60/24", "eth0")}, "02:00:00:00:00:99", Critical,
			[]string{"neither routed to " + l.eni}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mac := tc.mac
			if mac == "" {
				mac = l.mac
			}
			before := l.requests.Load()
			f := expect(t, runChecks(t, l.env(tc.hs, mac), NetworkChecks(), netIDAWS), tc.sev, tc.phrases...)
			if asked := l.requests.Load() > before; asked != tc.asks {
				t.Errorf("metadata service asked: %v, want %v", asked, tc.asks)
			}
			if tc.sev == Critical && (!strings.Contains(f.Fix, "mode: route, cidr: 10.0.") || !strings.Contains(f.Fix, "--network-interface-id "+l.eni) ||
				!strings.Contains(f.Command, "local-ipv4s") || !strings.Contains(f.Command, "aws ec2 describe-route-tables --filters Name=route.destination-cidr-block,Values=10.0.")) {
				t.Errorf("fix or command incomplete: %+v", f)
			}
		})
	}

	// The metadata service does not answer: only the static half is known.
	env := l.env([]spec.Hierarchy{ipHierarchy("web", "10.0.1.60/24", "eth0")}, l.mac)
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	env.AWSSettings.Endpoints.IMDS = down.URL
	env.AWSSettings.CallTimeout = 300 * time.Millisecond
	expect(t, runChecks(t, env, NetworkChecks(), netIDAWS), Warning,
		"no ec2 resource in route mode in hierarchy web routes 10.0.1.60 to this node", "could not be read from the instance metadata service")

	// Not on AWS: nothing is asked.
	env = l.env([]spec.Hierarchy{ipHierarchy("web", "10.0.1.60/24", "eth0")}, l.mac)
	env.AWSSettings = awsapi.Settings{}
	before := l.requests.Load()
	expect(t, runChecks(t, env, NetworkChecks(), netIDAWS), "")
	if l.requests.Load() != before {
		t.Error("the metadata service was asked on a node not on AWS")
	}
	// ... unless the machine says it is an EC2 instance.
	files(t, env.RootDir, map[string]string{"/sys/class/dmi/id/sys_vendor": "Amazon EC2\n"})
	on, why := netOnAWS(env)
	if !on || !strings.Contains(why, "sys_vendor") {
		t.Errorf("netOnAWS = %v, %q", on, why)
	}
}
