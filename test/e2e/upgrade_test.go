package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/api"
	"github.com/lifeboat-ha/lifeboat/internal/config"
	"github.com/lifeboat-ha/lifeboat/internal/demo"
	"github.com/lifeboat-ha/lifeboat/internal/events"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

// prevRelease is the previous release the rolling-upgrade tests start
// from: lifeboat 0.1.0-dev, the last commit before versioned commands and
// the cluster feature level (issue 8). It is built from this repository's
// own history, so the tests need a clone with that commit (a shallow clone
// needs `git fetch --unshallow`).
const prevRelease = "43f5dec71c5fe91641f84218aaf7e26bdf6b28f9"

// Feature levels: a binary that predates feature levels counts as level 1;
// the tree under test brings level 2, which the cluster may only use once
// every voter runs a binary that supports it.
const (
	levelBefore = 1
	levelNow    = 2
)

// upgradeOutageBound is the longest a client may go unanswered during one
// step of a rolling upgrade: a switchover's hand-over (remove, commit,
// restore) takes well under a second; anything near this bound would be a
// lease expiry or worse.
const upgradeOutageBound = 5 * time.Second

var prev struct {
	once         sync.Once
	bin, version string
	err          error
}

// previousBinary builds the previous release once per test binary (only
// the tests that need it pay for it) and returns its path.
func previousBinary(t *testing.T) string {
	t.Helper()
	prev.once.Do(func() {
		start := time.Now()
		prev.bin, prev.err = buildPrevious(filepath.Dir(binary))
		if prev.err == nil {
			prev.version, prev.err = binaryVersion(prev.bin)
		}
		if prev.err == nil {
			t.Logf("built the previous release %s (version %s) in %s", prevRelease[:12], prev.version, time.Since(start).Round(100*time.Millisecond))
		}
	})
	if prev.err != nil {
		t.Fatal(prev.err)
	}
	return prev.bin
}

// buildPrevious extracts prevRelease from the repository's history with
// git archive and builds its cmd/lifeboat into dir. Modules come from the
// module cache or the proxy, so it works from an empty GOPATH and GOCACHE.
func buildPrevious(dir string) (string, error) {
	out, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		return "", fmt.Errorf("the previous release (%s) is built from this repository's git history, but the tests do not run in a git clone: %v", prevRelease, err)
	}
	root := strings.TrimSpace(string(out))
	if err := exec.Command("git", "-C", root, "cat-file", "-e", prevRelease+"^{commit}").Run(); err != nil {
		msg := fmt.Sprintf("commit %s (the previous release, 0.1.0-dev) is not in the clone at %s", prevRelease, root)
		if sh, _ := exec.Command("git", "-C", root, "rev-parse", "--is-shallow-repository").Output(); strings.TrimSpace(string(sh)) == "true" {
			return "", errors.New(msg + ": it is a shallow clone; fetch the full history with `git fetch --unshallow`")
		}
		return "", errors.New(msg + ": fetch it from the upstream repository (`git fetch origin`)")
	}
	src, err := os.MkdirTemp("", "lifeboat-prev-src-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(src)
	archive := exec.Command("git", "-C", root, "archive", prevRelease)
	untar := exec.Command("tar", "-x", "-C", src)
	var archiveErr, untarErr strings.Builder
	archive.Stderr, untar.Stderr = &archiveErr, &untarErr
	pipe, err := archive.StdoutPipe()
	if err != nil {
		return "", err
	}
	untar.Stdin = pipe
	if err := archive.Start(); err != nil {
		return "", fmt.Errorf("git archive %s: %w", prevRelease, err)
	}
	if err := untar.Run(); err != nil {
		_ = archive.Wait()
		return "", fmt.Errorf("extract %s with tar: %v: %s", prevRelease, err, untarErr.String())
	}
	if err := archive.Wait(); err != nil {
		return "", fmt.Errorf("git archive %s: %v: %s", prevRelease, err, archiveErr.String())
	}
	bin := filepath.Join(dir, "lifeboat-prev")
	build := exec.Command("go", "build", "-o", bin, "./cmd/lifeboat")
	build.Dir = src
	build.Env = append(os.Environ(), "GOFLAGS="+strings.TrimSpace(os.Getenv("GOFLAGS")+" -mod=mod"), "GOWORK=off")
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build the previous release %s: %v\n%s", prevRelease, err, out)
	}
	return bin, nil
}

