package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/tcpmemtrace/tcpmemtrace/internal/privtest"
	"github.com/tcpmemtrace/tcpmemtrace/internal/procfs"
	"github.com/tcpmemtrace/tcpmemtrace/internal/render"
	"github.com/tcpmemtrace/tcpmemtrace/internal/workload"
)

var binary string // the real tcpmemtrace, built once

func TestMain(m *testing.M) {
	workload.RunRoleIfChild()
	dir, err := os.MkdirTemp("", "tcpmemtrace-e2e")
	if err != nil {
		panic(err)
	}
	os.Chmod(dir, 0o755) // the not-root test runs it as nobody
	binary = filepath.Join(dir, "tcpmemtrace")
	gotool, err := exec.LookPath("go")
	if err != nil {
		gotool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	if out, err := exec.Command(gotool, "build", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building tcpmemtrace: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func TestBadInputExitsTwo(t *testing.T) {
	for _, args := range [][]string{
		{"--bogus"},
		{"extra-argument"},
		{"--hooks", "kprobes"},
		{"--duration", "-1s"},
		{"--ringbuf-kib", "1000"},
	} {
		var stdout, stderr bytes.Buffer
		if code := mainExit(args, &stdout, &stderr); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
		if !strings.Contains(stderr.String(), "Usage: sudo tcpmemtrace") || strings.Contains(stderr.String(), "goroutine") {
			t.Errorf("%v: stderr %q", args, stderr.String())
		}
	}
	var stdout, stderr bytes.Buffer
	if code := mainExit([]string{"--help"}, &stdout, &stderr); code != 0 || !strings.Contains(stdout.String(), "--list-probes") {
		t.Errorf("--help: exit %d, %q", code, stdout.String())
	}
}

// Without privileges: one line naming what is needed, exit 1, no stack trace.
func TestNotRoot(t *testing.T) {
	cmd := exec.Command(binary, "-d", "1s")
	if os.Geteuid() == 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("exit: %v, output %q", err, out)
	}
	want := "tcpmemtrace: " + errPrivileges.Error() + "\n"
	if string(out) != want {
		t.Errorf("output %q, want %q", out, want)
	}
}

func TestUnknownNetns(t *testing.T) {
	privtest.Require(t)
	var stdout, stderr bytes.Buffer
	code := mainExit([]string{"--netns", "1"}, &stdout, &stderr)
	if code != 2 || !strings.Contains(stderr.String(), "no network namespace with inode 1") {
		t.Errorf("exit %d, stderr %q", code, stderr.String())
	}
	code = mainExit([]string{"--netns", "/nonexistent/ns"}, &stdout, &stderr)
	if code != 2 {
		t.Errorf("missing namespace file: exit %d", code)
	}
}

func TestListProbes(t *testing.T) {
	privtest.Require(t)
	out, err := exec.Command(binary, "--list-probes").CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	for _, want := range []string{"memory aborts", "pressure episodes", "memory drops", "allocation refusals", "PROTO_MEM="} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("--list-probes lacks %q:\n%s", want, out)
		}
	}
}

