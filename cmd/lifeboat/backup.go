package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/lifeboat-ha/lifeboat/internal/api"
	"github.com/lifeboat-ha/lifeboat/internal/backup"
	"github.com/lifeboat-ha/lifeboat/internal/kit/kits"
)

func backupCmd() *cobra.Command {
	var out string
	var force bool
	cmd := &cobra.Command{
		Use:   "backup -o FILE",
		Short: "Write the replicated state (specs, wishes, membership) to a checksummed file",
		Long: `Write a backup of the cluster's replicated state: every hierarchy's spec with its
policies, whether each is started or stopped, and the membership as the cluster
knows it. The raft leader answers after a barrier, so the file holds every
committed change up to the raft index it names. Owners, leases, reports and
failure marks are per-run and left out.

The file is JSON with a format name, a version and a SHA-256 checksum of its
body; lifeboat restore refuses a file that does not match. It is written with
mode 0600 (specs may carry application settings) and never over an existing
file unless --force.`,
		Example: `  lifeboat backup -o /var/backups/lifeboat-$(date +%F).json
  lifeboat backup -o cluster.json --force --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return codeErr{exitUsage, errors.New("-o FILE is required")}
			}
			if _, err := os.Lstat(out); err == nil && !force {
				return codeErr{exitUsage, fmt.Errorf("%s exists: refusing to overwrite it (use --force, or another name)", out)}
			}
			var raw json.RawMessage
			if err := call(context.Background(), "GET", "/v1/backup", nil, &raw); err != nil {
				return err
			}
			b, err := backup.Decode("the agent's backup", raw, nil)
			if err != nil {
				return codeErr{exitFailure, fmt.Errorf("the agent answered with a backup this binary cannot read (is the agent another version?): %w", err)}
			}
			if err := writeBackup(out, raw, force); err != nil {
				return codeErr{exitFailure, err}
			}
			info := api.InfoOf(b)
			if g.json {
				return printJSON(struct {
					File string `json:"file"`
					api.BackupInfo
				}{out, info})
			}
			online := 0
			for _, w := range b.Wishes {
				if w == backup.Online {
					online++
				}
			}
			fmt.Fprintf(stdout, "backup of %d hierarchies (%d started, %d stopped) and %d members at raft index %d (read on the leader %s), feature level %d\n",
				len(b.Hierarchies), online, len(b.Hierarchies)-online, len(b.Members), b.RaftIndex, b.Node, b.FeatureLevel)
			fmt.Fprintf(stdout, "written to %s (%s)\n", out, b.Checksum)
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "the backup file to write")
	cmd.Flags().BoolVar(&force, "force", false, "overwrite FILE if it exists")
	return cmd
}

// writeBackup writes data to path with mode 0600, whole or not at all:
// through a temporary file in the same directory, linked into place (which
// fails if path exists) or, with force, renamed over it.
func writeBackup(path string, data []byte, force bool) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".lifeboat-backup-*")
	if err != nil {
		return fmt.Errorf("write backup %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("write backup %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write backup %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write backup %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write backup %s: %w", path, err)
	}
	if force {
		if err := os.Rename(tmp.Name(), path); err != nil {
			return fmt.Errorf("write backup %s: %w", path, err)
		}
		return nil
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s exists: refusing to overwrite it (use --force, or another name)", path)
		}
		return fmt.Errorf("write backup %s: %w", path, err)
	}
	return nil
}

func restoreCmd() *cobra.Command {
	var file string
	var dryRun, prune bool
	cmd := &cobra.Command{
		Use:   "restore -f FILE",
		Short: "Check a backup and bring the cluster's hierarchies and wishes back to it",
		Long: `Restore a backup written by lifeboat backup, into the cluster it came from or
into a new one (disaster recovery: start agents with empty data directories,
they form a fresh cluster, then restore).

The file is checked first, here and on the agent: format, version, checksum,
and every spec with the validation lifeboat apply uses (its nodes must be
resource nodes of this cluster). A damaged or edited file is refused whole
and nothing changes. Then the raft leader compares it with the cluster's state
and prints what differs: hierarchies created, updated (which fields) and
unchanged, start/stop wishes that change, hierarchies the backup lacks, and
how the membership differs (restore never changes membership). Unless
--dry-run, it commits everything as one raft entry: a stopped hierarchy is
never started, not even for a moment. Hierarchies the backup lacks are kept,
or deleted with --prune. Owners and failure marks of hierarchies that exist
are kept. Restoring the same file twice changes nothing the second time.

Exit status: 0 restored (or nothing to do); 1 the cluster could not commit it
(no leader or quorum); 2 the file was refused.`,
		Example: `  lifeboat restore -f cluster.json --dry-run
  lifeboat restore -f cluster.json
  lifeboat restore -f cluster.json --prune --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if file == "" {
				return codeErr{exitUsage, errors.New("-f FILE is required (use - for standard input)")}
			}
			name, data, err := readBackupFile(file)
			if err != nil {
				return codeErr{exitUsage, err}
			}
			b, err := backup.Decode(name, data, kits.Builtin().ValidateHierarchy)
			if err != nil {
				return codeErr{exitUsage, fmt.Errorf("%w\nrestore refused: nothing was changed", err)}
			}
			var resp api.RestoreResponse
			if err := call(context.Background(), "POST", "/v1/restore", api.RestoreRequest{Backup: data, Name: name, DryRun: dryRun, Prune: prune}, &resp); err != nil {
				return err
			}
			if g.json {
				return printJSON(resp)
			}
			printRestore(stdout, name, b, resp)
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "the backup file, - for standard input")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "check and show what would change, change nothing")
	cmd.Flags().BoolVar(&prune, "prune", false, "delete the hierarchies the backup does not have")
	return cmd
}

