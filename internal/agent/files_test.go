package agent

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func mode(t *testing.T, p string) os.FileMode {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// An existing data directory and socket directory with open modes are
// made 0700, files under the data directory (raft snapshots) lose group
// and other access, and each change is logged; a shared socket directory
// is left alone with a warning.
func TestPrivateDirs(t *testing.T) {
	root := t.TempDir()
	data := filepath.Join(root, "data")
	snap := filepath.Join(data, "snapshots", "2-10-123")
	if err := os.MkdirAll(snap, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(snap, "state.bin"), filepath.Join(snap, "meta.json"), filepath.Join(data, "events.jsonl")} {
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(data, 0o755); err != nil {
		t.Fatal(err)
	}
	// A link out of the data directory is not followed.
	outside := filepath.Join(root, "outside")
	if err := os.WriteFile(outside, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(outside, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(data, "link")); err != nil {
		t.Fatal(err)
	}
	sockDir := filepath.Join(root, "run-lifeboat")
	if err := os.Mkdir(sockDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(sockDir, 0o755); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	if err := privateDirs(data, filepath.Join(sockDir, "lifeboat.sock"), log); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]os.FileMode{
		data: 0o700, sockDir: 0o700, filepath.Join(data, "snapshots"): 0o700, snap: 0o700,
		filepath.Join(snap, "state.bin"): 0o600, filepath.Join(snap, "meta.json"): 0o600, filepath.Join(data, "events.jsonl"): 0o600,
		outside: 0o644,
	} {
		if got := mode(t, p); got != want {
			t.Errorf("%s: mode %04o, want %04o", p, got, want)
		}
	}
	for _, want := range []string{"dir=" + data + " was=0755", "dir=" + sockDir + " was=0755", "files=5"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}

	// Nothing to change: nothing logged. A new data directory is 0700.
	logs.Reset()
	fresh := filepath.Join(root, "fresh", "data")
	if err := privateDirs(fresh, filepath.Join(fresh, "lifeboat.sock"), log); err != nil {
		t.Fatal(err)
	}
	if err := privateDirs(data, filepath.Join(sockDir, "lifeboat.sock"), log); err != nil {
		t.Fatal(err)
	}
	if logs.Len() != 0 || mode(t, fresh) != 0o700 {
		t.Errorf("fresh %04o, logged: %s", mode(t, fresh), logs.String())
	}

	// A shared directory (like /run) is not ours to change.
	shared := filepath.Join(root, "shared")
	if err := os.Mkdir(shared, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(shared, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := privateDirs(data, filepath.Join(shared, "lifeboat.sock"), log); err != nil {
		t.Fatal(err)
	}
	if mode(t, shared) != 0o755 || !strings.Contains(logs.String(), "shared with other programs") {
		t.Errorf("shared dir %04o, logged: %s", mode(t, shared), logs.String())
	}
}
