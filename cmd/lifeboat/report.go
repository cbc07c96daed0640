package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/lifeboat-ha/lifeboat/internal/api"
	"github.com/lifeboat-ha/lifeboat/internal/report"
)

func reportCmd() *cobra.Command {
	var out string
	var force bool
	cmd := &cobra.Command{
		Use:   "report [-o FILE.tar.gz]",
		Short: "Write a support bundle: status, events, doctor, versions, configs and logs of every node",
		Long: `Gather what a support engineer asks for first, from every node the agent can
reach, into one gzipped tar (mode 0600):

  manifest.json          when, who asked, versions, nodes reached and unreachable
                         (with why), every file's size and SHA-256
  status.json            lifeboat status, as this agent sees it
  state.json             the replicated state: hierarchies (specs), assignments,
                         each node's reports and readiness
  nodes/NODE/            per node: version.json, runtime.json (goroutines, memory),
                         events.jsonl (the history), doctor.json, config.json (the
                         agent's config as it runs) and logs.txt (its last 2,000
                         log records, 1 MiB at most, as its log printed them)

Secrets are removed before anything leaves a node: the cluster key and tokens
wherever they appear, and by structure every value under a secret-looking name
(key, token, password, secret, credentials, headers, ...), URL passwords, bearer
and Authorization values, PEM private keys and NAME=value pairs such as
PGPASSWORD=... in app commands. key_file and token_file stay as paths; their
contents are never read. Read the bundle before you send it anywhere.

A node that does not answer is listed as unreachable in the manifest, with the
error; the report is still written (exit 0). Without -o the file is
./lifeboat-report-CLUSTER-TIMESTAMP.tar.gz (CLUSTER: the start of the cluster
certificate's fingerprint). An existing file is not overwritten unless --force.`,
		Example: `  lifeboat report
  lifeboat report -o /tmp/case-1234.tar.gz
  lifeboat report -o case.tar.gz --force --json
  lifeboat report -o - > case.tar.gz      # to standard output
  tar tzf case.tar.gz`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runReport(out, force)
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "file to write (.tar.gz; - for standard output); default ./lifeboat-report-CLUSTER-TIMESTAMP.tar.gz")
	cmd.Flags().BoolVar(&force, "force", false, "overwrite the output file if it exists")
	return cmd
}

// reportSummary is what --json prints: the manifest, with where it went.
type reportSummary struct {
	File  string `json:"file"`
	Bytes int    `json:"bytes"`
	report.Manifest
}

func runReport(out string, force bool) error {
	if out != "" && out != "-" && !force {
		if _, err := os.Stat(out); err == nil {
			return codeErr{exitUsage, fmt.Errorf("%s exists: choose another file with -o, or overwrite it with --force", out)}
		}
	}
	c, err := client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), g.timeout)
	defer cancel()
	var buf bytes.Buffer
	if _, err := c.Fetch(ctx, "/v1/report", &buf, report.MaxBundle); err != nil {
		var se *api.StatusError
		if errors.As(err, &se) {
			return codeErr{exitFailure, fmt.Errorf("report: %w", err)}
		}
		return codeErr{exitNoAgent, fmt.Errorf("report: %w", err)}
	}
	m, _, err := report.Read(bytes.NewReader(buf.Bytes()))
	if err != nil {
		return codeErr{exitFailure, fmt.Errorf("report: the agent's bundle does not check out: %w", err)}
	}
	if out == "" {
		out = m.Dir + ".tar.gz"
	}
	if out == "-" {
		if _, err := os.Stdout.Write(buf.Bytes()); err != nil {
			return codeErr{exitFailure, fmt.Errorf("report: write to standard output: %w", err)}
		}
	} else if err := writeReport(out, buf.Bytes(), force); err != nil {
		return err
	}
	sum := reportSummary{File: out, Bytes: buf.Len(), Manifest: m}
	if g.json {
		if out == "-" {
			return nil // the bundle is on standard output
		}
		return printJSON(sum)
	}
	w := stdout
	if out == "-" {
		w = stderr
	}
	printReportSummary(w, sum)
	return nil
}

// writeReport writes the bundle with mode 0600: a new file, or with force
// a temporary file renamed over the old one.
func writeReport(path string, data []byte, force bool) error {
	if !force {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			return codeErr{exitUsage, fmt.Errorf("%s exists: choose another file with -o, or overwrite it with --force", path)}
		}
		if err != nil {
			return codeErr{exitFailure, fmt.Errorf("write report %s: %w", path, err)}
		}
		if _, err := f.Write(data); err != nil {
			f.Close()
			os.Remove(path)
			return codeErr{exitFailure, fmt.Errorf("write report %s: %w", path, err)}
		}
		if err := f.Close(); err != nil {
			os.Remove(path)
			return codeErr{exitFailure, fmt.Errorf("write report %s: %w", path, err)}
		}
		return nil
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".lifeboat-report-*")
	if err != nil {
		return codeErr{exitFailure, fmt.Errorf("write report %s: %w", path, err)}
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return codeErr{exitFailure, fmt.Errorf("write report %s: %w", path, err)}
	}
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return codeErr{exitFailure, fmt.Errorf("write report %s: %w", path, err)}
	}
	if err := tmp.Close(); err != nil {
		return codeErr{exitFailure, fmt.Errorf("write report %s: %w", path, err)}
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return codeErr{exitFailure, fmt.Errorf("write report %s: %w", path, err)}
	}
	return nil
}

func printReportSummary(w io.Writer, s reportSummary) {
	var reached []string
	for _, n := range s.Nodes {
		if n.Reached {
			reached = append(reached, n.Name)
		}
	}
	truncated := 0
	for _, f := range s.Files {
		if f.Truncated {
			truncated++
		}
	}
	fmt.Fprintf(w, "wrote %s (%s, %d files", s.File, humanBytes(s.Bytes), len(s.Files)+1)
	if truncated > 0 {
		fmt.Fprintf(w, ", %d cut to their bound", truncated)
	}
	fmt.Fprintln(w, ")")
	fmt.Fprintf(w, "nodes reached: %s\n", dashList(reached))
	for _, n := range s.Unreached() {
		fmt.Fprintf(w, "unreachable:   %s: %s\n", n.Name, n.Error)
	}
	fmt.Fprintln(w, "secrets are redacted; read it before you send it anywhere (tar tzf "+s.File+")")
}

func dashList(xs []string) string {
	if len(xs) == 0 {
		return "-"
	}
	return strings.Join(xs, ", ")
}

func humanBytes(n int) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}