// binaryVersion is what `lifeboat version --json` prints for the CLI.
func binaryVersion(bin string) (string, error) {
	out, err := exec.Command(bin, "version", "--json").Output()
	if err != nil {
		return "", fmt.Errorf("%s version: %w", bin, err)
	}
	var v struct {
		CLI string `json:"cli"`
	}
	if err := json.Unmarshal(out, &v); err != nil || v.CLI == "" {
		return "", fmt.Errorf("%s version --json: unexpected output %q (%v)", bin, out, err)
	}
	return v.CLI, nil
}

// upgradeCluster is a three-node cluster running the previous release with
// shutdown_strategy switchover and two hierarchies in service on different
// nodes: "web", the demo's HTTP service on the cluster's service address
// (first on node1), and "db", a flag file in the owner's data directory
// (first on node2).
type upgradeCluster struct {
	*demo.Cluster
	prevBin, prevVersion, newVersion string
	// runs: node -> the binary it runs now.
	runs map[string]string
}

func startUpgradeCluster(t *testing.T) *upgradeCluster {
	t.Helper()
	prevBin := previousBinary(t)
	newVersion, err := binaryVersion(binary)
	if err != nil {
		t.Fatal(err)
	}
	if newVersion == prev.version {
		t.Fatalf("the tree under test reports version %s, the same as the previous release %s: a release must say it is new", newVersion, prevRelease)
	}
	u := &upgradeCluster{prevBin: prevBin, prevVersion: prev.version, newVersion: newVersion, runs: map[string]string{}}
	bins := map[string]string{}
	for _, n := range three {
		bins[n], u.runs[n] = prevBin, prevBin
	}
	u.Cluster = startCluster(t, demo.Options{ShutdownStrategy: config.ShutdownSwitchover, Binaries: bins})
	apply(t, u.Cluster, serviceHierarchy(u.Cluster, "web", []string{"node1", "node2", "node3"}),
		flagHierarchy("db", []string{"node2", "node3", "node1"}, spec.SwitchbackIntelligent, 1, ""))
	waitFor(t, u.Cluster, "node3", 20*time.Second, "web on node1 and db on node2", func(st api.Status) bool {
		return onlineOn("web", "node1")(st) && onlineOn("db", "node2")(st)
	})
	return u
}

// serviceHierarchy runs the demo's HTTP service (which answers with its
// node's name) on the cluster's service address.
func serviceHierarchy(c *demo.Cluster, name string, nodes []string) spec.Hierarchy {
	base := fmt.Sprintf(`%s demo-app --addr %s --pidfile "$LB_DATA_DIR/%s.pid"`, binary, c.Service, name)
	one := 1
	return spec.Hierarchy{Name: name, Nodes: nodes, Switchback: spec.SwitchbackIntelligent,
		MonitorInterval: spec.Duration(500 * time.Millisecond), LocalRecovery: &one,
		Resources: []spec.Resource{{Name: name + "-app", Type: "app", Timeout: spec.Duration(10 * time.Second), Params: map[string]string{
			"restore":    base + " start",
			"remove":     base + " stop",
			"quickcheck": base + " check",
		}}}}
}

func (u *upgradeCluster) isOld(node string) bool { return u.runs[node] == u.prevBin }

func (u *upgradeCluster) mixed() bool {
	for _, n := range three {
		if u.isOld(n) {
			return true
		}
	}
	return false
}

// versions is what every node's status must show for each node.
func (u *upgradeCluster) versions() map[string]string {
	v := map[string]string{}
	for _, n := range three {
		v[n] = u.newVersion
		if u.isOld(n) {
			v[n] = u.prevVersion
		}
	}
	return v
}

