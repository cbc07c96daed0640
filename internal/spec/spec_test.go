package spec

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

func res(name string, deps ...string) Resource {
	return Resource{Name: name, Type: "app", DependsOn: deps}
}

func names(rs []Resource) []string {
	out := make([]string, 0, len(rs))
	for _, r := range rs {
		out = append(out, r.Name)
	}
	return out
}

func intp(n int) *int { return &n }

func TestRestoreOrder(t *testing.T) {
	tests := []struct {
		name      string
		resources []Resource
		restore   []string
	}{
		{
			name:      "single",
			resources: []Resource{res("a")},
			restore:   []string{"a"},
		},
		{
			name:      "independent resources keep spec order",
			resources: []Resource{res("z"), res("a"), res("m")},
			restore:   []string{"z", "a", "m"},
		},
		{
			name:      "chain listed parent first",
			resources: []Resource{res("a", "b"), res("b", "c"), res("c")},
			restore:   []string{"c", "b", "a"},
		},
		{
			name:      "chain listed child first",
			resources: []Resource{res("c"), res("b", "c"), res("a", "b")},
			restore:   []string{"c", "b", "a"},
		},
		{
			// a depends on b and c, both depend on d.
			name:      "diamond",
			resources: []Resource{res("a", "b", "c"), res("b", "d"), res("c", "d"), res("d")},
			restore:   []string{"d", "b", "c", "a"},
		},
		{
			name:      "diamond ties follow spec order of siblings",
			resources: []Resource{res("a", "b", "c"), res("c", "d"), res("b", "d"), res("d")},
			restore:   []string{"d", "b", "c", "a"},
		},
		{
			name:      "diamond listed children first",
			resources: []Resource{res("d"), res("c", "d"), res("b", "d"), res("a", "b", "c")},
			restore:   []string{"d", "c", "b", "a"},
		},
		{
			name:      "duplicate dependency edge",
			resources: []Resource{res("a", "b", "b"), res("b")},
			restore:   []string{"b", "a"},
		},
		{
			name:      "empty",
			resources: nil,
			restore:   []string{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := Hierarchy{Name: "h", Nodes: []string{"n1"}, Resources: tt.resources}
			got, err := h.RestoreOrder()
			if err != nil {
				t.Fatalf("RestoreOrder: %v", err)
			}
			if g := names(got); !reflect.DeepEqual(g, tt.restore) {
				t.Fatalf("RestoreOrder = %v, want %v", g, tt.restore)
			}
			checkTopological(t, tt.resources, got)

			rm, err := h.RemoveOrder()
			if err != nil {
				t.Fatalf("RemoveOrder: %v", err)
			}
			want := make([]string, len(tt.restore))
			for i, n := range tt.restore {
				want[len(want)-1-i] = n
			}
			if g := names(rm); !reflect.DeepEqual(g, want) {
				t.Fatalf("RemoveOrder = %v, want %v", g, want)
			}
			// RemoveOrder must not reorder the spec itself.
			if g := names(h.Resources); !reflect.DeepEqual(g, names(tt.resources)) {
				t.Fatalf("RemoveOrder modified the spec: %v", g)
			}
		})
	}
}

func TestRestoreOrderIsDeterministic(t *testing.T) {
	h := Hierarchy{Name: "h", Nodes: []string{"n1"}, Resources: []Resource{
		res("web", "db", "ip", "fs"), res("db", "fs", "ip"), res("fs", "disk"), res("disk"), res("ip"), res("mon"),
	}}
	first, err := h.RestoreOrder()
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 50; i++ {
		again, err := h.RestoreOrder()
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(names(first), names(again)) {
			t.Fatalf("run %d: %v != %v", i, names(again), names(first))
		}
	}
	checkTopological(t, h.Resources, first)
}

