package e2e

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/ports"
)

// TestDebianPackage builds the Debian package (scripts/package.sh),
// installs it with dpkg -i into a directory of its own (dpkg --instdir: the
// machine's own files are left alone), checks the installed files and their
// modes, verifies the systemd unit, and starts the installed binary once
// as systemd would: lifeboat init writes a config over the package's
// template, and the agent, given a notify socket, says READY=1 once it
// holds quorum and STOPPING=1 on SIGTERM.
func TestDebianPackage(t *testing.T) {
	for _, tool := range []string{"dpkg", "dpkg-deb", "systemd-analyze", "gzip"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (apt-get install dpkg systemd gzip)", tool)
		}
	}
	if os.Geteuid() != 0 {
		t.Skip("dpkg -i needs root")
	}
	run := func(env []string, name string, args ...string) string {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	out := run(nil, filepath.Join(repo, "scripts/package.sh"))
	lines := strings.Split(strings.TrimSpace(out), "\n")
	deb := filepath.Join(repo, lines[len(lines)-1])
	t.Logf("built %s", filepath.Base(deb))

	// Installed into a root of its own.
	root := t.TempDir()
	admin := filepath.Join(root, "var/lib/dpkg")
	for _, d := range []string{"info", "updates"} {
		if err := os.MkdirAll(filepath.Join(admin, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(admin, "status"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	run(nil, "dpkg", "--instdir="+root, "--admindir="+admin, "--force-depends", "-i", deb)
	if st := run(nil, "dpkg", "--admindir="+admin, "-s", "lifeboat"); !strings.Contains(st, "Status: install ok installed") || !strings.Contains(st, "Conffiles:\n /etc/lifeboat/agent.yaml") {
		t.Fatalf("dpkg -s lifeboat:\n%s", st)
	}
	for _, f := range []struct {
		path string
		mode os.FileMode
	}{
		{"usr/bin/lifeboat", 0o755},
		{"usr/lib/systemd/system/lifeboat.service", 0o644},
		{"etc/lifeboat", os.ModeDir | 0o700},
		{"etc/lifeboat/agent.yaml", 0o600},
		{"usr/share/man/man1/lifeboat.1.gz", 0o644},
		{"usr/share/man/man1/lifeboat-agent.1.gz", 0o644},
		{"usr/share/man/man1/lifeboat-init.1.gz", 0o644},
		{"usr/share/bash-completion/completions/lifeboat", 0o644},
		{"usr/share/zsh/vendor-completions/_lifeboat", 0o644},
		{"usr/share/fish/vendor_completions.d/lifeboat.fish", 0o644},
	} {
		st, err := os.Stat(filepath.Join(root, f.path))
		if err != nil {
			t.Errorf("installed: %v", err)
			continue
		}
		sys := st.Sys().(*syscall.Stat_t)
		if st.Mode()&(os.ModeDir|os.ModePerm) != f.mode || sys.Uid != 0 || sys.Gid != 0 {
			t.Errorf("/%s: mode %v owner %d:%d, want %v root:root", f.path, st.Mode(), sys.Uid, sys.Gid, f.mode)
		}
	}
	bin := filepath.Join(root, "usr/bin/lifeboat")
	if man := run(nil, "sh", "-c", "gzip -dc "+filepath.Join(root, "usr/share/man/man1/lifeboat-status.1.gz")); !strings.Contains(man, "Show nodes, hierarchies") {
		t.Errorf("lifeboat-status(1) is not the command's help:\n%.400s", man)
	}
	if comp, _ := os.ReadFile(filepath.Join(root, "usr/share/bash-completion/completions/lifeboat")); !bytes.Contains(comp, []byte("__start_lifeboat")) {
		t.Errorf("bash completion does not complete lifeboat:\n%.300s", comp)
	}

	// The unit, as systemd reads it (its binary at the installed path).
	unit, err := os.ReadFile(filepath.Join(root, "usr/lib/systemd/system/lifeboat.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Type=notify", "WatchdogSec=", "Restart=always", "RestartPreventExitStatus=2", "KillMode=process", "ExecStart=/usr/bin/lifeboat agent --config /etc/lifeboat/agent.yaml"} {
		if !bytes.Contains(unit, []byte(want)) {
			t.Errorf("the unit lacks %q", want)
		}
	}
	unitCopy := filepath.Join(t.TempDir(), "lifeboat.service")
	if err := os.WriteFile(unitCopy, bytes.ReplaceAll(unit, []byte("/usr/bin/lifeboat"), []byte(bin)), 0o644); err != nil {
		t.Fatal(err)
	}
	if v := run(nil, "systemd-analyze", "verify", "--man=no", unitCopy); strings.TrimSpace(v) != "" {
		t.Errorf("systemd-analyze verify lifeboat.service:\n%s", v)
	}

	// The template config is refused with exit status 2 (the unit does not
	// restart on it), naming what to do.
	etc := filepath.Join(root, "etc/lifeboat")
	cmd := exec.Command(bin, "agent", "--config", filepath.Join(etc, "agent.yaml"))
	tout, err := cmd.CombinedOutput()
	if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 2 || !strings.Contains(string(tout), "node") {
		t.Errorf("agent on the package's template: %v\n%s", err, tout)
	}

	// lifeboat init replaces the template (and only the template).
	data := t.TempDir()
	sock := filepath.Join(data, "lifeboat.sock")
	initArgs := []string{"init", "--node", "solo", "--member", "solo=127.0.0.1", "--dir", etc, "--data-dir", filepath.Join(data, "state"), "--socket", sock}
	run(nil, bin, initArgs...)
	if _, _, code := runCode(bin, initArgs...); code != 2 {
		t.Errorf("a second init without --force: exit %d, want 2", code)
	}
	for _, f := range []string{"agent.yaml", "cluster.key", "api.tokens"} {
		if st, err := os.Stat(filepath.Join(etc, f)); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("init wrote %s: %v %v, want mode 0600", f, err, st)
		}
	}
	// Free ports instead of init's defaults, not to collide with anything
	// on the test machine.
	cfgPath := filepath.Join(etc, "agent.yaml")
	cfg, _ := os.ReadFile(cfgPath)
	ports := freeTCPPorts(t, 3)
	for i, def := range []string{":7101", ":7102", ":7100"} {
		cfg = bytes.Replace(cfg, []byte(def), []byte(fmt.Sprintf(":%d", ports[i])), 1)
	}
	if err := os.WriteFile(cfgPath, cfg, 0o600); err != nil {
		t.Fatal(err)
	}

	// Started as systemd starts it.
	notify := filepath.Join(data, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notify, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var log bytes.Buffer
	agent := exec.Command(bin, "agent", "--config", cfgPath)
	agent.Env = append(os.Environ(), "NOTIFY_SOCKET="+notify, "WATCHDOG_USEC=2000000")
	agent.Stdout, agent.Stderr = &log, &log
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- agent.Wait() }()
	defer func() {
		if agent.ProcessState == nil {
			_ = agent.Process.Kill()
			<-exited
		}
	}()
	expect := func(what string) string {
		t.Helper()
		_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				t.Fatalf("waiting for %s from the installed agent: %v\n%s", what, err, log.String())
			}
			if m := string(buf[:n]); strings.Contains(m, what) {
				return m
			}
		}
	}
	start := time.Now()
	m := expect("READY=1")
	t.Logf("READY=1 %v after start: %q", time.Since(start).Round(time.Millisecond), m)
	expect("WATCHDOG=1")
	st := run(nil, bin, "--addr", sock, "status")
	if first, _, _ := strings.Cut(st, "\n"); !strings.HasPrefix(first, "READY: no hierarchies") {
		t.Errorf("status of the installed agent starts with %q", first)
	}
	_ = agent.Process.Signal(syscall.SIGTERM)
	expect("STOPPING=1")
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("agent after SIGTERM: %v\n%s", err, log.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("agent did not stop within 60 s of SIGTERM\n%s", log.String())
	}
}

// runCode runs a command and returns its output and exit status.
func runCode(name string, args ...string) (string, string, int) {
	var o, e bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &o, &e
	_ = cmd.Run()
	return o.String(), e.String(), cmd.ProcessState.ExitCode()
}

// freeTCPPorts returns n ports free on 127.0.0.1.
func freeTCPPorts(t *testing.T, n int) []int {
	t.Helper()
	ps, err := ports.Free(n)
	if err != nil {
		t.Fatal(err)
	}
	return ps
}
