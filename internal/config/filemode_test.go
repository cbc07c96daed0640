package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckFileModes(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "agent.yaml")
	in := edit(t, goodAgent, "  key: \""+testKey+"\"", "  key_file: cluster.key")
	write := func(p, s string, mode os.FileMode) {
		t.Helper()
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
	keyPath, tokenPath := filepath.Join(dir, "cluster.key"), filepath.Join(dir, "token")
	write(cfgPath, in, 0o600)
	write(keyPath, testKey+"\n", 0o600)
	write(tokenPath, "a-token-of-sixteen-or-more\n", 0o600)
	a, err := LoadAgent(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.CheckFileModes(cfgPath); err != nil {
		t.Fatalf("all 0600: %v", err)
	}
	for _, c := range []struct {
		path, field string
		mode        os.FileMode
	}{
		{keyPath, "cluster.key_file", 0o640},
		{keyPath, "cluster.key_file", 0o604},
		{keyPath, "cluster.key_file", 0o620},
		{tokenPath, "api.token_file", 0o644},
		{cfgPath, "agent config", 0o660},
	} {
		if err := os.Chmod(c.path, c.mode); err != nil {
			t.Fatal(err)
		}
		err := a.CheckFileModes(cfgPath)
		var fe *FileModeError
		if !errors.As(err, &fe) || fe.Path != c.path || fe.Field != c.field || fe.Mode != c.mode {
			t.Errorf("%s mode %04o: %v", c.path, c.mode, err)
		} else if want, mode := "run: chmod 600 "+c.path, fmt.Sprintf("has mode %04o", c.mode); !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), mode) {
			t.Errorf("message lacks %q or %q: %v", want, mode, err)
		}
		if err := os.Chmod(c.path, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// Owner-only modes stricter than 0600 are fine.
	if err := os.Chmod(keyPath, 0o400); err != nil {
		t.Fatal(err)
	}
	if err := a.CheckFileModes(cfgPath); err != nil {
		t.Fatalf("0400 key: %v", err)
	}
	// A missing file is named.
	if err := os.Remove(tokenPath); err != nil {
		t.Fatal(err)
	}
	if err := a.CheckFileModes(cfgPath); err == nil || !strings.Contains(err.Error(), tokenPath) {
		t.Fatalf("missing token file: %v", err)
	}
}
