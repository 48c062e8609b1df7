package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpmemtrace/tcpmemtrace/internal/render"
	"github.com/tcpmemtrace/tcpmemtrace/internal/testsupport/privtest"
	"github.com/tcpmemtrace/tcpmemtrace/internal/testsupport/workload"
	"github.com/tcpmemtrace/tcpmemtrace/stream"
)

// lines collects what the binary writes, a line at a time.
type lines struct {
	mu  sync.Mutex
	all []string
}

func (l *lines) read(sc *bufio.Scanner) {
	for sc.Scan() {
		l.mu.Lock()
		l.all = append(l.all, sc.Text())
		l.mu.Unlock()
	}
}

func (l *lines) notices() []render.NoticeObject {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []render.NoticeObject
	for _, s := range l.all {
		var n render.NoticeObject
		if json.Unmarshal([]byte(s), &n) == nil && n.Type == "notice" {
			out = append(out, n)
		}
	}
	return out
}

// waitNotices waits until the stream has said n files were written or
// failed.
func waitNotices(t *testing.T, l *lines, n int) []render.NoticeObject {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		var ended []render.NoticeObject
		for _, x := range l.notices() {
			if x.Kind == stream.NoticeFlightWritten || x.Kind == stream.NoticeFlightFailed {
				ended = append(ended, x)
			}
		}
		if len(ended) >= n {
			return ended
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d flight recordings ended, want %d; notices %+v", len(ended), n, l.notices())
		}
	}
}

// burst runs the tcp_mem reproduction once, in a namespace of its own,
// with tcp_mem lowered for it alone; it returns the kernel's aborts.
func burst(t *testing.T, g *workload.Guard, s workload.Scenario) uint64 {
	t.Helper()
	env, err := workload.Start(s)
	if err != nil {
		t.Fatal(err)
	}
	defer env.Close()
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
	return res.Delta("TCPAbortOnMemory")
}

// startFlight runs the binary with --json and the flight recorder into
// dir, and returns it with its output lines.
func startFlight(t *testing.T, dir string, extra ...string) (*exec.Cmd, *lines, *bytes.Buffer) {
	t.Helper()
	args := append([]string{"--json", "--flight-recorder", "2m", "--flight-after", "10s", "--flight-holdoff", "20s", "--flight-dir", dir}, extra...)
	cmd, sc, stderr := startJSON(t, args...)
	out := &lines{}
	go out.read(sc)
	return cmd, out, stderr
}

