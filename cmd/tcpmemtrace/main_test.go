package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/tcpmemtrace/tcpmemtrace/internal/procfs"
	"github.com/tcpmemtrace/tcpmemtrace/internal/render"
	"github.com/tcpmemtrace/tcpmemtrace/internal/testsupport/privtest"
	"github.com/tcpmemtrace/tcpmemtrace/internal/testsupport/witness"
	"github.com/tcpmemtrace/tcpmemtrace/internal/testsupport/workload"
	"github.com/tcpmemtrace/tcpmemtrace/stream"
)

var binary string // the real tcpmemtrace, built once

func TestMain(m *testing.M) {
	workload.RunRoleIfChild()
	// The kernel matrix's guests have no Go toolchain: they pass the binary.
	if binary = os.Getenv("TCPMEMTRACE_BINARY"); binary != "" {
		os.Exit(m.Run())
	}
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
		{"--metrics-addr", "9435"},
		{"--metrics-addr", ":9435", "--metrics-top-owners", "-1"},
		{"--quiet"},
		{"-r", "x.tmtrec", "--metrics-addr", ":9435"},
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
	wants := []string{"memory aborts", "pressure episodes", "memory drops", "allocation refusals", "PROTO_MEM="}
	if bytes.Contains(out, []byte("no drop reasons before 5.17")) {
		wants[len(wants)-1] = "fexit/tcp_try_rmem_schedule" // the drop reasons' values: none to show
	}
	for _, want := range wants {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("--list-probes lacks %q:\n%s", want, out)
		}
	}
}

// startJSON runs the binary with args (--json among them), its standard
// error kept, and returns a scanner over its standard output that has read
// the start line; it is killed at the end of the test.
func startJSON(t *testing.T, args ...string) (*exec.Cmd, *bufio.Scanner, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &bytes.Buffer{}
	cmd.Stderr = stderr
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
	return cmd, lines, stderr
}

// e2e is one run of the real binary over a scenario.
type e2e struct {
	env       *workload.Env
	start     render.StartObject
	events    []render.EventObject
	summary   render.SummaryObject
	res       workload.Result
	hostMIB   procfs.Counters // the test's own namespace over the run
	cgroup    string          // the reader's cgroup, relative to the hierarchy
	parent    string          // its parent, when nested
	typesSeen map[string]int
	// seen is what the witnesses counted of the PROTO_MEM frees and
	// memory-abort resets: with it, what the kernel counted that the
	// binary, or any BPF tool, can count (see package witness).
	seen witness.Seen
	// beforeStop runs after the traffic, while the binary still runs.
	beforeStop func(*e2e)
}

// beforeStop, when set, is handed to the next runE2E (see e2e.beforeStop).
var beforeStop func(*e2e)

// Where runE2E puts the reader.
const (
	readerInRoot = iota
	readerInCgroup
	readerInNestedCgroup // a child of a fresh cgroup
)

// runE2E starts the scenario's namespace, then the binary with --json and
// the flags args returns, lowers tcp_mem, runs the traffic, restores, stops
// the binary with SIGINT and parses everything it wrote.
func runE2E(t *testing.T, s workload.Scenario, readerCgroup int, args func(*e2e) []string) *e2e {
	t.Helper()
	g := workload.LockT(t)
	r := &e2e{typesSeen: map[string]int{}, beforeStop: beforeStop}
	beforeStop = nil
	if readerCgroup != readerInRoot {
		abs, rel, remove, err := workload.MakeCgroup("tcpmemtrace-reader")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := remove(); err != nil {
				t.Error(err)
			}
		})
		s.ReaderCgroup, r.cgroup = abs, rel
		if readerCgroup == readerInNestedCgroup {
			inner := filepath.Join(abs, "inner")
			if err := os.Mkdir(inner, 0o755); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { // registered later, so it runs before the parent's removal
				for range 50 {
					if os.Remove(inner) == nil {
						return
					}
					time.Sleep(100 * time.Millisecond)
				}
			})
			s.ReaderCgroup, r.parent, r.cgroup = inner, rel, rel+"/inner"
		}
	}
	var err error
	r.env, err = workload.Start(s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.env.Close)

	cmd, lines, stderr := startJSON(t, append([]string{"--json"}, args(r)...)...)
	if err := json.Unmarshal(lines.Bytes(), &r.start); err != nil {
		t.Fatal(err)
	}

	// Read the rest as it comes: a full pipe would stall the tracer.
	rest := make(chan [][]byte, 1)
	go func() {
		var out [][]byte
		for lines.Scan() {
			out = append(out, append([]byte(nil), lines.Bytes()...))
		}
		rest <- out
	}()

	hostBefore, err := procfs.MIB("self")
	if err != nil {
		t.Fatal(err)
	}
	witnesses := witness.StartPair(t, r.env.NetNS)
	if err := g.Set("net/ipv4/tcp_mem", "1000 2000 3000", 90*time.Second); err != nil {
		t.Fatal(err)
	}
	r.res, err = r.env.Run()
	r.seen = witnesses.Stop()
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
	r.hostMIB = hostAfter.Sub(hostBefore)

	if r.beforeStop != nil {
		r.beforeStop(r)
	}
	cmd.Process.Signal(os.Interrupt)
	for _, line := range <-rest {
		var o render.EventObject
		if err := json.Unmarshal(line, &o); err != nil || o.Type == "" {
			t.Fatalf("line %q: %v", line, err)
		}
		r.typesSeen[o.Type]++
		if o.Type == "summary" {
			if err := json.Unmarshal(line, &r.summary); err != nil {
				t.Fatal(err)
			}
			continue
		}
		r.events = append(r.events, o)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("tcpmemtrace: %v; stderr: %s", err, stderr.String())
	}
	if r.typesSeen["summary"] != 1 {
		t.Fatalf("%d summary lines; types %v; stderr %s", r.typesSeen["summary"], r.typesSeen, stderr.String())
	}
	t.Logf("totals %+v; event types %v", r.summary.Totals, r.typesSeen)
	return r
}

