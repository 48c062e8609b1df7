package main

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Results is one run of the harness: the raw figures behind BENCHMARKS.md.
type Results struct {
	Date         time.Time     `json:"date"`
	Machine      Machine       `json:"machine"`
	Tools        []tool        `json:"tools"`
	PhaseSeconds float64       `json:"phase_seconds"`
	IperfSeconds float64       `json:"iperf_seconds"`
	Startup      []Startup     `json:"startup"`
	StartupWith  []StartupWith `json:"startup_with_connections"`
	Idle         []IdleRun     `json:"idle"`
	Cost         []Cost        `json:"cost"`
	Storm        Storm         `json:"storm"`
	CPU          []CPURun      `json:"cpu"`
	// CPU each tool spent on its first drops, before the timed phases:
	// one-off work (tcpmemtrace reads the kernel's symbols then).
	FirstDrops []FirstDrops `json:"first_drops,omitempty"`
	PeakRSS    []RSS        `json:"peak_rss"`
	TCP        TCP          `json:"tcp"`
	Throughput []Throughput `json:"throughput"`
	// tcpmemtrace's programs during one more iperf3 run, with stats on.
	IperfPrograms      []ProgCost    `json:"iperf_programs"`
	IperfGbpsWithStats float64       `json:"iperf_gbps_with_stats"`
	Unavailable        []Unavailable `json:"unavailable,omitempty"`
}

// Unavailable is a tool that would not start here, and why.
type Unavailable struct {
	Tool  string `json:"tool"`
	Error string `json:"error"`
}

type Machine struct {
	Host        string  `json:"host"`
	CPU         string  `json:"cpu"`
	Cores       int     `json:"cores"`
	MemGiB      float64 `json:"mem_gib"`
	Kernel      string  `json:"kernel"`
	Go          string  `json:"go"`
	Bpftrace    string  `json:"bpftrace"`
	Iperf3      string  `json:"iperf3"`
	Tcpmemtrace string  `json:"tcpmemtrace"`
	Commit      string  `json:"commit"`
}

type Startup struct {
	Tool     string    `json:"tool"`
	Ms       []float64 `json:"ms"`
	MedianMs float64   `json:"median_ms"`
}

type ProgCost struct {
	Name      string  `json:"name"`
	KfreeSkb  bool    `json:"kfree_skb"`
	Runs      uint64  `json:"runs"`
	NsPerRun  float64 `json:"ns_per_run"`
	PerSecond float64 `json:"per_second,omitempty"`
}

// Cost is one tool's BPF run time over a burst of datagrams that all end in
// kfree_skb: unrelated (NO_SOCKET) or counted (SOCKET_RCVBUFF).
type Cost struct {
	Tool               string     `json:"tool"`
	Phase              string     `json:"phase"`
	Datagrams          uint64     `json:"datagrams"`
	KernelDrops        uint64     `json:"kernel_drops"`
	KfreeNsPerCall     float64    `json:"kfree_ns_per_call"`
	TotalNsPerDatagram float64    `json:"total_ns_per_datagram"` // every program of the tool
	Programs           []ProgCost `json:"programs"`
}

// Tally is what a tool reported for a workload.
type Tally struct {
	Counted   uint64 `json:"counted"`   // its count of the drops (or lines printed)
	HasCount  bool   `json:"has_count"` // counted in the kernel, not by lines
	Printed   uint64 `json:"printed"`   // per-event lines
	Lost      uint64 `json:"lost"`      // events it says it lost
	Unsampled uint64 `json:"unsampled"` // records skipped by design (tcpmemtrace)
	Aborts    uint64 `json:"aborts"`
}

type StormRun struct {
	Tool   string  `json:"tool"`
	Rate   float64 `json:"rate"`   // drops/s the kernel counted with the tool attached
	Kernel uint64  `json:"kernel"` // Udp RcvbufErrors delta
	Tally
}

type Storm struct {
	BaselineRate float64    `json:"baseline_rate"` // drops/s without any tool
	Runs         []StormRun `json:"runs"`
}

type CPURun struct {
	Tool       string  `json:"tool"`
	Rate       int     `json:"rate"`
	Achieved   float64 `json:"achieved"`
	CPUPercent float64 `json:"cpu_percent"` // of one core
	Printed    uint64  `json:"printed"`
	Lost       uint64  `json:"lost"`
}