// stop sends SIGTERM to node (shutdown_strategy switchover hands its
// hierarchies over first) and waits for the process to end.
func (u *upgradeCluster) stop(t *testing.T, node string) {
	t.Helper()
	if err := u.Signal(node, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := u.WaitExit(ctx, node); err != nil {
		t.Fatal(err)
	}
}

// restart starts node again on its config and data directory with bin.
func (u *upgradeCluster) restart(t *testing.T, node, bin string) {
	t.Helper()
	u.SetBinary(node, bin)
	u.runs[node] = bin
	if err := u.StartNode(node); err != nil {
		t.Fatal(err)
	}
}

func (u *upgradeCluster) waitReady(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := u.WaitReady(ctx); err != nil {
		t.Fatalf("%v%s", err, u.describe())
	}
}

// describe is every running node's view in a few words, for failures.
func (u *upgradeCluster) describe() string {
	var b strings.Builder
	for _, n := range three {
		if !u.Node(n).Running() {
			fmt.Fprintf(&b, "\n  %s: not running (exit status %d)", n, u.Node(n).ExitCode())
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		st, err := u.Status(ctx, n)
		cancel()
		if err != nil {
			fmt.Fprintf(&b, "\n  %s: %v", n, err)
			continue
		}
		fmt.Fprintf(&b, "\n  %s (%s): leader %q index %d feature_level %d supported %d lease held %v gen %d",
			n, u.runs[n], st.Leader, st.Index, st.FeatureLevel, st.SupportedLevel, st.Local.LeaseHeld, st.Local.LeaseGen)
		if st.Halted != "" {
			fmt.Fprintf(&b, " HALTED: %s", st.Halted)
		}
		for _, ns := range st.Nodes {
			fmt.Fprintf(&b, "; %s %s %s level %d gen %d lease %q", ns.Name, ns.State, ns.Version, ns.Level, ns.Gen, ns.Lease)
		}
	}
	return b.String()
}

// settle polls every node until all agree: same leader, same raft index,
// the same hierarchies (want) each online with the same owner and epoch,
// every node alive with the version it runs. It returns each node's status.
func (u *upgradeCluster) settle(t *testing.T, want []string) map[string]api.Status {
	t.Helper()
	versions := u.versions()
	deadline := time.Now().Add(20 * time.Second)
	var why string
	var last map[string]api.Status
	for {
		sts := map[string]api.Status{}
		why = ""
		for _, n := range three {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			st, err := u.Status(ctx, n)
			cancel()
			if err != nil {
				why = fmt.Sprintf("%s: %v", n, err)
				break
			}
			sts[n] = st
		}
		if why == "" {
			last = sts
			why = disagreement(sts, want, versions)
		}
		if why == "" {
			return sts
		}
		if time.Now().After(deadline) {
			var b strings.Builder
			for _, n := range three {
				st := last[n]
				fmt.Fprintf(&b, "\n  %s: leader %s index %d level %d;", n, st.Leader, st.Index, st.FeatureLevel)
				for _, h := range st.Hierarchies {
					fmt.Fprintf(&b, " %s %s on %s epoch %d;", h.Name, h.State, h.Owner, h.Epoch)
				}
				for _, ns := range st.Nodes {
					fmt.Fprintf(&b, " %s %s %s;", ns.Name, ns.State, ns.Version)
				}
			}
			t.Fatalf("nodes do not agree after 20s: %s%s", why, b.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// disagreement says how the statuses differ, "" when they agree.
func disagreement(sts map[string]api.Status, want []string, versions map[string]string) string {
	ref := sts[three[0]]
	for _, n := range three {
		st := sts[n]
		if st.Leader == "" || st.Leader != ref.Leader {
			return fmt.Sprintf("leader: %s sees %q, %s sees %q", three[0], ref.Leader, n, st.Leader)
		}
		if st.Index != ref.Index {
			return fmt.Sprintf("raft index: %s at %d, %s at %d", three[0], ref.Index, n, st.Index)
		}
		var names []string
		for _, h := range st.Hierarchies {
			names = append(names, h.Name)
		}
		if !slices.Equal(names, want) {
			return fmt.Sprintf("%s has hierarchies %v, want %v", n, names, want)
		}
		for _, name := range want {
			h, r := hier(st, name), hier(ref, name)
			if h.State != "online" || h.Owner == "" {
				return fmt.Sprintf("%s sees %s %s on %q", n, name, h.State, h.Owner)
			}
			if h.Owner != r.Owner || h.Epoch != r.Epoch {
				return fmt.Sprintf("%s: %s has it on %s epoch %d, %s on %s epoch %d", name, three[0], r.Owner, r.Epoch, n, h.Owner, h.Epoch)
			}
		}
		for _, peer := range three {
			var ns api.NodeStatus
			for _, x := range st.Nodes {
				if x.Name == peer {
					ns = x
				}
			}
			if ns.State != "alive" || ns.Version != versions[peer] {
				return fmt.Sprintf("%s sees %s %q version %q, want alive %s", n, peer, ns.State, ns.Version, versions[peer])
			}
		}
	}
	return ""
}

// checkLevels asserts the feature level every node reports: while any
// node runs the previous release the cluster stays at levelBefore (a node
// of the previous release does not know the field and reports nothing).
func (u *upgradeCluster) checkLevels(t *testing.T, sts map[string]api.Status) {
	t.Helper()
	for _, n := range three {
		st := sts[n]
		if u.isOld(n) {
			if st.FeatureLevel != 0 {
				t.Errorf("%s runs the previous release, which predates feature levels, yet reports feature_level %d", n, st.FeatureLevel)
			}
			continue
		}
		var bad []string
		if st.SupportedLevel < levelNow {
			bad = append(bad, fmt.Sprintf("supported_level %d, want at least %d", st.SupportedLevel, levelNow))
		}
		if u.mixed() && st.FeatureLevel != levelBefore {
			bad = append(bad, fmt.Sprintf("feature_level %d while a node still runs the previous release, want %d", st.FeatureLevel, levelBefore))
		}
		for _, ns := range st.Nodes {
			if u.isOld(ns.Name) && ns.Level != levelBefore {
				bad = append(bad, fmt.Sprintf("%s (previous release) at level %d, want %d", ns.Name, ns.Level, levelBefore))
			}
			if !u.isOld(ns.Name) && ns.Level < levelNow {
				bad = append(bad, fmt.Sprintf("%s (new binary) at level %d, want at least %d", ns.Name, ns.Level, levelNow))
			}
		}
		if len(bad) > 0 {
			t.Errorf("%s runs the new binary and reports %s", n, strings.Join(bad, "; "))
		}
	}
}

// waitLevel polls every node until each reports feature level want.
func (u *upgradeCluster) waitLevel(t *testing.T, want int, timeout time.Duration) bool {
	t.Helper()
	deadline := time.Now().Add(timeout)
	start := time.Now()
	for {
		seen := map[string]int{}
		ok := true
		for _, n := range three {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			st, err := u.Status(ctx, n)
			cancel()
			if err != nil || st.FeatureLevel != want {
				ok = false
			}
			seen[n] = st.FeatureLevel
		}
		if ok {
			t.Logf("feature level %d on every node %s after the last upgrade", want, time.Since(start).Round(time.Millisecond))
			return true
		}
		if time.Now().After(deadline) {
			t.Errorf("feature level not %d on every node %s after the last voter was upgraded: %v", want, timeout, seen)
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func localEvents(t *testing.T, c *demo.Cluster, node string) []events.Event {
	t.Helper()
	var resp api.EventsResponse
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Client(node).Do(ctx, "GET", "/v1/events?local=1", nil, &resp); err != nil {
		t.Fatal(err)
	}
	return resp.Events
}

// prober asks a service every 10 ms who serves it and keeps the longest
// time without an answer, and every moment two nodes served it at once.
type prober struct {
	name  string
	check func() []string // the nodes serving it right now

	mu       sync.Mutex
	lastUp   time.Time
	maxGap   time.Duration
	served   map[string]bool // nodes seen serving since the last reset
	overlaps []string
	stop     chan struct{}
	done     chan struct{}
}

func startProber(t *testing.T, name string, check func() []string) *prober {
	p := &prober{name: name, check: check, served: map[string]bool{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for {
			who := p.check()
			now := time.Now()
			p.mu.Lock()
			if len(who) > 0 {
				if !p.lastUp.IsZero() {
					p.maxGap = max(p.maxGap, now.Sub(p.lastUp))
				}
				p.lastUp = now
				for _, n := range who {
					p.served[n] = true
				}
			}
			if len(who) > 1 {
				p.overlaps = append(p.overlaps, now.Format("15:04:05.000")+" "+strings.Join(who, "+"))
			}
			p.mu.Unlock()
			select {
			case <-p.stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(p.close)
	p.waitUp(t, 20*time.Second)
	return p
}

func (p *prober) close() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.done
}

// reset starts a new step: the longest gap and who served are counted from
// now on (a gap open now counts from its start).
func (p *prober) reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.maxGap, p.served = 0, map[string]bool{}
}

// clearServed forgets who served so far.
func (p *prober) clearServed() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.served = map[string]bool{}
}

// gap returns the longest time without an answer since the last reset,
// the gap still open included.
func (p *prober) gap() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return max(p.maxGap, time.Since(p.lastUp))
}

func (p *prober) servedBy() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var ns []string
	for n := range p.served {
		ns = append(ns, n)
	}
	slices.Sort(ns)
	return ns
}

// waitUp waits for an answer given after it was called.
func (p *prober) waitUp(t *testing.T, timeout time.Duration) {
	t.Helper()
	since := time.Now()
	deadline := since.Add(timeout)
	for {
		p.mu.Lock()
		up := p.lastUp.After(since)
		last := p.lastUp
		p.mu.Unlock()
		if up {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not served for %s (last answer %s)", p.name, timeout, last.Format("15:04:05.000"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (p *prober) checkOverlaps(t *testing.T) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.overlaps) > 0 {
		t.Errorf("%s served by two nodes at once: %v", p.name, p.overlaps[:min(5, len(p.overlaps))])
	}
}

// httpProber asks the service address over a new connection each time;
// the demo service answers "lifeboat demo service on NODE".
func httpProber(t *testing.T, c *demo.Cluster) *prober {
	hc := &http.Client{Timeout: 300 * time.Millisecond, Transport: &http.Transport{DisableKeepAlives: true}}
	return startProber(t, "web (HTTP "+c.Service+")", func() []string {
		resp, err := hc.Get("http://" + c.Service + "/")
		if err != nil {
			return nil
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		_, node, ok := strings.Cut(strings.TrimSpace(string(b)), " on ")
		if resp.StatusCode != http.StatusOK || !ok {
			return nil
		}
		return []string{node}
	})
}

// flagProber looks for the flag hierarchy's resource in every node's data
// directory at once.
func flagProber(t *testing.T, c *demo.Cluster, name string) *prober {
	return startProber(t, name+" (flag file)", func() []string {
		var who []string
		for _, n := range three {
			if _, err := os.Stat(filepath.Join(c.Dir, n, name+".up")); err == nil {
				who = append(who, n)
			}
		}
		return who
	})
}

// holdings samples every node's own view of what it holds (status
// local.hierarchies[].holding) and keeps, per node and hierarchy, the
// spans it surely held it: between two consecutive samples that both say
// holding at the same epoch. Two nodes' spans for one hierarchy must never
// overlap.
type holdings struct {
	c    *demo.Cluster
	mu   sync.Mutex
	last map[string]map[string]heldSample // node -> hierarchy -> last holding sample
	// spans: hierarchy -> node -> surely held intervals
	spans map[string]map[string][][2]time.Time
	// leased: node -> lease generation -> when first seen held (its own
	// view) or freshly granted (another node's view).
	leased map[string]map[uint64]time.Time
	// levels: feature level -> the first answer (any node) that reported
	// it: when it was received and by whom.
	levels map[int]levelSeen
	stop   chan struct{}
	wg     sync.WaitGroup
}

type levelSeen struct {
	node string
	recv time.Time
}

type heldSample struct {
	epoch      uint64
	sent, recv time.Time
}

func startHoldings(t *testing.T, c *demo.Cluster) *holdings {
	h := &holdings{c: c, last: map[string]map[string]heldSample{}, spans: map[string]map[string][][2]time.Time{},
		leased: map[string]map[uint64]time.Time{}, levels: map[int]levelSeen{}, stop: make(chan struct{})}
	for _, n := range three {
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			for {
				select {
				case <-h.stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
				sent := time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
				st, err := c.Status(ctx, n)
				cancel()
				recv := time.Now()
				h.mu.Lock()
				if err != nil {
					h.last[n] = nil
					h.mu.Unlock()
					continue
				}
				prev := h.last[n]
				cur := map[string]heldSample{}
				for name, lh := range st.Local.Hierarchies {
					if !lh.Holding {
						continue
					}
					cur[name] = heldSample{epoch: lh.Epoch, sent: sent, recv: recv}
					if p, ok := prev[name]; ok && p.epoch == lh.Epoch {
						cur[name] = p // the run started at p
						if h.spans[name] == nil {
							h.spans[name] = map[string][][2]time.Time{}
						}
						spans := h.spans[name][n]
						if k := len(spans); k > 0 && spans[k-1][0].Equal(p.recv) {
							spans[k-1][1] = sent
						} else {
							spans = append(spans, [2]time.Time{p.recv, sent})
						}
						h.spans[name][n] = spans
					}
				}
				h.last[n] = cur
				if _, ok := h.levels[st.FeatureLevel]; !ok {
					h.levels[st.FeatureLevel] = levelSeen{node: n, recv: recv}
				}
				if st.Local.LeaseHeld {
					h.sawLease(n, st.Local.LeaseGen, recv)
				}
				for _, ns := range st.Nodes {
					if ns.Name != n && ns.LeaseFresh {
						h.sawLease(ns.Name, ns.Gen, recv)
					}
				}
				h.mu.Unlock()
			}
		}()
	}
	t.Cleanup(h.close)
	return h
}

func (h *holdings) close() {
	select {
	case <-h.stop:
	default:
		close(h.stop)
	}
	h.wg.Wait()
}

func (h *holdings) sawLease(node string, gen uint64, at time.Time) {
	if h.leased[node] == nil {
		h.leased[node] = map[uint64]time.Time{}
	}
	if _, ok := h.leased[node][gen]; !ok {
		h.leased[node][gen] = at
	}
}

// leasedAfter returns a lease generation above gen that node was seen
// holding (or granted), and when.
func (h *holdings) leasedAfter(node string, gen uint64) (uint64, time.Time, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for g, at := range h.leased[node] {
		if g > gen {
			return g, at, true
		}
	}
	return 0, time.Time{}, false
}

// levelBefore reports the first answer that showed feature level level
// or above and was received before t.
func (h *holdings) levelBefore(level int, t time.Time) (levelSeen, int, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for l, seen := range h.levels {
		if l >= level && seen.recv.Before(t) {
			return seen, l, true
		}
	}
	return levelSeen{}, 0, false
}

// check reports every time two nodes surely held one hierarchy at once,
// and returns which nodes held what.
func (h *holdings) check(t *testing.T) map[string][]string {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	held := map[string][]string{}
	for name, byNode := range h.spans {
		for a, as := range byNode {
			held[name] = append(held[name], a)
			for b, bs := range byNode {
				if a >= b {
					continue
				}
				for _, x := range as {
					for _, y := range bs {
						if x[0].Before(y[1]) && y[0].Before(x[1]) {
							t.Errorf("%s held by %s (%s-%s) and %s (%s-%s) at once", name,
								a, x[0].Format("15:04:05.000"), x[1].Format("15:04:05.000"),
								b, y[0].Format("15:04:05.000"), y[1].Format("15:04:05.000"))
						}
					}
				}
			}
		}
		slices.Sort(held[name])
	}
	return held
}

// TestRollingUpgrade upgrades a cluster of the previous release one node
// at a time (SIGTERM with shutdown_strategy switchover, then the new
// binary on the same config and data directory) while a client probes the
// service, and after every step checks the outage, that all nodes agree,
// that the new feature level stays off until the last voter runs the new
// binary, and that the new binary kept what the old one wrote.
func TestRollingUpgrade(t *testing.T) {
	u := startUpgradeCluster(t)
	want := []string{"db", "web"}
	web, db := httpProber(t, u.Cluster), flagProber(t, u.Cluster, "db")
	held := startHoldings(t, u.Cluster)
	sts := u.settle(t, want)
	u.checkLevels(t, sts)
	var lastStart time.Time // when the last voter started on the new binary
	t.Logf("start: all on %s; web on %s, db on %s, raft index %d", u.prevVersion, hier(sts["node1"], "web").Owner, hier(sts["node1"], "db").Owner, sts["node1"].Index)

	for i, n := range three {
		before := localEvents(t, u.Cluster, n)
		if len(before) == 0 {
			t.Fatalf("%s has no events before its upgrade", n)
		}
		web.reset()
		db.reset()
		stepStart := time.Now()
		u.stop(t, n)
		stopped := time.Since(stepStart)
		lastStart = time.Now()
		u.restart(t, n, binary)
		u.waitReady(t)
		sts := u.settle(t, want)
		web.waitUp(t, 5*time.Second)
		db.waitUp(t, 5*time.Second)
		webGap, dbGap := web.gap(), db.gap()
		t.Logf("step %d: %s upgraded to %s in %s (stopped after %s); longest gap: web %s (served by %v), db %s (on %v); web on %s epoch %d, db on %s epoch %d, raft index %d",
			i+1, n, u.newVersion, time.Since(stepStart).Round(time.Millisecond), stopped.Round(time.Millisecond),
			webGap.Round(time.Millisecond), web.servedBy(), dbGap.Round(time.Millisecond), db.servedBy(),
			hier(sts[n], "web").Owner, hier(sts[n], "web").Epoch, hier(sts[n], "db").Owner, hier(sts[n], "db").Epoch, sts[n].Index)
		for _, g := range []struct {
			p *prober
			d time.Duration
		}{{web, webGap}, {db, dbGap}} {
			if g.d > upgradeOutageBound {
				t.Errorf("step %d (%s): %s went %s without an answer, more than a switchover's (bound %s)", i+1, n, g.p.name, g.d.Round(time.Millisecond), upgradeOutageBound)
			}
		}
		// Versions are part of settle; the feature level while mixed:
		for _, x := range three {
			var vs []string
			for _, ns := range sts[x].Nodes {
				vs = append(vs, ns.Name+"="+ns.Version)
			}
			t.Logf("  %s sees %s, feature_level %d", x, strings.Join(vs, " "), sts[x].FeatureLevel)
		}
		if u.mixed() {
			u.checkLevels(t, sts)
		}

		// The new binary read the event file the previous release wrote:
		// everything the old agent showed is still there, unchanged.
		after := localEvents(t, u.Cluster, n)
		bySeq := map[uint64]events.Event{}
		for _, e := range after {
			bySeq[e.Seq] = e
		}
		for _, e := range before {
			got, ok := bySeq[e.Seq]
			if !ok || !got.Time.Equal(e.Time) || got.Action != e.Action || got.Hierarchy != e.Hierarchy || got.Phase != e.Phase {
				t.Fatalf("%s after its upgrade lost or changed event %d from before it (%+v, now %+v, found %v)", n, e.Seq, e, got, ok)
			}
		}
		// ... and talks to the agents that still run the previous release.
		var all api.EventsResponse
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := u.Client(n).Do(ctx, "GET", "/v1/events", nil, &all)
		cancel()
		if err != nil || len(all.Unreachable) > 0 {
			t.Fatalf("events through upgraded %s: %v, unreachable: %v", n, err, all.Unreachable)
		}
		from := map[string]bool{}
		for _, e := range all.Events {
			from[e.Node] = true
		}
		if len(from) != len(three) {
			t.Fatalf("events through upgraded %s come from %v only", n, from)
		}
	}
	if seen, l, ok := held.levelBefore(levelNow, lastStart); ok {
		t.Errorf("%s reported feature level %d at %s, before the last voter ran the new binary (%s)", seen.node, l, seen.recv.Format("15:04:05.000"), lastStart.Format("15:04:05.000"))
	}
	u.waitLevel(t, levelNow, 10*time.Second)
	u.checkLevels(t, u.settle(t, want))
	t.Logf("held during the upgrade by: %v", held.check(t))
	web.checkOverlaps(t)
	db.checkOverlaps(t)
}

// TestDowngradeRefused upgrades the whole cluster, then restarts one node
// on the previous release on its data directory: it must be refused
// (exit with an error, or stay up without ever holding a lease), while
// the others keep serving and no hierarchy is ever held by two nodes; the
// new binary started again on that data directory rejoins.
func TestDowngradeRefused(t *testing.T) {
	u := startUpgradeCluster(t)
	want := []string{"db", "web"}
	web, db := httpProber(t, u.Cluster), flagProber(t, u.Cluster, "db")
	start := time.Now()
	for _, n := range three {
		u.stop(t, n)
		u.restart(t, n, binary)
		u.waitReady(t)
	}
	sts := u.settle(t, want)
	t.Logf("whole cluster upgraded in %s", time.Since(start).Round(time.Millisecond))
	u.waitLevel(t, levelNow, 10*time.Second)

	// Downgrade web's owner: its hand-over is part of the window watched.
	held := startHoldings(t, u.Cluster)
	victim := hier(sts["node1"], "web").Owner
	other := three[0]
	if other == victim {
		other = three[1]
	}
	web.reset()
	db.reset()
	u.stop(t, victim)
	web.clearServed() // from here on, the victim must serve nothing
	db.clearServed()
	// The generation of the lease it held before: a join would bring a
	// higher one.
	var gen uint64
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	st, err := u.Status(ctx, other)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range st.Nodes {
		if ns.Name == victim {
			gen = ns.Gen
		}
	}
	logStart := int64(0)
	if fi, err := os.Stat(u.Node(victim).Log); err == nil {
		logStart = fi.Size()
	}
	u.restart(t, victim, u.prevBin)
	started := time.Now()

	// Watch it for a while: it must exit with an error, or stay up
	// without a lease (neither its own view nor any other node's).
	var outcome string
	for outcome == "" {
		if g, at, ok := held.leasedAfter(victim, gen); ok {
			t.Errorf("the previous release on %s joined the cluster at feature level %d: lease generation %d (was %d) at %s, %s after its start",
				victim, levelNow, g, gen, at.Format("15:04:05.000"), at.Sub(started).Round(time.Millisecond))
			outcome = "joined"
			break
		}
		n := u.Node(victim)
		switch {
		case !n.Running():
			if code := n.ExitCode(); code == 0 {
				t.Errorf("the previous release on %s exited with status 0; a refusal is an error", victim)
			}
			outcome = fmt.Sprintf("exited with status %d after %s", n.ExitCode(), time.Since(started).Round(time.Millisecond))
		case time.Since(started) > 8*time.Second:
			outcome = "stayed up 8s without a lease"
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("downgrade of %s to %s: %s", victim, u.prevVersion, outcome)
	if b, err := os.ReadFile(u.Node(victim).Log); err == nil && int64(len(b)) >= logStart {
		// What the previous release said: its errors and how it ended.
		var said []string
		for _, l := range strings.Split(strings.TrimSpace(string(b[logStart:])), "\n") {
			if strings.Contains(l, "level=ERROR") || strings.HasPrefix(l, "panic:") || strings.HasPrefix(l, "Error:") || strings.HasPrefix(l, "error:") {
				said = append(said, l)
			}
		}
		t.Logf("errors in %s's log since the downgrade:\n%s", victim, strings.Join(said[max(0, len(said)-6):], "\n"))
	}
	for _, n := range three {
		if n == victim {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		st, err := u.Status(ctx, n)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if st.FeatureLevel != levelNow {
			t.Errorf("%s reports feature_level %d after the downgrade attempt, want %d (a level never falls)", n, st.FeatureLevel, levelNow)
		}
		for _, name := range want {
			if h := hier(st, name); h.Owner == victim || h.State != "online" {
				t.Errorf("%s sees %s %s on %s during the downgrade attempt", n, name, h.State, h.Owner)
			}
		}
	}
	if u.Node(victim).Running() {
		u.stop(t, victim)
	}
	if slices.Contains(web.servedBy(), victim) || slices.Contains(db.servedBy(), victim) {
		t.Errorf("the downgraded %s served: web by %v, db on %v", victim, web.servedBy(), db.servedBy())
	}

	// The new binary on the same data directory rejoins.
	u.restart(t, victim, binary)
	u.waitReady(t)
	u.settle(t, want)
	u.waitLevel(t, levelNow, 10*time.Second)
	web.waitUp(t, 5*time.Second)
	db.waitUp(t, 5*time.Second)
	holders := held.check(t)
	t.Logf("downgrade window: longest gap web %s, db %s; held by: %v", web.gap().Round(time.Millisecond), db.gap().Round(time.Millisecond), holders)
	for _, p := range []*prober{web, db} {
		if g := p.gap(); g > upgradeOutageBound {
			t.Errorf("%s went %s without an answer during the downgrade attempt (bound %s)", p.name, g.Round(time.Millisecond), upgradeOutageBound)
		}
		p.checkOverlaps(t)
	}
}