func TestRestoreOrderCycle(t *testing.T) {
	tests := []struct {
		name      string
		resources []Resource
		members   []string
		notIn     []string
		validate  string // the single problem Validate reports
	}{
		{
			name:      "self",
			resources: []Resource{res("a", "a")},
			members:   []string{"a"},
			validate:  "depends on itself",
		},
		{
			name:      "two",
			resources: []Resource{res("a", "b"), res("b", "a")},
			members:   []string{"a", "b"},
			validate:  "dependency cycle",
		},
		{
			name:      "three with a tail outside the cycle",
			resources: []Resource{res("top", "x"), res("x", "y"), res("y", "z"), res("z", "x"), res("free")},
			members:   []string{"x", "y", "z"},
			notIn:     []string{"top", "free"},
			validate:  "dependency cycle",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := Hierarchy{Name: "h", Nodes: []string{"n1"}, Resources: tt.resources}
			got, err := h.RestoreOrder()
			if err == nil {
				t.Fatalf("RestoreOrder = %v, want a cycle error", names(got))
			}
			msg := err.Error()
			if !strings.Contains(msg, "cycle") {
				t.Fatalf("error %q does not mention a cycle", msg)
			}
			path := cyclePath(t, msg)
			checkCycle(t, tt.resources, path)
			for _, m := range tt.members {
				if !contains(path, m) {
					t.Errorf("cycle %v does not name %q", path, m)
				}
			}
			for _, m := range tt.notIn {
				if contains(path, m) {
					t.Errorf("cycle %v names %q, which is not on the cycle", path, m)
				}
			}
			if _, err := h.RemoveOrder(); err == nil {
				t.Fatal("RemoveOrder accepted a cycle")
			}
			// Validate reports the cycle when nothing else is wrong.
			ps := h.Validate(nil)
			if len(ps) != 1 || !strings.Contains(ps[0].Message, tt.validate) {
				t.Fatalf("Validate = %v, want exactly one problem with %q", ps, tt.validate)
			}
		})
	}
}

func TestRestoreOrderUnknownDependency(t *testing.T) {
	h := Hierarchy{Name: "h", Resources: []Resource{res("a", "ghost")}}
	if _, err := h.RestoreOrder(); err == nil || !strings.Contains(err.Error(), "ghost") {
		t.Fatalf("RestoreOrder error = %v, want one naming the unknown resource", err)
	}
}

// cyclePath extracts "a -> b -> a" from a cycle error.
func cyclePath(t *testing.T, msg string) []string {
	t.Helper()
	i := strings.Index(msg, ":")
	if i < 0 {
		t.Fatalf("cannot find the cycle in %q", msg)
	}
	parts := strings.Split(strings.TrimSpace(msg[i+1:]), " -> ")
	if len(parts) < 2 || parts[0] != parts[len(parts)-1] {
		t.Fatalf("cycle %q does not start and end at the same resource", msg)
	}
	return parts
}

// checkCycle verifies every consecutive pair in path is a depends_on edge.
func checkCycle(t *testing.T, rs []Resource, path []string) {
	t.Helper()
	deps := map[string][]string{}
	for _, r := range rs {
		deps[r.Name] = r.DependsOn
	}
	for i := 0; i+1 < len(path); i++ {
		if !contains(deps[path[i]], path[i+1]) {
			t.Fatalf("cycle %v: %s does not depend on %s", path, path[i], path[i+1])
		}
	}
}

// checkTopological verifies got is a permutation of rs in which every
// resource comes after its dependencies.
func checkTopological(t *testing.T, rs, got []Resource) {
	t.Helper()
	if len(got) != len(rs) {
		t.Fatalf("order has %d resources, spec %d", len(got), len(rs))
	}
	pos := map[string]int{}
	for i, r := range got {
		if _, dup := pos[r.Name]; dup {
			t.Fatalf("%q appears twice in %v", r.Name, names(got))
		}
		pos[r.Name] = i
	}
	for _, r := range rs {
		p, ok := pos[r.Name]
		if !ok {
			t.Fatalf("%q missing from %v", r.Name, names(got))
		}
		for _, d := range r.DependsOn {
			if pos[d] >= p {
				t.Fatalf("%q restored before its dependency %q: %v", r.Name, d, names(got))
			}
		}
	}
}

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

func validHierarchy() Hierarchy {
	return Hierarchy{
		Name:      "web",
		Nodes:     []string{"n1", "n2"},
		Resources: []Resource{res("ip"), res("app", "ip")},
	}
}

func TestValidateValid(t *testing.T) {
	h := validHierarchy()
	if ps := h.Validate(nil); len(ps) != 0 {
		t.Fatalf("Validate = %v, want none", ps)
	}
	h.Switchback = SwitchbackAutomatic
	h.LocalRecovery = intp(0)
	h.MonitorInterval = Duration(10 * time.Millisecond)
	if ps := h.Validate(func(s string) bool { return s == "app" }); len(ps) != 0 {
		t.Fatalf("Validate = %v, want none", ps)
	}
}

