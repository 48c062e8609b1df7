package termsafe

import "testing"

func TestName(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"nginx", "nginx"},
		{"tmt-reader", "tmt-reader"},
		{"/system.slice/docker-ab.scope", "/system.slice/docker-ab.scope"},
		{"caf\u00e9 \u4e2d", "caf\u00e9 \u4e2d"},   // printable non-ASCII stays
		{"\x1b]0;owned\a", `\x1b]0;owned\a`},       // retitle
		{"\x1b[2J", `\x1b[2J`},                     // clear screen
		{"\x1b]52;c;aGk=\a", `\x1b]52;c;aGk=\a`},   // OSC 52 clipboard
		{"a\u009bb", `a\u009bb`},                   // C1 CSI as a rune
		{"a\x9bb", `a\x9bb`},                       // the same byte alone: not UTF-8
		{"a\xffb", `a\xffb`},                       // not UTF-8
		{"evil\u202etxt.exe", `evil\u202etxt.exe`}, // right-to-left override
		{"tab\there\nline\r", `tab\there\nline\r`}, // layout controls
		{"\x00nul", `\x00nul`},
	} {
		if got := Name(tc.in); got != tc.want {
			t.Errorf("Name(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestNameDoesNotAllocateForPlainText(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() { Name("tmt-reader") }); n != 0 {
		t.Errorf("%v allocations", n)
	}
}
