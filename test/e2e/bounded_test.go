package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/api"
	"github.com/lifeboat-ha/lifeboat/internal/config"
	"github.com/lifeboat-ha/lifeboat/internal/connlimit"
	"github.com/lifeboat-ha/lifeboat/internal/demo"
	"github.com/lifeboat-ha/lifeboat/internal/tlsid"
)

// usage is what the kernel says a process holds.
type usage struct {
	fds   int
	rssKB int
}

func (u usage) String() string {
	return fmt.Sprintf("%d fds, %.1f MB RSS", u.fds, float64(u.rssKB)/1024)
}

func procUsage(t *testing.T, pid int) usage {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatalf("count descriptors of %d: %v", pid, err)
	}
	u := usage{fds: len(ents)}
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			u.rssKB, _ = strconv.Atoi(strings.Fields(v)[0])
		}
	}
	return u
}

// listenerMetric reads a lifeboat_listener_* figure of one listener from
// the node's /metrics. One client for all reads: each client keeps a
// connection of its own open, and the agent's descriptors are measured.
func listenerMetric(t *testing.T, cl *api.Client, name, listener string) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	text, err := cl.Text(ctx, "/metrics")
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	m := regexp.MustCompile(`(?m)^` + name + `\{listener="` + listener + `"\} (\S+)$`).FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("no %s{listener=%q} in the metrics", name, listener)
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// eventually polls cond (figures the agent exports; nothing to wait on).
func eventually(t *testing.T, within time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s: %s", within, what, why)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// 3,000 idle TCP connections to a node's raft port (no TLS handshake, no
// byte sent) cost it at most the listener's cap in descriptors, are closed
// at the handshake deadline, and the cluster keeps working.
// Figures: go test ./test/e2e -run TestRaftPortFlood -v
func TestRaftPortFlood(t *testing.T) {
	c := startCluster(t, demo.Options{})
	n := c.Node("node1")
	cfg, err := config.LoadAgent(n.Config)
	if err != nil {
		t.Fatal(err)
	}
	raftAddr := cfg.Self().Raft
	metrics := c.Client("node1")
	defer metrics.CloseIdle()
	openBefore := listenerMetric(t, metrics, "lifeboat_listener_connections_open", "raft") // raft's own; and the client's connection opens before the figures
	before := procUsage(t, n.PID)

	const flood = 3000
	var (
		mu   sync.Mutex
		peak usage
	)
	sample := func() {
		u := procUsage(t, n.PID)
		mu.Lock()
		peak.fds, peak.rssKB = max(peak.fds, u.fds), max(peak.rssKB, u.rssKB)
		mu.Unlock()
	}
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() { // a measurement, not a synchronisation
		defer close(sampled)
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
				sample()
			}
		}
	}()
	conns := make([]net.Conn, 0, flood)
	defer func() {
		for _, cn := range conns {
			cn.Close()
		}
	}()
	dialErrs := 0
	for range flood {
		cn, err := net.DialTimeout("tcp", raftAddr, 2*time.Second)
		if err != nil {
			dialErrs++
			continue
		}
		conns = append(conns, cn)
	}
	// Every connection is in the agent's hands: let in (open, in its
	// handshake) or closed at once (refused).
	var refused float64
	eventually(t, 30*time.Second, "the agent to have taken every connection", func() (bool, string) {
		refused = listenerMetric(t, metrics, "lifeboat_listener_connections_refused_total", "raft")
		failed := listenerMetric(t, metrics, "lifeboat_listener_handshakes_failed_total", "raft")
		open := listenerMetric(t, metrics, "lifeboat_listener_connections_open", "raft")
		return refused+failed+open-openBefore >= float64(len(conns)), fmt.Sprintf("%v refused, %v handshakes failed, %v open", refused, failed, open)
	})
	sample()
	during := procUsage(t, n.PID)
	// Those let in are closed at the handshake deadline: the agent's
	// descriptors fall back.
	eventually(t, 3*connlimit.DefaultHandshakeTimeout, "the flood's connections closed by the agent", func() (bool, string) {
		failed := listenerMetric(t, metrics, "lifeboat_listener_handshakes_failed_total", "raft")
		open := listenerMetric(t, metrics, "lifeboat_listener_connections_open", "raft")
		return refused+failed >= float64(len(conns)), fmt.Sprintf("%v handshakes failed, %v open", failed, open)
	})
	close(stop)
	<-sampled
	after := procUsage(t, n.PID)
	closedByAgent := 0
	for _, cn := range conns {
		_ = cn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if _, err := cn.Read(make([]byte, 1)); err != nil {
			if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
				closedByAgent++
			}
		}
	}
	t.Logf("raft port flood with %d idle connections (%d dial errors): before %s; peak %s; with the flood held %s; after the handshake deadline %s; %v refused at once, %d of %d closed by the agent",
		flood, dialErrs, before, peak, during, after, refused, closedByAgent, len(conns))
	if limit := before.fds + connlimit.DefaultMax + 32; peak.fds > limit {
		t.Errorf("the agent held %d descriptors during the flood, over %d (before + the raft listener's cap + margin)", peak.fds, limit)
	}
	if after.fds > before.fds+32 {
		t.Errorf("the agent still holds %d descriptors after the handshake deadline, %d before", after.fds, before.fds)
	}
	if closedByAgent != len(conns) {
		t.Errorf("%d of %d flood connections still open after the handshake deadline", len(conns)-closedByAgent, len(conns))
	}
	// The cluster still works: a leader, every node alive.
	waitFor(t, c, "node1", 15*time.Second, "a leader and three alive nodes", func(st api.Status) bool {
		alive := 0
		for _, ns := range st.Nodes {
			if ns.State == "alive" {
				alive++
			}
		}
		return st.Leader != "" && alive == 3
	})
}