// readBackupFile reads at most backup.MaxSize bytes and one more, so that
// Decode sees an oversized file as such.
func readBackupFile(file string) (string, []byte, error) {
	var r io.Reader
	name := file
	if file == "-" {
		name, r = "<stdin>", os.Stdin
	} else {
		f, err := os.Open(file)
		if err != nil {
			return name, nil, fmt.Errorf("read %s: %w", file, err)
		}
		defer f.Close()
		r = f
	}
	data, err := io.ReadAll(io.LimitReader(r, backup.MaxSize+1))
	if err != nil {
		return name, nil, fmt.Errorf("read %s: %w", name, err)
	}
	return name, data, nil
}

func printRestore(w io.Writer, name string, b *backup.Backup, r api.RestoreResponse) {
	info := r.Backup
	whose := "another cluster (another key)"
	if r.SameCluster {
		whose = "this cluster"
	}
	fmt.Fprintf(w, "%s: backup of %s taken %s at raft index %d on %s (lifeboat %s, feature level %d); %d hierarchies, %d members\n",
		name, whose, info.Created.Format("2006-01-02 15:04:05Z07:00"), info.RaftIndex, info.Node, info.LifeboatVersion, info.FeatureLevel, info.Hierarchies, info.Members)
	d := r.Diff
	wishes := map[string]backup.WishChange{}
	for _, c := range d.Wishes {
		wishes[c.Hierarchy] = c
	}
	type line struct{ name, mark, text string }
	var lines []line
	wishText := func(n string) string {
		if c, ok := wishes[n]; ok && c.From != "" {
			return fmt.Sprintf("%s -> %s", c.From, c.To)
		}
		return b.Wishes[n]
	}
	for _, n := range d.Created {
		lines = append(lines, line{n, "+", "create, " + b.Wishes[n]})
	}
	for _, c := range d.Updated {
		lines = append(lines, line{c.Hierarchy, "~", fmt.Sprintf("update (%s), %s", strings.Join(c.Fields, ", "), wishText(c.Hierarchy))})
	}
	for _, n := range d.Unchanged {
		if _, ok := wishes[n]; ok {
			lines = append(lines, line{n, "~", "same spec, " + wishText(n)})
		} else {
			lines = append(lines, line{n, "=", "unchanged, " + b.Wishes[n]})
		}
	}
	for _, n := range d.Missing {
		if r.Prune {
			lines = append(lines, line{n, "-", "not in the backup: delete"})
		} else {
			lines = append(lines, line{n, "!", "not in the backup: kept (--prune deletes it)"})
		}
	}
	sort.Slice(lines, func(i, j int) bool { return lines[i].name < lines[j].name })
	width := 0
	for _, l := range lines {
		width = max(width, len(l.name))
	}
	for _, l := range lines {
		fmt.Fprintf(w, "  %s %-*s  %s\n", l.mark, width, l.name, l.text)
	}
	if len(d.Members) == 0 {
		fmt.Fprintln(w, "membership: as in the backup")
	} else {
		fmt.Fprintln(w, "membership differs from the backup (restore does not change membership):")
		for _, m := range d.Members {
			fmt.Fprintln(w, "  "+m)
		}
	}
	switch {
	case r.DryRun:
		fmt.Fprintf(w, "dry run: nothing was changed (compared with %s's state at raft index %d)\n", r.Node, r.RaftIndex)
	case r.Applied:
		fmt.Fprintf(w, "restored: committed at raft index %d by the leader %s\n", r.RaftIndex, r.Node)
	default:
		fmt.Fprintf(w, "nothing to restore: the cluster already matches the backup (raft index %d)\n", r.RaftIndex)
	}
}
