// Package privtest gates tests that need root and a BPF-capable kernel.
package privtest

import (
	"os"
	"testing"
)

// Require skips the test, saying why, unless it runs as root on a kernel with BTF.
func Require(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: skipping a privileged kernel test")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: loads BPF programs and lowers global TCP sysctls (run `sudo make test`)")
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		t.Skip("needs a kernel with BTF (/sys/kernel/btf/vmlinux)")
	}
}
