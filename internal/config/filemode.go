package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// FileModeError is a secret-bearing file that group or other users may
// read or write: the agent refuses to start with it.
type FileModeError struct {
	Path  string      // the file
	Field string      // what names it: "agent config", "cluster.key_file", "api.token_file"
	Mode  fs.FileMode // its permission bits
}

func (e *FileModeError) Error() string {
	return fmt.Sprintf("%s (%s) has mode %04o: group or other users may read or write it, and it holds the cluster's secrets; run: chmod 600 %s",
		e.Path, e.Field, e.Mode, e.Path)
}

// CheckFileModes checks that the files holding the agent's secrets are
// readable and writable by their owner only: the agent config at path (it
// may carry cluster.key), cluster.key_file and api.token_file. A file
// another user can read leaks the key (which also derives the API token
// and the TLS identity); one another user can write lets that user replace
// it. It returns every such file as a *FileModeError, joined.
func (a *Agent) CheckFileModes(path string) error {
	files := []struct{ field, path string }{{"agent config", path}}
	if a.Cluster.KeyFile != "" {
		files = append(files, struct{ field, path string }{"cluster.key_file", a.Cluster.KeyFile})
	}
	if a.API.TokenFile != "" {
		files = append(files, struct{ field, path string }{"api.token_file", a.API.TokenFile})
	}
	var errs []error
	for _, f := range files {
		fi, err := os.Stat(f.path)
		if err != nil {
			errs = append(errs, fmt.Errorf("check the mode of %s (%s): %w", f.path, f.field, err))
			continue
		}
		if m := fi.Mode().Perm(); m&0o077 != 0 {
			errs = append(errs, &FileModeError{Path: f.path, Field: f.field, Mode: m})
		}
	}
	return errors.Join(errs...)
}
