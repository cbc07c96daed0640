package backup

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/spec"
	"github.com/lifeboat-ha/lifeboat/internal/state"
)

func hierarchy(name string, nodes ...string) spec.Hierarchy {
	h := spec.Hierarchy{Name: name, Nodes: nodes, FailureTimeout: spec.Duration(time.Minute), Resources: []spec.Resource{
		{Name: name + "-app", Type: "app", Params: map[string]string{"restore": "true", "remove": "true", "quickcheck": "true"}},
	}}
	h.Normalize()
	return h
}

func sample() Body {
	s := state.New()
	for _, h := range []spec.Hierarchy{hierarchy("web", "n1", "n2"), hierarchy("db", "n2", "n1"), hierarchy("gone", "n1")} {
		s.Hierarchies[h.Name] = h
		s.Assignments[h.Name] = &state.Assignment{Hierarchy: h.Name, Node: "n1", Gen: 3, Epoch: 7, Online: h.Name != "db",
			Failed: []string{"n2"}, FailedAt: map[string]time.Time{"n2": time.Unix(100, 0).UTC()}}
	}
	s.Assignments["gone"].Deleting = true
	s.Index = 42
	return FromState(s, Body{Created: time.Date(2026, 12, 2, 18, 0, 0, 0, time.UTC), Cluster: "ab:cd", LifeboatVersion: "0.2.0", Node: "n1",
		FeatureLevel: 2, RaftIndex: 42, Members: []Member{{Name: "n2", Raft: "h2:1", Gossip: "h2:2", API: "h2:3"}, {Name: "n1", Raft: "h1:1", Gossip: "h1:2", API: "h1:3"}}})
}