func TestValidateSingleProblems(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(h *Hierarchy)
		known  func(string) bool
		field  string
		msg    string
	}{
		{"bad hierarchy name", func(h *Hierarchy) { h.Name = "a b" }, nil, "name", "not a valid name"},
		{"empty hierarchy name", func(h *Hierarchy) { h.Name = "" }, nil, "name", "not a valid name"},
		{"long hierarchy name", func(h *Hierarchy) { h.Name = strings.Repeat("x", 64) }, nil, "name", "not a valid name"},
		{"no nodes", func(h *Hierarchy) { h.Nodes = nil }, nil, "nodes", "at least one node"},
		{"bad node name", func(h *Hierarchy) { h.Nodes = []string{"n1", "n/2"} }, nil, "nodes[1]", "not a valid node name"},
		{"duplicate node", func(h *Hierarchy) { h.Nodes = []string{"n1", "n2", "n1"} }, nil, "nodes[2]", "listed twice"},
		{"bad switchback", func(h *Hierarchy) { h.Switchback = "sometimes" }, nil, "switchback", "not a switchback policy"},
		{"negative local recovery", func(h *Hierarchy) { h.LocalRecovery = intp(-1) }, nil, "local_recovery", "0 or more"},
		{"monitor interval too short", func(h *Hierarchy) { h.MonitorInterval = Duration(time.Millisecond) }, nil, "monitor_interval", "at least 10ms"},
		{"no resources", func(h *Hierarchy) { h.Resources = nil }, nil, "resources", "at least one resource"},
		{"bad resource name", func(h *Hierarchy) { h.Resources[1].Name = "a p" }, nil, "resources[1].name", "not a valid resource name"},
		{"duplicate resource", func(h *Hierarchy) { h.Resources = append(h.Resources, res("ip")) }, nil, "resources[2].name", "defined twice"},
		{"missing type", func(h *Hierarchy) { h.Resources[1].Type = "" }, nil, "resources[1].type", "type is required"},
		{"unknown type", func(h *Hierarchy) {}, func(s string) bool { return false }, "resources[0].type", "unknown resource type"},
		{"resource negative local recovery", func(h *Hierarchy) { h.Resources[0].LocalRecovery = intp(-2) }, nil, "resources[0].local_recovery", "0 or more"},
		{"resource monitor interval too short", func(h *Hierarchy) { h.Resources[1].MonitorInterval = Duration(9 * time.Millisecond) }, nil, "resources[1].monitor_interval", "at least 10ms"},
		{"unknown depends_on", func(h *Hierarchy) { h.Resources[1].DependsOn = []string{"ip", "disk"} }, nil, "resources[1].depends_on[1]", `"disk" is not defined`},
		{"self dependency", func(h *Hierarchy) { h.Resources[1].DependsOn = []string{"app"} }, nil, "resources[1].depends_on[0]", "depends on itself"},
		{"cycle", func(h *Hierarchy) { h.Resources[0].DependsOn = []string{"app"} }, nil, "resources", "cycle"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := validHierarchy()
			tt.mutate(&h)
			ps := h.Validate(tt.known)
			if tt.name == "unknown type" {
				// Both resources have the unknown type.
				if len(ps) != 2 {
					t.Fatalf("Validate = %v, want 2 problems", ps)
				}
			} else if len(ps) != 1 {
				t.Fatalf("Validate = %v, want exactly 1 problem", ps)
			}
			p := ps[0]
			if p.Field != tt.field || !strings.Contains(p.Message, tt.msg) {
				t.Fatalf("Validate = %v, want field %q with %q", ps, tt.field, tt.msg)
			}
			if !strings.HasPrefix(p.Error(), tt.field+": ") {
				t.Fatalf("Problem.Error() = %q", p.Error())
			}
		})
	}
}

func TestValidateReportsAllProblems(t *testing.T) {
	h := Hierarchy{
		Name:       "bad name",
		Nodes:      []string{"n1", "n1", ""},
		Switchback: "never",
		Resources: []Resource{
			{Name: "ip", Type: "app"},
			{Name: "ip", Type: "app"},
			{Name: "app!", Type: "app", DependsOn: []string{"nope"}},
			{Name: "svc", Type: "app", DependsOn: []string{"svc", "ip"}},
		},
	}
	ps := h.Validate(nil)
	want := map[string]string{
		"name":                       "not a valid name",
		"nodes[1]":                   "listed twice",
		"nodes[2]":                   "not a valid node name",
		"switchback":                 "not a switchback policy",
		"resources[1].name":          "defined twice",
		"resources[2].name":          "not a valid resource name",
		"resources[2].depends_on[0]": `"nope" is not defined`,
		"resources[3].depends_on[0]": "depends on itself",
	}
	got := map[string]string{}
	for _, p := range ps {
		if _, dup := got[p.Field]; dup {
			t.Errorf("field %s reported twice: %v", p.Field, ps)
		}
		got[p.Field] = p.Message
	}
	for f, m := range want {
		if !strings.Contains(got[f], m) {
			t.Errorf("missing problem %s: %s; got %v", f, m, ps)
		}
	}
	if len(ps) != len(want) {
		t.Errorf("Validate returned %d problems, want %d: %v", len(ps), len(want), ps)
	}

	// No nodes at all is reported alongside resource problems.
	h2 := Hierarchy{Name: "h", Resources: []Resource{{Name: "x"}}}
	ps = h2.Validate(nil)
	fields := map[string]bool{}
	for _, p := range ps {
		fields[p.Field] = true
	}
	if !fields["nodes"] || !fields["resources[0].type"] || len(ps) != 2 {
		t.Fatalf("Validate = %v, want nodes and resources[0].type", ps)
	}
}

