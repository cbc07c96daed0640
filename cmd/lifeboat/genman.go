package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// genManCmd writes the man pages, generated from the commands' own help
// (the Debian package ships them; scripts/package.sh).
func genManCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "gen-man DIR",
		Short:   "Write man pages for every command into DIR (for packaging)",
		Example: "  lifeboat gen-man /tmp/man && man -l /tmp/man/lifeboat-status.1",
		Hidden:  true,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := os.MkdirAll(args[0], 0o755); err != nil {
				return codeErr{exitFailure, err}
			}
			root := cmd.Root()
			root.DisableAutoGenTag = true // reproducible: no date in the pages
			hdr := &doc.GenManHeader{Section: "1", Source: "lifeboat " + version, Manual: "lifeboat manual"}
			if err := doc.GenManTree(root, hdr, args[0]); err != nil {
				return codeErr{exitFailure, fmt.Errorf("write man pages into %s: %w", args[0], err)}
			}
			return nil
		},
	}
}