// perRecordMicros is a phase's CPU per record printed, in microseconds.
func perRecordMicros(c CPURun, phaseSeconds float64) float64 {
	if c.Printed == 0 {
		return 0
	}
	return c.CPUPercent / 100 * phaseSeconds * 1e6 / float64(c.Printed)
}

// FirstDrops is the CPU a tool spent on its first drops, in milliseconds.
type FirstDrops struct {
	Tool  string  `json:"tool"`
	Drops uint64  `json:"drops"`
	CPUms float64 `json:"cpu_ms"`
}

type RSS struct {
	Tool  string `json:"tool"`
	Bytes int64  `json:"bytes"` // the peak (VmHWM)
	// At the end: the process's own memory, and mapped files and BPF
	// maps (the binary's code; a ringbuf's pages, mapped twice).
	AnonBytes int64 `json:"anon_bytes,omitempty"`
	FileBytes int64 `json:"file_bytes,omitempty"`
}

type TCPRun struct {
	Tool string `json:"tool"`
	Tally
}

type TCP struct {
	KernelAborts   uint64   `json:"kernel_aborts"` // ΔTCPAbortOnMemory
	KernelDrops    uint64   `json:"kernel_drops"`  // ΔTCPRcvQDrop + ΔTCPOFODrop
	KfreeRuns      uint64   `json:"kfree_runs"`
	KfreeNsPerCall float64  `json:"kfree_ns_per_call"`
	Runs           []TCPRun `json:"runs"`
}

type Throughput struct {
	Tool       string    `json:"tool"`
	Gbps       []float64 `json:"gbps"`
	MedianGbps float64   `json:"median_gbps"`
	Ratio      float64   `json:"ratio"`
}

const tm = "tcpmemtrace"

func (r *Results) cost(tool, phase string) Cost {
	for _, c := range r.Cost {
		if c.Tool == tool && c.Phase == phase {
			return c
		}
	}
	return Cost{}
}

// ratioSpread is the interquartile range of a tool's per-round throughput
// ratios: how far this machine lets the median be trusted.
func (r *Results) ratioSpread(t Throughput) (lo, hi float64) {
	var none []float64
	for _, x := range r.Throughput {
		if x.Tool == "none" {
			none = x.Gbps
		}
	}
	var ratios []float64
	for i, v := range t.Gbps {
		if i < len(none) && none[i] > 0 {
			ratios = append(ratios, v/none[i])
		}
	}
	if len(ratios) == 0 {
		return 0, 0
	}
	slices.Sort(ratios)
	return ratios[len(ratios)/4], ratios[(3*len(ratios))/4]
}

// net is a tool's kfree_skb run time per call above the empty program's:
// what its own instructions cost, without the clock reads around each run.
func (r *Results) net(tool, phase string) float64 {
	return r.cost(tool, phase).KfreeNsPerCall - r.cost(emptyName, phase).KfreeNsPerCall
}

func yes(ok bool) string {
	if ok {
		return "met"
	}
	return "**not met**"
}

// target is one row of the targets table: when it is not met, why says
// what stands in the way, in a sentence built from the measurement.
type target struct {
	what, goal, measured string
	met                  bool
	why                  string
}

func (t target) row() []string {
	verdict := yes(t.met)
	if !t.met && t.why != "" {
		verdict += ": " + t.why
	}
	return []string{t.what, t.goal, t.measured, verdict}
}

func (r *Results) storm(tool string) StormRun {
	for _, s := range r.Storm.Runs {
		if s.Tool == tool {
			return s
		}
	}
	return StormRun{}
}

func (r *Results) idle(tool string) (IdleRun, bool) {
	for _, i := range r.Idle {
		if i.Tool == tool {
			return i, true
		}
	}
	return IdleRun{}, false
}

// perDrop is what tcpmemtrace's programs do per counted drop beyond a
// count(): the sentence that explains a miss.
const perDrop = "besides the count, each drop looks up the socket's owner and its per-owner counts, works out the cause " +
	"(the socket's buffer, its memory cgroup, the global limits) and reserves a record within the budget"