func (r *e2e) delta(name string) uint64 { return r.res.Delta(name) }

func (r *e2e) process(pid int) *render.ProcessJSON {
	for i := range r.summary.ByProcess {
		if int(r.summary.ByProcess[i].PID) == pid {
			return &r.summary.ByProcess[i]
		}
	}
	return nil
}

// TestOutOfMemoryEndToEnd: the summary of the real binary equals the
// kernel's counters for "TCP: out of memory -- consider tuning tcp_mem".
func TestOutOfMemoryEndToEnd(t *testing.T) {
	privtest.Require(t)
	s := workload.Scenario{Kind: workload.OOM, Conns: 300, WriteFor: 4 * time.Second}
	r := runE2E(t, s, readerInRoot, func(r *e2e) []string { return []string{"--netns", fmt.Sprint(r.env.NetNS)} })
	if r.start.NetNS != r.env.NetNS || len(r.start.Hooks) == 0 || r.start.TCPMem.Bytes[2] != r.start.TCPMem.Pages[2]*int64(r.start.PageSize) {
		t.Errorf("start object %+v", r.start)
	}
	tot := r.summary.Totals
	if want, kernel := r.seen.Aborts(t, r.res), r.delta("TCPAbortOnMemory"); tot.Events[stream.MemAborts] != want || kernel < 300 {
		t.Errorf("mem_aborts = %d, want %d of ΔTCPAbortOnMemory = %d (want >= 300)", tot.Events[stream.MemAborts], want, kernel)
	}
	if tot.Events[stream.OrphanAborts] != 0 {
		t.Errorf("orphan_aborts = %d, want 0", tot.Events[stream.OrphanAborts])
	}
	if want := r.seen.Drops(t, r.res); tot.Drops[stream.ProtoTCP][stream.ReasonProtoMem] != want || want == 0 {
		t.Errorf("drops[PROTO_MEM] = %d, want %d of Δ(TCPRcvQDrop+TCPOFODrop) (> 0)", tot.Drops[stream.ProtoTCP][stream.ReasonProtoMem], want)
	}
	hostPress := r.hostMIB.Get("TcpExt", "TCPMemoryPressures")
	if want := r.delta("TCPMemoryPressures") + hostPress; tot.PressureEpisodes != want || want == 0 {
		t.Errorf("pressure_episodes = %d, ΔTCPMemoryPressures = %d (want > 0)", tot.PressureEpisodes, want)
	}
	aborts := 0
	for _, o := range r.events {
		if o.Type == "abort" {
			aborts++
			if int(o.PID) != r.res.WriterPID || o.Comm != "tmt-writer" || o.Cause != "memory" {
				t.Errorf("abort %+v: want the writer %d, cause memory", o, r.res.WriterPID)
			}
		}
	}
	if tot.LostSamples == 0 && uint64(aborts) != tot.Events[stream.MemAborts] {
		t.Errorf("%d abort lines for %d aborts with no sample lost", aborts, tot.Events[stream.MemAborts])
	}
	if kl := r.summary.KernelLog; kl == nil || len(kl.Warnings) != 2 {
		t.Errorf("kernel_log %+v", kl)
	} else if w := kl.Warnings[0]; w.Events != tot.Events[stream.MemAborts] || w.Lines > int(w.Events) {
		t.Errorf("kernel log warning %+v against %d aborts", w, tot.Events[stream.MemAborts])
	} else {
		t.Logf("kernel log: %d aborts, %d lines printed, %d suppressed", w.Events, w.Lines, kl.Suppressed)
	}
}

