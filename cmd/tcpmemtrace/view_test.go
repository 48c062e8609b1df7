package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tcpmemtrace/tcpmemtrace/internal/testsupport/privtest"
	"github.com/tcpmemtrace/tcpmemtrace/internal/testsupport/workload"
)

// tmuxServer is a tmux server of the test's own: a real pseudo-terminal
// the view draws in, read back as text.
type tmuxServer struct {
	t    *testing.T
	sock string
}

func (s tmuxServer) run(args ...string) string {
	s.t.Helper()
	out, err := exec.Command("tmux", append([]string{"-L", s.sock}, args...)...).CombinedOutput()
	if err != nil {
		s.t.Fatalf("tmux %v: %v: %s", args, err, out)
	}
	return string(out)
}

func (s tmuxServer) screen() string { return s.run("capture-pane", "-p", "-t", "view") }

// waitFor polls the screen until ok says yes.
func (s tmuxServer) waitFor(what string, within time.Duration, ok func(string) bool) string {
	s.t.Helper()
	var scr string
	for end := time.Now().Add(within); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if scr = s.screen(); ok(scr) {
			return scr
		}
	}
	s.t.Fatalf("no %s on the screen after %v:\n%s", what, within, scr)
	return ""
}

// figure reads a right-aligned column of the owners table: the number in
// row that ends where the header's column name ends.
func figure(header, row, column string) (uint64, bool) {
	end := strings.Index(header, column) + len(column)
	if end < len(column) || end > len(row) {
		return 0, false
	}
	f := strings.Fields(row[:end])
	if len(f) == 0 {
		return 0, false
	}
	n, err := strconv.ParseUint(f[len(f)-1], 10, 64)
	return n, err == nil
}

// owners finds the owners table's header and the rows of two processes.
func owners(scr string, reader, writer int) (header, r, w string) {
	for _, l := range strings.Split(scr, "\n") {
		switch f := strings.Fields(l); {
		case len(f) > 0 && f[0] == "PID":
			header = l
		case len(f) > 1 && f[0] == fmt.Sprint(reader) && f[1] == "tmt-reader":
			r = l
		case len(f) > 1 && f[0] == fmt.Sprint(writer) && f[1] == "tmt-writer":
			w = l
		}
	}
	return header, r, w
}

// TestViewDuringReproduction runs the real binary in a pseudo-terminal
// while the tcp_mem reproduction runs: the screen shows the gauge, the
// pressure state, and the reader's drops and the writer's aborts (exact:
// every abort is the writer's); q restores the terminal and prints the
// summary.
func TestViewDuringReproduction(t *testing.T) {
	privtest.Require(t)
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Skip("tmux is not installed (apt-get install tmux): the view needs a terminal to test in")
	}
	g := workload.LockT(t)
	env, err := workload.Start(workload.Scenario{Kind: workload.OOM, Conns: 300, WriteFor: 4 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.Close)

	s := tmuxServer{t: t, sock: fmt.Sprintf("tmt-view-%d", os.Getpid())}
	cmdline := fmt.Sprintf("%s --netns %d --interval 200ms; echo EXIT=$?; sleep 600", binary, env.NetNS)
	s.run("new-session", "-d", "-s", "view", "-x", "200", "-y", "50", cmdline)
	t.Cleanup(func() { exec.Command("tmux", "-L", s.sock, "kill-server").Run() })
	s.waitFor("gauge", 15*time.Second, func(scr string) bool { return strings.Contains(scr, "TCP memory [") })
	if on := strings.TrimSpace(s.run("display", "-p", "-t", "view", "#{alternate_on}")); on != "1" {
		t.Errorf("alternate screen %q while the view runs, want 1", on)
	}

	// Watch the screen while the reproduction runs.
	var pressure bool
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-time.After(100 * time.Millisecond):
			case <-stop:
				return
			}
			out, err := exec.Command("tmux", "-L", s.sock, "capture-pane", "-p", "-t", "view").Output()
			if err == nil && strings.Contains(string(out), "UNDER PRESSURE") {
				pressure = true
			}
		}
	}()
	if err := g.Set("net/ipv4/tcp_mem", "1000 2000 3000", 90*time.Second); err != nil {
		t.Fatal(err)
	}
	res, err := env.Run()
	if rerr := g.Restore(); rerr != nil {
		t.Fatal(rerr)
	}
	close(stop)
	<-done
	if err != nil {
		t.Fatal(err)
	}
	if !pressure {
		t.Error("the screen never said UNDER PRESSURE while tcp_mem was lowered")
	}

	// The last aborts reach the screen within a refresh or two.
	aborts := res.Delta("TCPAbortOnMemory")
	scr := s.waitFor("every abort on the writer's row", 5*time.Second, func(scr string) bool {
		h, _, w := owners(scr, res.ReaderPID, res.WriterPID)
		n, ok := figure(h, w, "ABORTS")
		return ok && n == aborts
	})
	t.Logf("the screen after the reproduction:\n%s", scr)
	header, reader, _ := owners(scr, res.ReaderPID, res.WriterPID)
	if d, ok := figure(header, reader, "DROPS"); !ok || d == 0 || aborts == 0 {
		t.Errorf("reader row %q: %d drops; %d aborts (want both > 0)\n%s", reader, d, aborts, scr)
	}
	if !strings.Contains(scr, "TCP memory [") || !strings.Contains(scr, "tcp_mem: low") {
		t.Errorf("no gauge:\n%s", scr)
	}

	s.run("send-keys", "-t", "view", "q")
	end := s.waitFor("exit", 15*time.Second, func(scr string) bool { return strings.Contains(scr, "EXIT=") })
	if !strings.Contains(end, "EXIT=0") || !strings.Contains(end, "SUMMARY") {
		t.Errorf("after q:\n%s", end)
	}
	if on := strings.TrimSpace(s.run("display", "-p", "-t", "view", "#{alternate_on}")); on != "0" {
		t.Errorf("alternate screen %q after q, want 0 (terminal restored)", on)
	}
}

