package diagnose

import (
	"fmt"
	"math/bits"
	"net/netip"
	"sort"

	"github.com/tcpmemtrace/tcpmemtrace/internal/kmsg"
	"github.com/tcpmemtrace/tcpmemtrace/internal/sockdiag"
	"github.com/tcpmemtrace/tcpmemtrace/internal/units"
	"github.com/tcpmemtrace/tcpmemtrace/stream"
)

// Severity of a verdict.
const (
	OK       = "ok"
	Info     = "info"
	Warning  = "warning"
	Critical = "critical"
)

// Report is the diagnosis: figures, verdicts, remedies.
type Report struct {
	Hostname string `json:"hostname"`
	Kernel   string `json:"kernel"`
	PageSize int64  `json:"page_size"`
	MemTotal int64  `json:"mem_total_bytes"`
	MemAvail int64  `json:"mem_available_bytes"`

	Pool      Pool      `json:"pool"`
	Orphans   Ratio     `json:"orphans"`    // vs tcp_max_orphans
	TimeWait  Ratio     `json:"time_wait"`  // vs tcp_max_tw_buckets
	Sockets   int64     `json:"sockets"`    // TCP sockets in use, every namespace
	WorstCase WorstCase `json:"worst_case"` // every socket at its buffer maximums

	Namespaces int `json:"namespaces"`
	// SinceBoot sums the kernel's TCP memory counters over the namespaces.
	SinceBoot map[string]uint64 `json:"since_boot"`

	TopSockets []SocketMem  `json:"top_sockets"`
	TopOwners  []OwnerMem   `json:"top_owners"`
	Verdicts   []Verdict    `json:"verdicts"`
	Remedies   []Remedy     `json:"remedies"`
	Notes      []string     `json:"notes,omitempty"`
	Settings   SettingsView `json:"settings"`
}

// Pool is TCP memory against tcp_mem, in pages and bytes.
type Pool struct {
	Pages      int64    `json:"pages"`
	Bytes      int64    `json:"bytes"`
	Limits     [3]int64 `json:"tcp_mem_pages"`
	LimitBytes [3]int64 `json:"tcp_mem_bytes"`
	PctOfHigh  float64  `json:"pct_of_high"`
	Zone       string   `json:"zone"` // below_low, above_low, pressure, above_high
}

// Ratio is a count against its limit.
type Ratio struct {
	Count int64   `json:"count"`
	Max   int64   `json:"max"`
	Pct   float64 `json:"pct"`
}

// WorstCase is the demand if every socket filled both buffers.
type WorstCase struct {
	RmemMax     int64   `json:"tcp_rmem_max"`
	WmemMax     int64   `json:"tcp_wmem_max"`
	Sockets     int64   `json:"sockets"`
	DemandBytes int64   `json:"demand_bytes"`
	PoolBytes   int64   `json:"pool_high_bytes"`
	Ratio       float64 `json:"times_the_pool"`
}

// SocketMem is a socket and what its queues hold.
type SocketMem struct {
	NetNS  uint32           `json:"netns"`
	Src    netip.AddrPort   `json:"src"`
	Dst    netip.AddrPort   `json:"dst"`
	State  string           `json:"state"`
	RecvQ  uint32           `json:"recv_q"`
	SendQ  uint32           `json:"send_q"`
	Mem    sockdiag.MemInfo `json:"skmem"`
	Queued uint64           `json:"queued_bytes"`
	Owner  *Owner           `json:"owner,omitempty"` // nil: no process holds it (orphan)
	// StalledMs is how long unread data has waited with nothing new
	// arriving (sockdiag's StallAge); absent when the socket is not stalled.
	StalledMs uint64 `json:"stalled_ms,omitempty"`
}

// Label is the place as people name it: the container by its runtime's
// names (namespace/pod/container, podman's name), else by id, else the
// cgroup path; "" when unknown.
func (p Place) Label() string {
	if p.Container != nil {
		if l := p.Container.Label(); l != "" {
			return l
		}
	}
	return p.CgroupPath
}

// suffix is " in LABEL" for a verdict, "" when the place is unknown.
func (p Place) suffix() string {
	if l := p.Label(); l != "" {
		return " in " + l
	}
	return ""
}

