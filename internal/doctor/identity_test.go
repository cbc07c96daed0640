package doctor

import (
	"strings"
	"testing"
	"time"
)

func TestNodeCertificateExpiry(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	for _, tc := range []struct {
		name     string
		notAfter time.Time
		sev      string
		phrase   string
	}{
		{"no certificate (derived identity)", time.Time{}, "", ""},
		{"a year left", now.Add(365 * day), "", ""},
		{"20 days left", now.Add(20*day + time.Hour), Warning, "expires in 20 days"},
		{"3 days left", now.Add(3 * day), Critical, "expires in 72h0m0s"},
		{"expired", now.Add(-time.Hour), Critical, "expired at 2026-03-01T11:00:00Z"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := &Env{Node: "n1", CertNotAfter: tc.notAfter, Now: func() time.Time { return now }}
			fs := findings(t, env, "node-certificate")
			if tc.sev == "" {
				if len(fs) != 0 {
					t.Fatalf("unexpected findings %+v", fs)
				}
				return
			}
			if len(fs) != 1 || fs[0].Severity != tc.sev || !strings.Contains(fs[0].Seen, tc.phrase) || !strings.Contains(fs[0].Fix, "lifeboat node cert n1") {
				t.Fatalf("findings %+v, want %s %q", fs, tc.sev, tc.phrase)
			}
		})
	}
}
