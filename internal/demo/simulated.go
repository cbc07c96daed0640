package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/agent"
	"github.com/lifeboat-ha/lifeboat/internal/kit/kits"
	"github.com/lifeboat-ha/lifeboat/internal/netlab"
	"github.com/lifeboat-ha/lifeboat/internal/sim"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

// SimEnv is an AWS simulator serving a cluster on one machine: the EC2,
// STS and IAM APIs on one address and each node's instance metadata
// service on an address of its own.
type SimEnv struct {
	Server   *sim.Server
	World    *sim.World
	Endpoint string
	IMDS     map[string]string // node -> IMDS base URL
	servers  []*http.Server
}

// StartSim serves a simulated account with one instance per node.
func StartSim(nodes []string) (*SimEnv, error) {
	return StartSimWorld(sim.DefaultWorld(nodes), nodes, nil, sim.Options{})
}

// StartSimWorld serves world with the simulator options given, on
// listeners made by listen (nil: 127.0.0.1, any port), one for the APIs
// and one per node for its instance metadata service.
func StartSimWorld(w *sim.World, nodes []string, listen func() (net.Listener, error), opts sim.Options) (*SimEnv, error) {
	if listen == nil {
		listen = func() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }
	}
	e := &SimEnv{World: w, Server: sim.New(w, opts), IMDS: map[string]string{}}
	serve := func(h http.Handler) (string, error) {
		ln, err := listen()
		if err != nil {
			return "", fmt.Errorf("listen for the simulator: %w", err)
		}
		hs := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
		e.servers = append(e.servers, hs)
		go func() { _ = hs.Serve(ln) }()
		return "http://" + ln.Addr().String(), nil
	}
	var err error
	if e.Endpoint, err = serve(e.Server.Handler()); err != nil {
		return nil, err
	}
	for _, n := range nodes {
		inst, ok := w.InstanceByName(n)
		if !ok {
			e.Close()
			return nil, fmt.Errorf("simulated world has no instance for %s", n)
		}
		if e.IMDS[n], err = serve(e.Server.IMDSHandler(inst.ID)); err != nil {
			e.Close()
			return nil, err
		}
	}
	return e, nil
}

// Serve serves the EC2, STS and IAM APIs on one more listener (for
// example on 127.0.0.1 when the agents reach the simulator inside a
// network namespace) and returns its endpoint.
func (e *SimEnv) Serve(ln net.Listener) string {
	hs := &http.Server{Handler: e.Server.Handler(), ReadHeaderTimeout: 10 * time.Second}
	e.servers = append(e.servers, hs)
	go func() { _ = hs.Serve(ln) }()
	return "http://" + ln.Addr().String()
}

// Close stops every listener.
func (e *SimEnv) Close() {
	for _, s := range e.servers {
		_ = s.Close()
	}
}

// NodeConfig is the aws section of node's agent config. The simulator
// speaks plain http: on loopback the config accepts that as it is; served
// inside a network lab's router (StartSimInRouter) it is on a namespace
// address, and the section opts in with allow_insecure_endpoints.
func (e *SimEnv) NodeConfig(node string) string {
	cfg := fmt.Sprintf("aws:\n  region: %s\n  endpoints:\n    ec2: %s\n    sts: %s\n    iam: %s\n    imds: %s\n",
		e.World.Region(), e.Endpoint, e.Endpoint, e.Endpoint, e.IMDS[node])
	if !onLoopback(e.Endpoint) || !onLoopback(e.IMDS[node]) {
		cfg += "  # the simulator on a test network of namespaces, in clear: never on a real network\n  allow_insecure_endpoints: true\n"
	}
	return cfg
}

// onLoopback reports whether a URL's host is a loopback address.
func onLoopback(rawURL string) bool {
	u, err := url.Parse(rawURL)
	if err != nil {
		return false
	}
	ip := net.ParseIP(u.Hostname())
	return ip != nil && ip.IsLoopback()
}

// Role returns node's instance role.
func (e *SimEnv) Role(node string) string {
	inst, _ := e.World.InstanceByName(node)
	return inst.Role
}

