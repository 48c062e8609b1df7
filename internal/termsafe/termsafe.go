// Package termsafe makes text from the traced machine safe to print on a
// terminal. A process names itself (its comm is 15 bytes it chooses), and
// container engines write cgroup paths: either can hold escape sequences
// that retitle, clear or rewrite root's terminal, or copy to its
// clipboard (OSC 52). Every name the text outputs and the view show goes
// through Name; JSON keeps the exact bytes, escaped by its encoder.
package termsafe

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Name returns s with every control character (C0, DEL, C1), every
// character that changes the direction or the width of what follows, and
// every byte that is not UTF-8 written as a visible Go escape (\x1b,
// \u202e). Printable text, spaces included, is unchanged.
func Name(s string) string {
	if safe(s) {
		return s // the usual case: no copy
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n <= 1:
			b.WriteString(`\x` + strconv.FormatUint(uint64(s[i])|0x100, 16)[1:])
		case unsafeRune(r):
			q := strconv.QuoteRuneToASCII(r)
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

func safe(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f || c >= 0x80 {
			return !slowUnsafe(s)
		}
	}
	return true
}

// slowUnsafe looks at the non-ASCII text in full.
func slowUnsafe(s string) bool {
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && n <= 1) || unsafeRune(r) {
			return true
		}
		i += n
	}
	return false
}

// unsafeRune: control characters, and format characters (bidirectional
// overrides, zero-width joiners) that reorder or hide what follows.
func unsafeRune(r rune) bool {
	return unicode.IsControl(r) || unicode.Is(unicode.Cf, r)
}
