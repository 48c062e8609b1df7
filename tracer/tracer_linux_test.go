package tracer_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/tcpmemtrace/tcpmemtrace/internal/aggregate"
	"github.com/tcpmemtrace/tcpmemtrace/internal/enrich"
	"github.com/tcpmemtrace/tcpmemtrace/internal/procfs"
	"github.com/tcpmemtrace/tcpmemtrace/internal/testsupport/privtest"
	"github.com/tcpmemtrace/tcpmemtrace/internal/testsupport/witness"
	"github.com/tcpmemtrace/tcpmemtrace/internal/testsupport/workload"
	"github.com/tcpmemtrace/tcpmemtrace/stream"
	"github.com/tcpmemtrace/tcpmemtrace/tracer"
)

func TestMain(m *testing.M) {
	workload.RunRoleIfChild()
	os.Exit(m.Run())
}

// trace runs a tracer over a scenario: the sysctl lock is taken before the
// tracer starts so no other test's episode is counted, and every lowered
// sysctl is restored before the tracer stops.
type traced struct {
	final  stream.Snapshot
	events []stream.Event
	res    workload.Result
	// lowered and restored bound the time the sysctls were changed.
	lowered, restored time.Time
	sendHook          bool // sock_send_length (6.3+) is attached: send stalls are seen
	// placed: TCP's memory drops come through kfree_skb with their
	// socket (6.11+), so the kernel gives where each was freed.
	placed bool
	// hostDelta is the test process's own namespace over the same run.
	hostDelta procfs.Counters
	// seen is what the witnesses (a minimal BPF program and ftrace each)
	// counted of the kernel's PROTO_MEM frees and memory-abort resets
	// meanwhile.
	seen witness.Seen
	// runs is how many times the tracer's programs ran, by where they are
	// attached, once the witnesses stopped.
	runs map[string]uint64
}

func trace(t *testing.T, s workload.Scenario, sysctls map[string]string) traced {
	t.Helper()
	return traceWith(t, s, sysctls, traceOptions{})
}

// traceOptions is what a trace does besides its scenario.
type traceOptions struct {
	// first runs once the sysctl lock is held (no other test's episode
	// runs) and before anything starts.
	first func()
}

