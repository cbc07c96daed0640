package agent

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Started by systemd (a notify socket in the environment, a watchdog
// interval): the agent says READY=1 once it holds its lease, with a
// status line, and pings the watchdog; on shutdown it says STOPPING=1.
func TestSystemdNotify(t *testing.T) {
	sock := filepath.Join(shortTempDir(t), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "100000") // 100 ms: a ping every 50 ms

	a, _, _, _ := soloAgent(t, "ops admin systemd-test-secret-0123456789\n")
	msgs := make(chan string, 100)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(msgs)
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	next := func(what string) string {
		t.Helper()
		deadline := time.After(20 * time.Second)
		for {
			select {
			case m, ok := <-msgs:
				if !ok {
					t.Fatalf("notify socket closed waiting for %s", what)
				}
				if strings.Contains(m, what) {
					return m
				}
			case <-deadline:
				t.Fatalf("no %s from the agent", what)
			}
		}
	}
	m := next("READY=1")
	if !strings.Contains(m, "STATUS=leader solo, lease generation") {
		t.Errorf("ready without the status line: %q", m)
	}
	// Pings keep coming after READY.
	for range 3 {
		next("WATCHDOG=1")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a.Shutdown(ctx)
	next("STOPPING=1")
}
