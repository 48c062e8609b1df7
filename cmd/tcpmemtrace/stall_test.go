package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tcpmemtrace/tcpmemtrace/internal/diagnose"
	"github.com/tcpmemtrace/tcpmemtrace/internal/render"
	"github.com/tcpmemtrace/tcpmemtrace/internal/sockdiag"
	"github.com/tcpmemtrace/tcpmemtrace/internal/testsupport/privtest"
	"github.com/tcpmemtrace/tcpmemtrace/internal/testsupport/workload"
)

// liveTrace is the real binary tracing, with --json, until stop.
type liveTrace struct {
	cmd    *exec.Cmd
	stderr bytes.Buffer
	rest   chan [][]byte
}

// startTrace starts the binary and returns once its hooks are attached
// (the start line).
func startTrace(t *testing.T, args ...string) *liveTrace {
	t.Helper()
	lt := &liveTrace{cmd: exec.Command(binary, append([]string{"--json"}, args...)...), rest: make(chan [][]byte, 1)}
	stdout, err := lt.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	lt.cmd.Stderr = &lt.stderr
	if err := lt.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lt.cmd.Process.Kill() })
	lines := bufio.NewScanner(stdout)
	lines.Buffer(make([]byte, 1<<20), 1<<20)
	if !lines.Scan() || !strings.Contains(lines.Text(), `"type":"start"`) {
		t.Fatalf("no start line: %q; stderr: %s", lines.Text(), lt.stderr.String())
	}
	go func() { // as it comes: a full pipe would stall the tracer
		var out [][]byte
		for lines.Scan() {
			out = append(out, append([]byte(nil), lines.Bytes()...))
		}
		lt.rest <- out
	}()
	return lt
}

// stop ends the trace with SIGINT and returns its summary, and when it
// was asked to end.
func (lt *liveTrace) stop(t *testing.T) (render.SummaryObject, time.Time) {
	t.Helper()
	at := time.Now()
	lt.cmd.Process.Signal(os.Interrupt)
	out := <-lt.rest
	if err := lt.cmd.Wait(); err != nil {
		t.Fatalf("tcpmemtrace: %v; stderr: %s", err, lt.stderr.String())
	}
	var s render.SummaryObject
	if len(out) == 0 || json.Unmarshal(out[len(out)-1], &s) != nil || s.Type != "summary" {
		t.Fatalf("no summary; stderr: %s", lt.stderr.String())
	}
	return s, at
}

// runDiagnose runs `tcpmemtrace diagnose` as text and as JSON.
func runDiagnose(t *testing.T) (string, diagnose.Report) {
	t.Helper()
	text, err := exec.Command(binary, "diagnose", "--top", "1000").Output()
	if err != nil {
		t.Fatalf("diagnose: %v", err)
	}
	js, err := exec.Command(binary, "diagnose", "--json", "--top", "1000").Output()
	if err != nil {
		t.Fatalf("diagnose --json: %v", err)
	}
	var r diagnose.Report
	if err := json.Unmarshal(js, &r); err != nil {
		t.Fatal(err)
	}
	return string(text), r
}

