package sim

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDefaultWorld(t *testing.T) {
	w := DefaultWorld([]string{"a", "b", "c"})
	st := w.State()
	if len(st.Instances) != 3 || len(st.NetworkInterfaces) != 3 || len(st.Subnets) != 3 || len(st.Roles) != 3 || len(st.Addresses) != 1 {
		t.Fatalf("state: %+v", st)
	}
	if st.Instances[0].ID != "i-00000000000000001" || st.NetworkInterfaces[2].ID != "eni-00000000000000003" ||
		st.RouteTables[0].ID != "rtb-00000000000000001" || st.Addresses[0].AllocationID != "eipalloc-00000000000000001" {
		t.Fatalf("ids not deterministic: %s %s %s %s", st.Instances[0].ID, st.NetworkInterfaces[2].ID, st.RouteTables[0].ID, st.Addresses[0].AllocationID)
	}
	if st.Instances[1].PrivateIP != "10.0.2.10" || st.Instances[1].Role != "lifeboat-b" || st.Instances[2].AvailabilityZone != "us-east-1c" {
		t.Fatalf("instance: %+v", st.Instances[1])
	}
	if st.Addresses[0].AssociationID != "" || st.Addresses[0].PublicIP != "198.51.100.1" {
		t.Fatalf("address: %+v", st.Addresses[0])
	}
	if !*st.NetworkInterfaces[0].SourceDestCheck {
		t.Fatal("source/dest check should default to true")
	}
	if akid, secret := w.AdminCredentials(); akid != AdminAccessKeyID || secret != AdminSecretAccessKey {
		t.Fatal("admin credentials")
	}
	if _, ok := w.RolePolicies("lifeboat-a")[PlaceholderPolicyName]; !ok {
		t.Fatal("placeholder policy missing")
	}
	// Same nodes, same world (but for launch times).
	a, _ := json.Marshal(DefaultWorld([]string{"x"}).State().RouteTables)
	b, _ := json.Marshal(DefaultWorld([]string{"x"}).State().RouteTables)
	if string(a) != string(b) {
		t.Fatal("DefaultWorld not deterministic")
	}
}

func TestLoadWorldRoundTrip(t *testing.T) {
	w := DefaultWorld([]string{"n1", "n2"})
	w.IssueRoleCredentials("lifeboat-n1", time.Hour)
	data, err := json.MarshalIndent(w, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "world.json")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	back, err := LoadWorld(path)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := json.MarshalIndent(back, "", "  ")
	if string(again) != string(data) {
		t.Fatalf("round trip differs:\n%s\n---\n%s", data, again)
	}
	// New ids continue past the loaded ones.
	id, err := back.AddNetworkInterface("i-00000000000000001")
	if err != nil || id != "eni-00000000000000003" {
		t.Fatalf("AddNetworkInterface: %s %v", id, err)
	}
}

func TestLoadWorldErrors(t *testing.T) {
	good := func() map[string]any {
		var m map[string]any
		data, _ := json.Marshal(DefaultWorld([]string{"n1"}))
		_ = json.Unmarshal(data, &m)
		return m
	}
	cases := []struct {
		name   string
		mutate func(m map[string]any)
		want   string
	}{
		{"unknown field", func(m map[string]any) { m["colour"] = "blue" }, `unknown field "colour"`},
		{"unknown nested field", func(m map[string]any) {
			m["instances"].([]any)[0].(map[string]any)["ram"] = 4
		}, `unknown field "ram"`},
		{"bad subnet", func(m map[string]any) {
			m["instances"].([]any)[0].(map[string]any)["subnetId"] = "subnet-x"
		}, `instances[0].subnetId: unknown subnet "subnet-x"`},
		{"bad role", func(m map[string]any) {
			m["instances"].([]any)[0].(map[string]any)["role"] = "nobody"
		}, `instances[0].role: unknown role "nobody"`},
		{"bad policy", func(m map[string]any) {
			m["roles"].([]any)[0].(map[string]any)["policies"] = map[string]any{"p": map[string]any{"Statement": []any{map[string]any{"Effect": "Permit", "Action": "*", "Resource": "*"}}}}
		}, `roles[0].policies.p: policy:`},
		{"bad cidr", func(m map[string]any) {
			rt := m["routeTables"].([]any)[0].(map[string]any)
			rt["routes"].([]any)[0].(map[string]any)["destinationCidrBlock"] = "10.0.0.1/16"
		}, `routeTables[0].routes[0].destinationCidrBlock`},
		{"wrong type", func(m map[string]any) { m["vpcs"] = "none" }, `vpcs`},
		{"credential principal", func(m map[string]any) {
			m["credentials"].([]any)[0].(map[string]any)["role"] = "lifeboat-n1"
		}, `credentials[0]: exactly one of role and user`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := good()
			tc.mutate(m)
			data, _ := json.Marshal(m)
			path := filepath.Join(t.TempDir(), "w.json")
			_ = os.WriteFile(path, data, 0o600)
			_, err := LoadWorld(path)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("error %v, want it to name %s and %q", err, path, tc.want)
			}
		})
	}
	// A policy given as a string is accepted.
	m := good()
	m["roles"].([]any)[0].(map[string]any)["policies"] = map[string]any{"p": `{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ec2:*","Resource":"*"}}`}
	data, _ := json.Marshal(m)
	if _, err := ParseWorld(data); err != nil {
		t.Fatalf("string policy: %v", err)
	}
}
