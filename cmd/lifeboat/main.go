// Command lifeboat is the high-availability cluster manager: the node agent,
// the operator CLI and the demo, in one binary.
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/lifeboat-ha/lifeboat/internal/agent"
	"github.com/lifeboat-ha/lifeboat/internal/api"
	"github.com/lifeboat-ha/lifeboat/internal/pki"
	"github.com/lifeboat-ha/lifeboat/internal/tlsid"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.2.0-dev"

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // the operation failed (e.g. a switchover did not complete)
	exitUsage   = 2 // bad input
	exitNoAgent = 3 // the agent could not be reached
)

type globals struct {
	addr        string
	token       string
	fingerprint string
	caCert      string
	json        bool
	timeout     time.Duration
}

var g globals

func main() {
	agent.Version = version
	root := &cobra.Command{
		Use:   "lifeboat",
		Short: "High-availability cluster manager for Linux servers, cloud-aware",
		Long: `lifeboat keeps services reachable when the machine that runs them dies: a standby
node notices and brings the service's whole resource hierarchy into service on itself.

The operator commands talk to a local agent through its root-only Unix socket
(default ` + api.DefaultSocket + `) or to any agent over TCP (TLS) with a token and the agent's certificate fingerprint:
  export LIFEBOAT_ADDR=10.0.0.1:7100 LIFEBOAT_TOKEN=... LIFEBOAT_FINGERPRINT=...`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.addr, "addr", envOr("LIFEBOAT_ADDR", api.DefaultSocket), "agent address: Unix socket path or host:port (env LIFEBOAT_ADDR)")
	pf.StringVar(&g.token, "token", os.Getenv("LIFEBOAT_TOKEN"), "bearer token for TCP access (env LIFEBOAT_TOKEN)")
	pf.StringVar(&g.fingerprint, "fingerprint", os.Getenv("LIFEBOAT_FINGERPRINT"), "SHA-256 fingerprint of the agent's TLS certificate, for TCP access (env LIFEBOAT_FINGERPRINT)")
	pf.StringVar(&g.caCert, "ca-cert", os.Getenv("LIFEBOAT_CA_CERT"), "the cluster CA's certificate: trust any node certificate it issued, instead of --fingerprint (env LIFEBOAT_CA_CERT)")
	pf.BoolVar(&g.json, "json", false, "print machine-readable JSON")
	pf.DurationVar(&g.timeout, "timeout", 2*time.Minute, "how long to wait for the agent and for the operation")
	root.AddCommand(agentCmd(), statusCmd(), applyCmd(), deleteCmd(), switchoverCmd(), startStopCmd(true), startStopCmd(false), failoverCmd(),
		eventsCmd(), versionCmd(), demoCmd(), logLevelCmd(), benchCmd(), demoAppCmd(), simCmd(), iamPolicyCmd(), doctorCmd(), upgradeCmd())
	root.AddCommand(maintenanceCmd(), nodeCmd())
	root.AddCommand(backupCmd(), restoreCmd())
	root.AddCommand(reportCmd(), tokensCmd(), caCmd())
	err := root.Execute()
	if err == nil {
		os.Exit(exitOK)
	}
	fmt.Fprintln(os.Stderr, "lifeboat:", err)
	var ce codeErr
	if errors.As(err, &ce) {
		os.Exit(ce.code)
	}
	os.Exit(exitUsage)
}

// codeErr carries an exit code.
type codeErr struct {
	code int
	err  error
}

func (e codeErr) Error() string { return e.err.Error() }
func (e codeErr) Unwrap() error { return e.err }

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func client() (*api.Client, error) {
	var tlsCfg *tls.Config
	if g.caCert != "" {
		cfg, err := pki.CLIClientConfig(g.caCert)
		if err != nil {
			return nil, codeErr{exitUsage, fmt.Errorf("--ca-cert: %w", err)}
		}
		tlsCfg = cfg
	} else if g.fingerprint != "" {
		cfg, err := tlsid.PinnedClientConfig(g.fingerprint)
		if err != nil {
			return nil, codeErr{exitUsage, err}
		}
		tlsCfg = cfg
	}
	c, err := api.NewClient(g.addr, g.token, g.timeout+5*time.Second, tlsCfg)
	if err != nil {
		return nil, codeErr{exitUsage, err}
	}
	return c, nil
}

// call runs one API request, mapping errors to exit codes.
func call(ctx context.Context, method, path string, body, out any) error {
	c, err := client()
	if err != nil {
		return err
	}
	if err := c.Do(ctx, method, path, body, out); err != nil {
		var se *api.StatusError
		if errors.As(err, &se) {
			if se.Code == 400 || se.Code == 404 {
				return codeErr{exitUsage, err}
			}
			return codeErr{exitFailure, err}
		}
		return codeErr{exitNoAgent, err}
	}
	return nil
}

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
