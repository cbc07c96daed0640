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
	cmd := &cobra.Command{
		Use:   "demo [--dir DIR]",
		Short: "Run a whole cluster on this machine: three agents on 127.0.0.1 and a sample hierarchy",
		Long: `Start a local cluster with nothing configured: one lifeboat agent process per node
on 127.0.0.1, and a sample hierarchy "web" (a tiny HTTP service whose address
moves between nodes like a virtual IP). It prints how to use it and runs until
Ctrl-C or SIGTERM, then stops every process it started.

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
			env, err := demo.StartSim(names)
			if err != nil {
				return codeErr{exitFailure, err}
			}
			defer env.Close()
			c, err := demo.Start(demo.Options{Binary: exe, Dir: dir, Nodes: nodes, Witness: nodes == 2,
				ExtraConfig: "readiness_interval: 10s\n", NodeConfig: env.NodeConfig})
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
			fmt.Printf("Starting %d lifeboat agents in %s ...\n", len(c.Nodes), c.Dir)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			if err := c.WaitReady(ctx); err != nil {
				c.Stop(10 * time.Second)
				return codeErr{exitFailure, fmt.Errorf("%w (see the logs in %s)", err, c.Dir)}
			}
			h := env.VIPHierarchy("web", names, demoApp(exe, c.Service))
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
			if err := c.WriteJSON(map[string]any{
				"sim_endpoint": env.Endpoint, "sim_region": env.World.Region(),
				"sim_credentials": map[string]string{"access_key_id": akid, "secret_access_key": secret},
			}); err != nil {
				c.Stop(10 * time.Second)
				return codeErr{exitFailure, err}
			}
			n1 := c.Nodes[0]
			fmt.Printf(`
lifeboat demo is running: %d nodes on the AWS simulator, hierarchy "web" in
service: a route-table virtual IP (10.0.100.10/32), an Elastic IP and the app.
The service answers on http://%s/ (it moves with the hierarchy).

In another shell:
  export LIFEBOAT_ADDR=%s                    # node1's root-only socket
  # or over TCP (TLS): export LIFEBOAT_ADDR=%s LIFEBOAT_TOKEN=%s LIFEBOAT_FINGERPRINT=%s
  lifeboat status
  lifeboat events -f
  curl -s http://%s/
  lifeboat switchover web --to node2
  kill -9 <pid of the owner, see %s>   # watch web fail over in under a second
  lifeboat agent --config %s/<node>.yaml   # bring a killed node back
  lifeboat iam-policy                      # what each node's role is granted

Take a permission away from node2's role with the AWS CLI and watch it turn
NOT READY (see sim_endpoint and sim_credentials in demo.json):
  aws --endpoint-url <sim_endpoint> iam get-role-policy --role-name lifeboat-node2 --policy-name lifeboat

Logs: %s/<node>.log    Ctrl-C stops the demo.
`, len(c.Nodes), c.Service, n1.Socket, n1.API, c.Token, c.Fingerprint, c.Service, "demo.json", c.Dir, c.Dir)
			<-sig
			fmt.Println("\nstopping the demo ...")
			c.Stop(30 * time.Second)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "lifeboat-demo", "directory for configs, data, logs and demo.json")
	cmd.Flags().IntVar(&nodes, "nodes", 3, "number of nodes (2 adds a witness)")
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