// replayInTmux skips without tmux, and gives the recording the replay
// tests play.
func replayInTmux(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Skip("tmux is not installed (apt-get install tmux): the view needs a terminal to test in")
	}
	rec, err := filepath.Abs("../../testdata/rcvbuf-6.18.tmtrec")
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// TestViewReplay plays a recording in the view (no privileges needed): the
// recorded drops are on screen, marked as a replay.
func TestViewReplay(t *testing.T) {
	rec := replayInTmux(t)
	s := tmuxServer{t: t, sock: fmt.Sprintf("tmt-replay-%d", os.Getpid())}
	s.run("new-session", "-d", "-s", "view", "-x", "120", "-y", "40", binary+" -r "+rec+"; echo EXIT=$?; sleep 600")
	t.Cleanup(func() { exec.Command("tmux", "-L", s.sock, "kill-server").Run() })
	scr := s.waitFor("the recorded drops", 10*time.Second, func(scr string) bool {
		return strings.Contains(scr, "[replay, ended]") && strings.Contains(scr, "drops: PROTO_MEM")
	})
	if !strings.Contains(scr, "tmt-reader") {
		t.Errorf("no reader row in the replay:\n%s", scr)
	}
	s.run("send-keys", "-t", "view", "q")
	if end := s.waitFor("exit", 10*time.Second, func(scr string) bool { return strings.Contains(scr, "EXIT=") }); !strings.Contains(end, "EXIT=0") {
		t.Errorf("after q:\n%s", end)
	}
}

// The view follows the terminal's size, and leaves the terminal as it found
// it when it is told to stop from outside: Ctrl-C, or SIGTERM.
func TestViewResizeAndSignals(t *testing.T) {
	rec := replayInTmux(t)
	for _, stop := range []string{"ctrl-c", "sigterm"} {
		t.Run(stop, func(t *testing.T) {
			s := tmuxServer{t: t, sock: fmt.Sprintf("tmt-%s-%d-%d", stop, os.Getpid(), time.Now().UnixNano())}
			// exec: the pane's process is the binary; the pane stays after it exits.
			s.run("new-session", "-d", "-s", "view", "-x", "120", "-y", "40", "exec "+binary+" -r "+rec)
			t.Cleanup(func() { exec.Command("tmux", "-L", s.sock, "kill-server").Run() })
			s.run("set-option", "-t", "view", "remain-on-exit", "on")
			s.waitFor("the replay", 10*time.Second, func(scr string) bool { return strings.Contains(scr, "[replay") })

			s.run("resize-window", "-t", "view", "-x", "90", "-y", "30")
			s.waitFor("a 90-column frame", 5*time.Second, func(scr string) bool {
				first, _, _ := strings.Cut(scr, "\n")
				return strings.HasSuffix(strings.TrimRight(first, " "), "[replay, ended]") && len([]rune(strings.TrimRight(first, " "))) == 90
			})

			if stop == "ctrl-c" {
				s.run("send-keys", "-t", "view", "C-c")
			} else {
				pid, err := strconv.Atoi(strings.TrimSpace(s.run("display", "-p", "-t", "view", "#{pane_pid}")))
				if err != nil {
					t.Fatal(err)
				}
				if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
					t.Fatal(err)
				}
			}
			for end := time.Now().Add(10 * time.Second); strings.TrimSpace(s.run("display", "-p", "-t", "view", "#{pane_dead}")) != "1"; {
				if time.Now().After(end) {
					t.Fatalf("still running 10 s after %s:\n%s", stop, s.screen())
				}
				time.Sleep(100 * time.Millisecond)
			}
			if on := strings.TrimSpace(s.run("display", "-p", "-t", "view", "#{alternate_on}")); on != "0" {
				t.Errorf("alternate screen %q after %s, want 0 (terminal restored)", on, stop)
			}
			if scr := s.screen(); !strings.Contains(scr, "SUMMARY") {
				t.Errorf("no summary after %s:\n%s", stop, scr)
			}
		})
	}
}