func (r *Results) targets() [][]string {
	var ts []target
	bt := "bpftrace count"
	for _, ph := range []struct {
		phase, what string
		goal        float64
		why         string
	}{
		{"unrelated", "all programs, per unrelated datagram", 1.15,
			"its kfree_skb program looks the reason's slot up in a config array before it leaves, where count()'s filter compares the reason inline"},
		{"counted", "all programs, per counted drop", 1.0, perDrop},
	} {
		c, b := r.cost(tm, ph.phase), r.cost(bt, ph.phase)
		if c.Datagrams == 0 || b.Datagrams == 0 {
			continue
		}
		x := c.TotalNsPerDatagram / b.TotalNsPerDatagram
		ts = append(ts, target{ph.what, fmt.Sprintf("≤ %.2f× bpftrace count()", ph.goal),
			fmt.Sprintf("%.2f× (%.0f ns against %.0f)", x, c.TotalNsPerDatagram, b.TotalNsPerDatagram), x <= ph.goal,
			fmt.Sprintf("%s: %.0f ns more per datagram", ph.why, c.TotalNsPerDatagram-b.TotalNsPerDatagram)})
	}
	if s, b := r.storm(tm), r.storm(bt); s.Rate > 0 && b.Rate > 0 {
		x := s.Rate / b.Rate
		ts = append(ts, target{"drop storm: drop rate", "≥ 0.95× with bpftrace count()",
			fmt.Sprintf("%.2f× (%.0f against %.0f drops/s)", x, s.Rate, b.Rate), x >= 0.95,
			"the storm's sender pays the drop path in its own softirq, and " + perDrop})
		ts = append(ts, target{"drop storm: counts", "= kernel", fmt.Sprintf("%d / %d, %d lost and %d unsampled records, reported",
			s.Counted, s.Kernel, s.Lost, s.Unsampled), s.Counted == s.Kernel, ""})
	}
	for _, t := range r.TCP.Runs {
		if t.Tool == tm {
			ts = append(ts, target{"counts in the tcp_mem reproduction", "= kernel", fmt.Sprintf("aborts %d / %d, PROTO_MEM drops %d / %d",
				t.Aborts, r.TCP.KernelAborts, t.Counted, r.TCP.KernelDrops), t.Counted == r.TCP.KernelDrops && t.Aborts == r.TCP.KernelAborts, ""})
		}
	}
	for _, name := range []string{tm, tmDaemon} {
		if i, ok := r.idle(name); ok {
			ts = append(ts, target{fmt.Sprintf("idle, %.0f s: `%s`", i.Seconds, name), "≤ 0.2% of a core", fmt.Sprintf("%.3f%%", i.CPUPercent),
				i.CPUPercent <= 0.2, "it wakes once a second for a snapshot (counter maps, /proc, a pressure sample), and the exporter every 10 s for who holds memory (sock_diag in each network namespace)"})
		}
	}
	for _, c := range r.CPU {
		if c.Tool == tm {
			ts = append(ts, target{fmt.Sprintf("userspace CPU at %dk events/s", c.Rate/1000), "≤ 1% of a core", fmt.Sprintf("%.2f%%", c.CPUPercent),
				c.CPUPercent <= 1, fmt.Sprintf("it decodes, names and prints each of the %d records it sends (at most --record-rate a second), "+
					"about %.0f µs of CPU each; the counts cost nothing in userspace", c.Printed, perRecordMicros(c, r.PhaseSeconds))})
		}
	}
	for _, m := range r.PeakRSS {
		if m.Tool == tm {
			ts = append(ts, target{"peak RSS", "≤ 40 MB", mib(m.Bytes), m.Bytes <= 40e6,
				fmt.Sprintf("%s of it at the end is mapped: the binary's code and the ringbuf, whose pages the kernel maps twice; "+
					"the process's own memory is %s", mib(m.FileBytes), mib(m.AnonBytes))})
		}
	}
	for _, s := range r.Startup {
		if s.Tool == tm {
			ts = append(ts, target{"exec → attached, idle machine", "≤ 120 ms", fmt.Sprintf("%.0f ms", s.MedianMs), s.MedianMs <= 120,
				"the kernel's verifier takes most of it, for the largest programs (kfree_skb, the refusal and abort hooks)"})
		}
	}
	if n := len(r.StartupWith); n > 0 {
		first, last := r.StartupWith[0], r.StartupWith[n-1]
		per := 0.0
		if last.Connections > first.Connections {
			per = 1000 * (last.MedianMs - first.MedianMs) / float64(2*(last.Connections-first.Connections))
		}
		ts = append(ts, target{fmt.Sprintf("exec → attached, %d connections open", last.Connections), "≤ 250 ms",
			fmt.Sprintf("%.0f ms (%.1f µs a socket more than with %d)", last.MedianMs, per, first.Connections), last.MedianMs <= 250,
			"the start names every open socket's owner from the open files (iter/task_file) before it says it is attached"})
	}
	rows := make([][]string, 0, len(ts)+1)
	for _, x := range ts {
		rows = append(rows, x.row())
	}
	for _, t := range r.Throughput {
		if t.Tool == tm {
			lo, hi := r.ratioSpread(t)
			verdict := yes(lo >= 0.99)
			if lo < 0.99 && hi >= 0.99 {
				verdict = "not resolved here"
			}
			rows = append(rows, []string{"loopback throughput", "≥ 99% of without",
				fmt.Sprintf("%.1f%% (middle half of the rounds %.0f–%.0f%%)", 100*t.Ratio, 100*lo, 100*hi), verdict})
		}
	}
	return rows
}

