package main

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/lifeboat-ha/lifeboat/internal/config"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

// templateMarker is the first line of the config the Debian package
// installs: lifeboat init replaces a file that starts with it.
const templateMarker = "# lifeboat: package template"

// Default ports of a node (README, "Configuration").
const (
	defaultAPIPort    = "7100"
	defaultRaftPort   = "7101"
	defaultGossipPort = "7102"
)

func initCmd() *cobra.Command {
	var node, dir, dataDir, keyFile, socket string
	var members []string
	var force bool
	cmd := &cobra.Command{
		Use:   "init --node NAME --member NAME=ADDR[,witness]... [--dir /etc/lifeboat]",
		Short: "Write a first agent config, cluster key and API token for a node",
		Long: `Write what a node needs to run the agent, with the right permissions (files 0600,
the directory 0700):

  DIR/agent.yaml    this node's config: its name, the members and their addresses
                    (raft :7101, gossip :7102, API :7100), data_dir, the socket under
                    /run/lifeboat, the key and token files below
  DIR/cluster.key   a new random cluster key (on the first node); on the others, give
                    --key-file with a copy of the first node's (scp it, mode 0600)
  DIR/api.tokens    one admin token for remote access (NAME ROLE SECRET; add read and
                    operate tokens for people and dashboards: see lifeboat tokens)

Every node lists the same members in the same order; a two-node cluster needs a third
member marked witness (a small machine that only votes). The config is checked as the
agent would check it before anything is written. An existing agent.yaml is kept unless
--force (or it is the Debian package's template); a key or token file is never
overwritten. Start the agent with: systemctl enable --now lifeboat`,
		Example: `  # on db1, the first node:
  lifeboat init --node db1 --member db1=10.0.1.10 --member db2=10.0.2.10 --member quorum=10.0.3.10,witness
  # on db2, with a copy of db1's /etc/lifeboat/cluster.key in /root/cluster.key:
  lifeboat init --node db2 --member db1=10.0.1.10 --member db2=10.0.2.10 --member quorum=10.0.3.10,witness \
      --key-file /root/cluster.key`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			res, err := writeInit(initOptions{Node: node, Members: members, Dir: dir, DataDir: dataDir, KeyFile: keyFile, Force: force, Socket: socket})
			if err != nil {
				return err
			}
			for _, f := range res.wrote {
				fmt.Fprintf(stdout, "wrote %s\n", f)
			}
			for _, f := range res.kept {
				fmt.Fprintf(stdout, "kept  %s (already there)\n", f)
			}
			fmt.Fprintf(stdout, "\nnext: copy %s to the other nodes (mode 0600) and run lifeboat init there with --key-file;\n", filepath.Join(dir, "cluster.key"))
			fmt.Fprintln(stdout, "      then on every node: systemctl enable --now lifeboat; and lifeboat status")
			return nil
		},
	}
	cmd.Flags().StringVar(&node, "node", "", "this node's name (one of the members)")
	cmd.Flags().StringArrayVar(&members, "member", nil, "a member: NAME=ADDRESS, or NAME=ADDRESS,witness (repeat for each; the same list on every node)")
	cmd.Flags().StringVar(&dir, "dir", "/etc/lifeboat", "directory for agent.yaml, cluster.key and api.tokens")
	cmd.Flags().StringVar(&dataDir, "data-dir", "/var/lib/lifeboat", "the agent's data directory")
	cmd.Flags().StringVar(&keyFile, "key-file", "", "use this existing cluster key (copied from the first node) instead of creating one")
	cmd.Flags().BoolVar(&force, "force", false, "replace an existing agent.yaml")
	cmd.Flags().StringVar(&socket, "socket", "/run/lifeboat/lifeboat.sock", "the agent's local API socket (root only)")
	_ = cmd.MarkFlagRequired("node")
	_ = cmd.MarkFlagRequired("member")
	return cmd
}

type initOptions struct {
	Node    string
	Members []string
	Dir     string
	DataDir string
	KeyFile string
	Force   bool
	Socket  string // default /run/lifeboat/lifeboat.sock
}

type initResult struct{ wrote, kept []string }

