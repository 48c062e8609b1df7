package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpmemtrace/tcpmemtrace/internal/render"
	"github.com/tcpmemtrace/tcpmemtrace/internal/testsupport/privtest"
	"github.com/tcpmemtrace/tcpmemtrace/internal/testsupport/workload"
)

// Bad input to a replay: one line, exit 2 (or 1 for a file that is not a
// recording), at once.
func TestReplayInput(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"-r", ""}, 2, "empty file name"},
		{[]string{"-r", dir}, 1, "is a directory"},
		{[]string{"-r", "x.tmtrec", "--hooks", "tracepoints"}, 2, "--hooks does not go with --read"},
		{[]string{"-r", "x.tmtrec", "--record-rate", "5"}, 2, "--record-rate does not go with --read"},
		{[]string{"-r", "x.tmtrec", "--ringbuf-kib", "64"}, 2, "--ringbuf-kib does not go with --read"},
	} {
		var stdout, stderr bytes.Buffer
		if code := mainExit(tc.args, &stdout, &stderr); code != tc.code || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%q: exit %d, stderr %q; want %d and %q", tc.args, code, stderr.String(), tc.code, tc.want)
		}
	}
}

// A FIFO as -r waits for its writer, but a signal ends the wait.
func TestFIFOReplayEndsOnSignal(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary, "-r", fifo, "--json")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		t.Logf("ended: %v", err)
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
		t.Fatal("still waiting for the FIFO's writer 5 s after SIGTERM")
	}
}

// Live-trace input that is bad is found before anything is loaded: a port
// that cannot be had exits 2 and leaves no recording behind; a FIFO as -w
// is refused at once.
func TestLiveInputBeforeLoading(t *testing.T) {
	privtest.Require(t)
	dir := t.TempDir()
	rec := filepath.Join(dir, "trace.tmtrec")
	for _, addr := range []string{"127.0.0.1:99999", "192.0.2.1:9435"} {
		var stdout, stderr bytes.Buffer
		start := time.Now()
		if code := mainExit([]string{"--metrics-addr", addr, "-w", rec, "-d", "1s"}, &stdout, &stderr); code != 2 {
			t.Errorf("--metrics-addr %s: exit %d, %s", addr, code, stderr.String())
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("--metrics-addr %s: took %v (loaded BPF first?)", addr, d)
		}
		if _, err := os.Stat(rec); err == nil {
			t.Errorf("--metrics-addr %s left %s behind", addr, rec)
		}
	}
	fifo := filepath.Join(dir, "fifo")
	unix.Mkfifo(fifo, 0o600)
	out, err := exec.Command(binary, "-w", fifo, "-d", "1s").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "FIFO") {
		t.Errorf("-w FIFO: %v %s", err, out)
	}
}

// `tcpmemtrace | head -1`: the tracer ends when the pipe's reader does,
// not at its next write, and leaves nothing attached.
func TestPipeReaderGone(t *testing.T) {
	privtest.Require(t)
	if n := ourPrograms(t); n != 0 {
		t.Skipf("%d programs named like ours already loaded", n)
	}
	cmd := exec.Command(binary)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	if _, err := bufio.NewReader(stdout).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	for ourPrograms(t) == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	stdout.Close() // as head does after its line
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("exit: %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("still tracing 3 s after its reader went away")
	}
	if n := ourPrograms(t); n != 0 {
		t.Errorf("%d programs left", n)
	}
}

// SIGHUP (a closed terminal, an ended ssh session) ends with the summary.
func TestSighupSummary(t *testing.T) {
	privtest.Require(t)
	cmd, lines, _ := startJSON(t, "--json")
	cmd.Process.Signal(syscall.SIGHUP)
	var last string
	for lines.Scan() {
		last = lines.Text()
	}
	if err := cmd.Wait(); err != nil || !strings.Contains(last, `"type":"summary"`) {
		t.Errorf("exit %v, last line %q", err, last)
	}
}

// rss is a process's resident memory in MB.
func rss(t *testing.T, pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.Atoi(strings.Fields(v)[0])
			return float64(kb) / 1024
		}
	}
	return 0
}

// syncBuffer is a buffer a command writes while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startDaemon runs the binary as a daemon with metrics, waiting for them.
func startDaemon(t *testing.T, extra ...string) (*exec.Cmd, string, *syncBuffer) {
	t.Helper()
	port := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	stderr := &syncBuffer{}
	cmd := exec.Command(binary, append([]string{"-q", "--metrics-addr", addr}, extra...)...)
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() })
	for deadline := time.Now().Add(10 * time.Second); ; {
		if resp, err := http.Get("http://" + addr + "/metrics"); err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no metrics: %s", stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return cmd, addr, stderr
}