// Owner is a socket's owning process and where it lives.
type Owner struct {
	Process
	Place
}

// OwnerMem is a process and what its sockets' queues hold.
type OwnerMem = stream.Holder

// Verdict is one finding.
type Verdict struct {
	Severity string `json:"severity"`
	Text     string `json:"text"`
}

// Remedy is one action that fits, with the command and why.
type Remedy struct {
	Text    string `json:"text"`
	Command string `json:"command,omitempty"`
}

// SettingsView is the settings the remedies change.
type SettingsView struct {
	TCPMem       [3]int64 `json:"tcp_mem"`
	TCPRmem      [3]int64 `json:"tcp_rmem"`
	TCPWmem      [3]int64 `json:"tcp_wmem"`
	MaxOrphans   int64    `json:"tcp_max_orphans"`
	MaxTWBuckets int64    `json:"tcp_max_tw_buckets"`
	TWReuse      int64    `json:"tcp_tw_reuse"`
}

// SinceBootCounters are the TcpExt counters the report sums.
var SinceBootCounters = []string{"TCPMemoryPressures", "TCPMemoryPressuresChrono", "TCPAbortOnMemory",
	"TCPRcvQDrop", "TCPOFODrop", "PruneCalled", "RcvPruned", "OfoPruned", "TCPBacklogDrop"}

// orphanCost is what an orphan may pin in unswappable memory (ip-sysctl.rst:
// "each orphan eats up to ~64K").
const orphanCost = 64 << 10

var stateNames = map[uint8]string{1: "ESTAB", 2: "SYN-SENT", 3: "SYN-RECV", 4: "FIN-WAIT-1", 5: "FIN-WAIT-2",
	6: "TIME-WAIT", 7: "CLOSE", 8: "CLOSE-WAIT", 9: "LAST-ACK", 10: "LISTEN", 11: "CLOSING"}

// Analyze turns what was read into the report. It reads nothing itself.
func Analyze(in *Input, top int) Report {
	ps := in.PageSize
	r := Report{Hostname: in.Hostname, Kernel: in.Kernel, PageSize: ps, MemTotal: in.MemTotal, MemAvail: in.MemAvailable,
		Namespaces: len(in.Namespaces), SinceBoot: map[string]uint64{}, Notes: in.Notes,
		Settings: SettingsView{in.TCPMem, in.TCPRmem, in.TCPWmem, in.MaxOrphans, in.MaxTWBuckets, in.TWReuse}}

	r.Pool = Pool{Pages: in.MemPages, Bytes: in.MemPages * ps, Limits: in.TCPMem, PctOfHigh: pct(in.MemPages, in.TCPMem[2])}
	for i, l := range in.TCPMem {
		r.Pool.LimitBytes[i] = l * ps
	}
	switch {
	case in.MemPages > in.TCPMem[2]:
		r.Pool.Zone = "above_high"
	case in.MemPages > in.TCPMem[1]:
		r.Pool.Zone = "pressure"
	case in.MemPages > in.TCPMem[0]:
		r.Pool.Zone = "above_low"
	default:
		r.Pool.Zone = "below_low"
	}
	r.Orphans = Ratio{in.Orphans, in.MaxOrphans, pct(in.Orphans, in.MaxOrphans)}

	var tw int64
	var socks []SocketMem
	var all []sockdiag.Socket
	for _, ns := range in.Namespaces {
		tw += ns.TW
		r.Sockets += ns.InUse
		for _, name := range SinceBootCounters {
			r.SinceBoot[name] += ns.Counters.Get("TcpExt", name)
		}
		for _, s := range ns.Sockets {
			sm := SocketMem{NetNS: ns.Inode, Src: s.Src, Dst: s.Dst, State: stateNames[s.State], RecvQ: s.RecvQ,
				SendQ: s.SendQ, Mem: s.Mem, Queued: s.Mem.Queued()}
			if age, stalled := s.StallAge(); stalled {
				sm.StalledMs = uint64(age.Milliseconds())
			}
			if p, ok := in.Owners[s.Inode]; ok && s.Inode != 0 {
				sm.Owner = &Owner{p, in.Places[p.PID]}
			}
			socks = append(socks, sm)
		}
		all = append(all, ns.Sockets...)
	}
	r.TimeWait = Ratio{tw, in.MaxTWBuckets, pct(tw, in.MaxTWBuckets)}
	sort.SliceStable(socks, func(i, j int) bool { return socks[i].Queued > socks[j].Queued })
	r.TopSockets = socks[:min(top, len(socks))]
	r.TopOwners = sockdiag.Rank(all, in.Owners, top)
	for i := range r.TopOwners {
		pl := in.Places[r.TopOwners[i].PID]
		r.TopOwners[i].CgroupPath, r.TopOwners[i].Container = pl.CgroupPath, pl.Container
	}

	r.WorstCase = WorstCase{RmemMax: in.TCPRmem[2], WmemMax: in.TCPWmem[2], Sockets: r.Sockets,
		DemandBytes: (in.TCPRmem[2] + in.TCPWmem[2]) * r.Sockets, PoolBytes: in.TCPMem[2] * ps}
	if r.WorstCase.PoolBytes > 0 {
		r.WorstCase.Ratio = float64(r.WorstCase.DemandBytes) / float64(r.WorstCase.PoolBytes)
	}

	r.verdicts(in)
	return r
}