// Slow-loris on the API's TCP port: clients that finish TLS and then send
// their request headers one byte at a time are cut at the header timeout,
// and the API answers a normal client meanwhile.
// Figures: go test ./test/e2e -run TestAPISlowLoris -v
func TestAPISlowLoris(t *testing.T) {
	c := startCluster(t, demo.Options{})
	n := c.Node("node1")
	before := procUsage(t, n.PID)
	const loris = 200 // under the cap: the normal client must get in
	type cut struct {
		after time.Duration
		sent  int
		err   error
	}
	cuts := make(chan cut, loris)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := make(chan struct{}, loris)
	for range loris {
		go func() {
			start := time.Now()
			cn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", n.API, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // a test attacker
			if err != nil {
				started <- struct{}{}
				cuts <- cut{err: err}
				return
			}
			defer cn.Close()
			started <- struct{}{}
			closed := make(chan struct{})
			go func() {
				_, _ = cn.Read(make([]byte, 1)) // returns when the server closes
				close(closed)
			}()
			head := "GET /v1/status HTTP/1.1\r\nHost: lifeboat\r\n" + strings.Repeat("X-Slow: lorisloris\r\n", 100)
			sent := 0
			for {
				select {
				case <-closed:
					cuts <- cut{after: time.Since(start), sent: sent}
					return
				case <-ctx.Done():
					cuts <- cut{after: -1, sent: sent}
					return
				case <-time.After(100 * time.Millisecond):
				}
				if sent < len(head) {
					if _, err := cn.Write([]byte{head[sent]}); err == nil {
						sent++
					}
				}
			}
		}()
	}
	for range loris {
		<-started
	}
	during := procUsage(t, n.PID)
	// A normal client, over the same port, while they trickle.
	pinned, err := tlsid.PinnedClientConfig(c.Fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := api.NewClient("https://"+n.API, c.Token, 5*time.Second, pinned)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	var st api.Status
	if err := cl.Do(context.Background(), "GET", "/v1/status", nil, &st); err != nil {
		t.Fatalf("a normal client during the slow-loris: %v", err)
	}
	answered := time.Since(t0)
	if st.Leader == "" {
		t.Errorf("status during the slow-loris shows no leader")
	}
	var times []time.Duration
	var sent []int
	timeout := time.After(30 * time.Second)
	for range loris {
		select {
		case ct := <-cuts:
			if ct.err != nil {
				t.Errorf("a slow client could not connect: %v", ct.err)
				continue
			}
			times, sent = append(times, ct.after), append(sent, ct.sent)
		case <-timeout:
			cancel()
			t.Fatalf("only %d of %d slow clients were cut within 30 s", len(times), loris)
		}
	}
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	sort.Ints(sent)
	after := procUsage(t, n.PID)
	t.Logf("slow-loris with %d clients on the API port: before %s; with them trickling %s; after %s; a normal client answered in %s; cut after %s (first) to %s (last), having sent %d to %d header bytes",
		loris, before, during, after, answered.Round(time.Millisecond), times[0].Round(time.Millisecond), times[len(times)-1].Round(time.Millisecond), sent[0], sent[len(sent)-1])
	if times[len(times)-1] > 15*time.Second {
		t.Errorf("the last slow client was cut after %s; the header timeout is 5 s", times[len(times)-1])
	}
}
