package ksym

import (
	"errors"
	"os"
	"strings"
	"testing"
)

func TestNames(t *testing.T) {
	tab, err := Read(strings.NewReader(`ffffffff81000000 T _stext
ffffffff81a00000 D some_data
ffffffff81b00000 t tcp_data_queue
ffffffff81b01000 T tcp_rcv_established
ffffffffc0001000 t nf_hook_slow	[nf_tables]
`))
	if err != nil {
		t.Fatal(err)
	}
	for addr, want := range map[uint64]string{
		0xffffffff81b005e4: "tcp_data_queue+0x5e4",
		0xffffffff81b01000: "tcp_rcv_established+0x0",
		0xffffffffc0001010: "nf_hook_slow+0x10",
		0xffffffff80000000: "",
		0:                  "",
	} {
		if got := tab.Name(addr); got != want {
			t.Errorf("%#x: %q, want %q", addr, got, want)
		}
	}
}

// With kptr_restrict the addresses read as zeros: say so, name nothing.
func TestHidden(t *testing.T) {
	_, err := Read(strings.NewReader("0000000000000000 T _stext\n0000000000000000 t tcp_data_queue\n"))
	if !errors.Is(err, ErrHidden) {
		t.Errorf("%v, want ErrHidden", err)
	}
}

// The running kernel's table names one of its own functions.
func TestRunningKernel(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: kallsyms hides addresses from others")
	}
	tab, err := Load("/proc/kallsyms")
	if err != nil {
		t.Skipf("kallsyms: %v", err)
	}
	b, _ := os.ReadFile("/proc/kallsyms")
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 3 && f[2] == "tcp_v4_rcv" {
			var addr uint64
			for _, c := range f[0] {
				addr = addr<<4 | uint64(strings.IndexRune("0123456789abcdef", c))
			}
			if got := tab.Name(addr + 16); got != "tcp_v4_rcv+0x10" {
				t.Errorf("tcp_v4_rcv+16: %q", got)
			}
			return
		}
	}
	t.Skip("no tcp_v4_rcv in kallsyms")
}
