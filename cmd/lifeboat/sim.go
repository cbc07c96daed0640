package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/lifeboat-ha/lifeboat/internal/sim"
)

// simInfo is written to --info for scripts and tests.
type simInfo struct {
	Endpoint        string            `json:"endpoint"`
	Region          string            `json:"region"`
	AccessKeyID     string            `json:"access_key_id"`
	SecretAccessKey string            `json:"secret_access_key"`
	Instances       map[string]string `json:"instances"` // node -> instance id
	// IMDS is each instance's metadata service (node, or instance id for
	// an instance without a Name, -> base URL for the SDK's imds client).
	IMDS map[string]string `json:"imds"`
	PID  int               `json:"pid"`
}

func simCmd() *cobra.Command {
	var listen, worldFile, nodes, infoFile string
	var verbose, rateLimits bool
	var mutatingBucket string
	var credTTL time.Duration
	cmd := &cobra.Command{
		Use:   "sim",
		Short: "Run the AWS simulator (EC2, STS, IAM, IMDS) on 127.0.0.1",
		Long: `Run lifeboat's stand-in for the parts of AWS it uses. It speaks the real wire
protocols (EC2, STS and IAM Query APIs, SigV4 verified, XML answers with AWS's
error codes, DryRun, IAM policy evaluation per principal), so the AWS SDK and
the AWS CLI work against it unchanged with --endpoint-url. IAM covers a role's
inline policies (get-role, put/get/delete-role-policy, list-role-policies);
changes apply to the next EC2 call.

Each instance also gets its own instance metadata service (IMDSv2: token PUT,
instance id, placement, network interfaces, identity document, and rotating
instance role credentials valid for --imds-credential-ttl) on a free 127.0.0.1
port; point the SDK at it with AWS_EC2_METADATA_SERVICE_ENDPOINT.

The world (VPC, subnets, route tables, instances with ENIs and roles, Elastic
IPs, policies) comes from --world (JSON) or is built for --nodes. The admin's
credentials, the endpoint and the IMDS URLs are written to --info (mode 0600).

--rate-limits throttles EC2 calls as AWS does (RequestLimitExceeded, HTTP 503):
a token bucket per action, sized by its category as AWS documents it
(https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html);
a throttled call takes no token. Off by default; also set at run time with
"rateLimits" in /_sim/faults (lifeboat sim faults --rate-limits).

Test controls (loopback only, not AWS): GET/PUT /_sim/faults, GET /_sim/world,
GET/PUT/DELETE /_sim/imds/NODE (IMDS options: allowV1, v1Only, credentialTtl,
refreshBefore, down, latency). PUT and POST need Content-Type: application/json,
and a request from a web page (a foreign Origin, Sec-Fetch-Site: cross-site) is
refused, so a page open in a browser on this machine cannot drive them.`,
		Example: `  lifeboat sim --info /tmp/sim.json
  lifeboat sim --listen 127.0.0.1:4566 --nodes db1,db2
  lifeboat sim --rate-limits --mutating-bucket 20/5   # EC2's request throttling, a small account
  # in another shell:
  export AWS_ACCESS_KEY_ID=$(jq -r .access_key_id /tmp/sim.json) \
         AWS_SECRET_ACCESS_KEY=$(jq -r .secret_access_key /tmp/sim.json) AWS_DEFAULT_REGION=us-east-1
  aws --endpoint-url $(jq -r .endpoint /tmp/sim.json) ec2 describe-route-tables`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var w *sim.World
			var err error
			if worldFile != "" {
				if w, err = sim.LoadWorld(worldFile); err != nil {
					return codeErr{exitUsage, err}
				}
			} else {
				var names []string
				for _, n := range strings.Split(nodes, ",") {
					if n = strings.TrimSpace(n); n != "" {
						names = append(names, n)
					}
				}
				if len(names) == 0 {
					return codeErr{exitUsage, errors.New("--nodes needs at least one node name")}
				}
				w = sim.DefaultWorld(names)
			}
			if credTTL <= 0 {
				return codeErr{exitUsage, errors.New("--imds-credential-ttl must be positive")}
			}
			opts := sim.Options{IMDS: sim.IMDSOptions{CredentialTTL: credTTL}}
			if rateLimits || mutatingBucket != "" {
				rl, err := simRateLimits(mutatingBucket)
				if err != nil {
					return codeErr{exitUsage, err}
				}
				opts.Faults.RateLimits = rl
			}
			if verbose {
				opts.Logf = func(format string, args ...any) { slog.Info(fmt.Sprintf(format, args...)) }
			}
			srv := sim.New(w, opts)
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return codeErr{exitFailure, fmt.Errorf("listen on %s: %w", listen, err)}
			}
			info := simInfo{Endpoint: "http://" + ln.Addr().String(), Region: w.Region(), Instances: map[string]string{},
				IMDS: map[string]string{}, PID: os.Getpid()}
			info.AccessKeyID, info.SecretAccessKey = w.AdminCredentials()
			servers := []*http.Server{{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second}}
			listeners := []net.Listener{ln}
			defer func() {
				for _, l := range listeners {
					_ = l.Close()
				}
			}()
			host := "127.0.0.1"
			if h, _, err := net.SplitHostPort(ln.Addr().String()); err == nil && net.ParseIP(h) != nil && net.ParseIP(h).IsLoopback() {
				host = h
			}
			for _, inst := range w.State().Instances {
				key := inst.ID
				if inst.Name != "" {
					info.Instances[inst.Name] = inst.ID
					key = inst.Name
				}
				il, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
				if err != nil {
					return codeErr{exitFailure, fmt.Errorf("IMDS listener for %s: %w", key, err)}
				}
				listeners = append(listeners, il)
				servers = append(servers, &http.Server{Handler: srv.IMDSHandler(inst.ID), ReadHeaderTimeout: 10 * time.Second})
				info.IMDS[key] = "http://" + il.Addr().String()
			}
			if infoFile != "" {
				b, _ := json.MarshalIndent(info, "", "  ")
				if err := os.WriteFile(infoFile+".tmp", append(b, '\n'), 0o600); err != nil {
					return codeErr{exitFailure, err}
				}
				if err := os.Rename(infoFile+".tmp", infoFile); err != nil {
					return codeErr{exitFailure, err}
				}
			}
			if g.json {
				_ = printJSON(info)
			} else {
				fmt.Fprintf(stdout, "AWS simulator on %s (region %s), admin access key %s", info.Endpoint, info.Region, info.AccessKeyID)
				if infoFile != "" {
					fmt.Fprintf(stdout, ", credentials in %s", infoFile)
				}
				fmt.Fprintln(stdout)
				for _, k := range slices.Sorted(maps.Keys(info.IMDS)) {
					fmt.Fprintf(stdout, "  IMDS of %s on %s\n", k, info.IMDS[k])
				}
			}
			for i, hs := range servers {
				go func() { _ = hs.Serve(listeners[i]) }()
			}
			sig := make(chan os.Signal, 1)
			signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
			<-sig
			for _, hs := range servers {
				_ = hs.Close()
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:4566", "address to serve on (port 0 picks a free one)")
	cmd.Flags().StringVar(&worldFile, "world", "", "world file (JSON); default: built for --nodes")
	cmd.Flags().StringVar(&nodes, "nodes", "node1,node2,node3", "node names for the built-in world")
	cmd.Flags().StringVar(&infoFile, "info", "", "write endpoint, region, admin credentials, instance ids and IMDS URLs here (0600)")
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "log every API request")
	cmd.Flags().BoolVar(&rateLimits, "rate-limits", false, "throttle EC2 calls as AWS does: a token bucket per action, AWS's default size and refill rate for its category (mutating 200, +5/s; described 100, +20/s; unfiltered describes 50, +10/s)")
	cmd.Flags().StringVar(&mutatingBucket, "mutating-bucket", "", "with --rate-limits: CAPACITY/REFILL of each mutating action's bucket, e.g. 20/5 (default AWS's 200/5)")
	cmd.Flags().DurationVar(&credTTL, "imds-credential-ttl", sim.DefaultIMDSCredentialTTL, "lifetime of the instance role credentials IMDS hands out (renewed 15 minutes, or a quarter of this, before expiry)")
	cmd.AddCommand(simFaultsCmd())
	return cmd
}