func mib(b int64) string { return fmt.Sprintf("%.1f MB", float64(b)/1e6) }

func table(b *strings.Builder, head []string, rows [][]string) {
	b.WriteString("| " + strings.Join(head, " | ") + " |\n|")
	for range head {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	for _, r := range rows {
		b.WriteString("| " + strings.Join(r, " | ") + " |\n")
	}
	b.WriteString("\n")
}

func ratio(v, base float64) string {
	if base == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f×", v/base)
}

func (r *Results) Markdown() string {
	var b strings.Builder
	m := r.Machine
	fmt.Fprintf(&b, "# Benchmarks\n\n")
	fmt.Fprintf(&b, "Written by `make bench` (bench/, raw figures in bench/results.json) on %s.\n"+
		"Do not edit: run it again.\n\n", r.Date.Format("2006-01-02 15:04 MST"))
	table(&b, []string{"machine", ""}, [][]string{
		{"host", m.Host}, {"CPU", fmt.Sprintf("%s, %d cores", m.CPU, m.Cores)}, {"memory", fmt.Sprintf("%.0f GiB", m.MemGiB)},
		{"kernel", m.Kernel}, {"tcpmemtrace", m.Tcpmemtrace + " (" + m.Commit + ")"}, {"bpftrace", m.Bpftrace},
		{"iperf3", m.Iperf3}, {"Go", m.Go},
	})
	b.WriteString("Each tool runs as an operator would start it, with its output read through a pipe:\n\n")
	var rows [][]string
	for _, t := range r.Tools {
		rows = append(rows, []string{t.Name, t.Does, "`" + strings.Join(t.Argv, " ") + "`"})
	}
	table(&b, []string{"tool", "per event", "command"}, rows)
	for _, u := range r.Unavailable {
		fmt.Fprintf(&b, "**%s did not run on this machine** and is left out:\n\n```\n%s\n```\n\n", u.Tool, strings.TrimSpace(u.Error))
	}

	b.WriteString("## tcpmemtrace against its targets\n\n")
	table(&b, []string{"target", "goal", "measured", ""}, r.targets())

	b.WriteString("## BPF cost per call\n\n")
	b.WriteString("Run time per program call (`BPF_ENABLE_STATS`: run_time_ns / run_cnt) while " +
		fmt.Sprint(r.cost(tm, "counted").Datagrams) + " UDP datagrams are sent as fast as possible inside " +
		"the harness's network namespace: to a closed port (every one an *unrelated* `kfree_skb`, reason NO_SOCKET, " +
		"that every tool's hook still runs for), then to a socket that never reads (every one a *counted* " +
		"drop, SOCKET_RCVBUFF). The *empty program* is a program that returns at once, attached to the same " +
		"hook by the harness: its figure is the floor of the measurement (the clock reads around each run), " +
		"and *above empty* is what a tool's own instructions cost. \"All programs\" adds every program of " +
		"the tool that ran, per datagram.\n\n")
	rows = nil
	for _, c := range r.Cost {
		net := "–"
		if c.Tool != emptyName {
			net = fmt.Sprintf("%.0f", r.net(c.Tool, c.Phase))
		}
		rows = append(rows, []string{c.Tool, c.Phase, fmt.Sprint(c.KernelDrops), fmt.Sprintf("%.0f", c.KfreeNsPerCall), net,
			fmt.Sprintf("%.0f", c.TotalNsPerDatagram), ratio(c.KfreeNsPerCall, r.cost("bpftrace count", c.Phase).KfreeNsPerCall)})
	}
	table(&b, []string{"tool", "drops", "kernel's count", "kfree_skb ns/call", "above empty", "all programs ns/datagram", "vs bpftrace count"}, rows)
	fmt.Fprintf(&b, "In the TCP reproduction below, tcpmemtrace's kfree_skb program ran %d times at %.0f ns per call "+
		"(mixed: TCP PROTO_MEM drops with socket, owner and cause, and unrelated frees).\n\n", r.TCP.KfreeRuns, r.TCP.KfreeNsPerCall)

	b.WriteString("## Exactness under a drop storm\n\n")
	fmt.Fprintf(&b, "Datagrams sent as fast as one sender can for %.0f s to the socket that never reads; the kernel's "+
		"Udp RcvbufErrors is the oracle. Without any tool the kernel dropped %.0f datagrams/s. Lost is what each "+
		"tool says it lost (ringbuf full, perf buffer `Lost N events`); unsampled is records tcpmemtrace "+
		"chose not to send beyond its record budget (counts stay exact).\n\n", r.PhaseSeconds, r.Storm.BaselineRate)
	rows = nil
	for _, s := range r.Storm.Runs {
		rows = append(rows, []string{s.Tool, fmt.Sprintf("%.0f", s.Rate), ratio(s.Rate, r.Storm.BaselineRate), fmt.Sprint(s.Kernel),
			fmt.Sprint(s.Counted), exact(s.Counted, s.Kernel), fmt.Sprint(s.Lost), fmt.Sprint(s.Unsampled)})
	}
	table(&b, []string{"tool", "drops/s", "vs no tool", "kernel", "tool", "exact", "lost", "unsampled"}, rows)

	b.WriteString("## The tcp_mem reproduction, all tools attached at once\n\n")
	fmt.Fprintf(&b, "The test suite's reproduction (300 loopback connections whose reader never reads, tcp_mem "+
		"lowered to 1000 2000 3000 pages, the writer closed with data queued). Kernel: ΔTCPAbortOnMemory %d, "+
		"ΔTCPRcvQDrop + ΔTCPOFODrop %d (PROTO_MEM drops).\n\n", r.TCP.KernelAborts, r.TCP.KernelDrops)
	rows = nil
	for _, t := range r.TCP.Runs {
		ab := "–"
		if t.Tool == tm {
			ab = fmt.Sprintf("%d (%s)", t.Aborts, exact(t.Aborts, r.TCP.KernelAborts))
		}
		rows = append(rows, []string{t.Tool, fmt.Sprintf("%d (%s)", t.Counted, exact(t.Counted, r.TCP.KernelDrops)), ab, fmt.Sprint(t.Lost)})
	}
	table(&b, []string{"tool", "PROTO_MEM drops", "memory aborts", "lost"}, rows)
	b.WriteString("The bpftrace scripts see drops only: an abort frees no skb with a reason, and their " +
		"equivalents of tcpmemtrace's abort hooks need fentry or kprobes.\n\n")

	b.WriteString("## Userspace CPU and memory\n\n")
	fmt.Fprintf(&b, "Counted drops paced at a fixed rate for %.0f s each; CPU is the tool's threads' run time "+
		"(schedstat) over the phase, as a share of one core; peak RSS is VmHWM at the end.\n\n", r.PhaseSeconds)
	rows = nil
	for _, c := range r.CPU {
		rows = append(rows, []string{c.Tool, fmt.Sprint(c.Rate), fmt.Sprintf("%.0f", c.Achieved), fmt.Sprintf("%.2f%%", c.CPUPercent),
			fmt.Sprint(c.Printed), fmt.Sprint(c.Lost)})
	}
	table(&b, []string{"tool", "target events/s", "sent/s", "CPU", "lines printed", "lost"}, rows)
	if len(r.FirstDrops) > 0 {
		b.WriteString("The timed phases begin after a few drops: work done once, at a tool's first drops, is shown apart " +
			"(tcpmemtrace reads the kernel's symbol table then, to name the places packets are dropped).\n\n")
		rows = nil
		for _, f := range r.FirstDrops {
			rows = append(rows, []string{f.Tool, fmt.Sprint(f.Drops), fmt.Sprintf("%.0f", f.CPUms)})
		}
		table(&b, []string{"tool", "first drops", "CPU ms"}, rows)
	}
	rows = nil
	for _, m := range r.PeakRSS {
		rows = append(rows, []string{m.Tool, mib(m.Bytes), mib(m.AnonBytes), mib(m.FileBytes)})
	}
	table(&b, []string{"tool", "peak RSS", "own memory at the end", "mapped at the end"}, rows)

	b.WriteString("## Time to attach\n\n")
	b.WriteString("From exec to the line the tool prints once every hook is attached (tcpmemtrace's " +
		"\"Tracing TCP memory events\", the scripts' BEGIN output), median of the runs.\n\n")
	rows = nil
	var tmStart float64
	for _, s := range r.Startup {
		if s.Tool == tm {
			tmStart = s.MedianMs
		}
	}
	for _, s := range r.Startup {
		var all []string
		for _, v := range s.Ms {
			all = append(all, fmt.Sprintf("%.0f", v))
		}
		rows = append(rows, []string{s.Tool, fmt.Sprintf("%.0f", s.MedianMs), ratio(s.MedianMs, tmStart), strings.Join(all, ", ")})
	}
	table(&b, []string{"tool", "median ms", "vs tcpmemtrace", "runs (ms)"}, rows)
	b.WriteString("tcpmemtrace parses the kernel's BTF once (shared by its own facts, the fentry probe and the " +
		"program loads), creates its maps meanwhile on the other CPU, and has the kernel verify its programs " +
		"in two halves at once: verifying the three largest (kfree_skb, sock_exceed_buf_limit, the abort " +
		"hook) is most of what remains.\n\n")

	if len(r.StartupWith) > 0 {
		b.WriteString("With loopback TCP connections already open (the harness holds both ends): the start names " +
			"every socket's owner from the open files, so its cost grows with them.\n\n")
		rows = nil
		for _, s := range r.StartupWith {
			var all []string
			for _, v := range s.Ms {
				all = append(all, fmt.Sprintf("%.0f", v))
			}
			rows = append(rows, []string{fmt.Sprint(s.Connections), fmt.Sprint(2 * s.Connections), fmt.Sprintf("%.0f", s.MedianMs), strings.Join(all, ", ")})
		}
		table(&b, []string{"connections", "sockets", "tcpmemtrace median ms", "runs (ms)"}, rows)
	}

	if len(r.Idle) > 0 {
		b.WriteString("## Idle\n\n")
		b.WriteString("Nothing happens on the machine: each way of running the tool, and bpftrace's count for " +
			"reference, is measured by its threads' run time (schedstat) after its start has settled.\n\n")
		rows = nil
		for _, i := range r.Idle {
			rows = append(rows, []string{i.Tool, fmt.Sprintf("%.0f", i.Seconds), fmt.Sprintf("%.3f%%", i.CPUPercent)})
		}
		table(&b, []string{"tool", "seconds", "CPU (one core)"}, rows)
	}

	b.WriteString("## Loopback throughput\n\n")
	fmt.Fprintf(&b, "iperf3 (one TCP stream, %.0f s) over loopback in a network namespace of its own, "+
		"each configuration once per round. This machine's loopback throughput drifts by tens of percent "+
		"over seconds, so each run is compared with the run without a tracer in the same round and the "+
		"median of those ratios is given.\n\n", r.IperfSeconds)
	rows = nil
	for _, t := range r.Throughput {
		var all []string
		for _, v := range t.Gbps {
			all = append(all, fmt.Sprintf("%.2f", v))
		}
		lo, hi := r.ratioSpread(t)
		rows = append(rows, []string{t.Tool, fmt.Sprintf("%.2f", t.MedianGbps), fmt.Sprintf("%.1f%%", 100*t.Ratio),
			fmt.Sprintf("%.0f–%.0f%%", 100*lo, 100*hi), strings.Join(all, ", ")})
	}
	table(&b, []string{"tracer attached", "median Gbit/s", "median of per-round ratios", "middle half", "rounds (Gbit/s)"}, rows)
	if len(r.IperfPrograms) > 0 {
		fmt.Fprintf(&b, "What runs of tcpmemtrace during iperf3 (one more run with BPF stats on: %.2f Gbit/s):\n\n", r.IperfGbpsWithStats)
		rows = nil
		for _, p := range r.IperfPrograms {
			rows = append(rows, []string{p.Name, fmt.Sprintf("%.0f", p.PerSecond), fmt.Sprintf("%.0f", p.NsPerRun)})
		}
		table(&b, []string{"program", "runs/s", "ns/run"}, rows)
		var ns float64
		for _, p := range r.IperfPrograms {
			ns += p.PerSecond * p.NsPerRun
		}
		fmt.Fprintf(&b, "Together %.1f ms of BPF run time per second (%.2f%% of one core), clock reads included; "+
			"the rounds above vary more than that from one to the next.\n", ns/1e6, ns/1e7)
	}
	return b.String()
}

func exact(got, want uint64) string {
	if got == want {
		return "exact"
	}
	return fmt.Sprintf("%+.1f%%", 100*(float64(got)-float64(want))/float64(want))
}
