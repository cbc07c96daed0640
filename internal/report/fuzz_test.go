package report

import (
	"bytes"
	"strings"
	"testing"
)

// Whatever surrounds it, a known secret never survives String, and String
// never panics.
func FuzzRedactString(f *testing.F) {
	const secret = "c2VjcmV0LWtleS1mb3ItZnV6eg=="
	for _, s := range []string{"", "msg=x", "https://u:p@h/?token=a&x=%63%32", "PGPASSWORD=", "Authorization: Bearer ", "-----BEGIN RSA PRIVATE KEY-----"} {
		f.Add(s, 0)
	}
	r := NewRedactor(secret)
	f.Fuzz(func(t *testing.T, around string, at int) {
		if at < 0 {
			at = -at
		}
		at %= len(around) + 1
		in := around[:at] + secret + around[at:]
		if got := r.String(in); strings.Contains(got, secret) {
			t.Fatalf("String(%q) = %q keeps the secret", in, got)
		}
		_ = r.String(around)
	})
}

// Read never panics on a damaged bundle, and what it accepts it accepts
// again (the checks hold for its own output).
func FuzzRead(f *testing.F) {
	var buf bytes.Buffer
	if _, err := Write(&buf, Manifest{Dir: "r", Nodes: []NodeEntry{{Name: "n1", Reached: true}}}, sampleFiles()); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Add([]byte{0x1f, 0x8b})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, files, err := Read(bytes.NewReader(b))
		if err != nil {
			return
		}
		var fs []File
		for _, e := range m.Files {
			fs = append(fs, File{Name: e.Name, Data: files[e.Name], Truncated: e.Truncated})
		}
		var again bytes.Buffer
		if _, err := Write(&again, m, fs); err != nil {
			t.Fatalf("a bundle Read accepted cannot be written again: %v", err)
		}
		if _, _, err := Read(&again); err != nil {
			t.Fatalf("rewritten bundle: %v", err)
		}
	})
}