func pct(v, of int64) float64 {
	if of <= 0 {
		return 0
	}
	return 100 * float64(v) / float64(of)
}

func (r *Report) add(sev, format string, args ...any) {
	r.Verdicts = append(r.Verdicts, Verdict{sev, fmt.Sprintf(format, args...)})
}

func (r *Report) remedy(cmd, format string, args ...any) {
	r.Remedies = append(r.Remedies, Remedy{Text: fmt.Sprintf(format, args...), Command: cmd})
}

// verdicts applies the manual procedure's rules, most severe first.
func (r *Report) verdicts(in *Input) {
	p, ps := r.Pool, in.PageSize
	switch p.Zone {
	case "above_high":
		r.add(Critical, "TCP memory above the hard limit: %d pages (%s) > tcp_mem[2] %d pages (%s), %.0f%% of high: "+
			"new data is dropped and sockets with queued data are killed (\"TCP: out of memory -- consider tuning tcp_mem\")",
			p.Pages, units.IEC(p.Bytes), p.Limits[2], units.IEC(p.LimitBytes[2]), p.PctOfHigh)
	case "pressure":
		r.add(Warning, "TCP memory under pressure: %d pages (%s) > tcp_mem[1] %d pages; buffer pool at %.0f%% of high",
			p.Pages, units.IEC(p.Bytes), p.Limits[1], p.PctOfHigh)
	default:
		sev := OK
		if p.PctOfHigh >= 80 {
			sev = Warning
		}
		r.add(sev, "buffer pool at %.0f%% of high (%d of %d pages, %s of %s)", p.PctOfHigh, p.Pages, p.Limits[2],
			units.IEC(p.Bytes), units.IEC(p.LimitBytes[2]))
	}
	o := r.Orphans
	switch {
	case o.Count > o.Max:
		r.add(Critical, "too many orphaned sockets: %d > tcp_max_orphans %d: they are killed on sight (\"TCP: too many orphaned sockets\")", o.Count, o.Max)
	case o.Pct >= 80:
		r.add(Warning, "orphans at %.0f%% of max (%d of %d); with retransmissions backed off, the kernel already kills them at a quarter of that", o.Pct, o.Count, o.Max)
	default:
		r.add(OK, "orphans at %.0f%% of max (%d of %d)", o.Pct, o.Count, o.Max)
	}
	if tw := r.TimeWait; tw.Max > 0 && tw.Pct >= 80 {
		r.add(Warning, "TIME-WAIT at %.0f%% of tcp_max_tw_buckets (%d of %d)", tw.Pct, tw.Count, tw.Max)
	}

	slow, big := r.holders(in)
	if w := r.WorstCase; w.Ratio >= 1 {
		r.add(Info, "if every one of the %d sockets filled tcp_rmem and tcp_wmem maximums (%s + %s), they would need %s: %.1fx the pool",
			w.Sockets, units.IEC(w.RmemMax), units.IEC(w.WmemMax), units.IEC(w.DemandBytes), w.Ratio)
	}
	sb := r.SinceBoot
	if n := sb["TCPAbortOnMemory"]; n > 0 {
		r.add(Warning, "%d sockets killed for memory since boot (TCPAbortOnMemory; logged as %q or %q, %s)", n,
			"TCP: "+kmsg.Warnings[0].Text, "TCP: "+kmsg.Warnings[1].Text, kmsg.LegacyNote)
	}
	if n := sb["TCPMemoryPressures"]; n > 0 {
		r.add(Info, "%d pressure episodes since boot, %.1fs under pressure in total (TCPMemoryPressures, ...Chrono)",
			n, float64(sb["TCPMemoryPressuresChrono"])/1000)
	}
	if n := sb["TCPRcvQDrop"] + sb["TCPOFODrop"]; n > 0 {
		r.add(Info, "%d incoming segments dropped for memory since boot (TCPRcvQDrop + TCPOFODrop)", n)
	}

	r.remedies(in, slow, big, ps)
}

