package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/google/pprof/profile"
)

func TestComponent(t *testing.T) {
	for _, c := range []struct {
		want   string
		frames []string // innermost first
	}{
		{"leases", []string{"encoding/binary.Read", lb + "internal/cluster.DecodeRenewFrame", lb + "internal/agent.(*rpc).serveLeases", "runtime.goexit"}},
		{"leases", []string{"runtime.selectgo", lb + "internal/cluster.(*Leases).Run", "runtime.goexit"}},
		{"leases", []string{"crypto/tls.(*Conn).Write", lb + "internal/agent.(*streamConn).send", lb + "internal/agent.(*leaseStream).sendOn"}},
		{"raft", []string{"crypto/tls.(*Conn).Write", lb + "internal/cluster.(*quietPipeline).keepalive", lb + "internal/cluster.(*paceTransport).keepalives", "runtime.goexit"}},
		{"raft", []string{"runtime.selectgo", "github.com/hashicorp/raft.(*Raft).leaderLoop", "github.com/hashicorp/raft.(*Raft).run", "runtime.goexit"}},
		{"memberlist", []string{"net.(*UDPConn).ReadFrom", "github.com/hashicorp/memberlist.(*NetTransport).udpListen", "runtime.goexit"}},
		{"commands (fork, exec, wait)", []string{"syscall.forkExec", "os.StartProcess", "os/exec.(*Cmd).Start", lb + "internal/timerslack.Start", lb + "internal/kit/app.(*instance).run", lb + "internal/engine.(*worker).run"}},
		{"engine and kits", []string{"runtime.mallocgc", lb + "internal/engine.(*worker).run", "runtime.goexit"}},
		{"agent and API", []string{"encoding/json.Marshal", lb + "internal/agent.(*Agent).handleStatus", "net/http.HandlerFunc.ServeHTTP", "net/http.(*conn).serve"}},
		{"TLS", []string{"crypto/internal/fips140/aes/gcm.(*GCMWithXORCounterNonce).Seal", "crypto/tls.(*Conn).Write", "net/http.(*persistConn).writeLoop"}},
		{"HTTP", []string{"bufio.(*Reader).Peek", "net/http.(*conn).serve", "runtime.goexit"}},
		{"Go runtime: monitor thread (sysmon)", []string{"runtime.usleep", "runtime.sysmon", "runtime.mstart1", "runtime.mstart0", "runtime.mstart"}},
		{"Go runtime: scheduler (sleeping, waking)", []string{"runtime.futex", "runtime.notesleep", "runtime.stopm", "runtime.findRunnable", "runtime.schedule", "runtime.park_m", "runtime.mcall"}},
		{"Go runtime: GC", []string{"runtime.scanobject", "runtime.gcDrain", "runtime.gcBgMarkWorker.func2", "runtime.gcBgMarkWorker"}},
		{"Go runtime: other", []string{"runtime.(*timers).run", "runtime.checkTimers"}},
		{"other", []string{"syscall.Syscall6"}},
	} {
		if got := component(c.frames); got != c.want {
			t.Errorf("component(%s) = %q, want %q", strings.Join(c.frames, " < "), got, c.want)
		}
	}
}

// A profile as Go writes it, parsed back: the shares are the samples'
// CPU, not their count, and add up to 100.
func TestSplitProfile(t *testing.T) {
	fn := func(id uint64, name string) *profile.Function { return &profile.Function{ID: id, Name: name} }
	loc := func(id uint64, f *profile.Function) *profile.Location {
		return &profile.Location{ID: id, Line: []profile.Line{{Function: f}}}
	}
	fRaft, fSysmon, fUsleep := fn(1, "github.com/hashicorp/raft.(*Raft).run"), fn(2, "runtime.sysmon"), fn(3, "runtime.usleep")
	lRaft, lSysmon, lUsleep := loc(1, fRaft), loc(2, fSysmon), loc(3, fUsleep)
	ms := int64(time.Millisecond)
	p := &profile.Profile{
		SampleType: []*profile.ValueType{{Type: "samples", Unit: "count"}, {Type: "cpu", Unit: "nanoseconds"}},
		Function:   []*profile.Function{fRaft, fSysmon, fUsleep},
		Location:   []*profile.Location{lRaft, lSysmon, lUsleep},
		Sample: []*profile.Sample{
			{Location: []*profile.Location{lRaft}, Value: []int64{3, 30 * ms}},
			{Location: []*profile.Location{lUsleep, lSysmon}, Value: []int64{1, 10 * ms}},
		},
		PeriodType: &profile.ValueType{Type: "cpu", Unit: "nanoseconds"}, Period: 10 * ms,
	}
	var buf bytes.Buffer
	if err := p.Write(&buf); err != nil {
		t.Fatal(err)
	}
	parsed, err := profile.Parse(&buf)
	if err != nil {
		t.Fatal(err)
	}
	f := splitProfile(parsed)
	if f.Samples != 4 || f.CPUMS != 40 || len(f.Components) != 2 ||
		f.Components[0] != (componentShare{"raft", 75}) || f.Components[1] != (componentShare{"Go runtime: monitor thread (sysmon)", 25}) {
		t.Errorf("splitProfile = %+v", f)
	}
	line := componentsLine(f, 20*time.Second)
	if !strings.Contains(line, "4 samples (40 ms): raft 75%, Go runtime: monitor thread (sysmon) 25%") {
		t.Errorf("componentsLine = %q", line)
	}
}
