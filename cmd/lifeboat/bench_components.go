package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/pprof/profile"

	"github.com/lifeboat-ha/lifeboat/internal/demo"
)

// componentShare is one component's share of a node's profiled CPU.
type componentShare struct {
	Name    string  `json:"name"`
	Percent float64 `json:"percent"`
}

// componentFigures is a node's CPU profile over the components window.
type componentFigures struct {
	Samples    int              `json:"samples"`
	CPUMS      float64          `json:"cpu_ms"`
	Components []componentShare `json:"components,omitempty"`
	Error      string           `json:"error,omitempty"`
}

// idleComponents takes a CPU profile of every agent at once over d (Go's
// profiler through the agent's socket) and splits each by component. It
// runs after the CPU window, not during it: the profiler's own reader wakes
// the process ten times a second, which would show in the CPU figure.
func idleComponents(ctx context.Context, c *demo.Cluster, d time.Duration) map[string]componentFigures {
	secs := max(1, int(d.Round(time.Second)/time.Second))
	out := map[string]componentFigures{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, n := range c.Nodes {
		wg.Go(func() {
			fig := componentFigures{}
			p, err := fetchProfile(ctx, n.Socket, secs)
			if err != nil {
				fig.Error = err.Error()
			} else {
				fig = splitProfile(p)
			}
			mu.Lock()
			out[n.Name] = fig
			mu.Unlock()
		})
	}
	wg.Wait()
	return out
}

func fetchProfile(ctx context.Context, socket string, secs int) (*profile.Profile, error) {
	cl := &http.Client{Timeout: time.Duration(secs)*time.Second + 30*time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", socket)
		}}}
	req, err := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("http://lifeboat/debug/pprof/profile?seconds=%d", secs), nil)
	if err != nil {
		return nil, err
	}
	resp, err := cl.Do(req)
	if err != nil {
		return nil, fmt.Errorf("CPU profile from %s: %w", socket, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("CPU profile from %s: %s", socket, resp.Status)
	}
	p, err := profile.Parse(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("CPU profile from %s: %w", socket, err)
	}
	return p, nil
}

// splitProfile sums a CPU profile's samples by component.
func splitProfile(p *profile.Profile) componentFigures {
	cpu := -1 // the "cpu" (nanoseconds) sample value
	for i, st := range p.SampleType {
		if st.Type == "cpu" {
			cpu = i
		}
	}
	var fig componentFigures
	if cpu < 0 {
		fig.Error = "the profile has no cpu samples"
		return fig
	}
	by := map[string]int64{}
	var total int64
	for _, s := range p.Sample {
		var frames []string
		for _, loc := range s.Location {
			for _, l := range loc.Line {
				if l.Function != nil {
					frames = append(frames, l.Function.Name)
				}
			}
		}
		v := s.Value[cpu]
		by[component(frames)] += v
		total += v
		fig.Samples += int(s.Value[0])
	}
	fig.CPUMS = float64(total) / 1e6
	for name, v := range by {
		if total > 0 {
			fig.Components = append(fig.Components, componentShare{Name: name, Percent: float64(v) / float64(total) * 100})
		}
	}
	sort.Slice(fig.Components, func(i, j int) bool {
		a, b := fig.Components[i], fig.Components[j]
		return a.Percent > b.Percent || a.Percent == b.Percent && a.Name < b.Name
	})
	return fig
}

const lb = "github.com/lifeboat-ha/lifeboat/"

// component names the part of the agent a sample's stack (innermost frame
// first) was working for: the innermost frame of lifeboat's or its
// cluster libraries' code decides; a stack with none is the runtime's or a
// library's own (the scheduler, the garbage collector, TLS, HTTP).
func component(frames []string) string {
	for _, f := range frames {
		switch {
		case strings.HasPrefix(f, "os/exec.") || strings.HasPrefix(f, "os.StartProcess") || strings.HasPrefix(f, "os.(*Process)") || strings.HasPrefix(f, lb+"internal/timerslack.Start"):
			return "commands (fork, exec, wait)"
		case strings.HasPrefix(f, lb+"internal/cluster.") && containsAny(f, "(*Leases)", "leaseCluster", "LeaseFrame", "RenewFrame", "AnswerFrame", "roundClock", "NewLeases"),
			strings.HasPrefix(f, lb+"internal/agent.") && containsAny(f, "leaseStream", "LeaseStream", "streamConn"):
			return "leases"
		case strings.HasPrefix(f, "github.com/hashicorp/raft"),
			strings.HasPrefix(f, lb+"internal/cluster.") && (strings.Contains(f, "paceTransport") || strings.Contains(f, "quietPipeline") || strings.Contains(f, "raft") || strings.Contains(f, "FSM")):
			return "raft"
		case strings.HasPrefix(f, "github.com/hashicorp/memberlist"),
			strings.HasPrefix(f, lb+"internal/cluster.") && (strings.Contains(f, "elegate") || strings.Contains(f, "ember")):
			return "memberlist"
		case strings.HasPrefix(f, lb+"internal/cluster."):
			return "cluster"
		case strings.HasPrefix(f, lb+"internal/engine.") || strings.HasPrefix(f, lb+"internal/kit"):
			return "engine and kits"
		case strings.HasPrefix(f, lb+"internal/procs."):
			return "procs governor"
		case strings.HasPrefix(f, lb):
			return "agent and API"
		}
	}
	has := func(prefixes ...string) bool {
		for _, f := range frames {
			for _, p := range prefixes {
				if strings.HasPrefix(f, p) {
					return true
				}
			}
		}
		return false
	}
	switch {
	case has("crypto/"):
		return "TLS"
	case has("net/http."):
		return "HTTP"
	case has("runtime.gcBgMarkWorker", "runtime.gcDrain", "runtime.bgsweep", "runtime.bgscavenge", "runtime.gcStart", "runtime.forEachP", "runtime.gcMarkDone"):
		return "Go runtime: GC"
	case has("runtime.sysmon"):
		return "Go runtime: monitor thread (sysmon)"
	case has("runtime.mcall", "runtime.schedule", "runtime.findRunnable", "runtime.mstart", "runtime.park_m", "runtime.goexit0", "runtime.stopm"):
		return "Go runtime: scheduler (sleeping, waking)"
	case has("runtime."):
		return "Go runtime: other"
	}
	return "other"
}

func containsAny(s string, subs ...string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// componentsLine is the one-line summary of a node's components.
func componentsLine(f componentFigures, d time.Duration) string {
	if f.Error != "" {
		return "unavailable: " + f.Error
	}
	if len(f.Components) == 0 {
		return fmt.Sprintf("no CPU sampled over the next %s", d)
	}
	parts := make([]string, 0, len(f.Components))
	for _, c := range f.Components {
		parts = append(parts, fmt.Sprintf("%s %.0f%%", c.Name, c.Percent))
	}
	return fmt.Sprintf("CPU profile over the next %s, %d samples (%.0f ms): %s", d, f.Samples, f.CPUMS, strings.Join(parts, ", "))
}