func TestNormalize(t *testing.T) {
	h := Hierarchy{
		Name:  "h",
		Nodes: []string{"n1"},
		Resources: []Resource{
			{Name: "plain", Type: "app"},
			{Name: "custom", Type: "app", MonitorInterval: Duration(time.Second), LocalRecovery: intp(5), Timeout: Duration(time.Minute)},
			{Name: "zero", Type: "app", LocalRecovery: intp(0)},
		},
	}
	h.Normalize()
	if h.Switchback != SwitchbackIntelligent {
		t.Errorf("Switchback = %q, want %q", h.Switchback, SwitchbackIntelligent)
	}
	if h.MonitorInterval.D() != DefaultMonitorInterval {
		t.Errorf("MonitorInterval = %s", h.MonitorInterval)
	}
	if h.LocalRecovery == nil || *h.LocalRecovery != DefaultLocalRecovery {
		t.Errorf("LocalRecovery = %v", h.LocalRecovery)
	}
	plain, custom, zero := h.Resources[0], h.Resources[1], h.Resources[2]
	if plain.MonitorInterval != h.MonitorInterval || *plain.LocalRecovery != DefaultLocalRecovery || plain.Timeout.D() != DefaultActionTimeout {
		t.Errorf("plain = %+v, want hierarchy defaults", plain)
	}
	if custom.MonitorInterval.D() != time.Second || *custom.LocalRecovery != 5 || custom.Timeout.D() != time.Minute {
		t.Errorf("custom = %+v, overrides lost", custom)
	}
	if *zero.LocalRecovery != 0 {
		t.Errorf("explicit local_recovery 0 replaced by %d", *zero.LocalRecovery)
	}
	// Inherited values are copies, not aliases of the hierarchy's.
	if plain.LocalRecovery == h.LocalRecovery {
		t.Error("resource LocalRecovery aliases the hierarchy's")
	}
	*h.LocalRecovery = 9
	if *h.Resources[0].LocalRecovery != DefaultLocalRecovery {
		t.Error("changing the hierarchy's LocalRecovery changed the resource's")
	}

	// Hierarchy-level settings are inherited by resources.
	h2 := Hierarchy{
		Name: "h2", Nodes: []string{"n1"}, Switchback: SwitchbackAutomatic,
		MonitorInterval: Duration(500 * time.Millisecond), LocalRecovery: intp(3),
		Resources: []Resource{{Name: "r", Type: "app"}},
	}
	h2.Normalize()
	if h2.Switchback != SwitchbackAutomatic {
		t.Errorf("Switchback overwritten: %q", h2.Switchback)
	}
	r := h2.Resources[0]
	if r.MonitorInterval.D() != 500*time.Millisecond || *r.LocalRecovery != 3 {
		t.Errorf("resource = %+v, want inherited 500ms / 3", r)
	}
	// Normalize is idempotent.
	before, _ := json.Marshal(h2)
	h2.Normalize()
	after, _ := json.Marshal(h2)
	if string(before) != string(after) {
		t.Errorf("Normalize not idempotent:\n%s\n%s", before, after)
	}
	if ps := h2.Validate(nil); len(ps) != 0 {
		t.Errorf("normalized hierarchy invalid: %v", ps)
	}
}

func TestDurationJSON(t *testing.T) {
	var d Duration
	if err := json.Unmarshal([]byte(`"1.5s"`), &d); err != nil || d.D() != 1500*time.Millisecond {
		t.Fatalf("string: %v %v", d, err)
	}
	if err := json.Unmarshal([]byte(`2000000`), &d); err != nil || d.D() != 2*time.Millisecond {
		t.Fatalf("number: %v %v", d, err)
	}
	if err := json.Unmarshal([]byte(`"-1s"`), &d); err == nil {
		t.Fatal("negative duration accepted")
	}
	if err := json.Unmarshal([]byte(`"soon"`), &d); err == nil {
		t.Fatal("garbage accepted")
	}
	b, err := json.Marshal(Duration(200 * time.Millisecond))
	if err != nil || string(b) != `"200ms"` {
		t.Fatalf("Marshal = %s %v", b, err)
	}
	if err := d.UnmarshalText([]byte(" 3s ")); err != nil || d.D() != 3*time.Second {
		t.Fatalf("UnmarshalText = %v %v", d, err)
	}
}

