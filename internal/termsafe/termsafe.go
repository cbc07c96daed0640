// Package termsafe escapes what a terminal would act on in text the CLI
// prints but did not write itself: command output, error messages and
// other strings an agent (or a resource's command behind it) supplies. An
// escape sequence in such text could retitle the terminal, hide lines,
// rewrite what was printed before it, or, with bidirectional overrides,
// show text in another order than it is.
//
// Control characters (C0, DEL, C1) are written as strconv.Quote writes
// them (\x1b, \r, \u009b), invalid UTF-8 bytes as \xNN, and Unicode's
// bidirectional controls as \u202e; newlines and tabs are kept, so that
// multi-line output stays multi-line. Every escape it writes is also a
// valid JSON string escape or cannot occur in JSON output (encoding/json
// escapes C0 itself and replaces invalid UTF-8), so JSON stays JSON.
package termsafe

import (
	"io"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Escape returns s with its control characters escaped (see the package
// documentation); text without any is returned as it is.
func Escape(s string) string {
	if clean(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	appendEscaped(&b, s)
	return b.String()
}

// clean reports whether s has nothing to escape.
func clean(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 && c != '\n' && c != '\t' || c >= 0x7f {
			return cleanSlow(s[i:])
		}
	}
	return true
}

func cleanSlow(s string) bool {
	for _, r := range s {
		if needsEscape(r) {
			return false
		}
	}
	return utf8.ValidString(s)
}

// needsEscape reports whether r is escaped: a control character other
// than newline and tab, or a bidirectional control.
func needsEscape(r rune) bool {
	if r == '\n' || r == '\t' {
		return false
	}
	return unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r)
}

const hexDigits = "0123456789abcdef"

func appendEscaped(b *strings.Builder, s string) {
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b.WriteString(`\x`)
			b.WriteByte(hexDigits[s[i]>>4])
			b.WriteByte(hexDigits[s[i]&0xf])
		case !needsEscape(r):
			b.WriteString(s[i : i+size])
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\a':
			b.WriteString(`\a`)
		case r == '\b':
			b.WriteString(`\b`)
		case r == '\f':
			b.WriteString(`\f`)
		case r == '\v':
			b.WriteString(`\v`)
		case r < 0x80:
			b.WriteString(`\x`)
			b.WriteByte(hexDigits[r>>4])
			b.WriteByte(hexDigits[r&0xf])
		default:
			b.WriteString(`\u`)
			for shift := 12; shift >= 0; shift -= 4 {
				b.WriteByte(hexDigits[(r>>shift)&0xf])
			}
		}
		i += size
	}
}

// Writer escapes what is written through it before passing it on. Each
// Write is escaped on its own: a write that splits a multi-byte character
// shows its bytes as \xNN (fmt and text/tabwriter never split one).
type Writer struct {
	w io.Writer
}

// NewWriter returns a Writer that escapes into w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// Write escapes p and writes it; it reports len(p) when everything was
// written.
func (w *Writer) Write(p []byte) (int, error) {
	s := string(p)
	if clean(s) {
		return w.w.Write(p)
	}
	if _, err := io.WriteString(w.w, Escape(s)); err != nil {
		return 0, err
	}
	return len(p), nil
}