func simFaultsCmd() *cobra.Command {
	var endpoint, actions string
	var latency, skew time.Duration
	var throttleEvery int
	var throttleRate, errorRate float64
	var expire, clear, rateLimits bool
	var mutatingBucket string
	cmd := &cobra.Command{
		Use:   "faults --endpoint URL [flags]",
		Short: "Show or set the simulator's fault injection at run time",
		Long: `Show (no flags) or set the running simulator's faults: latency per call,
throttling (RequestLimitExceeded), 5xx answers, clock skew and expired temporary
credentials, optionally only for some actions. Setting replaces all faults;
--clear removes them. This is a test control on the simulator's loopback address,
not an AWS API.`,
		Example: `  lifeboat sim faults --endpoint http://127.0.0.1:4566
  lifeboat sim faults --endpoint $E --latency 100ms --actions 'ec2:*'
  lifeboat sim faults --endpoint $E --throttle-rate 0.3 --error-rate 0.1
  lifeboat sim faults --endpoint $E --clock-skew 10m
  lifeboat sim faults --endpoint $E --rate-limits --mutating-bucket 20/5
  lifeboat sim faults --endpoint $E --clear`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if endpoint == "" {
				return codeErr{exitUsage, errors.New("--endpoint URL is required (the simulator's address, e.g. sim_endpoint in demo.json)")}
			}
			u := strings.TrimSuffix(endpoint, "/") + "/_sim/faults"
			set := clear || cmd.Flags().NFlag() > 1
			var resp *http.Response
			var err error
			if set {
				body := map[string]any{}
				if !clear {
					if latency > 0 {
						body["latency"] = latency.String()
					}
					if skew != 0 {
						body["clockSkew"] = skew.String()
					}
					if throttleEvery > 0 {
						body["throttleEvery"] = throttleEvery
					}
					if throttleRate > 0 {
						body["throttleRate"] = throttleRate
					}
					if errorRate > 0 {
						body["errorRate"] = errorRate
					}
					if expire {
						body["expireCredentials"] = true
					}
					if actions != "" {
						body["actions"] = strings.Split(actions, ",")
					}
					if rateLimits || mutatingBucket != "" {
						rl, err := simRateLimits(mutatingBucket)
						if err != nil {
							return codeErr{exitUsage, err}
						}
						body["rateLimits"] = rl
					}
				}
				b, _ := json.Marshal(body)
				req, _ := http.NewRequest(http.MethodPut, u, strings.NewReader(string(b)))
				req.Header.Set("Content-Type", "application/json")
				resp, err = http.DefaultClient.Do(req)
			} else {
				resp, err = http.Get(u)
			}
			if err != nil {
				return codeErr{exitNoAgent, fmt.Errorf("reach the simulator at %s: %w", endpoint, err)}
			}
			defer resp.Body.Close()
			var out any
			if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode/100 != 2 {
				return codeErr{exitFailure, fmt.Errorf("simulator answered %s", resp.Status)}
			}
			return printJSON(out)
		},
	}
	f := cmd.Flags()
	f.StringVar(&endpoint, "endpoint", "", "the simulator's address")
	f.DurationVar(&latency, "latency", 0, "delay every affected call")
	f.DurationVar(&skew, "clock-skew", 0, "move the simulator's clock (negative: behind)")
	f.IntVar(&throttleEvery, "throttle-every", 0, "throttle every Nth affected call")
	f.Float64Var(&throttleRate, "throttle-rate", 0, "throttle this fraction of affected calls")
	f.Float64Var(&errorRate, "error-rate", 0, "answer this fraction of affected calls with a 5xx")
	f.BoolVar(&expire, "expire-credentials", false, "treat all temporary credentials as expired")
	f.StringVar(&actions, "actions", "", "limit latency, throttling and errors to these actions (ec2:ReplaceRoute,ec2:*)")
	f.BoolVar(&rateLimits, "rate-limits", false, "throttle EC2 calls as AWS does (a token bucket per action, AWS's defaults)")
	f.StringVar(&mutatingBucket, "mutating-bucket", "", "with --rate-limits: CAPACITY/REFILL of each mutating action's bucket, e.g. 20/5")
	f.BoolVar(&clear, "clear", false, "remove all faults")
	return cmd
}

// simRateLimits returns EC2 rate limits with AWS's default buckets, the
// mutating one replaced by mutating ("CAPACITY/REFILL") when set.
func simRateLimits(mutating string) (*sim.RateLimits, error) {
	rl := &sim.RateLimits{}
	if mutating == "" {
		return rl, nil
	}
	c, r, ok := strings.Cut(mutating, "/")
	capacity, err1 := strconv.ParseFloat(c, 64)
	refill, err2 := strconv.ParseFloat(r, 64)
	if !ok || err1 != nil || err2 != nil || capacity < 1 || refill <= 0 {
		return nil, fmt.Errorf("--mutating-bucket %q: want CAPACITY/REFILL, a capacity of at least 1 and a positive refill per second (AWS's default: 200/5)", mutating)
	}
	rl.Mutating = sim.Bucket{Capacity: capacity, Refill: refill}
	return rl, nil
}
