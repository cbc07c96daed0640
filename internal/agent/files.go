package agent

import (
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// The agent runs as root and keeps the cluster's state (the replicated
// log, raft snapshots with every spec and parameter, events) in its data
// directory and listens on a socket that grants root's access to the
// cluster. The agent command sets umask 077, so everything it creates is
// its owner's only; privateDirs makes sure that what existed before is too.

// privateDirs makes the data directory and the socket's directory mode
// 0700 (creating them if needed), even when they existed with another
// mode, and takes group and other access away from everything under the
// data directory (raft snapshots and store, events) that still has it. It
// logs what it changed. A socket directory outside the data directory
// whose name does not say lifeboat (say /run) is shared with other
// programs: it is left as it is and a warning says so (the socket itself
// is 0600).
func privateDirs(dataDir, socket string, log *slog.Logger) error {
	if err := privateDir(dataDir, "data_dir", log); err != nil {
		return err
	}
	if err := tightenTree(dataDir, log); err != nil {
		return err
	}
	sockDir := filepath.Dir(socket)
	if socket == "" || sockDir == dataDir {
		return nil
	}
	if !ownSocketDir(dataDir, sockDir) {
		if fi, err := os.Stat(sockDir); err == nil && fi.Mode().Perm()&0o077 != 0 {
			log.Warn("the API socket's directory is shared with other programs: left as it is (the socket itself is 0600); give the socket a directory of its own, such as /run/lifeboat/lifeboat.sock",
				"socket", socket, "dir_mode", fmt.Sprintf("%04o", fi.Mode().Perm()))
		}
		return nil
	}
	return privateDir(sockDir, "api.socket's directory", log)
}

// ownSocketDir reports whether dir is lifeboat's own: inside the data
// directory, or named for lifeboat (/run/lifeboat).
func ownSocketDir(dataDir, dir string) bool {
	if rel, err := filepath.Rel(dataDir, dir); err == nil && rel != ".." && !strings.HasPrefix(rel, "../") {
		return true
	}
	return strings.Contains(strings.ToLower(filepath.Base(dir)), "lifeboat")
}

// privateDir creates dir with mode 0700, or sets an existing one to 0700.
func privateDir(dir, what string, log *slog.Logger) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s %s: %w", what, dir, err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("check %s %s: %w", what, dir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s %s is not a directory", what, dir)
	}
	if m := fi.Mode().Perm(); m != 0o700 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("restrict %s %s to its owner (mode %04o, want 0700): %w", what, dir, m, err)
		}
		log.Warn("changed the mode of a directory to 0700: it holds the cluster's state or its root-only socket", "dir", dir, "was", fmt.Sprintf("%04o", m))
	}
	return nil
}

// tightenTree takes group and other access away from every file and
// directory under root that has any. Symbolic links are not followed.
func tightenTree(root string, log *slog.Logger) error {
	changed := 0
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type()&fs.ModeSymlink != 0 {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if m := fi.Mode().Perm(); m&0o077 != 0 {
			if err := os.Chmod(p, m&^0o077); err != nil {
				return fmt.Errorf("take group and other access away from %s (mode %04o): %w", p, m, err)
			}
			changed++
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("restrict the data directory %s: %w", root, err)
	}
	if changed > 0 {
		log.Warn("took group and other access away from files in the data directory", "dir", root, "files", changed)
	}
	return nil
}