// TestAttributionEndToEnd: every drop is the reader's (in its own cgroup),
// every abort the writer's, whichever task ran the kernel code.
func TestAttributionEndToEnd(t *testing.T) {
	privtest.Require(t)
	s := workload.Scenario{Kind: workload.OOM, Conns: 300, WriteFor: 4 * time.Second}
	r := runE2E(t, s, readerInCgroup, func(r *e2e) []string { return []string{"--netns", fmt.Sprint(r.env.NetNS)} })
	drops := r.seen.Drops(t, r.res)
	aborts := r.seen.Aborts(t, r.res)
	if drops == 0 || aborts == 0 {
		t.Fatalf("the reproduction produced %d drops, %d aborts", drops, aborts)
	}
	reader, writer := r.process(r.res.ReaderPID), r.process(r.res.WriterPID)
	if reader == nil || writer == nil {
		t.Fatalf("by_process %+v lacks the reader %d or the writer %d", r.summary.ByProcess, r.res.ReaderPID, r.res.WriterPID)
	}
	if reader.Comm != "tmt-reader" || reader.Cgroup != r.cgroup || reader.Counts.Drops[stream.ProtoTCP][stream.ReasonProtoMem] != drops {
		t.Errorf("reader entry %+v: want comm tmt-reader, cgroup %s, %d PROTO_MEM drops", reader, r.cgroup, drops)
	}
	if writer.Comm != "tmt-writer" || writer.Counts.Events[stream.MemAborts] != aborts || writer.Counts.Drops[stream.ProtoTCP][stream.ReasonProtoMem] != 0 {
		t.Errorf("writer entry %+v: want %d memory aborts and no drops", writer, aborts)
	}
	var cg *render.GroupJSON
	for i := range r.summary.ByCgroup {
		if r.summary.ByCgroup[i].Cgroup == r.cgroup {
			cg = &r.summary.ByCgroup[i]
		}
	}
	if cg == nil || cg.Counts.Drops[stream.ProtoTCP][stream.ReasonProtoMem] != drops || len(cg.PIDs) != 1 || int(cg.PIDs[0]) != r.res.ReaderPID {
		t.Errorf("by_cgroup entry for %s: %+v, want the reader's %d drops", r.cgroup, cg, drops)
	}
	for _, e := range r.events {
		switch e.Type {
		case "drop":
			if int(e.PID) != r.res.ReaderPID || e.Cgroup != r.cgroup {
				t.Errorf("drop owned by %d in %q, want the reader %d in %s", e.PID, e.Cgroup, r.res.ReaderPID, r.cgroup)
			}
		case "abort":
			if int(e.PID) != r.res.WriterPID {
				t.Errorf("abort owned by %d, want the writer %d", e.PID, r.res.WriterPID)
			}
		}
	}
	if len(r.summary.TopSockets) == 0 || r.summary.TopSockets[0].Events == 0 {
		t.Errorf("top_sockets %+v", r.summary.TopSockets)
	}
}

// TestPIDFilterEndToEnd: with -p <reader>, only the reader's events and
// counts; the connections exist before the tracer starts, so the reader's
// sockets (it never reads) can only be known from the startup snapshot.
func TestPIDFilterEndToEnd(t *testing.T) {
	privtest.Require(t)
	s := workload.Scenario{Kind: workload.OOM, Conns: 300, WriteFor: 4 * time.Second, PreConnect: true}
	r := runE2E(t, s, readerInRoot, func(r *e2e) []string {
		return []string{"--netns", fmt.Sprint(r.env.NetNS), "-p", fmt.Sprint(r.env.ReaderPID)}
	})
	tot := r.summary.Totals
	drops := r.seen.Drops(t, r.res)
	if tot.Drops[stream.ProtoTCP][stream.ReasonProtoMem] != drops || drops == 0 {
		t.Errorf("drops[PROTO_MEM] = %d, want the reader's %d", tot.Drops[stream.ProtoTCP][stream.ReasonProtoMem], drops)
		explainFiltered(t, r)
	}
	if tot.Events[stream.MemAborts] != 0 || r.delta("TCPAbortOnMemory") == 0 {
		t.Errorf("mem_aborts = %d with the writer filtered out (kernel: %d)", tot.Events[stream.MemAborts], r.delta("TCPAbortOnMemory"))
	}
	for _, e := range r.events {
		if strings.HasPrefix(e.Type, "pressure") {
			continue // global
		}
		if int(e.PID) != r.res.ReaderPID {
			t.Errorf("%s event owned by %d with -p %d", e.Type, e.PID, r.res.ReaderPID)
		}
	}
	if len(r.summary.ByProcess) != 1 || int(r.summary.ByProcess[0].PID) != r.res.ReaderPID {
		t.Errorf("by_process %+v, want only the reader", r.summary.ByProcess)
	}
}