// TestSlowConsumerEndToEnd: a reader that stopped reading, and one that
// keeps reading 4 KiB every 50 ms from full queues. Two traces of the real
// binary, ended seconds apart, show the stalled reader's sockets in TOP
// SOCKETS (its drops are there) with a stall age that grew by the time
// between them, and the reader among those not reading; diagnose, run
// twice, calls it a slow consumer with a growing figure. The slow reader
// is called stalled nowhere.
func TestSlowConsumerEndToEnd(t *testing.T) {
	privtest.Require(t)
	workload.LockT(t) // nothing global is lowered, but a lowered tcp_mem elsewhere would change the drops
	const conns = 8
	env, err := workload.StartStall(workload.Stall{Conns: conns})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.Close)
	ns := fmt.Sprint(env.NetNS)
	first, second := startTrace(t, "--netns", ns), startTrace(t, "--netns", ns)
	if err := env.Run(); err != nil {
		t.Fatal(err)
	}
	sleepUntil := func(d time.Duration) { time.Sleep(time.Until(env.Since.Add(d))) }

	sleepUntil(sockdiag.StallAfter + time.Second)
	text1, diag1 := runDiagnose(t)
	sum1, end1 := first.stop(t)
	sleepUntil(sockdiag.StallAfter + 4*time.Second)
	text2, diag2 := runDiagnose(t)
	sum2, end2 := second.stop(t)

	// The summaries: the stalled sockets, joined by cookie, with their age
	// at the end of each trace.
	ages := func(name string, s render.SummaryObject, end time.Time) map[uint64]time.Duration {
		out := map[uint64]time.Duration{}
		for _, so := range s.TopSockets {
			age := time.Duration(so.StalledMs) * time.Millisecond
			switch int(so.PID) {
			case env.StalledPID:
				if want := end.Sub(env.Since); age < want-time.Second || age > want+2*time.Second {
					t.Errorf("%s: stalled socket %d: not read for %v, its data arrived %v before the end", name, so.Cookie, age, want)
				}
				out[so.Cookie] = age
			case env.SlowPID:
				if so.StalledMs != 0 {
					t.Errorf("%s: the slow reader's socket %+v is stalled", name, so)
				}
			}
		}
		if len(out) == 0 {
			t.Fatalf("%s: none of the stalled reader's sockets in top_sockets %+v (drops: %v)", name, s.TopSockets, s.Totals.Drops)
		}
		st := s.Stalled
		if st == nil {
			t.Fatalf("%s: no stalled section", name)
		}
		found := false
		for _, h := range st.Holders {
			switch h.PID {
			case env.StalledPID:
				found = true
				if h.Comm != "tmt-stalled" || h.StalledSockets != conns || h.StallAge() < sockdiag.StallAfter {
					t.Errorf("%s: stalled holder %+v", name, h)
				}
			case env.SlowPID:
				t.Errorf("%s: the slow reader listed as stalled: %+v", name, h)
			}
		}
		if !found {
			t.Errorf("%s: the stalled reader (pid %d) not among %+v", name, env.StalledPID, st.Holders)
		}
		return out
	}
	a1, a2 := ages("first trace", sum1, end1), ages("second trace", sum2, end2)
	gap := end2.Sub(end1)
	common := 0
	for cookie, age := range a1 {
		if later, ok := a2[cookie]; ok {
			common++
			if grew := later - age; grew < gap-time.Second || grew > gap+time.Second {
				t.Errorf("socket %d: not read for %v, then %v in a trace ended %v later", cookie, age, later, gap)
			}
		}
	}
	if common == 0 {
		t.Errorf("no stalled socket in both traces' top sockets: %v, %v", a1, a2)
	}
	t.Logf("top sockets' stall ages: %v, then %v (traces ended %v apart)", a1, a2, gap.Round(time.Millisecond))

	// diagnose: the verdict names the stalled reader with its figure, which
	// grows; nothing calls the slow reader stalled.
	verdict := regexp.MustCompile(fmt.Sprintf(`slow consumer: pid %d \(tmt-stalled\)( in [^ ]+)? has not read for (\d+) s with [0-9.]+ [KM]iB queued on %d sockets \(\d+%% of TCP memory\)`,
		env.StalledPID, conns))
	figure := func(name, text string, r diagnose.Report) int {
		secs := -1
		for _, v := range r.Verdicts {
			if m := verdict.FindStringSubmatch(v.Text); m != nil {
				secs, _ = strconv.Atoi(m[2])
				// The text is a run of its own, a moment before: its
				// figure may be a second less (a slow guest showed it).
				tm := verdict.FindStringSubmatch(text)
				if tm == nil {
					t.Errorf("%s: the text lacks the verdict %q", name, v.Text)
				} else if ts, _ := strconv.Atoi(tm[2]); ts < secs-1 || ts > secs {
					t.Errorf("%s: the text's verdict says %d s, the JSON's %q", name, ts, v.Text)
				}
			}
			if strings.Contains(v.Text, fmt.Sprintf("pid %d ", env.SlowPID)) && (strings.Contains(v.Text, "has not read") || strings.Contains(v.Text, "slow consumer")) {
				t.Errorf("%s: the slow reader blamed: %+v", name, v)
			}
		}
		if secs < 0 {
			t.Fatalf("%s: no slow-consumer verdict for pid %d in %+v", name, env.StalledPID, r.Verdicts)
		}
		stalledSocks := 0
		for _, s := range r.TopSockets {
			switch {
			case s.Owner == nil:
			case s.Owner.PID == env.StalledPID && s.State == "ESTAB":
				stalledSocks++
				if s.StalledMs < uint64(secs)*1000 {
					t.Errorf("%s: stalled socket %+v, verdict says %d s", name, s, secs)
				}
			case s.Owner.PID == env.SlowPID && s.StalledMs != 0:
				t.Errorf("%s: the slow reader's socket %+v stalled", name, s)
			}
		}
		if stalledSocks != conns {
			t.Errorf("%s: %d of the stalled reader's %d sockets in top_sockets", name, stalledSocks, conns)
		}
		if !regexp.MustCompile(fmt.Sprintf(`(?m)ESTAB .* %d s  %d tmt-stalled`, secs, env.StalledPID)).MatchString(text) {
			t.Errorf("%s: no TOP SOCKETS row with NOT READ FOR %d s:\n%s", name, secs, text)
		}
		return secs
	}
	s1, s2 := figure("first diagnose", text1, diag1), figure("second diagnose", text2, diag2)
	if want := int(sockdiag.StallAfter / time.Second); s1 < want || s2-s1 < 2 || s2-s1 > 4 {
		t.Errorf("diagnose: has not read for %d s, then %d s, 3 s later", s1, s2)
	}
	t.Logf("diagnose: has not read for %d s, then %d s", s1, s2)
}
