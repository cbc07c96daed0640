// Command lifeboat is the high-availability cluster manager: the node agent,
// the operator CLI and the demo, in one binary.
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/lifeboat-ha/lifeboat/internal/agent"
	"github.com/lifeboat-ha/lifeboat/internal/api"
	"github.com/lifeboat-ha/lifeboat/internal/pki"
	"github.com/lifeboat-ha/lifeboat/internal/termsafe"
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
	tokenFile   string
	fingerprint string
	caCert      string
	cert, key   string // an operator certificate and its key (TCP access)
	json        bool
	timeout     time.Duration
}

var g globals

// stdout and stderr carry everything the CLI prints, JSON included:
// command output, errors and other strings from the agents reach the
// terminal with their control characters escaped (termsafe), so an app's
// output cannot drive the operator's terminal. Only raw bytes meant for a
// file (report -o -) go to os.Stdout directly.
var (
	stdout io.Writer = termsafe.NewWriter(os.Stdout)
	stderr io.Writer = termsafe.NewWriter(os.Stderr)
)

func main() {
	agent.Version = version
	err := rootCmd().Execute()
	if err == nil {
		os.Exit(exitOK)
	}
	fmt.Fprintln(stderr, "lifeboat:", err)
	var ce codeErr
	if errors.As(err, &ce) {
		os.Exit(ce.code)
	}
	os.Exit(exitUsage)
}

// rootCmd builds the command tree.
func rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "lifeboat",
		Short: "High-availability cluster manager for Linux servers, cloud-aware",
		Long: `lifeboat keeps services reachable when the machine that runs them dies: a standby
node notices and brings the service's whole resource hierarchy into service on itself.

The operator commands talk to a local agent through its root-only Unix socket
(default ` + api.DefaultSocket + `) or to any agent over TCP (TLS) with a token and the agent's certificate fingerprint:
  export LIFEBOAT_ADDR=10.0.0.1:7100 LIFEBOAT_TOKEN=... LIFEBOAT_FINGERPRINT=...
or, keeping the token out of the environment and of ps (--token is visible there):
  lifeboat --token-file ~/.lifeboat/token status`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.addr, "addr", envOr("LIFEBOAT_ADDR", api.DefaultSocket), "agent address: Unix socket path or host:port (env LIFEBOAT_ADDR)")
	// No secret as a flag default: cobra prints defaults in --help. The
	// token's environment variable is read when a command runs (token).
	pf.StringVar(&g.token, "token", "", "bearer token for TCP access; visible to every user in ps: prefer --token-file or env "+tokenEnv+" (read when unset)")
	pf.StringVar(&g.tokenFile, "token-file", "", "read the bearer token for TCP access from this file (keep it mode 0600)")
	pf.StringVar(&g.fingerprint, "fingerprint", os.Getenv("LIFEBOAT_FINGERPRINT"), "SHA-256 fingerprint of the agent's TLS certificate, for TCP access (env LIFEBOAT_FINGERPRINT)")
	pf.StringVar(&g.caCert, "ca-cert", os.Getenv("LIFEBOAT_CA_CERT"), "the cluster CA's certificate: trust any node certificate it issued, instead of --fingerprint (env LIFEBOAT_CA_CERT)")
	pf.StringVar(&g.cert, "cert", os.Getenv("LIFEBOAT_CERT"), "an operator certificate of the cluster CA (lifeboat ca operator), instead of a token, for TCP access (env LIFEBOAT_CERT)")
	pf.StringVar(&g.key, "key", os.Getenv("LIFEBOAT_KEY"), "the operator certificate's key file (env LIFEBOAT_KEY)")
	pf.BoolVar(&g.json, "json", false, "print machine-readable JSON")
	pf.DurationVar(&g.timeout, "timeout", 2*time.Minute, "how long to wait for the agent and for the operation")
	root.AddCommand(agentCmd(), statusCmd(), applyCmd(), deleteCmd(), switchoverCmd(), startStopCmd(true), startStopCmd(false), failoverCmd(),
		eventsCmd(), versionCmd(), demoCmd(), logLevelCmd(), benchCmd(), demoAppCmd(), simCmd(), iamPolicyCmd(), doctorCmd(), upgradeCmd())
	root.AddCommand(maintenanceCmd(), nodeCmd())
	root.AddCommand(backupCmd(), restoreCmd())
	root.AddCommand(reportCmd(), tokensCmd(), caCmd(), initCmd(), genManCmd())
	return root
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

// tokenEnv is the environment variable the CLI reads the token from when
// neither --token nor --token-file is given.
const tokenEnv = "LIFEBOAT_TOKEN"

// token returns the bearer token: --token, the content of --token-file,
// or $LIFEBOAT_TOKEN, read at run time so that --help never shows it.
func token() (string, error) {
	switch {
	case g.token != "" && g.tokenFile != "":
		return "", errors.New("--token and --token-file are both set: use one (--token-file keeps the token out of ps)")
	case g.token != "":
		return g.token, nil
	case g.tokenFile != "":
		b, err := os.ReadFile(g.tokenFile)
		if err != nil {
			return "", fmt.Errorf("read the token: %w (check --token-file)", err)
		}
		t := strings.TrimSpace(string(b))
		if t == "" {
			return "", fmt.Errorf("the token file %s is empty: write the agent's token into it (api.token_file on the agent)", g.tokenFile)
		}
		return t, nil
	}
	return os.Getenv(tokenEnv), nil
}

func client() (*api.Client, error) {
	tok, err := token()
	if err != nil {
		return nil, codeErr{exitUsage, err}
	}
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
	if g.cert != "" || g.key != "" {
		if g.cert == "" || g.key == "" || tlsCfg == nil {
			return nil, codeErr{exitUsage, errors.New("--cert needs --key, and --ca-cert or --fingerprint to check the agent")}
		}
		pair, err := tls.LoadX509KeyPair(g.cert, g.key)
		if err != nil {
			return nil, codeErr{exitUsage, fmt.Errorf("--cert %s, --key %s: %w", g.cert, g.key, err)}
		}
		tlsCfg.Certificates = []tls.Certificate{pair}
	}
	c, err := api.NewClient(g.addr, tok, g.timeout+5*time.Second, tlsCfg)
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
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
