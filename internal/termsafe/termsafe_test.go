package termsafe

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestEscape(t *testing.T) {
	cases := []struct{ in, want string }{
		{"plain text", "plain text"},
		{"two\nlines\tand a tab", "two\nlines\tand a tab"},
		{"ünïcödé ✓ 日本", "ünïcödé ✓ 日本"},
		{"\x1b]0;owned\a", `\x1b]0;owned\a`},
		{"red \x1b[31mERROR\x1b[0m", `red \x1b[31mERROR\x1b[0m`},
		{"progress\rOK      ", `progress\rOK      `},
		{"bell\x07 bs\x08 nul\x00 del\x7f", `bell\a bs\b nul\x00 del\x7f`},
		{"c1 csi \u009b31m", `c1 csi \u009b31m`},
		{"bidi \u202eevil\u202c", `bidi \u202eevil\u202c`},
		{"bad utf8 \xff\xfe end", `bad utf8 \xff\xfe end`},
		{"a real \uFFFD stays", "a real \uFFFD stays"},
	}
	for _, c := range cases {
		if got := Escape(c.in); got != c.want {
			t.Errorf("Escape(%q) = %q, want %q", c.in, got, c.want)
		}
		for _, r := range Escape(c.in) {
			if needsEscape(r) {
				t.Errorf("Escape(%q) left %U", c.in, r)
			}
		}
	}
}

// Through the Writer, JSON output stays valid JSON with the same values.
func TestWriterKeepsJSON(t *testing.T) {
	v := map[string]string{"output": "line1\nline2 \x1b[2J \u009b \u202e \xff done"}
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	n, err := NewWriter(&buf).Write(append(data, '\n'))
	if err != nil || n != len(data)+1 {
		t.Fatalf("Write: %d, %v", n, err)
	}
	if strings.ContainsRune(buf.String(), '\u009b') || strings.ContainsRune(buf.String(), '\u202e') {
		t.Fatalf("C1 or bidi control passed: %q", buf.String())
	}
	var back map[string]string
	if err := json.Unmarshal(buf.Bytes(), &back); err != nil {
		t.Fatalf("not JSON after escaping: %v: %s", err, buf.String())
	}
	want := strings.ToValidUTF8(v["output"], "\uFFFD")
	if back["output"] != want {
		t.Fatalf("value changed: %q, want %q", back["output"], want)
	}
}

func FuzzEscape(f *testing.F) {
	f.Add("\x1b[31m\r\n\u009b\u202e\xff")
	f.Fuzz(func(t *testing.T, s string) {
		out := Escape(s)
		if !utf8.ValidString(out) {
			t.Fatalf("invalid UTF-8 out: %q", out)
		}
		for _, r := range out {
			if needsEscape(r) {
				t.Fatalf("Escape(%q) left %U", s, r)
			}
		}
		if strings.Count(out, "\n") != strings.Count(s, "\n") {
			t.Fatalf("newlines changed: %q -> %q", s, out)
		}
	})
}