// GrantLeastPrivilege gives every node's role exactly the policy
// `lifeboat iam-policy` prints for hs, replacing what it had.
func (e *SimEnv) GrantLeastPrivilege(nodes []string, hs []spec.Hierarchy) error {
	doc, err := json.Marshal(agent.LeastPrivilege(kits.Builtin(), hs, e.World.Region(), e.World.AccountID()))
	if err != nil {
		return err
	}
	for _, n := range nodes {
		role := e.Role(n)
		for name := range e.World.RolePolicies(role) {
			if err := e.World.DeleteRolePolicy(role, name); err != nil {
				return err
			}
		}
		if err := e.World.PutRolePolicy(role, "lifeboat", doc); err != nil {
			return fmt.Errorf("grant %s: %w", role, err)
		}
	}
	return nil
}

// VIPHierarchy is a hierarchy with a route-table virtual IP and an Elastic
// IP under an application resource.
func (e *SimEnv) VIPHierarchy(name string, nodes []string, app spec.Resource) spec.Hierarchy {
	st := e.World.State()
	one := 1
	app.DependsOn = append(app.DependsOn, name+"-vip", name+"-eip")
	return spec.Hierarchy{
		Name: name, Nodes: nodes, Switchback: spec.SwitchbackIntelligent,
		MonitorInterval: spec.Duration(time.Second), LocalRecovery: &one,
		Resources: []spec.Resource{
			{Name: name + "-vip", Type: "ec2", Timeout: spec.Duration(15 * time.Second), Params: map[string]string{
				"mode": "route", "cidr": "10.0.100.10/32", "route_tables": st.RouteTables[0].ID}},
			{Name: name + "-eip", Type: "ec2", Timeout: spec.Duration(15 * time.Second), Params: map[string]string{
				"mode": "eip", "allocation_id": st.Addresses[0].AllocationID}},
			app,
		},
	}
}

// RouteTarget returns the ENI the VIP route points at, and whose it is.
func (e *SimEnv) RouteTarget(cidr string) (eni, node string) {
	st := e.World.State()
	r, ok := e.World.Route(st.RouteTables[0].ID, cidr)
	if !ok {
		return "", ""
	}
	for _, n := range st.NetworkInterfaces {
		if n.ID == r.NetworkInterfaceID && n.Attachment != nil {
			for _, i := range st.Instances {
				if i.ID == n.Attachment.InstanceID {
					return n.ID, i.Name
				}
			}
		}
	}
	return r.NetworkInterfaceID, ""
}

// Wait polls cond until it holds or ctx ends.
func Wait(ctx context.Context, what string, cond func() bool) error {
	for !cond() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("timed out waiting for %s", what)
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// StartSimInRouter serves a simulated account for nodes inside the router
// of a network lab (router layout), where every node reaches it, and
// mirrors every route the simulator creates or replaces into the router,
// as a VPC route table steers traffic.
func StartSimInRouter(lab *netlab.Lab, nodes []string) (*SimEnv, error) {
	w := sim.DefaultWorld(nodes)
	enis := map[string]string{}
	st := w.State()
	for _, ni := range st.NetworkInterfaces {
		for _, in := range st.Instances {
			if ni.Attachment != nil && ni.Attachment.InstanceID == in.ID {
				enis[ni.ID] = in.Name
			}
		}
	}
	hook, err := lab.MirrorRoutes(enis)
	if err != nil {
		return nil, err
	}
	return StartSimWorld(w, nodes, routerListener(lab), sim.Options{RouteHook: hook})
}

// StartSimOnLab serves a simulated account for nodes inside the router of
// a network lab, like StartSimInRouter, without mirroring routes into the
// router: for measurements of many routes, where no traffic follows them.
func StartSimOnLab(lab *netlab.Lab, nodes []string) (*SimEnv, error) {
	return StartSimWorld(sim.DefaultWorld(nodes), nodes, routerListener(lab), sim.Options{})
}

// routerListener listens on the lab router's address, any port.
func routerListener(lab *netlab.Lab) func() (net.Listener, error) {
	return func() (net.Listener, error) {
		var ln net.Listener
		err := lab.InHost(netlab.Router, func() error {
			var err error
			ln, err = net.Listen("tcp", lab.IP(netlab.Router)+":0")
			return err
		})
		return ln, err
	}
}
