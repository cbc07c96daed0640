package netlab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"
)

// respondCmd is the hidden subcommand of the test binary that runs a probe
// responder: TEST_BINARY netlab-respond ADDR NAME.
const respondCmd = "netlab-respond"

func TestMain(m *testing.M) {
	if len(os.Args) == 4 && os.Args[1] == respondCmd {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
		err := Respond(ctx, os.Args[2], os.Args[3])
		stop()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// responderArgv runs this test binary as a responder.
func responderArgv(t *testing.T) []string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return []string{exe, respondCmd}
}

const port = "7000"

// newLab builds a lab removed at the end of the test, or skips the test
// where labs cannot be built.
func newLab(t *testing.T, opts Options) *Lab {
	t.Helper()
	l, err := New(opts)
	if errors.Is(err, ErrUnavailable) {
		t.Skipf("skipping: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("close lab: %v", err)
		}
	})
	return l
}

// serveAll runs an in-process responder on port in every host.
func serveAll(t *testing.T, l *Lab) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	for _, h := range l.Hosts() {
		c, err := l.ListenPacket(h, "udp4", ":"+port)
		if err != nil {
			t.Fatal(err)
		}
		go func() { _ = Serve(ctx, c, h) }()
	}
}

// reach asks target from host and fails the test unless the answer comes
// from want ("" = expect no answer within 300ms).
func reach(t *testing.T, l *Lab, from, target, want string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	got, err := l.Ask(ctx, from, target)
	switch {
	case want == "" && err == nil:
		t.Fatalf("%s reached %s (answered by %s), want no answer", from, target, got)
	case want != "" && err != nil:
		t.Fatalf("%s cannot reach %s: %v", from, target, err)
	case got != want:
		t.Fatalf("%s asked %s: answered by %q, want %q", from, target, got, want)
	}
}

// eventually polls cond until it holds or 10 seconds pass.
func eventually(t *testing.T, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ok, err := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10s, still not %s (last error: %v)", what, err)
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
}

func answers(l *Lab, from, target, want string) func() (bool, error) {
	return func() (bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		got, err := l.Ask(ctx, from, target)
		return err == nil && got == want, err
	}
}

func (l *Lab) at(host string) string { return l.IP(host) + ":" + port }

// A node whose link is down answers nothing and reaches nothing; its link
// back up, everything answers again.
func TestLinkDown(t *testing.T) {
	l := newLab(t, Options{Nodes: 3})
	serveAll(t, l)
	for _, n := range l.Nodes() {
		reach(t, l, Client, l.at(n), n)
	}
	reach(t, l, "node1", l.at("node3"), "node3")

	if err := l.LinkDown("node2"); err != nil {
		t.Fatal(err)
	}
	reach(t, l, Client, l.at("node2"), "")
	reach(t, l, "node2", l.at("node1"), "")
	reach(t, l, Client, l.at("node1"), "node1")
	reach(t, l, "node3", l.at("node1"), "node1")

	if err := l.LinkUp("node2"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "node2 reachable after LinkUp", answers(l, Client, l.at("node2"), "node2"))
	// node2's ARP requests for node1 were lost while its link was down:
	// the kernel retries them on its own schedule (every second).
	eventually(t, "node2 reaching node1 after LinkUp", answers(l, "node2", l.at("node1"), "node1"))
}

// Cut drops the path between two hosts only, with each firewall.
func TestCut(t *testing.T) {
	for _, fw := range []string{"nft", "iptables"} {
		t.Run(fw, func(t *testing.T) {
			bin := map[string]string{"nft": "nft", "iptables": "iptables"}[fw]
			if _, err := exec.LookPath(bin); err != nil {
				t.Skipf("%s not installed (apt-get install %s)", bin, map[string]string{"nft": "nftables", "iptables": "iptables"}[fw])
			}
			l := newLab(t, Options{Nodes: 3, Firewall: fw})
			serveAll(t, l)
			vip := l.VIP(1) + ":" + port
			if err := l.AddAddr("node2", l.VIPPrefix(1)); err != nil {
				t.Fatal(err)
			}
			reach(t, l, "node1", vip, "node2")

			for range 2 { // Cut and Heal are idempotent
				if err := l.Cut("node1", "node2"); err != nil {
					t.Fatal(err)
				}
			}
			reach(t, l, "node1", l.at("node2"), "")
			reach(t, l, "node2", l.at("node1"), "")
			reach(t, l, "node1", vip, "") // node2's virtual IP too
			reach(t, l, "node1", l.at("node3"), "node3")
			reach(t, l, "node3", l.at("node2"), "node2")
			reach(t, l, "node3", vip, "node2")
			reach(t, l, Client, l.at("node1"), "node1")
			reach(t, l, Client, l.at("node2"), "node2")

			for range 2 {
				if err := l.Heal("node2", "node1"); err != nil {
					t.Fatal(err)
				}
			}
			reach(t, l, "node1", l.at("node2"), "node2")
			reach(t, l, "node2", l.at("node1"), "node1")
			reach(t, l, "node1", vip, "node2")
			if err := l.Cut("node1", "node1"); err == nil {
				t.Fatal("cut a host from itself")
			}
			if err := l.Cut("node1", "node9"); err == nil || !strings.Contains(err.Error(), `no host "node9"`) {
				t.Fatalf("cut from an unknown host: %v", err)
			}
		})
	}
}

// A frozen responder answers nothing until thawed; a killed one is gone.
func TestFreezeThawKill(t *testing.T) {
	l := newLab(t, Options{Nodes: 1})
	p, err := l.StartResponder("node1", "0.0.0.0:"+port, responderArgv(t)...)
	if err != nil {
		t.Fatal(err)
	}
	reach(t, l, Client, l.at("node1"), "node1")
	if err := l.Freeze(p.PID); err != nil {
		t.Fatal(err)
	}
	reach(t, l, Client, l.at("node1"), "")
	if err := l.Thaw(p.PID); err != nil {
		t.Fatal(err)
	}
	reach(t, l, Client, l.at("node1"), "node1")
	if err := l.Kill(p.PID); err != nil {
		t.Fatal(err)
	}
	if p.Running() {
		t.Fatal("responder still running after Kill")
	}
	reach(t, l, Client, l.at("node1"), "")
}

// Close removes every namespace and kills every process, and the lab
// never touched the host's network.
func TestClose(t *testing.T) {
	before, err := exec.Command("ip", "-o", "link").Output()
	if err != nil {
		t.Skipf("skipping: ip link: %v", err)
	}
	l, err := New(Options{Nodes: 2, Router: true})
	if errors.Is(err, ErrUnavailable) {
		t.Skipf("skipping: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	p, err := l.StartResponder("node2", "0.0.0.0:"+port, responderArgv(t)...)
	if err != nil {
		l.Close()
		t.Fatal(err)
	}
	if len(l.Hosts()) != 4 {
		t.Errorf("hosts %v, want two nodes, a router and a client", l.Hosts())
	}
	after, _ := exec.Command("ip", "-o", "link").Output()
	if string(before) != string(after) {
		t.Errorf("the host's links changed:\n%s\nbecame\n%s", before, after)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if p.Running() {
		t.Error("responder still running after Close")
	}
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), l.prefix) {
		t.Fatalf("namespaces left after Close:\n%s", out)
	}
	if _, err := os.Stat(l.Dir()); !os.IsNotExist(err) {
		t.Fatalf("lab directory %s left after Close: %v", l.Dir(), err)
	}
}