func encode(t *testing.T, b Body) []byte {
	t.Helper()
	data, _, err := Encode(b)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestRoundTrip(t *testing.T) {
	b := sample()
	data, sum, err := Encode(b)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode("b.json", data, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.Checksum != sum || !strings.HasPrefix(sum, "sha256:") {
		t.Fatalf("checksum %q, Encode said %q", got.Checksum, sum)
	}
	if !reflect.DeepEqual(got.Body, b) {
		t.Fatalf("round trip changed the body:\n got %+v\nwant %+v", got.Body, b)
	}
	// What is per-run stays out, and a hierarchy being deleted is not
	// backed up.
	if names := []string{b.Hierarchies[0].Name, b.Hierarchies[1].Name}; len(b.Hierarchies) != 2 || names[0] != "db" || names[1] != "web" {
		t.Fatalf("hierarchies %v, want db and web", b.Hierarchies)
	}
	if b.Wishes["db"] != Offline || b.Wishes["web"] != Online {
		t.Fatalf("wishes %v", b.Wishes)
	}
	for _, per := range []string{`"failed"`, `"gen"`, `"epoch"`, `"gone"`} {
		if bytes.Contains(data, []byte(per)) {
			t.Errorf("the file holds %s:\n%s", per, data)
		}
	}
	if b.Members[0].Name != "n1" {
		t.Errorf("members not sorted: %v", b.Members)
	}
	// Re-indented (jq, an editor), it is still the same backup.
	var re bytes.Buffer
	if err := json.Indent(&re, data, "", "\t"); err != nil {
		t.Fatal(err)
	}
	if _, err := Decode("b.json", re.Bytes(), nil); err != nil {
		t.Fatalf("re-indented backup refused: %v", err)
	}
}

// Every single-bit change anywhere in the file is refused.
func TestEveryFlippedBitRefused(t *testing.T) {
	data := encode(t, sample())
	for i := range data {
		for bit := 0; bit < 8; bit++ {
			c := bytes.Clone(data)
			c[i] ^= 1 << bit
			if _, err := Decode("b.json", c, nil); err == nil {
				t.Fatalf("byte %d (%q) with bit %d flipped: accepted", i, data[i], bit)
			}
		}
	}
}

func TestChecksumMismatch(t *testing.T) {
	data := encode(t, sample())
	c := bytes.Replace(data, []byte(`"quickcheck": "true"`), []byte(`"quickcheck": "exit 0"`), 1)
	if bytes.Equal(c, data) {
		t.Fatal("test did not change the file")
	}
	_, err := Decode("b.json", c, nil)
	if !errors.Is(err, ErrChecksum) {
		t.Fatalf("got %v, want a checksum mismatch", err)
	}
	for _, want := range []string{"b.json: checksum mismatch", "damaged or was edited"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

func TestUnknownVersion(t *testing.T) {
	data := encode(t, sample())
	newer := bytes.Replace(data, []byte(`"version": 1`), []byte(`"version": 2`), 1)
	_, err := Decode("b.json", newer, nil)
	if !errors.Is(err, ErrVersion) || !strings.Contains(err.Error(), "newer lifeboat") {
		t.Fatalf("version 2: %v", err)
	}
	for _, v := range []string{`"version": 0`, `"version": "1"`, `"version": null`} {
		_, err := Decode("b.json", bytes.Replace(data, []byte(`"version": 1`), []byte(v), 1), nil)
		if !errors.Is(err, ErrVersion) {
			t.Errorf("%s: %v, want an unknown version", v, err)
		}
	}
}

func TestTruncated(t *testing.T) {
	data := encode(t, sample())
	for n := 0; n < len(data)-1; n++ { // the last byte is a newline
		_, err := Decode("b.json", data[:n], nil)
		if err == nil {
			t.Fatalf("the first %d bytes of %d: accepted", n, len(data))
		}
		if n > 0 && strings.TrimSpace(string(data[:n])) != "" && !errors.Is(err, ErrTruncated) {
			t.Fatalf("the first %d bytes: %v, want truncated", n, err)
		}
	}
	_, err := Decode("b.json", data[:len(data)/2], nil)
	if !strings.Contains(err.Error(), "b.json: the file ends early") {
		t.Errorf("truncated: %v", err)
	}
}

func TestNotABackup(t *testing.T) {
	for name, in := range map[string]string{
		"empty":      "",
		"spec":       "hierarchies:\n  - name: web\n",
		"array":      "[1,2]",
		"format":     `{"format":"something-else","version":1,"checksum":"sha256:00","body":{}}`,
		"extra":      `{"format":"lifeboat-backup","version":1,"checksum":"sha256:00","body":{},"x":1}`,
		"bad syntax": "{\n  \"format\": \"lifeboat-backup\",\n  \"version\": 1 x\n}",
		"too large":  "{" + strings.Repeat(" ", MaxSize) + "}",
	} {
		_, err := Decode("b.json", []byte(in), nil)
		if !errors.Is(err, ErrNotBackup) || !strings.HasPrefix(err.Error(), "b.json") {
			t.Errorf("%s: %v", name, err)
		}
	}
	_, err := Decode("b.json", []byte("{\n  \"format\": \"lifeboat-backup\",\n  \"version\": 1 x\n}"), nil)
	if !strings.HasPrefix(err.Error(), "b.json:3:") {
		t.Errorf("syntax error without its line: %v", err)
	}
}

// A backup whose body is intact but holds what apply would refuse names
// each problem: the file, the hierarchy and the field.
func TestBadSpec(t *testing.T) {
	b := sample()
	b.Hierarchies[0].Resources[0].DependsOn = []string{"nosuch"}
	b.Hierarchies[1].Nodes = nil
	b.Hierarchies = append(b.Hierarchies, b.Hierarchies[1])
	b.Wishes["stray"] = Online
	data := encode(t, b)
	known := func(h *spec.Hierarchy) []spec.Problem { return h.Validate(func(t string) bool { return t == "app" }) }
	_, err := Decode("b.json", data, known)
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("got %v, want invalid", err)
	}
	for _, want := range []string{
		"b.json: body.hierarchies[0] (db): resources[0].depends_on[0]:",
		"b.json: body.hierarchies[1] (web): nodes:",
		`b.json: body.hierarchies[2]: hierarchy "web" is also hierarchies[1]`,
		"b.json: body.wishes.stray: no hierarchy of that name",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}

	b = sample()
	b.Hierarchies[0].Resources[0].Type = "nosuch"
	b.Wishes["db"] = "maybe"
	_, err = Decode("b.json", encode(t, b), known)
	for _, want := range []string{`b.json: body.hierarchies[0] (db): resources[0].type:`, `body.wishes.db: "maybe"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
}

func TestCompare(t *testing.T) {
	b := sample()
	s := state.New()
	web := hierarchy("web", "n2", "n1") // another priority order
	other := hierarchy("other", "n1")
	dbDel := hierarchy("db", "n2", "n1")
	for _, h := range []spec.Hierarchy{web, other, dbDel} {
		s.Hierarchies[h.Name] = h
		s.Assignments[h.Name] = &state.Assignment{Hierarchy: h.Name, Online: false}
	}
	s.Assignments["db"].Deleting = true // going away: restore brings it back
	d := Compare(&b, s, []Member{{Name: "n1", Raft: "h1:1", Gossip: "h1:2", API: "h1:9"}, {Name: "n3"}})
	want := Diff{
		Created: []string{"db"},
		Updated: []Change{{Hierarchy: "web", Fields: []string{"nodes"}}},
		Missing: []string{"other"},
		Wishes:  []WishChange{{Hierarchy: "db", To: Offline}, {Hierarchy: "web", From: Offline, To: Online}},
		Members: []string{
			"node n1: api address h1:3 in the backup, h1:9 here",
			"node n2 is in the backup but not in this cluster",
			"node n3 is in this cluster but not in the backup",
		},
	}
	if !reflect.DeepEqual(d, want) {
		t.Fatalf("diff\n got %+v\nwant %+v", d, want)
	}
	if !d.Changes(false) {
		t.Fatal("a diff with changes says it has none")
	}

	// Against the state it was taken from: nothing to do.
	s2 := state.New()
	for _, h := range b.Hierarchies {
		s2.Hierarchies[h.Name] = h
		s2.Assignments[h.Name] = &state.Assignment{Hierarchy: h.Name, Online: b.Wishes[h.Name] == Online}
	}
	s2.Hierarchies["extra"] = other
	s2.Assignments["extra"] = &state.Assignment{Hierarchy: "extra"}
	d = Compare(&b, s2, b.Members)
	if d.Changes(false) || len(d.Members) != 0 || len(d.Unchanged) != 2 {
		t.Fatalf("restore onto its own cluster: %+v", d)
	}
	if !d.Changes(true) || !reflect.DeepEqual(d.Missing, []string{"extra"}) {
		t.Fatalf("prune would not delete the extra hierarchy: %+v", d)
	}
}

func FuzzDecode(f *testing.F) {
	b := sample()
	data, _, err := Encode(b)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(data)
	f.Add([]byte(`{"format":"lifeboat-backup","version":1,"checksum":"sha256:00","body":{}}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		got, err := Decode("f.json", in, nil)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "f.json") {
				t.Fatalf("error without the file name: %v", err)
			}
			return
		}
		// What decodes encodes again to a backup that decodes the same.
		again, _, err := Encode(got.Body)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Decode("f.json", again, nil); err != nil {
			t.Fatalf("re-encoded backup refused: %v", err)
		}
	})
}