// TestOutOfMemoryEndToEnd runs the real binary with --json through the
// tcp_mem reproduction and checks its summary against the kernel's counters.
func TestOutOfMemoryEndToEnd(t *testing.T) {
	privtest.Require(t)
	g, err := workload.Lock()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := g.Restore(); err != nil {
			t.Error(err)
		}
	})
	env, err := workload.Start(workload.Scenario{Kind: workload.OOM, Conns: 300, WriteFor: 4 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.Close)

	cmd := exec.Command(binary, "--json", "--netns", fmt.Sprint(env.NetNS))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	lines := bufio.NewScanner(stdout)
	lines.Buffer(make([]byte, 1<<20), 1<<20)
	if !lines.Scan() {
		t.Fatalf("no start line; stderr: %s", stderr.String())
	}
	var start render.StartObject
	if err := json.Unmarshal(lines.Bytes(), &start); err != nil || start.Type != "start" {
		t.Fatalf("first line %q: %v", lines.Text(), err)
	}
	if start.NetNS != env.NetNS || len(start.Hooks) == 0 || start.TCPMem.Bytes[2] != start.TCPMem.Pages[2]*int64(start.PageSize) {
		t.Errorf("start object %+v", start)
	}

	hostBefore, err := procfs.MIB("self")
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Set("net/ipv4/tcp_mem", "1000 2000 3000", 90*time.Second); err != nil {
		t.Fatal(err)
	}
	res, err := env.Run()
	if rerr := g.Restore(); rerr != nil {
		t.Fatal(rerr)
	}
	if err != nil {
		t.Fatal(err)
	}
	hostAfter, err := procfs.MIB("self")
	if err != nil {
		t.Fatal(err)
	}

	cmd.Process.Signal(os.Interrupt)
	var (
		summary render.SummaryObject
		aborts  int
		types   = map[string]int{}
	)
	for lines.Scan() {
		var o render.EventObject
		if err := json.Unmarshal(lines.Bytes(), &o); err != nil || o.Type == "" {
			t.Fatalf("line %q: %v", lines.Text(), err)
		}
		types[o.Type]++
		switch o.Type {
		case "summary":
			if err := json.Unmarshal(lines.Bytes(), &summary); err != nil {
				t.Fatal(err)
			}
		case "abort":
			aborts++
			if int(o.PID) != res.WriterPID || o.Comm != "tmt-writer" || o.Cause != "memory" {
				t.Errorf("abort %+v: want the writer %d, cause memory", o, res.WriterPID)
			}
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("tcpmemtrace: %v; stderr: %s", err, stderr.String())
	}
	if types["summary"] != 1 {
		t.Fatalf("%d summary lines; types %v; stderr %s", types["summary"], types, stderr.String())
	}

	tot := summary.Totals
	t.Logf("summary totals %+v; event types %v", tot, types)
	if want := res.Delta("TCPAbortOnMemory"); tot.MemAborts != want || want < 300 {
		t.Errorf("mem_aborts = %d, ΔTCPAbortOnMemory = %d (want >= 300)", tot.MemAborts, want)
	}
	if tot.OrphanAborts != 0 {
		t.Errorf("orphan_aborts = %d, want 0", tot.OrphanAborts)
	}
	if want := res.Delta("TCPRcvQDrop") + res.Delta("TCPOFODrop"); tot.Drops["PROTO_MEM"] != want || want == 0 {
		t.Errorf("drops[PROTO_MEM] = %d, Δ(TCPRcvQDrop+TCPOFODrop) = %d (want > 0)", tot.Drops["PROTO_MEM"], want)
	}
	hostPress := hostAfter.Get("TcpExt", "TCPMemoryPressures") - hostBefore.Get("TcpExt", "TCPMemoryPressures")
	if want := res.Delta("TCPMemoryPressures") + hostPress; tot.PressureEpisodes != want || want == 0 {
		t.Errorf("pressure_episodes = %d, ΔTCPMemoryPressures = %d (want > 0)", tot.PressureEpisodes, want)
	}
	if tot.LostSamples == 0 && uint64(aborts) != tot.MemAborts {
		t.Errorf("%d abort lines for %d aborts with no sample lost", aborts, tot.MemAborts)
	}
	if kl := summary.KernelLog; kl == nil || len(kl.Warnings) != 2 {
		t.Errorf("kernel_log %+v", kl)
	} else if w := kl.Warnings[0]; w.Events != tot.MemAborts || w.Lines > int(w.Events) {
		t.Errorf("kernel log warning %+v against %d aborts", w, tot.MemAborts)
	} else {
		t.Logf("kernel log: %d aborts, %d lines printed, %d suppressed", w.Events, w.Lines, kl.Suppressed)
	}
	if _, err := io.ReadAll(stdout); err != nil && !errors.Is(err, os.ErrClosed) {
		t.Error(err)
	}
}

// ourPrograms counts loaded BPF programs with our programs' names.
func ourPrograms(t *testing.T) int {
	t.Helper()
	n := 0
	var id ebpf.ProgramID
	for {
		next, err := ebpf.ProgramGetNextID(id)
		if err != nil {
			return n
		}
		id = next
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue // gone meanwhile
		}
		if info, err := p.Info(); err == nil && (strings.HasPrefix(info.Name, "tp_") || strings.HasPrefix(info.Name, "fexit_")) {
			n++
		}
		p.Close()
	}
}

// SIGTERM (and SIGINT, driven above) end with a summary, exit 0, and leave
// nothing attached.
func TestSigtermDetaches(t *testing.T) {
	privtest.Require(t)
	if n := ourPrograms(t); n != 0 {
		t.Skipf("%d programs named like ours already loaded (another tracer running?)", n)
	}
	cmd := exec.Command(binary, "--json")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	lines := bufio.NewScanner(stdout)
	if !lines.Scan() || !strings.Contains(lines.Text(), `"type":"start"`) {
		t.Fatalf("no start line: %q", lines.Text())
	}
	if n := ourPrograms(t); n == 0 {
		t.Fatal("no programs loaded while tracing")
	}
	cmd.Process.Signal(syscall.SIGTERM)
	var last string
	for lines.Scan() {
		last = lines.Text()
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
	if !strings.Contains(last, `"type":"summary"`) {
		t.Errorf("last line %q is not the summary", last)
	}
	if n := ourPrograms(t); n != 0 {
		t.Errorf("%d programs still loaded after exit", n)
	}
}
