package api_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/api"
)

// TestReadinessWireForm pins the JSON of a node's readiness in
// GET /v1/status: the form earlier versions served and parse (At in
// RFC 3339, to the second).
func TestReadinessWireForm(t *testing.T) {
	at := time.Date(2026, 12, 2, 15, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		rd   api.Readiness
		want string
	}{
		{api.Readiness{Ready: true, At: at}, `{"ready":true,"at":"2026-12-02T15:04:05Z"}`},
		{api.Readiness{Missing: []string{"ec2:CreateRoute"}, Reason: "r: lacks it", At: at},
			`{"ready":false,"missing":["ec2:CreateRoute"],"reason":"r: lacks it","at":"2026-12-02T15:04:05Z"}`},
		{api.Readiness{}, `{"ready":false,"at":"0001-01-01T00:00:00Z"}`},
	} {
		b, err := json.Marshal(tc.rd)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != tc.want {
			t.Errorf("got  %s\nwant %s", b, tc.want)
		}
		var back api.Readiness
		if err := json.Unmarshal([]byte(tc.want), &back); err != nil || !back.At.Equal(tc.rd.At) {
			t.Errorf("decode %s: %+v, %v", tc.want, back, err)
		}
	}
}