// onlyReader checks a run filtered down to the reader: its drops, no abort.
func onlyReader(t *testing.T, r *e2e) {
	t.Helper()
	tot := r.summary.Totals
	drops := r.seen.Drops(t, r.res)
	if tot.Drops[stream.ProtoTCP][stream.ReasonProtoMem] != drops || drops == 0 || tot.Events[stream.MemAborts] != 0 || r.delta("TCPAbortOnMemory") == 0 {
		t.Errorf("drops %d (want %d of the kernel's), aborts %d (kernel %d): want only the reader's drops",
			tot.Drops[stream.ProtoTCP][stream.ReasonProtoMem], drops, tot.Events[stream.MemAborts], r.delta("TCPAbortOnMemory"))
		explainFiltered(t, r)
	}
	for _, e := range r.events {
		if !strings.HasPrefix(e.Type, "pressure") && int(e.PID) != r.res.ReaderPID {
			t.Errorf("%s event owned by %d %q, want only the reader %d", e.Type, e.PID, e.Comm, r.res.ReaderPID)
		}
	}
}

// explainFiltered logs what an owner-filtered run that missed some of the
// reader's drops comes with. Once in CI (-p, sockets opened before the
// tool) 733 of the reader's 900 drops were counted: as if some of its
// sockets had no owner, or another, when their drops came, though the
// startup snapshot should have stamped them all.
func explainFiltered(t *testing.T, r *e2e) {
	t.Helper()
	for _, h := range r.start.Hooks {
		if h.Event == stream.EventOwners {
			t.Logf("owners: %s; notes %v", h.Using, h.Notes)
		}
	}
	t.Logf("by process %+v; missed runs %d %v, lost %d", r.summary.ByProcess, r.summary.Totals.MissedRuns, r.summary.Totals.Missed, r.summary.Totals.LostSamples)
}

// TestCgroupFilterEndToEnd: --cgroup selects a subtree. The reader sits in
// a child of the selected cgroup and its sockets predate the tracer, so the
// snapshot's ancestor walk decides, not only the hooks'.
func TestCgroupFilterEndToEnd(t *testing.T) {
	privtest.Require(t)
	s := workload.Scenario{Kind: workload.OOM, Conns: 300, WriteFor: 4 * time.Second, PreConnect: true}
	r := runE2E(t, s, readerInNestedCgroup, func(r *e2e) []string {
		return []string{"--netns", fmt.Sprint(r.env.NetNS), "--cgroup", r.parent}
	})
	onlyReader(t, r)
	if r.start.Cgroup != r.parent {
		t.Errorf("start object's cgroup filter %q, want %q", r.start.Cgroup, r.parent)
	}
	if len(r.summary.ByCgroup) != 1 || r.summary.ByCgroup[0].Cgroup != r.cgroup {
		t.Errorf("by_cgroup %+v, want only %s", r.summary.ByCgroup, r.cgroup)
	}
}

// TestCommFilterEndToEnd: --comm tmt-writer keeps the writer's aborts only.
func TestCommFilterEndToEnd(t *testing.T) {
	privtest.Require(t)
	s := workload.Scenario{Kind: workload.OOM, Conns: 300, WriteFor: 4 * time.Second}
	r := runE2E(t, s, readerInRoot, func(r *e2e) []string {
		return []string{"--netns", fmt.Sprint(r.env.NetNS), "--comm", "tmt-writer"}
	})
	tot := r.summary.Totals
	if want := r.seen.Aborts(t, r.res); tot.Events[stream.MemAborts] != want || want == 0 || tot.Drops[stream.ProtoTCP][stream.ReasonProtoMem] != 0 {
		t.Errorf("aborts %d (want %d of the kernel's), drops %d: want only the writer's aborts", tot.Events[stream.MemAborts], want, tot.Drops[stream.ProtoTCP][stream.ReasonProtoMem])
	}
	for _, e := range r.events {
		if !strings.HasPrefix(e.Type, "pressure") && e.Comm != "tmt-writer" {
			t.Errorf("%s event of %q with --comm tmt-writer", e.Type, e.Comm)
		}
	}
}

