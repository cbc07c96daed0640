package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/lifeboat-ha/lifeboat/internal/agent"
	"github.com/lifeboat-ha/lifeboat/internal/config"
	"github.com/lifeboat-ha/lifeboat/internal/logring"
	"github.com/lifeboat-ha/lifeboat/internal/procs"
	"github.com/lifeboat-ha/lifeboat/internal/timerslack"
)

func agentCmd() *cobra.Command {
	var path string
	var logJSON bool
	cmd := &cobra.Command{
		Use:   "agent --config FILE",
		Short: "Run the node agent (the daemon)",
		Long: `Run the node agent: it joins the cluster, keeps the replicated state, detects
failures, and brings into service the hierarchies the cluster assigns to this node.

On SIGHUP it reloads the API tokens (api.token_file).
On SIGTERM or SIGINT it follows shutdown_strategy: "switchover" (the default)
hands every hierarchy to the next ready node before exiting, "stop" takes them
out of service and leaves them stopped.

The agent runs with umask 077: everything it creates is its owner's only. It
refuses to start when the config file, cluster.key_file or api.token_file can
be read or written by group or other users (chmod 600 FILE), and makes the data
directory and the socket's own directory mode 0700.

At start the agent gives its threads a timer slack (timing.timer_slack, 1ms:
the kernel may end its sleeps that much later, to end several with one
wake-up) by executing its own binary once more, in the same process. The
commands it runs (app resources, notifications) keep the slack it was started
with.

While idle the agent runs its Go code on one CPU at a time, and on every CPU
it may use (GOMAXPROCS's default) as soon as it gets busy (a beat more than
half busy; back to one after 5 s under a tenth). GOMAXPROCS in its
environment fixes the number instead.`,
		Example: `  lifeboat agent --config /etc/lifeboat/agent.yaml
  lifeboat agent --config ./node1.yaml --log-json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if path == "" {
				return codeErr{exitUsage, fmt.Errorf("--config FILE is required")}
			}
			// Everything the agent creates (state, snapshots, sockets,
			// reports) is its owner's only.
			syscall.Umask(0o077)
			cfg, err := config.LoadAgent(path)
			if err != nil {
				return codeErr{exitUsage, err}
			}
			if err := cfg.CheckFileModes(path); err != nil {
				return codeErr{exitUsage, fmt.Errorf("refusing to start: %w", err)}
			}
			// Before anything the agent would do twice: with the timer
			// slack to set, this executes the binary again (same process,
			// same arguments) and does not return.
			slackErr := timerslack.Ensure(cfg.Timing.TimerSlack.D())
			level := new(slog.LevelVar)
			if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
				return codeErr{exitUsage, fmt.Errorf("%s: log_level: %w", path, err)}
			}
			opts := &slog.HandlerOptions{Level: level}
			var h slog.Handler = slog.NewTextHandler(os.Stderr, opts)
			if logJSON {
				h = slog.NewJSONHandler(os.Stderr, opts)
			}
			// The ring keeps the recent records for support bundles,
			// formatted with the same options: what the log prints.
			ring := logring.New(logring.DefaultRecords, logring.DefaultBytes)
			logger := slog.New(ring.Handler(h, opts))
			if slackErr != nil {
				logger.Warn("timer slack unchanged: the agent runs as it would with timing.timer_slack: 50us, at a higher idle CPU", "error", slackErr)
			}
			a, err := agent.New(cfg, agent.Options{Logger: logger, Level: level, Logs: ring, Procs: procs.New()})
			if err != nil {
				return codeErr{exitFailure, err}
			}
			sig := make(chan os.Signal, 1)
			signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
			// SIGHUP reloads the API tokens (api.token_file).
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			var s os.Signal
			for s == nil {
				select {
				case s = <-sig:
				case <-hup:
					if err := a.ReloadTokens(); err != nil {
						logger.Error("SIGHUP: reload API tokens (the tokens in force are unchanged)", "error", err)
					}
				}
			}
			logger.Info("signal received", "signal", s.String())
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			go func() {
				<-sig
				logger.Warn("second signal: stopping without waiting")
				cancel()
			}()
			a.Shutdown(ctx)
			return nil
		},
	}
	cmd.Flags().StringVarP(&path, "config", "c", "", "agent config file (YAML)")
	cmd.Flags().BoolVar(&logJSON, "log-json", false, "write logs as JSON lines")
	return cmd
}
