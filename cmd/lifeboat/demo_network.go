package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/demo"
	"github.com/lifeboat-ha/lifeboat/internal/netlab"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

// demoVIP is the route-table virtual IP of the demo's hierarchy.
const (
	demoVIP     = "10.0.100.10"
	demoWebPort = 8080
)

// demoNetwork is the demo's network of namespaces (root only): a host per
// node on a bridge, a client host and a router whose route for the
// virtual IP the simulator programs, as a VPC route table does.
type demoNetwork struct {
	lab      *netlab.Lab
	env      *demo.SimEnv
	endpoint string // the simulator on 127.0.0.1, for the operator's shell
}

// startDemoNetwork builds the network and serves the simulator inside the
// router (for the agents) and on 127.0.0.1 (for the AWS CLI). It returns
// nil and the reason when this machine cannot (not root, no iproute2).
func startDemoNetwork(dir string, names []string) (*demoNetwork, error) {
	lab, err := netlab.New(netlab.Options{Nodes: len(names), Router: true, Dir: filepath.Join(dir, "network")})
	if err != nil {
		return nil, err
	}
	n := &demoNetwork{lab: lab}
	if n.env, err = demo.StartSimInRouter(lab, names); err != nil {
		lab.Close()
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		n.close()
		return nil, err
	}
	n.endpoint = n.env.Serve(ln)
	return n, nil
}

// hierarchy is the demo hierarchy on the network: the VIP as a /32 on the
// owner's eth0 (ip kit) under the route that brings it traffic (ec2 kit),
// an Elastic IP, and the app answering on the VIP.
func (n *demoNetwork) hierarchy(exe string, names []string) spec.Hierarchy {
	h := n.env.VIPHierarchy("web", names, demoApp(exe, fmt.Sprintf("%s:%d", demoVIP, demoWebPort)))
	h.Resources = append([]spec.Resource{{Name: "web-addr", Type: "ip", Timeout: spec.Duration(5 * time.Second),
		Params: map[string]string{"address": demoVIP + "/32", "interface": "eth0"}}}, h.Resources...)
	for i := range h.Resources {
		if h.Resources[i].Name == "web-vip" {
			h.Resources[i].DependsOn = append(h.Resources[i].DependsOn, "web-addr")
		}
	}
	return h
}

// curl is the command that asks the service from the client host.
func (n *demoNetwork) curl() string {
	return fmt.Sprintf("ip netns exec %s curl -s http://%s:%d/", n.lab.NS(netlab.Client), demoVIP, demoWebPort)
}

func (n *demoNetwork) json() map[string]any {
	hosts := map[string]string{}
	for _, h := range n.lab.Hosts() {
		hosts[h] = n.lab.NS(h)
	}
	return map[string]any{"namespaces": hosts, "vip": demoVIP, "curl": n.curl()}
}

func (n *demoNetwork) close() {
	if n.env != nil {
		n.env.Close()
	}
	n.lab.Close()
}

// demoNetworkNote explains why the demo runs without the network.
func demoNetworkNote(err error) string {
	if os.Geteuid() != 0 {
		return "not root: the demo runs on 127.0.0.1 without the local address (the ip kit); run it as root for three hosts on a network of namespaces"
	}
	return fmt.Sprintf("cannot build a network of namespaces (%v): the demo runs on 127.0.0.1 without the local address (the ip kit)", err)
}
