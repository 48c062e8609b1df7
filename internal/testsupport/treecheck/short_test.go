package treecheck

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// The unprivileged test run (`go test -short ./...`, `make test-unit`)
// loads no BPF program, even when run as root.
func TestShortRunLoadsNoBPF(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: this test runs the -short tests itself")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: as root a careless test could load BPF, which is what this looks for")
	}
	strace, err := exec.LookPath("strace")
	if err != nil {
		t.Skip("strace not installed (apt-get install strace)")
	}
	gotool, err := exec.LookPath("go")
	if err != nil {
		gotool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	trace := filepath.Join(t.TempDir(), "trace")
	// Every process of the run: the go command, the compilers, each
	// package's test binary and whatever those start.
	cmd := exec.Command(strace, "-f", "-qq", "-e", "trace=bpf,execve", "-e", "signal=none", "-o", trace,
		gotool, "test", "-short", "-count=1", "./...")
	cmd.Dir = "../../.." // the module's root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go test -short ./...: %v\n%s", err, out)
	}
	f, err := os.Open(trace)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// pid -> the program it runs, to say which package loaded what.
	prog := map[string]string{}
	var loads, calls int
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		pid, rest, _ := strings.Cut(sc.Text(), " ")
		rest = strings.TrimSpace(rest)
		switch {
		case strings.HasPrefix(rest, "execve("):
			if name, _, ok := strings.Cut(strings.TrimPrefix(rest, `execve("`), `"`); ok {
				prog[pid] = name
			}
		case strings.HasPrefix(rest, "bpf("):
			calls++
			if strings.Contains(rest, "BPF_PROG_LOAD") {
				loads++
				t.Errorf("%s (pid %s) loaded a BPF program: %.200s", prog[pid], pid, rest)
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(prog) < 10 {
		t.Fatalf("the trace saw %d programs run: strace did not follow the test binaries", len(prog))
	}
	t.Logf("%d processes, %d bpf() calls, %d program loads", len(prog), calls, loads)
}