// slowConsumers is how many processes a report calls slow consumers at most.
const slowConsumers = 3

// holders says who holds the memory. A slow consumer is a process that has
// not read sockets holding 1 MiB or more: sockdiag's StallAge is the
// proof, and the figure is how long. A process holding a large share
// (1 MiB and a quarter of TCP memory) while it still reads is named, not
// blamed. It returns the first slow consumer, and that large holder when
// it is not one.
func (r *Report) holders(in *Input) (slow, big *OwnerMem) {
	p := r.Pool
	sev := Info
	if r.tight() {
		sev = Warning
	}
	var stalled []*OwnerMem
	for i := range r.TopOwners {
		if r.TopOwners[i].StalledBytes >= 1<<20 {
			stalled = append(stalled, &r.TopOwners[i])
		}
	}
	sort.SliceStable(stalled, func(i, j int) bool { return stalled[i].StalledBytes > stalled[j].StalledBytes })
	for i, o := range stalled[:min(len(stalled), slowConsumers)] {
		if i == 0 {
			slow = o
		}
		r.add(sev, "slow consumer: %s (%.0f%% of TCP memory)", sockdiag.NotReading(*o, in.Places[o.PID].Label()),
			pct(int64(o.StalledBytes), p.Bytes))
	}
	if len(r.TopOwners) == 0 || p.Bytes == 0 {
		return slow, nil
	}
	top := &r.TopOwners[0]
	held := top.Queued()
	if held < 1<<20 || float64(held) < 0.25*float64(p.Bytes) || top.StalledBytes >= 1<<20 {
		return slow, nil
	}
	who := fmt.Sprintf("pid %d (%s)%s", top.PID, top.Comm, in.Places[top.PID].suffix())
	share := pct(int64(held), p.Bytes)
	switch {
	case top.SendBytes > top.RecvBytes:
		r.add(Info, "%s holds %s in send queues over %d sockets (%.0f%% of TCP memory): its peers take the data slower than it writes",
			who, units.IEC(int64(held)), top.Sockets, share)
	case top.StalledSockets == 0:
		r.add(Info, "%s holds %s in receive queues over %d sockets (%.0f%% of TCP memory), and it is reading: "+
			"none of them has held unread data for %s with nothing new arriving", who, units.IEC(int64(held)), top.Sockets, share,
			units.Age(sockdiag.StallAfter))
	default: // a few stalled sockets holding little: the sentence says which
		r.add(Info, "%s holds %s in receive queues over %d sockets (%.0f%% of TCP memory); %s",
			who, units.IEC(int64(held)), top.Sockets, share, sockdiag.NotReading(*top, ""))
	}
	return slow, top
}

// tight is a pool under pressure, above its limit, or near it.
func (r *Report) tight() bool {
	p := r.Pool
	return p.Zone == "pressure" || p.Zone == "above_high" || p.PctOfHigh >= 80
}