// TestRecordAndReplay: -w records the reproduction; -r replays it, with no
// privileges, to the same summary: totals equal to the live run's and to
// the kernel's counters, the same per-process counts.
func TestRecordAndReplay(t *testing.T) {
	privtest.Require(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "oom.tmtrec")
	s := workload.Scenario{Kind: workload.OOM, Conns: 300, WriteFor: 4 * time.Second}
	r := runE2E(t, s, readerInRoot, func(r *e2e) []string { return []string{"--netns", fmt.Sprint(r.env.NetNS), "-w", file} })
	if st, err := os.Stat(file); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("recording: %v, %v", st, err)
	}

	// As nobody, from a copy nobody may read (the recording itself is 0600).
	shared, err := os.MkdirTemp("", "tcpmemtrace-replay")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(shared)
	os.Chmod(shared, 0o755)
	b, _ := os.ReadFile(file)
	cp := filepath.Join(shared, "oom.tmtrec")
	if err := os.WriteFile(cp, b, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary, "-r", cp, "--json")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("replay as nobody: %v", err)
	}
	lines := bytes.Split(bytes.TrimSpace(out), []byte("\n"))
	var replayed render.SummaryObject
	if err := json.Unmarshal(lines[len(lines)-1], &replayed); err != nil || replayed.Type != "summary" {
		t.Fatalf("last replay line %q: %v", lines[len(lines)-1], err)
	}
	if !reflect.DeepEqual(replayed.Totals, r.summary.Totals) {
		t.Errorf("replayed totals %+v\n    live totals %+v", replayed.Totals, r.summary.Totals)
	}
	if !reflect.DeepEqual(replayed.ByProcess, r.summary.ByProcess) {
		t.Errorf("replayed by_process %+v\n    live %+v", replayed.ByProcess, r.summary.ByProcess)
	}
	if got, want := replayed.Totals.Events[stream.MemAborts], r.seen.Aborts(t, r.res); got != want || want == 0 {
		t.Errorf("replayed mem_aborts %d, want %d of the kernel's", got, want)
	}
	if got, want := replayed.Totals.Drops[stream.ProtoTCP][stream.ReasonProtoMem], r.seen.Drops(t, r.res); got != want || want == 0 {
		t.Errorf("replayed drops %d, want %d of the kernel's", got, want)
	}
	if events := len(lines) - 2; events != len(r.events) {
		t.Errorf("replay wrote %d events, live %d", events, len(r.events))
	}

	// -p on the replay: only the reader, totals from its exact counts.
	out, err = exec.Command(binary, "-r", file, "--json", "-p", fmt.Sprint(r.res.ReaderPID)).Output()
	if err != nil {
		t.Fatal(err)
	}
	lines = bytes.Split(bytes.TrimSpace(out), []byte("\n"))
	var reader render.SummaryObject
	json.Unmarshal(lines[len(lines)-1], &reader)
	if reader.Totals.Events[stream.MemAborts] != 0 || reader.Totals.Drops[stream.ProtoTCP][stream.ReasonProtoMem] != r.summary.Totals.Drops[stream.ProtoTCP][stream.ReasonProtoMem] {
		t.Errorf("replay -p reader: %+v", reader.Totals)
	}
}

// TestPreexistingConnections: sockets opened before the tracer get their
// owners from the startup snapshot.
func TestPreexistingConnections(t *testing.T) {
	privtest.Require(t)
	s := workload.Scenario{Kind: workload.OOM, Conns: 300, WriteFor: 4 * time.Second, PreConnect: true}
	r := runE2E(t, s, readerInRoot, func(r *e2e) []string { return []string{"--netns", fmt.Sprint(r.env.NetNS)} })
	drops := r.seen.Drops(t, r.res)
	if reader := r.process(r.res.ReaderPID); reader == nil || reader.Counts.Drops[stream.ProtoTCP][stream.ReasonProtoMem] != drops || drops == 0 {
		t.Errorf("reader entry %+v, want all %d drops", reader, drops)
	}
	if unknown := r.process(0); unknown != nil {
		t.Errorf("events with no owner: %+v", unknown)
	}
	var hooks []string
	for _, h := range r.start.Hooks {
		hooks = append(hooks, h.Using)
	}
	if !strings.Contains(strings.Join(hooks, " "), "iter/task_file") {
		t.Errorf("hooks %v do not mention the startup snapshot", hooks)
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