func TestPriorityAndValidName(t *testing.T) {
	h := Hierarchy{Nodes: []string{"a", "b", "c"}}
	for n, want := range map[string]int{"a": 0, "b": 1, "c": 2, "d": -1, "": -1} {
		if got := h.Priority(n); got != want {
			t.Errorf("Priority(%q) = %d, want %d", n, got, want)
		}
	}
	for s, want := range map[string]bool{
		"a": true, "A-z_0.9": true, strings.Repeat("x", 63): true,
		"": false, strings.Repeat("x", 64): false, "a b": false, "a/b": false, "é": false,
	} {
		if got := ValidName(s); got != want {
			t.Errorf("ValidName(%q) = %v, want %v", s, got, want)
		}
	}
	if got := SortedKeys(map[string]int{"b": 1, "a": 2, "c": 3}); !reflect.DeepEqual(got, []string{"a", "b", "c"}) {
		t.Errorf("SortedKeys = %v", got)
	}
}

// hasCycle is an independent check (Kahn's algorithm).
func hasCycle(rs []Resource) bool {
	indeg := map[string]int{}
	users := map[string][]string{}
	for _, r := range rs {
		indeg[r.Name] += 0
		for _, d := range r.DependsOn {
			indeg[r.Name]++
			users[d] = append(users[d], r.Name)
		}
	}
	var q []string
	for _, r := range rs {
		if indeg[r.Name] == 0 {
			q = append(q, r.Name)
		}
	}
	done := 0
	for len(q) > 0 {
		n := q[0]
		q = q[1:]
		done++
		for _, u := range users[n] {
			indeg[u]--
			if indeg[u] == 0 {
				q = append(q, u)
			}
		}
	}
	return done != len(rs)
}

// buildGraph turns fuzz bytes into a small hierarchy with unique names and
// dependencies only on defined resources (self-loops and cycles allowed).
func buildGraph(n uint8, edges []byte) []Resource {
	count := int(n%8) + 1
	rs := make([]Resource, count)
	for i := range rs {
		rs[i] = Resource{Name: fmt.Sprintf("r%d", i), Type: "app"}
	}
	for i := 0; i+1 < len(edges) && i < 40; i += 2 {
		from, to := int(edges[i])%count, int(edges[i+1])%count
		dep := rs[to].Name
		if !contains(rs[from].DependsOn, dep) {
			rs[from].DependsOn = append(rs[from].DependsOn, dep)
		}
	}
	return rs
}

func FuzzRestoreOrder(f *testing.F) {
	f.Add(uint8(4), []byte{0, 1, 0, 2, 1, 3, 2, 3})    // diamond
	f.Add(uint8(3), []byte{0, 1, 1, 2, 2, 0})          // 3-cycle
	f.Add(uint8(1), []byte{0, 0})                      // self loop
	f.Add(uint8(6), []byte{5, 0, 4, 0, 3, 1, 2, 1})    // forest
	f.Add(uint8(7), []byte{})                          // no edges
	f.Add(uint8(5), []byte{0, 4, 4, 3, 3, 2, 2, 1, 1}) // chain
	f.Fuzz(func(t *testing.T, n uint8, edges []byte) {
		rs := buildGraph(n, edges)
		h := Hierarchy{Name: "h", Nodes: []string{"n1"}, Resources: rs}
		got, err := h.RestoreOrder()
		cyclic := hasCycle(rs)
		if cyclic {
			if err == nil {
				t.Fatalf("cyclic graph %+v accepted: %v", rs, names(got))
			}
			checkCycle(t, rs, cyclePath(t, err.Error()))
			return
		}
		if err != nil {
			t.Fatalf("acyclic graph %+v rejected: %v", rs, err)
		}
		checkTopological(t, rs, got)
		again, _ := h.RestoreOrder()
		if !reflect.DeepEqual(names(got), names(again)) {
			t.Fatalf("not deterministic: %v vs %v", names(got), names(again))
		}
		rm, err := h.RemoveOrder()
		if err != nil {
			t.Fatal(err)
		}
		for i := range rm {
			if rm[i].Name != got[len(got)-1-i].Name {
				t.Fatalf("RemoveOrder %v is not the reverse of %v", names(rm), names(got))
			}
		}
	})
}