// The daemon with a flight recorder, over the tcp_mem reproduction: one
// file, holding records from before the first abort and exactly the
// kernel's aborts; a second burst inside the hold-off writes no file, a
// third after it does.
func TestFlightRecorderEndToEnd(t *testing.T) {
	privtest.Require(t)
	g := workload.LockT(t)
	dir := t.TempDir()
	cmd, out, stderr := startFlight(t, dir)

	first := burst(t, g, workload.Scenario{Kind: workload.OOM, Conns: 300, WriteFor: 4 * time.Second})
	written := waitNotices(t, out, 1)
	small := workload.Scenario{Kind: workload.OOM, Conns: 50, WriteFor: time.Second}
	burst(t, g, small) // inside the hold-off
	time.Sleep(3 * time.Second)
	if files, _ := filepath.Glob(filepath.Join(dir, "tcpmem-*.tmtrec")); len(files) != 1 {
		t.Fatalf("after a burst inside the hold-off: files %v, want the first only", files)
	}
	time.Sleep(20 * time.Second) // the hold-off runs from the first file's end
	burst(t, g, small)
	waitNotices(t, out, 2)
	cmd.Process.Signal(os.Interrupt)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("tcpmemtrace: %v; stderr %s", err, stderr.String())
	}
	files, _ := filepath.Glob(filepath.Join(dir, "tcpmem-*.tmtrec"))
	if len(files) != 2 {
		t.Fatalf("files %v, want 2", files)
	}
	if written[0].Kind != stream.NoticeFlightWritten || written[0].File != files[0] {
		t.Errorf("the stream said %+v; the first file is %s", written[0], files[0])
	}

	// The first file, replayed: why, what came before the first abort, and
	// the kernel's count.
	replay, err := exec.Command(binary, "-r", files[0], "--json").Output()
	if err != nil {
		t.Fatalf("replay: %v", err)
	}
	rl := strings.Split(strings.TrimSpace(string(replay)), "\n")
	var start render.StartObject
	var summary render.SummaryObject
	if err := json.Unmarshal([]byte(rl[0]), &start); err != nil || start.Trigger == nil {
		t.Fatalf("start %s: %v", rl[0], err)
	}
	if err := json.Unmarshal([]byte(rl[len(rl)-1]), &summary); err != nil {
		t.Fatal(err)
	}
	var firstAbort, earliest time.Time
	for _, l := range rl[1 : len(rl)-1] {
		var e render.EventObject
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatal(err)
		}
		if earliest.IsZero() {
			earliest = e.Time
		}
		if e.Type == "abort" && firstAbort.IsZero() {
			firstAbort = e.Time
		}
	}
	for _, n := range out.notices() {
		t.Logf("notice: %s", n.Text)
	}
	t.Logf("trigger %+v; first event %v, first abort %v; aborts %d, kernel %d", start.Trigger, earliest, firstAbort,
		summary.Totals.Events[stream.MemAborts], first)
	if firstAbort.IsZero() || !earliest.Before(firstAbort) {
		t.Errorf("no record before the first abort (first event %v, first abort %v)", earliest, firstAbort)
	}
	if got := summary.Totals.Events[stream.MemAborts]; got != first || first == 0 {
		t.Errorf("the file counts %d aborts, the kernel %d", got, first)
	}
	if text, err := exec.Command(binary, "-r", files[0]).Output(); err == nil {
		lines := strings.Split(string(text), "\n")
		t.Logf("the file replayed, first lines:\n%s", strings.Join(lines[:min(14, len(lines))], "\n"))
	}
	if !strings.Contains(filepath.Base(files[0]), "-"+start.Trigger.Kind+".tmtrec") {
		t.Errorf("file %s for trigger %s", files[0], start.Trigger.Kind)
	}
}

// A disk that fills during a dump: the file fails with a clear error, the
// tool goes on, and its counts stay the kernel's.
func TestFlightRecorderFullDisk(t *testing.T) {
	privtest.Require(t)
	g := workload.LockT(t)
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=32k"); err != nil {
		t.Skipf("mounting a small tmpfs: %v", err)
	}
	defer unix.Unmount(dir, unix.MNT_DETACH)
	cmd, out, stderr := startFlight(t, dir)
	aborts := burst(t, g, workload.Scenario{Kind: workload.OOM, Conns: 300, WriteFor: 4 * time.Second})
	ended := waitNotices(t, out, 1)
	if ended[0].Kind != stream.NoticeFlightFailed || !strings.Contains(ended[0].Text, "no space left on device") {
		t.Errorf("notice %+v: want the file failed for a full disk", ended[0])
	}
	if err := cmd.Process.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("the tool died: %v; stderr %s", err, stderr.String())
	}
	cmd.Process.Signal(os.Interrupt)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("tcpmemtrace: %v; stderr %s", err, stderr.String())
	}
	out.mu.Lock()
	last := out.all[len(out.all)-1]
	out.mu.Unlock()
	var summary render.SummaryObject
	if err := json.Unmarshal([]byte(last), &summary); err != nil || summary.Type != "summary" {
		t.Fatalf("last line %q: %v", last, err)
	}
	if got := summary.Totals.Events[stream.MemAborts]; got != aborts || aborts == 0 {
		t.Errorf("the trace counted %d aborts, the kernel %d", got, aborts)
	}
}