// writeInit checks the options, builds the config, validates it as the
// agent would, and only then writes the files.
func writeInit(o initOptions) (initResult, error) {
	var res initResult
	usage := func(format string, args ...any) (initResult, error) {
		return res, codeErr{exitUsage, fmt.Errorf(format, args...)}
	}
	if o.Dir == "" || !filepath.IsAbs(o.Dir) {
		return usage("--dir %q: give an absolute directory (default /etc/lifeboat)", o.Dir)
	}
	if o.Socket == "" {
		o.Socket = "/run/lifeboat/lifeboat.sock"
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Written by lifeboat init. Reference: the README's \"Configuration\".\n")
	fmt.Fprintf(&b, "node: %s\ndata_dir: %s\napi:\n  socket: %s\n  token_file: %s\n", yamlString(o.Node), yamlString(o.DataDir), yamlString(o.Socket), yamlString(filepath.Join(o.Dir, "api.tokens")))
	fmt.Fprintf(&b, "cluster:\n  key_file: %s\n  nodes:\n", yamlString(filepath.Join(o.Dir, "cluster.key")))
	for _, m := range o.Members {
		name, rest, ok := strings.Cut(m, "=")
		addr, flag, _ := strings.Cut(rest, ",")
		switch {
		case !ok || name == "" || addr == "":
			return usage("--member %q: give NAME=ADDRESS or NAME=ADDRESS,witness (for example db1=10.0.1.10)", m)
		case flag != "" && flag != "witness":
			return usage("--member %q: %q is not a flag of a member (only witness)", m, flag)
		case !spec.ValidName(name):
			return usage("--member %q: %q is not a valid node name (letters, digits, '-', '_', '.')", m, name)
		case strings.ContainsAny(addr, " \t:[]{}#,\"'") && net.ParseIP(addr) == nil:
			return usage("--member %q: %q is not an IP address or host name", m, addr)
		}
		host := addr
		if ip := net.ParseIP(addr); ip != nil && ip.To4() == nil {
			host = "[" + addr + "]"
		}
		fmt.Fprintf(&b, "    - {name: %s, raft: \"%s:%s\", gossip: \"%s:%s\", api: \"%s:%s\"%s}\n", name, host, defaultRaftPort, host, defaultGossipPort, host, defaultAPIPort,
			map[bool]string{true: ", witness: true"}[flag == "witness"])
	}
	cfgPath := filepath.Join(o.Dir, "agent.yaml")
	// Checked as the agent would (the key file is not read here).
	if _, err := config.ParseAgent(cfgPath, b.Bytes()); err != nil {
		return res, codeErr{exitUsage, fmt.Errorf("the config lifeboat init would write is not valid:\n%w", err)}
	}
	if cur, err := os.ReadFile(cfgPath); err == nil && !o.Force && !bytes.HasPrefix(cur, []byte(templateMarker)) {
		return usage("%s exists: give --force to replace it (the key and token files are kept)", cfgPath)
	}
	var key []byte
	if o.KeyFile != "" {
		data, err := os.ReadFile(o.KeyFile)
		if err != nil {
			return usage("--key-file: %v", err)
		}
		key = bytes.TrimSpace(data)
		if k, err := base64.StdEncoding.DecodeString(string(key)); err != nil || (len(k) != 16 && len(k) != 24 && len(k) != 32) {
			return usage("--key-file %s: not a cluster key (the base64 of 16, 24 or 32 bytes, as lifeboat init writes it)", o.KeyFile)
		}
	}

	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return res, codeErr{exitFailure, fmt.Errorf("create %s: %w", o.Dir, err)}
	}
	keyPath := filepath.Join(o.Dir, "cluster.key")
	if key == nil {
		raw := make([]byte, 32)
		if _, err := rand.Read(raw); err != nil {
			return res, codeErr{exitFailure, err}
		}
		key = []byte(base64.StdEncoding.EncodeToString(raw))
		if cur, err := os.ReadFile(keyPath); err == nil {
			key = bytes.TrimSpace(cur) // a node keeps its key
		}
	}
	if err := writeNew(keyPath, append(key, '\n'), o.KeyFile != "", &res); err != nil {
		return res, err
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return res, codeErr{exitFailure, err}
	}
	tokens := "# NAME ROLE SECRET (roles: read, operate, admin); reload with lifeboat tokens reload\nadmin admin " + hex.EncodeToString(secret) + "\n"
	if err := writeNew(filepath.Join(o.Dir, "api.tokens"), []byte(tokens), false, &res); err != nil {
		return res, err
	}
	if err := writeReplace(cfgPath, b.Bytes()); err != nil {
		return res, err
	}
	res.wrote = append(res.wrote, cfgPath)
	return res, nil
}

// writeNew writes a 0600 file unless one is there (a key or a token file
// is never overwritten); with mustMatch, one that is there and differs is
// an error.
func writeNew(path string, data []byte, mustMatch bool, res *initResult) error {
	cur, err := os.ReadFile(path)
	switch {
	case err == nil && mustMatch && !bytes.Equal(bytes.TrimSpace(cur), bytes.TrimSpace(data)):
		return codeErr{exitUsage, fmt.Errorf("%s exists and is not the key given with --key-file: a node has one cluster key; remove it if it is stale", path)}
	case err == nil:
		res.kept = append(res.kept, path)
		return nil
	case !errors.Is(err, os.ErrNotExist):
		return codeErr{exitFailure, fmt.Errorf("read %s: %w", path, err)}
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return codeErr{exitFailure, fmt.Errorf("write %s: %w", path, err)}
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return codeErr{exitFailure, fmt.Errorf("write %s: %w", path, err)}
	}
	if err := f.Close(); err != nil {
		return codeErr{exitFailure, fmt.Errorf("write %s: %w", path, err)}
	}
	res.wrote = append(res.wrote, path)
	return nil
}

// writeReplace writes path 0600 through a temporary file.
func writeReplace(path string, data []byte) error {
	tmp := path + ".tmp"
	_ = os.Remove(tmp)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err == nil {
		_, err = f.Write(data)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return codeErr{exitFailure, fmt.Errorf("write %s: %w", path, err)}
	}
	return nil
}

// yamlString quotes s for YAML when it needs it.
func yamlString(s string) string {
	if s != "" && !strings.ContainsAny(s, ":#{}[],&*?|<>=!%@`\"' \t\n") {
		return s
	}
	return fmt.Sprintf("%q", s)
}
