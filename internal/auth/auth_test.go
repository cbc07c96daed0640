package auth

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	s, err := Parse("tokens", []byte("# who role secret\ngrafana read aaaaaaaaaaaaaaaaaaaa\n\noncall  operate\tbbbbbbbbbbbbbbbbbbbb # comment\ndeploy admin cccccccccccccccccccc\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]Role{"grafana": Read, "oncall": Operate, "deploy": Admin}
	if len(s.Tokens()) != 3 {
		t.Fatalf("tokens %+v", s.Tokens())
	}
	for secret, name := range map[string]string{"aaaaaaaaaaaaaaaaaaaa": "grafana", "bbbbbbbbbbbbbbbbbbbb": "oncall", "cccccccccccccccccccc": "deploy"} {
		tok, ok := s.Match(secret)
		if !ok || tok.Name != name || tok.Role != want[name] {
			t.Errorf("Match(%s) = %+v %v", name, tok, ok)
		}
	}
	for _, bad := range []string{"", "aaaaaaaaaaaaaaaaaaa", "aaaaaaaaaaaaaaaaaaaaa", "grafana"} {
		if tok, ok := s.Match(bad); ok {
			t.Errorf("Match(%q) = %+v", bad, tok)
		}
	}
	// The form before roles: one bare secret, an admin token.
	s, err = Parse("token", []byte("  dddddddddddddddddddd\n"))
	if err != nil {
		t.Fatal(err)
	}
	if tok, ok := s.Match("dddddddddddddddddddd"); !ok || tok.Role != Admin || tok.Name != "token-file" {
		t.Errorf("legacy token: %+v %v", tok, ok)
	}
}

// Every problem is reported with its file and line, and what to do.
func TestParseErrors(t *testing.T) {
	cases := map[string]string{
		"a read aaaaaaaaaaaaaaaaaaaa\nb root bbbbbbbbbbbbbbbbbbbb\n": "tokens:2: unknown role \"root\"",
		"a read short\n": "tokens:1: the secret of a is too short",
		"a read aaaaaaaaaaaaaaaaaaaa\na admin bbbbbbbbbbbbbbbbbbbb\n": "tokens:2: token name a is used twice (also line 1)",
		"a read aaaaaaaaaaaaaaaaaaaa\nb admin aaaaaaaaaaaaaaaaaaaa\n": "tokens:2: the secret of b is the same as line 1's",
		"a read\n":                             "tokens:1: want NAME ROLE SECRET",
		"b@d/name read aaaaaaaaaaaaaaaaaaaa\n": "tokens:1: token name \"b@d/name\"",
		"# only comments\n":                    "holds no token",
		"a read aaaaaaaaaaaaaaaaaaaa extra\nx read bbbbbbbbbbbbbbbbbbbb\ny bad cccc\n": "tokens:1:",
	}
	for in, want := range cases {
		_, err := Parse("tokens", []byte(in))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) = %v, want %q", in, err, want)
		}
	}
	// Several problems: all of them.
	_, err := Parse("tokens", []byte("a read x\nb nope bbbbbbbbbbbbbbbbbbbb\n"))
	if err == nil || !strings.Contains(err.Error(), "tokens:1") || !strings.Contains(err.Error(), "tokens:2") {
		t.Errorf("two problems: %v", err)
	}
}

func TestNeed(t *testing.T) {
	if Need("GET /v1/status") != Read || Need("POST /v1/hierarchies/{name}/switchover") != Operate || Need("POST /v1/apply") != Admin {
		t.Error("table roles")
	}
	if Need("POST /v1/something-new") != Admin {
		t.Error("an unlisted route must need admin")
	}
}
