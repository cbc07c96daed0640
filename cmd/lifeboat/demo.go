package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/lifeboat-ha/lifeboat/internal/api"
	"github.com/lifeboat-ha/lifeboat/internal/demo"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

// demoApp is the sample application: the tiny HTTP service of `lifeboat
// demo-app`, on one address that moves with the hierarchy like the virtual
// IP it depends on.
func demoApp(exe, service string) spec.Resource {
	base := fmt.Sprintf("%s demo-app --addr %s --pidfile \"$LB_DATA_DIR/web.pid\"", exe, service)
	return spec.Resource{
		Name: "web-app", Type: "app", Timeout: spec.Duration(10 * time.Second),
		Params: map[string]string{
			"restore":    base + " start",
			"remove":     base + " stop",
			"quickcheck": base + " check",
		},
	}
}

func demoCmd() *cobra.Command {
	var dir string
	var nodes int
	var loopback bool
	cmd := &cobra.Command{
		Use:   "demo [--dir DIR]",
		Short: "Run a whole cluster on this machine: three agents on the AWS simulator and a sample hierarchy",
		Long: `Start a local cluster with nothing configured, on the built-in AWS simulator: one
lifeboat agent process per node and a sample hierarchy "web" (a route-table
virtual IP, an Elastic IP and a tiny HTTP service that answers with its node's
name). As root, every node is a host of its own: network namespaces on a bridge,
with a client host and a router whose route for the virtual IP the simulator
programs like a VPC route table, and the virtual IP sits on the owner's eth0
(the ip kit), as users deploy it on AWS. Without root (or with --loopback) all
agents share 127.0.0.1 and the hierarchy has no local address. It prints how to
use it and runs until Ctrl-C or SIGTERM, then stops every process and removes
every namespace it created.

DIR/demo.json describes the cluster for scripts: nodes (name, pid, api, socket,
config, log), hierarchies, the TCP API token and the service address.`,
		Example: `  lifeboat demo
  lifeboat demo --dir /tmp/lb
  # in another shell:
  export LIFEBOAT_ADDR=/tmp/lb/node1/lifeboat.sock
  lifeboat status
  kill -9 $(jq '.nodes[] | select(.name=="node1") | .pid' /tmp/lb/demo.json)`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if nodes < 2 || nodes > 7 {
				return codeErr{exitUsage, fmt.Errorf("--nodes must be between 2 and 7")}
			}
			exe, err := os.Executable()
			if err != nil {
				return codeErr{exitFailure, err}
			}
			var names []string
			for i := 1; i <= nodes; i++ {
				names = append(names, fmt.Sprintf("node%d", i))
			}
			// As root, every node is a host of its own on a network of
			// namespaces, with the VIP on its interface; otherwise all
			// agents share 127.0.0.1 and the hierarchy has no local address.
			var network *demoNetwork
			if loopback || nodes < 3 {
				fmt.Fprintln(stdout, "note: --loopback or fewer than 3 nodes: the demo runs on 127.0.0.1 without the local address (the ip kit)")
			} else if network, err = startDemoNetwork(dir, names); err != nil {
				fmt.Fprintln(stdout, "note: "+demoNetworkNote(err))
				network = nil
			}
			env := (*demo.SimEnv)(nil)
			opts := demo.Options{Binary: exe, Dir: dir, Nodes: nodes, Witness: nodes == 2, ExtraConfig: "readiness_interval: 10s\n"}
			if network != nil {
				defer network.close()
				env = network.env
				opts.IPs, opts.Wrap = network.lab.NodeIPs(), network.lab.Wrap
			} else if env, err = demo.StartSim(names); err != nil {
				return codeErr{exitFailure, err}
			} else {
				defer env.Close()
			}
			opts.NodeConfig = env.NodeConfig
			c, err := demo.Start(opts)
			if err != nil {
				return codeErr{exitFailure, err}
			}
			for _, n := range c.Nodes {
				if inst, ok := env.World.InstanceByName(n.Name); ok {
					n.InstanceID, n.Role = inst.ID, inst.Role
				}
			}
			sig := make(chan os.Signal, 1)
			signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
			fmt.Fprintf(stdout, "Starting %d lifeboat agents in %s ...\n", len(c.Nodes), c.Dir)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			if err := c.WaitReady(ctx); err != nil {
				c.Stop(10 * time.Second)
				return codeErr{exitFailure, fmt.Errorf("%w (see the logs in %s)", err, c.Dir)}
			}
			h := env.VIPHierarchy("web", names, demoApp(exe, c.Service))
			service, curl := "http://"+c.Service+"/", "curl -s http://"+c.Service+"/"
			simEndpoint := env.Endpoint
			if network != nil {
				h = network.hierarchy(exe, names)
				service, curl = fmt.Sprintf("http://%s:%d/ (from the client host)", demoVIP, demoWebPort), network.curl()
				simEndpoint = network.endpoint
			}
			// Each node's role gets exactly what `lifeboat iam-policy` prints.
			if err := env.GrantLeastPrivilege(names, []spec.Hierarchy{h}); err != nil {
				c.Stop(10 * time.Second)
				return codeErr{exitFailure, err}
			}
			if err := c.Apply(ctx, api.ApplyRequest{Hierarchies: []spec.Hierarchy{h}}); err != nil {
				c.Stop(10 * time.Second)
				return codeErr{exitFailure, fmt.Errorf("apply the sample hierarchy: %w", err)}
			}
			c.Hierarchies = []string{h.Name}
			if err := waitOnline(ctx, c, h.Name); err != nil {
				c.Stop(10 * time.Second)
				return codeErr{exitFailure, err}
			}
			akid, secret := env.World.AdminCredentials()
			extra := map[string]any{
				"sim_endpoint": simEndpoint, "sim_region": env.World.Region(),
				"sim_credentials": map[string]string{"access_key_id": akid, "secret_access_key": secret},
			}
			what := "a route-table virtual IP (10.0.100.10/32), an Elastic IP and the app"
			restartPrefix := ""
			if network != nil {
				extra["network"] = network.json()
				restartPrefix = "ip netns exec $(jq -r .network.namespaces.<node> demo.json) "
				what = "the virtual IP 10.0.100.10 on the owner's eth0 (ip kit)\nunder its VPC route (ec2 kit, mirrored into the router), an Elastic IP and the app"
			}
			if err := c.WriteJSON(extra); err != nil {
				c.Stop(10 * time.Second)
				return codeErr{exitFailure, err}
			}
			n1 := c.Nodes[0]
			// A one-time sign-in link to the web console (10 minutes).
			consoleLine := ""
			var link api.ConsoleLink
			if err := c.Client(n1.Name).Do(ctx, "POST", "/v1/console/link", nil, &link); err == nil {
				consoleLine = fmt.Sprintf("\nWeb console (one-time sign-in link, valid 10 minutes; the certificate is self-signed):\n  https://%s%s\n", n1.API, link.Path)
			}
			fmt.Fprintf(stdout, `
lifeboat demo is running: %d nodes on the AWS simulator, hierarchy "web" in
service: %s.
The service answers on %s (it moves with the hierarchy).

In another shell:
  export LIFEBOAT_ADDR=%s                    # node1's root-only socket
  # or over TCP (TLS): export LIFEBOAT_ADDR=%s LIFEBOAT_TOKEN=%s LIFEBOAT_FINGERPRINT=%s
  lifeboat status
  lifeboat events -f
  %s
  lifeboat switchover web --to node2
  kill -9 <pid of the owner, see %s>   # watch web fail over in under a second
  %slifeboat agent --config %s/<node>.yaml   # bring a killed node back
  lifeboat iam-policy                      # what each node's role is granted

Take a permission away from node2's role with the AWS CLI and watch it turn
NOT READY (see sim_endpoint and sim_credentials in demo.json):
  aws --endpoint-url <sim_endpoint> iam get-role-policy --role-name lifeboat-node2 --policy-name lifeboat

%s
Logs: %s/<node>.log    Ctrl-C stops the demo.
`, len(c.Nodes), what, service, n1.Socket, n1.API, c.Token, c.Fingerprint, curl, "demo.json", restartPrefix, c.Dir, consoleLine, c.Dir)
			<-sig
			fmt.Fprintln(stdout, "\nstopping the demo ...")
			c.Stop(30 * time.Second)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "lifeboat-demo", "directory for configs, data, logs and demo.json")
	cmd.Flags().IntVar(&nodes, "nodes", 3, "number of nodes (2 adds a witness)")
	cmd.Flags().BoolVar(&loopback, "loopback", false, "run every agent on 127.0.0.1 even as root (no network of namespaces, no local address)")
	return cmd
}

func waitOnline(ctx context.Context, c *demo.Cluster, name string) error {
	for {
		for _, n := range c.Nodes {
			st, err := c.Status(ctx, n.Name)
			if err != nil {
				continue
			}
			for _, h := range st.Hierarchies {
				if h.Name == name && h.State == "online" {
					return nil
				}
			}
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("hierarchy %s did not come online (see the logs in %s)", name, c.Dir)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
