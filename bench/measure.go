package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"

	"github.com/tcpmemtrace/tcpmemtrace/internal/procfs"
	"github.com/tcpmemtrace/tcpmemtrace/internal/testsupport/workload"
)

type config struct {
	bin, tcpdrop  string
	phase         time.Duration
	iperfTime     time.Duration
	rounds        int
	starts        int
	costDatagrams uint64
	idleTime      time.Duration
	only          []string // steps to run; all when empty
}

// bench is one run's shared state: the tools, the namespace and its
// senders, the kernel's drop-reason values.
type bench struct {
	config
	tools   []tool
	ns      *workload.Netns
	sink    *workload.Sender // every datagram a SOCKET_RCVBUFF drop
	closed  *workload.Sender // every datagram a NO_SOCKET drop (unrelated)
	reasons map[uint64]string
}

func measure(c config) (*Results, error) {
	if c.costDatagrams == 0 {
		c.costDatagrams = 300000
	}
	b := &bench{config: c, tools: tools(c.bin, c.tcpdrop)}
	var err error
	if b.reasons, err = dropReasons(); err != nil {
		return nil, err
	}
	if b.ns, err = workload.NewNetns(); err != nil {
		return nil, err
	}
	defer b.ns.Close()
	port, err := b.ns.Sink()
	if err != nil {
		return nil, err
	}
	if b.sink, err = b.ns.Sender(port); err != nil {
		return nil, err
	}
	if b.closed, err = b.ns.Sender(9); err != nil { // discard: nobody listens
		return nil, err
	}
	r := &Results{Date: time.Now().UTC(), Machine: machine(c.bin), PhaseSeconds: c.phase.Seconds(), IperfSeconds: c.iperfTime.Seconds()}
	// One start each, which also warms the caches for the timed starts: a
	// tool that cannot run here is reported and left out.
	var ok []tool
	for i := range b.tools {
		t := &b.tools[i]
		run, err := start(t, t.Argv)
		if err == nil {
			err = run.stop()
		}
		if err != nil {
			progress("%s does not run here: %v", t.Name, err)
			r.Unavailable = append(r.Unavailable, Unavailable{Tool: t.Name, Error: err.Error()})
			continue
		}
		ok = append(ok, *t)
	}
	if len(ok) == 0 || ok[0].Name != tm {
		return nil, fmt.Errorf("tcpmemtrace does not run: %v", r.Unavailable)
	}
	b.tools, r.Tools = ok, ok
	steps := []struct {
		name string
		fn   func(*Results) error
	}{
		{"attach", b.startup},
		{"connections", b.connections},
		{"idle", b.idle},
		{"cost", b.cost},
		{"storm", b.storm},
		{"cpu", b.cpu},
		{"tcp", b.tcp},
		{"throughput", b.throughput},
	}
	for _, s := range steps {
		if len(c.only) > 0 && !slices.Contains(c.only, s.name) {
			continue
		}
		progress("%s", s.name)
		if err := s.fn(r); err != nil {
			return nil, fmt.Errorf("%s: %w", s.name, err)
		}
	}
	return r, nil
}

func dropReasons() (map[uint64]string, error) {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return nil, err
	}
	var e *btf.Enum
	if err := spec.TypeByName("skb_drop_reason", &e); err != nil {
		return nil, err
	}
	out := map[uint64]string{}
	for _, v := range e.Values {
		out[v.Value] = strings.TrimPrefix(v.Name, "SKB_DROP_REASON_")
	}
	return out, nil
}

// oracle sums a counter's change over the harness's namespace and the
// host's: the tools count in every namespace.
type oracle struct {
	ns, host procfs.Counters
}

func (b *bench) readOracle() (oracle, error) {
	ns, err := b.ns.MIB()
	if err != nil {
		return oracle{}, err
	}
	host, err := procfs.MIB("self")
	return oracle{ns, host}, err
}

func (o oracle) delta(after oracle, group string, names ...string) uint64 {
	var d uint64
	for _, n := range names {
		d += after.ns.Get(group, n) - o.ns.Get(group, n)
		d += after.host.Get(group, n) - o.host.Get(group, n)
	}
	return d
}

// ---- time to attach ---------------------------------------------------------

func (b *bench) startup(r *Results) error {
	for i := range b.tools {
		t := &b.tools[i]
		s := Startup{Tool: t.Name}
		var err error
		if s.Ms, s.MedianMs, err = b.timeStarts(t); err != nil {
			return err
		}
		r.Startup = append(r.Startup, s)
	}
	return nil
}