// remedies proposes what fits, with values computed from this machine.
func (r *Report) remedies(in *Input, slow, big *OwnerMem, ps int64) {
	p := r.Pool
	tight := r.tight()
	switch {
	case tight && slow != nil:
		r.remedy("", "fix the slow consumer first (the usual root cause): pid %d (%s)%s has not read for %s; "+
			"raising limits only lets it hold more", slow.PID, slow.Comm, in.Places[slow.PID].suffix(), units.Age(slow.StallAge()))
	case tight && big != nil && big.SendBytes > big.RecvBytes:
		r.remedy("", "find why the peers of pid %d (%s)%s take its data slower than it writes; raising limits only lets it hold more",
			big.PID, big.Comm, in.Places[big.PID].suffix())
	case tight && big != nil:
		r.remedy("", "find why pid %d (%s)%s reads slower than its peers send; raising limits only lets it hold more",
			big.PID, big.Comm, in.Places[big.PID].suffix())
	}
	if tight && in.MemTotal > 0 {
		// Double the pool, at most a quarter of RAM, keeping the ratios.
		newHigh := min(2*in.TCPMem[2], in.MemTotal/4/ps)
		extra := (newHigh - p.Pages) * ps
		if newHigh > in.TCPMem[2] && in.MemAvailable >= 2*extra {
			f := float64(newHigh) / float64(in.TCPMem[2])
			nl, np := int64(float64(in.TCPMem[0])*f), int64(float64(in.TCPMem[1])*f)
			r.remedy(fmt.Sprintf("sysctl -w net.ipv4.tcp_mem=\"%d %d %d\"", nl, np, newHigh),
				"raise tcp_mem: high %d pages = %s, %.1f%% of RAM (now %s); %s available covers it",
				newHigh, units.IEC(newHigh*ps), 100*float64(newHigh*ps)/float64(in.MemTotal), units.IEC(in.TCPMem[2]*ps), units.IEC(in.MemAvailable))
		} else {
			r.remedy("", "do not raise tcp_mem: only %s of RAM is available; more socket memory would bring the OOM killer next",
				units.IEC(in.MemAvailable))
		}
		// Cap per-socket buffers so the sockets in use, both directions
		// full, fit the pool (never below 1 MiB: throughput needs some).
		if r.Sockets > 0 {
			fit := pow2Floor(max(in.TCPMem[2]*ps/(2*r.Sockets), 1<<20))
			if fit < in.TCPRmem[2] {
				r.remedy(fmt.Sprintf("sysctl -w net.ipv4.tcp_rmem=\"%d %d %d\"", in.TCPRmem[0], min(in.TCPRmem[1], fit), fit),
					"cap receive buffers at %s (now %s): %d sockets with both buffers full then fit in the pool",
					units.IEC(fit), units.IEC(in.TCPRmem[2]), r.Sockets)
			}
			if fit < in.TCPWmem[2] {
				r.remedy(fmt.Sprintf("sysctl -w net.ipv4.tcp_wmem=\"%d %d %d\"", in.TCPWmem[0], min(in.TCPWmem[1], fit), fit),
					"cap send buffers at %s (now %s)", units.IEC(fit), units.IEC(in.TCPWmem[2]))
			}
		}
	}
	if o := r.Orphans; o.Pct >= 80 {
		newMax := 2 * max(o.Max, 1024)
		if cost := newMax * orphanCost; in.MemAvailable >= 2*cost {
			r.remedy(fmt.Sprintf("sysctl -w net.ipv4.tcp_max_orphans=%d", newMax),
				"raise tcp_max_orphans: %d orphans may pin up to %s (64 KiB each), %s is available; and find who closes sockets with unsent data",
				newMax, units.IEC(cost), units.IEC(in.MemAvailable))
		} else {
			r.remedy("", "do not raise tcp_max_orphans: %d orphans could pin %s, more than half of the %s available",
				newMax, units.IEC(newMax*orphanCost), units.IEC(in.MemAvailable))
		}
	}
	if tw := r.TimeWait; tw.Max > 0 && tw.Pct >= 80 && in.TWReuse != 1 {
		r.remedy("sysctl -w net.ipv4.tcp_tw_reuse=1",
			"let outgoing connections reuse TIME-WAIT ports (now %d); or keep connections open longer", in.TWReuse)
	}
}

func pow2Floor(v int64) int64 {
	if v <= 0 {
		return 0
	}
	return 1 << (63 - bits.LeadingZeros64(uint64(v)))
}