// 3,000 clients that scrape once and stay connected: the daemon holds a
// few of them, stays small, and a fresh scrape is answered.
func TestIdleMetricsClients(t *testing.T) {
	privtest.Require(t)
	var lim unix.Rlimit
	unix.Getrlimit(unix.RLIMIT_NOFILE, &lim)
	if lim.Cur < 4096 {
		lim.Cur = max(lim.Max, 8192)
		lim.Max = lim.Cur
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
			t.Skipf("cannot raise the fd limit for 3,000 clients: %v", err)
		}
	}
	cmd, addr, _ := startDaemon(t)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range 3000 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		fmt.Fprintf(c, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n") // and never read the answer
	}
	time.Sleep(2 * time.Second)
	start := time.Now()
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + addr + "/metrics")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("a fresh scrape among 3,000 idle clients: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	mb := rss(t, cmd.Process.Pid)
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", cmd.Process.Pid))
	t.Logf("fresh scrape in %v; daemon RSS %.1f MB, %d fds", time.Since(start), mb, len(fds))
	if mb > 60 || len(fds) > 400 {
		t.Errorf("RSS %.1f MB, %d fds with 3,000 idle clients: want under 60 MB and a bounded count", mb, len(fds))
	}
}

// A full disk under a recording daemon costs the recording: the daemon and
// its metrics go on, and both say what happened.
func TestFullDiskKeepsTheDaemon(t *testing.T) {
	privtest.Require(t)
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=16k"); err != nil {
		t.Skipf("mounting a small tmpfs: %v", err)
	}
	defer unix.Unmount(dir, unix.MNT_DETACH)
	cmd, addr, stderr := startDaemon(t, "-w", filepath.Join(dir, "trace.tmtrec"))
	// Snapshots alone (one a second, with the start's header) fill 16 KiB.
	var failed bool
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline) && !failed; time.Sleep(500 * time.Millisecond) {
		failed = strings.Contains(metricText(t, addr), "tcpmemtrace_recording_failed 1") &&
			strings.Contains(stderr.String(), "stopped")
	}
	if !failed {
		t.Fatalf("the recording never failed; stderr %s", stderr.String())
	}
	if err := cmd.Process.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("the daemon died: %v; stderr %s", err, stderr.String())
	}
	if !strings.Contains(metricText(t, addr), "tcpmemtrace_tcp_memory_allocated_bytes") {
		t.Error("metrics gone")
	}
	if !strings.Contains(stderr.String(), "no space left on device") || !strings.Contains(stderr.String(), "tracing goes on") {
		t.Errorf("stderr %q does not report the full disk", stderr.String())
	}
}

func metricText(t *testing.T, addr string) string {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// The command mounts tracefs when it is missing (a container, a minimal
// host) and takes it away again.
func TestTracefsMountedAndUnmounted(t *testing.T) {
	privtest.Require(t)
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("unshare not installed (util-linux)")
	}
	script := `set -e
mount --make-rprivate /
for m in /sys/kernel/tracing /sys/kernel/debug/tracing /sys/kernel/debug; do umount -l $m 2>/dev/null || true; done
"$0" --json -d 1s > "$1"
grep -c ' - tracefs ' /proc/self/mountinfo || true`
	out := filepath.Join(t.TempDir(), "out.jsonl")
	b, err := exec.Command("unshare", "-m", "sh", "-c", script, binary, out).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	if n := strings.TrimSpace(string(b)); n != "0" {
		t.Errorf("%s tracefs mounts left after the run", n)
	}
	f, _ := os.ReadFile(out)
	var start render.StartObject
	if err := json.Unmarshal(bytes.SplitN(f, []byte("\n"), 2)[0], &start); err != nil {
		t.Fatal(err)
	}
	for _, h := range start.Hooks {
		for _, n := range h.Notes {
			if strings.Contains(n, "not attached") {
				t.Errorf("%s: %s", h.Event, n)
			}
		}
	}
}

// Without kernel BTF, or with a broken one, one line says what is needed.
func TestNoOrBrokenBTF(t *testing.T) {
	privtest.Require(t)
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("unshare not installed (util-linux)")
	}
	for name, hide := range map[string]string{
		"missing": "mount -t tmpfs none /sys/kernel/btf",
		"empty":   "touch \"$1\"/empty && mount --bind \"$1\"/empty /sys/kernel/btf/vmlinux",
	} {
		// /boot and /lib/modules hold other places the library looks for BTF.
		script := "set -e; mount --make-rprivate /; " + hide + "; for d in /boot /lib/modules; do [ -d $d ] && mount -t tmpfs none $d; done; exec \"$0\" -d 1s"
		out, err := exec.Command("unshare", "-m", "sh", "-c", script, binary, t.TempDir()).CombinedOutput()
		var ee *exec.ExitError
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if !errors.As(err, &ee) || ee.ExitCode() != 1 || len(lines) != 1 || !strings.Contains(lines[0], "BTF") {
			t.Errorf("%s BTF: %v, output %q: want one line naming BTF, exit 1", name, err, out)
		}
		t.Logf("%s: %s", name, lines[0])
	}
}

// Root without CAP_SYS_ADMIN cannot enter other network namespaces: diagnose
// says that, not "not root".
func TestDiagnoseWithoutSysAdmin(t *testing.T) {
	privtest.Require(t)
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("setpriv not installed (util-linux)")
	}
	// Another namespace to fail to enter.
	ns, err := workload.NewNetns()
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	cmd := exec.Command("setpriv", "--inh-caps=-sys_admin", "--bounding-set=-sys_admin", binary, "diagnose", "--json")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	var r struct{ Notes []string }
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatal(err)
	}
	notes := strings.Join(r.Notes, "\n")
	if !strings.Contains(notes, "CAP_SYS_ADMIN") || strings.Contains(notes, "not root") {
		t.Errorf("notes %q", notes)
	}
}
