package e2e

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/downtime"
	"github.com/lifeboat-ha/lifeboat/internal/netlab"
)

var chaosDuration = flag.Duration("chaos.duration", 2*time.Minute, "how long TestChaosOnNetwork injects faults")
var chaosSeed = flag.Uint64("chaos.seed", 0, "the seed of TestChaosOnNetwork's fault sequence (0: random)")

func skipWithoutLab(t *testing.T, err error) {
	t.Helper()
	if errors.Is(err, netlab.ErrUnavailable) {
		t.Skipf("network lab unavailable: %v", err)
	}
}

// Randomized faults on a network of namespaces: kill (with the link down),
// freeze, link down and a cut between two nodes, up to two at once, while
// a client probes the virtual IP every 10 ms. Checked from outside the
// agents: never two connected hosts holding the VIP, no answer from an old
// owner while the new one holds it, the service back within 10 s whenever
// at most one node is impaired, agreement at the end, no agent lost.
func TestChaosOnNetwork(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	rep, err := downtime.Chaos(t.Context(), downtime.ChaosOptions{Binary: binary, Duration: *chaosDuration, Seed: *chaosSeed,
		Dir: t.TempDir(), Progress: func(s string) { t.Log(s) }})
	skipWithoutLab(t, err)
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, f := range rep.Faults {
		kinds[f.Kind]++
	}
	t.Logf("seed %d: %d faults injected %v; %d requests, %d answered (%d by an old owner to requests sent before the new one answered: in flight, no violation)", rep.Seed, len(rep.Faults), kinds, rep.Requests, rep.Answered, rep.LateAnswers)
	t.Logf("recovery, every client-observed outage over 50 ms: %s", distribution(rep.OutagesMS))
	var alone []float64
	for _, f := range rep.Faults {
		if f.Owner && f.Alone && f.OutageMS > 0 {
			alone = append(alone, f.OutageMS)
		}
	}
	t.Logf("recovery after a single fault on the serving host: %s", distribution(alone))
	if len(rep.Faults) < 10 {
		t.Errorf("only %d faults injected in %s", len(rep.Faults), *chaosDuration)
	}
	for _, v := range rep.Violations {
		t.Errorf("violation (seed %d): %s", rep.Seed, v)
	}
	if len(rep.Evidence) > 0 {
		t.Logf("around the first violation:\n%s", strings.Join(rep.Evidence, "\n"))
	}
}

// distribution prints count, min, median, p90 and max.
func distribution(ms []float64) string {
	if len(ms) == 0 {
		return "none"
	}
	s := slices.Clone(ms)
	slices.Sort(s)
	at := func(q float64) float64 { return s[min(int(float64(len(s))*q), len(s)-1)] }
	return fmt.Sprintf("%d outages: min %.0f ms, median %.0f ms, p90 %.0f ms, max %.0f ms", len(s), s[0], at(0.5), at(0.9), s[len(s)-1])
}

// The downtime benchmark itself, once per fault for lifeboat's default
// profile with the ip kit and keepalived at its defaults: each row is
// measured, lifeboat never has two connected owners, and its hosts' (fake)
// watchdog resets a frozen owner.
func TestDowntimeBench(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	tools := []string{downtime.ToolLifeboat, downtime.ToolKeepalived}
	if _, err := os.Stat("/usr/sbin/keepalived"); err != nil {
		tools = tools[:1]
		t.Log("keepalived not installed (apt-get install keepalived): lifeboat only")
	}
	rows, err := downtime.Run(t.Context(), downtime.Options{Binary: binary, Runs: 1, Tools: tools, Kits: []string{downtime.KitIP},
		Profiles: []string{"default"}, StopFor: 2 * time.Second, Dir: t.TempDir(), Progress: func(s string) { t.Log(s) }})
	skipWithoutLab(t, err)
	if err != nil {
		t.Fatal(err)
	}
	if want := 3 * len(tools); len(rows) != want {
		t.Fatalf("%d rows, want %d: %+v", len(rows), want, rows)
	}
	for _, r := range rows {
		if len(r.Errors) > 0 || r.Runs != 1 {
			t.Errorf("%s/%s/%s %s not measured: %s", r.Tool, r.Profile, r.Kit, r.Fault, strings.Join(r.Errors, "; "))
			continue
		}
		if r.MedianMS <= 0 {
			t.Errorf("%s %s: outage %v ms", r.Tool, r.Fault, r.MedianMS)
		}
		if r.Tool == downtime.ToolLifeboat {
			if r.DoubleOwner != 0 {
				t.Errorf("lifeboat %s: %d instants with two connected owners", r.Fault, r.DoubleOwner)
			}
			if r.Fault == downtime.FaultStop && r.WatchdogFired != 1 {
				t.Errorf("lifeboat stop: the frozen owner's watchdog fired %d times, want once", r.WatchdogFired)
			}
		}
		t.Logf("%s/%s %s: outage %.0f ms, double owner %d", r.Tool, r.Profile, r.Fault, r.MedianMS, r.DoubleOwner)
	}
}
