package config

import (
	"strings"
	"testing"
)

// The readiness budget: 60 AWS calls a minute by default, 20 per interval
// for a short interval, what is configured otherwise, and a clear error
// outside its bounds.
func TestReadinessCallsPerMinute(t *testing.T) {
	in := `node: a
data_dir: /d
cluster:
  key: aGVsbG8gd29ybGQgMTIzNA==
  nodes:
    - {name: a, raft: "a.example:1", gossip: "a.example:2", api: "a.example:3"}
`
	for _, tc := range []struct {
		extra string
		want  int
		err   string
	}{
		{"", 60, ""},
		{"readiness_interval: 10s\n", 120, ""},
		{"readiness_interval: 1s\n", 1200, ""},
		{"readiness_interval: 1s\naws: {readiness_calls_per_minute: 30}\n", 30, ""},
		{"aws: {readiness_calls_per_minute: 5}\n", 0, "aws.readiness_calls_per_minute: must be between 10 and 6000 AWS calls a minute (default 60)"},
		{"aws: {readiness_calls_per_minute: 100000}\n", 0, "must be between 10 and 6000"},
	} {
		a, err := ParseAgent("/x/agent.yaml", []byte(in+tc.extra))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want %q", tc.extra, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.extra, err)
			continue
		}
		if got := a.AWS.ReadinessCallsPerMinute; got != tc.want {
			t.Errorf("%q: budget %d, want %d", tc.extra, got, tc.want)
		}
	}
}