// timeStarts starts and stops the tool b.starts times: exec -> attached,
// each and the median, in ms.
func (b *bench) timeStarts(t *tool) ([]float64, float64, error) {
	var all []float64
	for range b.starts {
		run, err := start(t, t.Argv)
		if err != nil {
			return nil, 0, err
		}
		all = append(all, ms(run.ReadyIn))
		if err := run.stop(); err != nil {
			return nil, 0, err
		}
	}
	return all, median(all), nil
}

// ---- per-call cost ----------------------------------------------------------

func (b *bench) cost(r *Results) error {
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		return fmt.Errorf("enabling BPF run-time stats: %w", err)
	}
	defer stats.Close() // stats go off with the last holder
	// The floor: an empty program on the same hook costs this much per call
	// as measured (the clock reads around each run are in the figure).
	empty, err := emptyProgram()
	if err != nil {
		return fmt.Errorf("an empty kfree_skb program: %w", err)
	}
	err = b.costPhases(r, empty)
	if serr := empty.stop(); err == nil {
		err = serr
	}
	if err != nil {
		return err
	}
	for i := range b.tools {
		t := &b.tools[i]
		run, err := start(t, t.Argv)
		if err != nil {
			return err
		}
		time.Sleep(time.Second) // let startup work (snapshots, sampler) settle
		err = b.costPhases(r, run)
		if serr := run.stop(); err == nil {
			err = serr
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// costPhases measures one attached run on both bursts: unrelated drops,
// then counted ones.
func (b *bench) costPhases(r *Results, run *running) error {
	for _, ph := range []struct {
		name string
		s    *workload.Sender
		mib  string
	}{{"unrelated", b.closed, "NoPorts"}, {"counted", b.sink, "RcvbufErrors"}} {
		c, err := b.costPhase(run, ph.s, ph.mib)
		if err != nil {
			return err
		}
		c.Tool, c.Phase = run.t.Name, ph.name
		r.Cost = append(r.Cost, c)
	}
	return nil
}

func (b *bench) costPhase(run *running, s *workload.Sender, mib string) (Cost, error) {
	var c Cost
	o0, err := b.readOracle()
	if err != nil {
		return c, err
	}
	before, err := run.stats()
	if err != nil {
		return c, err
	}
	if err := s.Count(b.costDatagrams); err != nil {
		return c, err
	}
	after, err := run.stats()
	if err != nil {
		return c, err
	}
	o1, err := b.readOracle()
	if err != nil {
		return c, err
	}
	c.Datagrams = b.costDatagrams
	c.KernelDrops = o0.delta(o1, "Udp", mib)
	var total uint64
	for _, p := range run.progs {
		d := progStats{runs: after[p].runs - before[p].runs, ns: after[p].ns - before[p].ns}
		if d.runs == 0 {
			continue
		}
		pc := ProgCost{Name: p.name, KfreeSkb: p.kfree, Runs: d.runs, NsPerRun: float64(d.ns) / float64(d.runs)}
		c.Programs = append(c.Programs, pc)
		total += d.ns
		if p.kfree {
			c.KfreeNsPerCall = pc.NsPerRun
		}
	}
	slices.SortFunc(c.Programs, func(a, b ProgCost) int { return int(b.Runs) - int(a.Runs) })
	c.TotalNsPerDatagram = float64(total) / float64(c.Datagrams)
	return c, nil
}

// ---- drop storm -----------------------------------------------------------

func (b *bench) storm(r *Results) error {
	drops, el, err := b.stormOnce()
	if err != nil {
		return err
	}
	r.Storm.BaselineRate = float64(drops) / el.Seconds()
	for i := range b.tools {
		t := &b.tools[i]
		run, err := start(t, t.countingArgv())
		if err != nil {
			return err
		}
		drops, el, err := b.stormOnce()
		if serr := run.stop(); err == nil {
			err = serr
		}
		if err != nil {
			return err
		}
		s := StormRun{Tool: t.Name, Kernel: drops, Rate: float64(drops) / el.Seconds()}
		if err := b.tally(run, "SOCKET_RCVBUFF", false, &s.Tally); err != nil {
			return err
		}
		r.Storm.Runs = append(r.Storm.Runs, s)
	}
	return nil
}

// stormOnce sends to the sink as fast as it can for a phase and returns
// the drops the kernel counted (Udp RcvbufErrors) and how long it took.
func (b *bench) stormOnce() (uint64, time.Duration, error) {
	o0, err := b.readOracle()
	if err != nil {
		return 0, 0, err
	}
	t0 := time.Now()
	b.sink.Run(0, b.phase)
	o1, err := b.readOracle()
	return o0.delta(o1, "Udp", "RcvbufErrors"), time.Since(t0), err
}

// tally reads what a stopped tool counted for one reason: tcpmemtrace's
// summary, bpftrace's map, or the lines printed.
func (b *bench) tally(run *running, reason string, tcp bool, t *Tally) error {
	events, lost, other := run.counts()
	t.Printed, t.Lost = events, lost
	switch {
	case run.t.jsonArgv != nil:
		sum, err := tmSummary(other)
		if err != nil {
			return err
		}
		t.Counted = sum.Totals.OtherDrops[reason]
		if tcp {
			t.Counted = sum.Totals.Drops[reason]
		}
		t.Lost = sum.Totals.LostSamples
		t.Unsampled = sum.Totals.Unsampled
		t.Aborts = sum.Totals.MemAborts
		t.HasCount = true
	case run.t.event == nil: // bpftrace count: @drops[N]: M at exit
		for _, l := range other {
			m := mapLine.FindStringSubmatch(l)
			if m == nil {
				continue
			}
			v, _ := strconv.ParseUint(m[1], 10, 64)
			n, _ := strconv.ParseUint(m[2], 10, 64)
			if b.reasons[v] == reason {
				t.Counted += n
			}
		}
		t.HasCount = true
	default:
		t.Counted = events
	}
	return nil
}

var mapLine = regexp.MustCompile(`^@drops\[(\d+)\]: (\d+)$`)

type tmTotals struct {
	Totals struct {
		MemAborts   uint64            `json:"mem_aborts"`
		Drops       map[string]uint64 `json:"drops"`
		OtherDrops  map[string]uint64 `json:"other_drops"`
		LostSamples uint64            `json:"lost_samples"`
		Unsampled   uint64            `json:"unsampled"`
	} `json:"totals"`
}

func tmSummary(lines []string) (tmTotals, error) {
	var s tmTotals
	for _, l := range lines {
		if strings.HasPrefix(l, `{"type":"summary"`) {
			return s, json.Unmarshal([]byte(l), &s)
		}
	}
	return s, fmt.Errorf("tcpmemtrace printed no summary")
}

// ---- userspace CPU and memory --------------------------------------------------

var cpuRates = []int{10000, 100000}

func (b *bench) cpu(r *Results) error {
	for i := range b.tools {
		t := &b.tools[i]
		run, err := start(t, t.Argv)
		if err != nil {
			return err
		}
		time.Sleep(time.Second)
		// Work a tool does once, at its first drops, is not a cost per
		// event: measured apart, before the timed phases.
		c0, err := cpuTime(run.pid())
		if err != nil {
			return err
		}
		warm := b.sink.Run(1000, 200*time.Millisecond)
		settle(run)
		c1, err := cpuTime(run.pid())
		if err != nil {
			return err
		}
		r.FirstDrops = append(r.FirstDrops, FirstDrops{Tool: t.Name, Drops: warm, CPUms: float64((c1 - c0).Microseconds()) / 1000})
		for _, rate := range cpuRates {
			c0, err := cpuTime(run.pid())
			if err != nil {
				return err
			}
			e0, l0, _ := run.counts()
			t0 := time.Now()
			sent := b.sink.Run(rate, b.phase)
			// What is still queued for the tool is its cost too: wait for
			// the output to settle before reading its CPU time.
			settle(run)
			el := time.Since(t0)
			c1, err := cpuTime(run.pid())
			if err != nil {
				return err
			}
			e1, l1, _ := run.counts()
			r.CPU = append(r.CPU, CPURun{
				Tool: t.Name, Rate: rate, Achieved: float64(sent) / b.phase.Seconds(),
				CPUPercent: 100 * (c1 - c0).Seconds() / el.Seconds(),
				Printed:    e1 - e0, Lost: l1 - l0,
			})
		}
		rss, err := peakRSS(run.pid())
		if err != nil {
			return err
		}
		rss.Tool = t.Name
		r.PeakRSS = append(r.PeakRSS, rss)
		if err := run.stop(); err != nil {
			return err
		}
	}
	return nil
}

// settle waits until the tool has printed nothing for 200 ms (at most 5 s).
func settle(run *running) {
	last, _, _ := run.counts()
	for i := 0; i < 25; i++ {
		time.Sleep(200 * time.Millisecond)
		n, _, _ := run.counts()
		if n == last {
			return
		}
		last = n
	}
}

// ---- TCP reproduction --------------------------------------------------------

// tcp runs the test suite's tcp_mem reproduction once with every tool
// attached at the same time: the same aborts and drops for all.
func (b *bench) tcp(r *Results) error {
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		return err
	}
	defer stats.Close()
	g, err := workload.Lock()
	if err != nil {
		return err
	}
	defer g.Restore()
	env, err := workload.Start(workload.Scenario{Kind: workload.OOM, Conns: 300, WriteFor: 4 * time.Second})
	if err != nil {
		return err
	}
	defer env.Close()
	var runs []*running
	defer func() {
		for _, run := range runs {
			run.stop()
		}
	}()
	for i := range b.tools {
		t := &b.tools[i]
		run, err := start(t, t.countingArgv())
		if err != nil {
			return err
		}
		runs = append(runs, run)
	}
	tm := runs[0]
	s0, err := tm.stats()
	if err != nil {
		return err
	}
	host0, err := procfs.MIB("self")
	if err != nil {
		return err
	}
	if err := g.Set("net/ipv4/tcp_mem", "1000 2000 3000", 90*time.Second); err != nil {
		return err
	}
	res, err := env.Run()
	if rerr := g.Restore(); rerr != nil && err == nil {
		err = rerr
	}
	if err != nil {
		return err
	}
	host1, err := procfs.MIB("self")
	if err != nil {
		return err
	}
	s1, err := tm.stats()
	if err != nil {
		return err
	}
	hd := host1.Sub(host0)
	r.TCP.KernelAborts = res.Delta("TCPAbortOnMemory") + hd.Get("TcpExt", "TCPAbortOnMemory")
	r.TCP.KernelDrops = res.Delta("TCPRcvQDrop") + res.Delta("TCPOFODrop") +
		hd.Get("TcpExt", "TCPRcvQDrop") + hd.Get("TcpExt", "TCPOFODrop")
	for _, p := range tm.progs {
		if d := s1[p].runs - s0[p].runs; p.kfree && d > 0 {
			r.TCP.KfreeRuns = d
			r.TCP.KfreeNsPerCall = float64(s1[p].ns-s0[p].ns) / float64(d)
		}
	}
	for _, run := range runs {
		if err := run.stop(); err != nil {
			return err
		}
		var t Tally
		if err := b.tally(run, "PROTO_MEM", true, &t); err != nil {
			return err
		}
		r.TCP.Runs = append(r.TCP.Runs, TCPRun{Tool: run.t.Name, Tally: t})
	}
	runs = nil
	return nil
}

// ---- loopback throughput -------------------------------------------------------

func (b *bench) throughput(r *Results) error {
	names := []string{"none"}
	for _, t := range b.tools {
		names = append(names, t.Name)
	}
	bps := map[string][]float64{}
	for round := 0; round < b.rounds; round++ {
		for i, name := range names {
			var run *running
			if i > 0 {
				t := &b.tools[i-1]
				var err error
				if run, err = start(t, t.Argv); err != nil {
					return err
				}
			}
			v, err := iperf(b.iperfTime)
			if run != nil {
				if serr := run.stop(); serr != nil && err == nil {
					err = serr
				}
			}
			if err != nil {
				return err
			}
			bps[name] = append(bps[name], v/1e9)
		}
	}
	// Which of tcpmemtrace's programs normal traffic runs, and their cost.
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		return err
	}
	defer stats.Close()
	run, err := start(&b.tools[0], b.tools[0].Argv)
	if err != nil {
		return err
	}
	s0, err := run.stats()
	if err != nil {
		run.stop()
		return err
	}
	t0 := time.Now()
	v, err := iperf(b.iperfTime)
	el := time.Since(t0)
	s1, serr := run.stats()
	run.stop()
	if err != nil || serr != nil {
		return errors.Join(err, serr)
	}
	r.IperfGbpsWithStats = v / 1e9
	for _, p := range run.progs {
		if d := s1[p].runs - s0[p].runs; d > 0 {
			r.IperfPrograms = append(r.IperfPrograms, ProgCost{Name: p.name, Runs: d, NsPerRun: float64(s1[p].ns-s0[p].ns) / float64(d),
				PerSecond: float64(d) / el.Seconds()})
		}
	}
	// The machine's own throughput drifts over seconds: compare each run
	// with the run without a tracer in the same round, then take the median.
	for _, name := range names {
		var ratios []float64
		for i, v := range bps[name] {
			ratios = append(ratios, v/bps["none"][i])
		}
		r.Throughput = append(r.Throughput, Throughput{Tool: name, Gbps: bps[name], MedianGbps: median(bps[name]), Ratio: median(ratios)})
	}
	return nil
}

// ---- helpers -----------------------------------------------------------------

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func machine(bin string) Machine {
	m := Machine{Cores: runtime.NumCPU()}
	m.Host, _ = os.Hostname()
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				m.CPU = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	if f, err := procfs.Fields("/proc/meminfo", ":"); err == nil {
		m.MemGiB = float64(f["MemTotal"]) / (1 << 20)
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	m.Go = runtime.Version()
	m.Bpftrace = firstLine("bpftrace", "--version")
	m.Iperf3 = firstLine("iperf3", "--version")
	m.Tcpmemtrace = firstLine(bin, "--version")
	m.Commit = firstLine("git", "describe", "--always", "--dirty")
	return m
}