func traceWith(t *testing.T, s workload.Scenario, sysctls map[string]string, o traceOptions) traced {
	t.Helper()
	g := workload.LockT(t)
	if o.first != nil {
		o.first()
	}
	env, err := workload.Start(s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.Close)

	// Run counts for the witnesses' comparison: on for the test only.
	if stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME)); err == nil {
		t.Cleanup(func() { stats.Close() })
	}
	cfg := tracer.Config{NetNS: env.NetNS}
	if os.Getenv("TCPMEMTRACE_TEST_HOOKS") == "tracepoints" {
		cfg.Hooks = tracer.HooksTracepoints
	}
	tr, err := tracer.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	checkHooks(t, tr.Info().Hooks)
	t.Cleanup(func() { tr.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		out  traced
		wg   sync.WaitGroup
		rerr error
	)
	for _, h := range tr.Info().Hooks {
		out.sendHook = out.sendHook || strings.Contains(h.Using, "send stalls: tp_btf/sock_send_length")
		out.placed = out.placed || h.Event == stream.EventDrops && strings.HasPrefix(h.Using, "tp_btf/kfree_skb (rx_sk)")
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		// Through the enrich stage, as the command runs it: it names
		// owners and finds who held the memory as an episode began.
		rerr = enrich.Wrap(tr, enrich.Options{}).Run(ctx, func(r stream.Record) error {
			if r.Event != nil {
				out.events = append(out.events, *r.Event)
			}
			if r.Snapshot != nil && r.Snapshot.Final {
				out.final = *r.Snapshot
			}
			return nil
		})
	}()

	hostBefore, err := procfs.MIB("self")
	if err != nil {
		t.Fatal(err)
	}
	witnesses := witness.StartPair(t, env.NetNS)
	out.lowered = time.Now()
	for name, v := range sysctls {
		if err := g.Set(name, v, 90*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	out.res, err = env.Run()
	out.seen = witnesses.Stop()
	out.runs = tracer.Runs(tr)
	if rerr := g.Restore(); rerr != nil {
		t.Fatal(rerr)
	}
	out.restored = time.Now()
	if err != nil {
		t.Fatal(err)
	}
	hostAfter, err := procfs.MIB("self")
	if err != nil {
		t.Fatal(err)
	}
	out.hostDelta = hostAfter.Sub(hostBefore)
	cancel()
	wg.Wait()
	if rerr != nil {
		t.Fatal(rerr)
	}
	if !out.final.Final {
		t.Fatal("no final snapshot")
	}
	return out
}

func TestOutOfMemoryAborts(t *testing.T) {
	privtest.Require(t)
	const conns = 300
	r := trace(t, workload.Scenario{Kind: workload.OOM, Conns: conns, WriteFor: 4 * time.Second},
		map[string]string{"net/ipv4/tcp_mem": "1000 2000 3000"})
	tot := r.final.Totals
	t.Logf("totals %+v", tot)
	t.Logf("kernel: TCPAbortOnMemory %d TCPRcvQDrop %d TCPOFODrop %d TCPMemoryPressures %d (host %d)",
		r.res.Delta("TCPAbortOnMemory"), r.res.Delta("TCPRcvQDrop"), r.res.Delta("TCPOFODrop"),
		r.res.Delta("TCPMemoryPressures"), r.hostDelta.Get("TcpExt", "TCPMemoryPressures"))
	t.Logf("witnessed: PROTO_MEM frees %v; memory-abort resets %v; the tracer's programs ran %v", r.seen.Frees, r.seen.Resets, r.runs)

	// With 300 connections the reader's forced first-skb charges alone keep
	// allocated above tcp_mem[2], so every writer close is an abort.
	if want, kernel := r.seen.Aborts(t, r.res), r.res.Delta("TCPAbortOnMemory"); tot.Events[stream.MemAborts] != want || kernel < conns {
		t.Errorf("mem_aborts = %d, want %d of the kernel's ΔTCPAbortOnMemory %d (want >= %d)", tot.Events[stream.MemAborts], want, kernel, conns)
	}
	if tot.Events[stream.OrphanAborts] != 0 {
		t.Errorf("orphan_aborts = %d, want 0", tot.Events[stream.OrphanAborts])
	}
	if want := r.seen.Drops(t, r.res); tot.Drops[stream.ProtoTCP][stream.ReasonProtoMem] != want || want == 0 {
		t.Errorf("drops[PROTO_MEM] = %d, want %d of the kernel's Δ(TCPRcvQDrop+TCPOFODrop) (> 0)", tot.Drops[stream.ProtoTCP][stream.ReasonProtoMem], want)
		explainMismatch(t, r)
	}
	// Pressure is global; the entry is counted in the namespace of the
	// socket that crossed the threshold: the test's, or (rarely) the host's.
	if want := r.res.Delta("TCPMemoryPressures") + r.hostDelta.Get("TcpExt", "TCPMemoryPressures"); tot.PressureEpisodes != want || want == 0 {
		t.Errorf("pressure_episodes = %d, kernel's ΔTCPMemoryPressures = %d (want > 0)", tot.PressureEpisodes, want)
	}
	checkEvents(t, r)

	// Why: the global limits, for every drop; and the writer's writes were
	// cut short while under pressure.
	causes := tot.Causes
	if global := causes[stream.CauseGlobalHardLimit] + causes[stream.CauseGlobalPressure]; global != tot.Drops[stream.ProtoTCP][stream.ReasonProtoMem] ||
		causes[stream.CauseRcvbuf]+causes[stream.CauseMemcg]+causes[stream.CauseUnknown] != 0 {
		t.Errorf("drops_by_cause %v for %d PROTO_MEM drops: want only global causes", causes, tot.Drops[stream.ProtoTCP][stream.ReasonProtoMem])
	}
	if w := owner(r, r.res.WriterPID); r.sendHook && (w == nil || w.Events[stream.SendStalls] == 0) {
		t.Errorf("writer's send stalls: %+v", w)
	}
}

func owner(r traced, pid int) *stream.OwnerCounts {
	for i := range r.final.Owners {
		if int(r.final.Owners[i].PID) == pid {
			return &r.final.Owners[i]
		}
	}
	return nil
}

// onlyCause: every TCP memory drop of the run has this cause.
func onlyCause(t *testing.T, r traced, cause stream.DropCause) {
	t.Helper()
	tot := r.final.Totals
	drops := r.seen.Drops(t, r.res)
	t.Logf("drops_by_cause %v; kernel TCPRcvQDrop %d TCPOFODrop %d RcvPruned %d OfoPruned %d",
		tot.Causes, r.res.Delta("TCPRcvQDrop"), r.res.Delta("TCPOFODrop"), r.res.Delta("RcvPruned"), r.res.Delta("OfoPruned"))
	if drops == 0 || tot.Drops[stream.ProtoTCP][stream.ReasonProtoMem] != drops {
		explainMismatch(t, r)
		t.Fatalf("drops[PROTO_MEM] = %d, want %d of the kernel's (> 0)", tot.Drops[stream.ProtoTCP][stream.ReasonProtoMem], drops)
	}
	for c, v := range tot.Causes {
		if (stream.DropCause(c) == cause && v != drops) || (stream.DropCause(c) != cause && v != 0) {
			t.Errorf("drops_by_cause[%s] = %d, want every one of %d drops under %s", stream.DropCause(c), v, drops, cause)
		}
	}
	checkPlaces(t, r)
}

// Where the kernel gives where it freed each drop, the drops by place add
// up to the count and every drop event has its place; elsewhere there are
// none.
func checkPlaces(t *testing.T, r traced) {
	t.Helper()
	var placed uint64
	for _, p := range r.final.Totals.Places {
		if p.Reason == "PROTO_MEM" && p.Protocol == "tcp" {
			placed += p.Drops
		}
	}
	drops := r.final.Totals.Drops[stream.ProtoTCP][stream.ReasonProtoMem]
	t.Logf("drops by place %+v", r.final.Totals.Places)
	if want := map[bool]uint64{true: drops, false: 0}[r.placed]; placed != want {
		t.Errorf("%d PROTO_MEM drops by place, want %d (of %d drops; kfree_skb with its socket: %v)", placed, want, drops, r.placed)
	}
	for _, e := range r.events {
		if e.Kind == stream.KindDrop && e.Reason == "PROTO_MEM" && (e.LocationAddr != 0) != r.placed {
			t.Errorf("a drop event with location %#x (kfree_skb with its socket: %v)", e.LocationAddr, r.placed)
			break
		}
	}
}

// A reader whose memory cgroup limits its TCP memory, tcp_mem untouched.
// cgroup v1 only: on v2, receive-path socket charges are GFP_ATOMIC, which
// memcg force-charges over memory.max (measured on 6.12: no drops at all);
// v2 throttles sockets through socket pressure instead.
func TestMemcgLimitedDrops(t *testing.T) {
	privtest.Require(t)
	memcg, remove, err := workload.MakeMemcgV1("tcpmemtrace-memcg", 1<<20)
	if err != nil {
		t.Skipf("cgroup v1 TCP memory accounting unavailable: %v", err)
	}
	t.Cleanup(func() {
		if err := remove(); err != nil {
			t.Error(err)
		}
	})
	r := trace(t, workload.Scenario{Kind: workload.OOM, Conns: 50, WriteFor: 3 * time.Second, ReaderMemcg: memcg,
		WriterSndbuf: 64 << 10}, nil)
	onlyCause(t, r, stream.CauseMemcg)
	if r.final.Totals.PressureEpisodes != 0 || r.final.Totals.Events[stream.MemAborts] != 0 {
		t.Errorf("global pressure or aborts with tcp_mem untouched: %+v", r.final.Totals)
	}
}

// explainMismatch logs what a count that differs from the kernel's comes
// with. The rare orphan-abort shortfalls on the 6.18 host (1 to 4 of 100,
// with the aborts fired from timers) were hits no BPF program ran for:
// ftrace recorded each one, always on a thread of the VM's agent (PID 1);
// the tracer's program and the witness's ran the same number of times,
// fewer than ftrace's hits, and counted no recursion miss; bpftrace missed
// the same hits. The drop shortfalls seen before ftrace was a witness (11
// of 900, 7 of 438, 1 of 115) fit the same cause. The tests count with
// those hits taken off (drops, aborts); a mismatch left says which link
// did not hold.
func explainMismatch(t *testing.T, r traced) {
	tot := r.final.Totals
	t.Logf("the namespace's other TcpExt changes: %v", changed(r.res))
	t.Logf("drops %v, by place %+v, missed runs %d %v, lost %d", tot.Drops, tot.Places, tot.MissedRuns, tot.Missed, tot.LostSamples)
	t.Logf("the witnesses counted over the run (-1: not known): PROTO_MEM frees %v; memory-abort resets %v", r.seen.Frees, r.seen.Resets)
	t.Logf("the tracer's programs ran, until the witnesses stopped: %v", r.runs)
	for _, w := range []struct {
		point witness.Point
		seen  witness.Counts
	}{{witness.ProtoMemFrees, r.seen.Frees}, {witness.MemoryAbortResets, r.seen.Resets}} {
		// Only where the tracer has a program on the witness's tracepoint.
		runs, ok := r.runs["tp_btf/"+w.point.Tracepoint()]
		if ok && w.seen.Runs > 0 && runs < uint64(w.seen.Runs) {
			t.Logf("the tracer's program on %s ran %d times, the witness %d: the tracepoint skipped the tracer's", w.point.Tracepoint(), runs, w.seen.Runs)
		}
	}
}

// changed is every TcpExt counter that moved over a workload's run.
func changed(r workload.Result) map[string]uint64 {
	out := map[string]uint64{}
	for name, v := range r.After["TcpExt"] {
		if d := v - r.Before.Get("TcpExt", name); d != 0 {
			out[name] = d
		}
	}
	return out
}

// SO_RCVBUF shrunk under in-flight data: the socket's own limit.
func TestRcvbufDrops(t *testing.T) {
	privtest.Require(t)
	r := trace(t, workload.Scenario{Kind: workload.Rcvbuf, Conns: 50, WriteFor: 2 * time.Second}, nil)
	onlyCause(t, r, stream.CauseRcvbuf)
}

// Pressure without a reachable hard limit: one episode, inside the time the
// pressure watermark was lowered.
func TestPressureOnly(t *testing.T) {
	privtest.Require(t)
	r := trace(t, workload.Scenario{Kind: workload.OOM, Conns: 50, WriteFor: 3 * time.Second},
		map[string]string{"net/ipv4/tcp_mem": "1000 2000 100000"})
	tot := r.final.Totals
	if want := r.res.Delta("TCPMemoryPressures") + r.hostDelta.Get("TcpExt", "TCPMemoryPressures"); tot.PressureEpisodes != want || want != 1 {
		t.Errorf("pressure_episodes = %d, kernel %d (want 1)", tot.PressureEpisodes, want)
	}
	a := aggregate.New(time.Now())
	for i := range r.events {
		a.Add(stream.Record{Event: &r.events[i]})
	}
	eps := a.Summary().Episodes
	if len(eps) != 1 {
		t.Fatalf("%d episodes in the timeline, want 1", len(eps))
	}
	ep := eps[0]
	t.Logf("episode %s - %s (%s), peak %d pages; tcp_mem lowered %s - %s", ep.Start.Format("15:04:05.000"),
		ep.End.Format("15:04:05.000"), ep.Duration(time.Now()), ep.PeakPages, r.lowered.Format("15:04:05.000"), r.restored.Format("15:04:05.000"))
	if ep.End.IsZero() || ep.Start.Before(r.lowered) || ep.End.After(r.restored) {
		t.Errorf("episode %v - %v outside the lowered window %v - %v", ep.Start, ep.End, r.lowered, r.restored)
	}
	// Who held the memory as it began: the scenario's own processes.
	var held bool
	for _, h := range ep.Holders {
		t.Logf("held by %d %s: %d bytes in %d sockets", h.PID, h.Comm, h.RecvBytes+h.SendBytes, h.Sockets)
		held = held || ((h.PID == r.res.ReaderPID || h.PID == r.res.WriterPID) && h.RecvBytes+h.SendBytes > 0)
	}
	if !held {
		t.Errorf("holders at the start %+v do not include the reader or the writer", ep.Holders)
	}
	if ep.PeakPages <= 2000 || tot.Events[stream.MemAborts] != 0 {
		t.Errorf("peak %d pages (want > 2000, the pressure watermark), %d aborts (want 0)", ep.PeakPages, tot.Events[stream.MemAborts])
	}
}

func TestTooManyOrphans(t *testing.T) {
	privtest.Require(t)
	const conns = 100
	// The first close finds no orphan only if the host holds none: the
	// kernel's cached count is global, and an earlier test's orphans (a
	// writer's FIN_WAIT1 sockets, killed only as their backed-off timers
	// fire) make every close an abort.
	var leftover int64
	r := traceWith(t, workload.Scenario{Kind: workload.Orphans, Conns: conns},
		map[string]string{"net/ipv4/tcp_max_orphans": "0"}, traceOptions{first: func() { leftover = waitNoOrphans(t, 30*time.Second) }})
	tot := r.final.Totals
	t.Logf("totals %+v; kernel ΔTCPAbortOnMemory %d; witnessed memory-abort resets %v", tot, r.res.Delta("TCPAbortOnMemory"), r.seen.Resets)
	if want, kernel := r.seen.Aborts(t, r.res), r.res.Delta("TCPAbortOnMemory"); tot.Events[stream.OrphanAborts] != want || kernel < conns {
		t.Errorf("orphan_aborts = %d, want %d of the kernel's ΔTCPAbortOnMemory %d (want >= %d)", tot.Events[stream.OrphanAborts], want, kernel, conns)
		explainMismatch(t, r) // TCPAbortFailed among them: resets that could not be sent
	}
	if tot.Events[stream.MemAborts] != 0 {
		t.Errorf("mem_aborts = %d, want 0", tot.Events[stream.MemAborts])
	}
	checkEvents(t, r)
	// Every victim was already closed by the writer (an orphan that keeps
	// its owner). Some die inside close(); the first closed lingers in
	// FIN_WAIT1 until its zero-window probe timer kills it, and so do those
	// closed before the kernel's cached orphan count (refreshed every
	// 100 ms) caught up: one on a quick machine, most on a slow guest or a
	// busy host (80 of 100 seen here). Either way in FIN_WAIT1.
	var late int
	for _, e := range r.events {
		if e.Kind != stream.KindAbort {
			continue
		}
		d, ok := e.SinceClose()
		if !e.Socket.Orphan || !ok {
			t.Errorf("abort of %v: orphan %v, close time known %v", e.Socket.Src, e.Socket.Orphan, ok)
		}
		if d >= 150*time.Millisecond {
			late++
			if e.Socket.State.String() != "FIN_WAIT1" { // the probe timer's state
				t.Errorf("an abort %s after close in state %v: not the probe timer's", d, e.Socket.State)
			}
		}
	}
	t.Logf("%d of %d aborts by the probe timer, the rest inside close()", late, tot.Events[stream.OrphanAborts])
	switch {
	case r.final.Totals.LostSamples != 0:
	case leftover != 0:
		t.Logf("not asserted: a probe-timer abort (the host held %d orphans from before)", leftover)
	case late < 1:
		t.Errorf("no abort long after close: want the first socket closed at least (its probe timer's)")
	}
}

// waitNoOrphans waits, at most d, until the host holds no orphaned TCP
// socket and the kernel's cached count (5.15+, refreshed every 100 ms) has
// seen it; it returns the orphans left.
func waitNoOrphans(t *testing.T, d time.Duration) int64 {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		s, err := procfs.Sockstat("/proc/net/sockstat")
		if err != nil {
			t.Fatal(err)
		}
		if n := s["TCP orphan"]; n == 0 || time.Now().After(deadline) {
			if n == 0 {
				time.Sleep(250 * time.Millisecond)
			}
			return n
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkEvents: with nothing lost, the events agree with the counts, and each
// abort is the writer's, each drop the reader's.
func checkEvents(t *testing.T, r traced) {
	t.Helper()
	tot := r.final.Totals
	if tot.LostSamples != 0 || tot.Unsampled != 0 {
		t.Logf("%d samples lost, %d unsampled: skipping the per-event checks", tot.LostSamples, tot.Unsampled)
		return
	}
	var aborts, drops uint64
	wrong := map[string]int{}              // owner -> drops or aborts misattributed
	sockets := map[netip.AddrPort]string{} // a misattributed socket -> how it looked
	for _, e := range r.events {
		switch e.Kind {
		case stream.KindAbort:
			aborts++
			if int(e.Owner.PID) != r.res.WriterPID || e.Owner.Comm != "tmt-writer" {
				wrong[fmt.Sprintf("abort by %d %q", e.Owner.PID, e.Owner.Comm)]++
			}
		case stream.KindDrop:
			if e.Reason != "PROTO_MEM" {
				continue
			}
			drops++
			if int(e.Owner.PID) != r.res.ReaderPID || e.Owner.Comm != "tmt-reader" {
				wrong[fmt.Sprintf("drop by %d %q", e.Owner.PID, e.Owner.Comm)]++
				sockets[e.Socket.Dst] = fmt.Sprintf("%v>%v %v cookie %d", e.Socket.Src, e.Socket.Dst, e.Socket.State, e.Socket.Cookie)
			}
		}
	}
	if len(wrong) > 0 {
		var some []string
		for _, v := range sockets {
			if len(some) < 5 {
				some = append(some, v)
			}
		}
		t.Errorf("misattributed (want aborts by the writer %d, drops by the reader %d): %v, on %d sockets, e.g. %v",
			r.res.WriterPID, r.res.ReaderPID, wrong, len(sockets), some)
	}
	if aborts != tot.Aborts() || drops != tot.Drops[stream.ProtoTCP][stream.ReasonProtoMem] {
		t.Errorf("events: %d aborts, %d PROTO_MEM drops; totals: %d, %d", aborts, drops, tot.Aborts(), tot.Drops[stream.ProtoTCP][stream.ReasonProtoMem])
	}
}

// checkHooks logs the variant of each event and, when the kernel matrix says
// which family it expects (TCPMEMTRACE_EXPECT_HOOKS=fexit|tracepoint),
// asserts that aborts and pressure use it.
func checkHooks(t *testing.T, hooks []stream.Hook) {
	t.Helper()
	want := os.Getenv("TCPMEMTRACE_EXPECT_HOOKS")
	for _, h := range hooks {
		t.Logf("hook %s: %s %v %v", h.Event, h.Using, h.Rejected, h.Notes)
		for _, n := range h.Notes {
			if strings.Contains(n, "not attached") { // a host as tested has tracefs, and every hook
				t.Errorf("%s: %s", h.Event, n)
			}
		}
		if h.Event != stream.EventAborts && h.Event != stream.EventPressure {
			continue
		}
		if fexit := strings.HasPrefix(h.Using, "fexit/"); (want == "fexit" && !fexit) || (want == "tracepoint" && fexit) {
			t.Errorf("%s uses %q, want the %s variant", h.Event, h.Using, want)
		}
	}
}

// TestRecordBudget: under a storm of UDP receive-buffer drops and a small
// RecordRate, counts stay equal to the kernel's, and every drop is either
// a record, unsampled, or lost; the records stay within the budget.
func TestRecordBudget(t *testing.T) {
	privtest.Require(t)
	ns, err := workload.NewNetns()
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	port, err := ns.Sink()
	if err != nil {
		t.Fatal(err)
	}
	snd, err := ns.Sender(port)
	if err != nil {
		t.Fatal(err)
	}
	defer snd.Close()

	const rate = 200
	began := time.Now()
	tr, err := tracer.New(tracer.Config{NetNS: uint32(ns.Inode), RecordRate: rate})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var (
		records uint64
		final   stream.Snapshot
		done    = make(chan error)
	)
	go func() {
		done <- tr.Run(ctx, func(r stream.Record) error {
			if r.Event != nil && r.Event.Kind == stream.KindDrop {
				records++
			}
			if r.Snapshot != nil && r.Snapshot.Final {
				final = *r.Snapshot
			}
			return nil
		})
	}()
	before, err := ns.MIB()
	if err != nil {
		t.Fatal(err)
	}
	snd.Run(20000, time.Second)
	after, err := ns.MIB()
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	traced := time.Since(began)

	tot := final.Totals
	kernel := after.Get("Udp", "RcvbufErrors") - before.Get("Udp", "RcvbufErrors")
	t.Logf("kernel %d drops; counted %d; records %d, unsampled %d, lost %d over %v",
		kernel, tot.Drops[stream.ProtoOther][stream.ReasonSocketRcvbuff], records, tot.Unsampled, tot.LostSamples, traced)
	if got := tot.Drops[stream.ProtoOther][stream.ReasonSocketRcvbuff]; got != kernel || kernel < 10000 {
		t.Errorf("counted %d SOCKET_RCVBUFF drops, kernel's ΔRcvbufErrors %d (want >= 10000)", got, kernel)
	}
	if records+tot.Unsampled+tot.LostSamples != kernel {
		t.Errorf("records %d + unsampled %d + lost %d != %d drops", records, tot.Unsampled, tot.LostSamples, kernel)
	}
	// Each CPU sends at most its share (rounded up) per 100 ms window.
	perWindow := uint64(rate/10 + runtime.NumCPU())
	if limit := perWindow * uint64(traced/(100*time.Millisecond)+2); records == 0 || records > limit {
		t.Errorf("%d records, want 1..%d for %d/s over %v", records, limit, rate, traced)
	}
}

// floods sends UDP datagrams to a sink in a namespace of their own, n
// senders each on its own thread, pinned to the last CPU, until stop.
func floods(t *testing.T, n int) (stop func()) {
	t.Helper()
	ns, err := workload.NewNetns()
	if err != nil {
		t.Fatal(err)
	}
	port, err := ns.Sink()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range n {
		snd, err := ns.Sender(port)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer snd.Close()
			runtime.LockOSThread()
			var cpus unix.CPUSet
			cpus.Set(runtime.NumCPU() - 1)
			unix.SchedSetaffinity(0, &cpus)
			for {
				select {
				case <-done:
					return
				default:
					snd.Run(0, 100*time.Millisecond)
				}
			}
		}()
	}
	return func() { close(done); wg.Wait(); ns.Close() }
}

// A memory-cgroup-limited reader under a loaded machine: every drop is the
// memcg's, in every run. Under load the socket's own buffer fills too, and
// the cause must still name what the operator has to change.
func TestMemcgCauseUnderLoad(t *testing.T) {
	privtest.Require(t)
	memcg, remove, err := workload.MakeMemcgV1("tcpmemtrace-memcg-load", 1<<20)
	if err != nil {
		t.Skipf("cgroup v1 TCP memory accounting unavailable: %v", err)
	}
	t.Cleanup(func() {
		if err := remove(); err != nil {
			t.Error(err)
		}
	})
	stop := floods(t, 2)
	defer stop()
	runs := 10
	if testing.Short() || os.Getenv("TCPMEMTRACE_TEST_RUNS") != "" {
		runs, _ = strconv.Atoi(os.Getenv("TCPMEMTRACE_TEST_RUNS"))
	}
	for i := range runs {
		r := traceWith(t, workload.Scenario{Kind: workload.OOM, Conns: 50, WriteFor: 3 * time.Second, ReaderMemcg: memcg,
			WriterSndbuf: 64 << 10}, nil, traceOptions{})
		t.Logf("run %d", i+1)
		onlyCause(t, r, stream.CauseMemcg)
	}
}

// A forking server (the acceptor hands its sockets to a handler, as a
// forked child inherits them, and closes its copies) and fd passing over a
// unix socket (SCM_RIGHTS): the handler never reads, and every drop is the
// handler's, none the acceptor's.
func TestHandOver(t *testing.T) {
	privtest.Require(t)
	for _, how := range []string{workload.HandoverFork, workload.HandoverSCM} {
		t.Run(how, func(t *testing.T) {
			r := trace(t, workload.Scenario{Kind: workload.OOM, Conns: 150, WriteFor: 3 * time.Second, PreConnect: false,
				Handover: how}, map[string]string{"net/ipv4/tcp_mem": "1000 2000 3000"})
			drops := r.seen.Drops(t, r.res)
			tot := r.final.Totals
			h, a := owner(r, r.res.HandlerPID), owner(r, r.res.ReaderPID)
			t.Logf("handler %d, acceptor %d; kernel drops %d, counted %d, witnessed %v", r.res.HandlerPID, r.res.ReaderPID, drops,
				tot.Drops[stream.ProtoTCP][stream.ReasonProtoMem], r.seen.Frees)
			if drops == 0 || tot.Drops[stream.ProtoTCP][stream.ReasonProtoMem] != drops {
				explainMismatch(t, r)
				t.Fatalf("drops %d, want %d of the kernel's", tot.Drops[stream.ProtoTCP][stream.ReasonProtoMem], drops)
			}
			if h == nil || h.Comm != "tmt-handler" || h.Drops[stream.ProtoTCP][stream.ReasonProtoMem] != drops {
				t.Errorf("handler's counts %+v, want all %d drops", h, drops)
			}
			if a != nil && a.Drops[stream.ProtoTCP][stream.ReasonProtoMem] != 0 {
				t.Errorf("the acceptor, which no longer holds them, has %d drops", a.Drops[stream.ProtoTCP][stream.ReasonProtoMem])
			}
			for _, e := range r.events {
				if e.Kind == stream.KindDrop && e.Reason == "PROTO_MEM" && int(e.Owner.PID) != r.res.HandlerPID {
					t.Errorf("drop owned by %d %q, want the handler %d", e.Owner.PID, e.Owner.Comm, r.res.HandlerPID)
					break
				}
			}
		})
	}
}
