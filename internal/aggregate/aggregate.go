// Package aggregate folds a record stream into what the summary reports.
// Counts come from the kernel's exact totals and per-owner counts; events
// only add what counts cannot say (peaks, sockets). It knows nothing about
// output formats.
package aggregate

import (
	"net/netip"
	"sort"
	"strconv"
	"time"

	"github.com/tcpmemtrace/tcpmemtrace/internal/kmsg"
	"github.com/tcpmemtrace/tcpmemtrace/stream"
)

// Summary is the state of a trace at its end.
type Summary struct {
	Start, End time.Time
	Totals     stream.Totals
	// Owners are the kernel's exact per-owner counts (process in a cgroup).
	Owners []stream.OwnerCounts
	// PeakMemPages is the highest TCP memory seen, in pages: by any event or
	// by the /proc sampler; PeakLimits is tcp_mem at that moment.
	PeakMemPages int64
	PeakLimits   [3]int64
	// Events counts the sampled events received per kind.
	Events map[stream.Kind]uint64
	// Sockets are the sockets events happened on, from the events (so
	// complete only when Totals.LostSamples is 0).
	Sockets []*SocketStats
	// SocketsDropped counts sockets not tracked once MaxSockets was reached.
	SocketsDropped uint64
	// KernelLog compares warnings printed with events counted; nil when
	// /dev/kmsg could not be read.
	KernelLog *KernelLog
	// Episodes is the pressure timeline, oldest first.
	Episodes []*Episode
	// Stalled is what the last look that found stalled sockets saw (a
	// snapshot's holders: the final one always looks); nil when none did.
	Stalled *Stalled
}

// Stalled is who had stopped reading, as one look (sock_diag) saw it.
type Stalled struct {
	Time time.Time
	// Holders are the processes with stalled sockets, the most memory in
	// them first.
	Holders []stream.Holder
	// Sockets are the stalled sockets, the most memory first (at most 50).
	Sockets []stream.StalledSocket
}

// Episode is one stretch of global TCP memory pressure.
type Episode struct {
	ID    uint64    // the kernel's jiffies at its start
	Start time.Time //
	End   time.Time // zero: still under pressure when the trace ended
	// StartPages and PeakPages are allocated pages at the start and the
	// highest seen during the episode; PeakLimits is tcp_mem then.
	StartPages int64
	PeakPages  int64
	PeakLimits [3]int64
	// Holders held the most TCP memory as it began (live traces).
	Holders []stream.Holder
}

// Duration is the episode's length, up to end when it has not ended.
func (e *Episode) Duration(end time.Time) time.Duration {
	if !e.End.IsZero() {
		end = e.End
	}
	return end.Sub(e.Start)
}

// KernelLog is the printk rate limit made visible.
type KernelLog struct {
	Warnings []Warning
	// Suppressed is the net_ratelimit "callbacks suppressed" total: lines
	// of any networking message the limiter dropped.
	Suppressed int
}

// Warning is one kernel message against the events that should print it.
type Warning struct {
	Message string // as the kernel prints it
	Events  uint64 // events that print it (exact)
	Lines   int    // lines that reached the log
}

// SocketStats is one socket's events.
type SocketStats struct {
	Cookie   uint64
	NetNS    uint32
	Src, Dst netip.AddrPort
	State    stream.State // at the last event
	Orphan   bool         // at the last event
	Owner    stream.Owner // last known
	Events   uint64
	Counts   stream.Counts
	Last     time.Time
	// StalledMs is how long its owner had not read it, in milliseconds,
	// when Summary.Stalled was seen; 0 when it was not stalled then.
	StalledMs uint64
}

// Activity orders sockets and owners: aborts, then drops, then refusals.
func Activity(c *stream.Counts) uint64 {
	return c.Aborts()*1_000_000 + c.TCPDrops()*1_000 + c.Refusals()
}

// MaxSockets bounds the sockets tracked from events.
const MaxSockets = 65536

type sockKey struct {
	cookie   uint64
	netns    uint32
	src, dst netip.AddrPort
}

// Aggregator consumes records.
type Aggregator struct {
	s       Summary
	sockets map[sockKey]*SocketStats
}

// New starts a summary at start.
func New(start time.Time) *Aggregator {
	return &Aggregator{
		s:       Summary{Start: start, Totals: stream.Totals{}, Events: map[stream.Kind]uint64{}},
		sockets: map[sockKey]*SocketStats{},
	}
}

// Add folds one record in.
func (a *Aggregator) Add(r stream.Record) {
	if e := r.Event; e != nil {
		a.s.Events[e.Kind]++
		a.episode(e)
		a.peak(e.Mem.Allocated, e.Mem.Limits)
		a.socket(e)
	}
	if sn := r.Snapshot; sn != nil {
		a.s.Totals = sn.Totals
		a.s.Owners = sn.Owners
		a.s.End = sn.Time
		a.peak(sn.Global.MemPages, sn.Global.TCPMem)
		a.stalled(sn)
	}
}

// stalled keeps the snapshot's look when it found stalled sockets.
func (a *Aggregator) stalled(sn *stream.Snapshot) {
	st := &Stalled{Time: sn.Time, Sockets: append([]stream.StalledSocket(nil), sn.Stalled...)}
	for _, h := range sn.Holders {
		if h.StalledSockets > 0 {
			st.Holders = append(st.Holders, h)
		}
	}
	if len(st.Sockets) == 0 && len(st.Holders) == 0 {
		return
	}
	sort.SliceStable(st.Holders, func(i, j int) bool { return st.Holders[i].StalledBytes > st.Holders[j].StalledBytes })
	a.s.Stalled = st
}

func (a *Aggregator) peak(pages int64, limits [3]int64) {
	if pages > a.s.PeakMemPages && limits[2] > 0 {
		a.s.PeakMemPages, a.s.PeakLimits = pages, limits
	}
	if n := len(a.s.Episodes); n > 0 {
		if ep := a.s.Episodes[n-1]; ep.End.IsZero() && pages > ep.PeakPages && limits[2] > 0 {
			ep.PeakPages, ep.PeakLimits = pages, limits
		}
	}
}

// episode opens and closes the timeline's episodes.
func (a *Aggregator) episode(e *stream.Event) {
	var open *Episode
	if n := len(a.s.Episodes); n > 0 && a.s.Episodes[n-1].End.IsZero() {
		open = a.s.Episodes[n-1]
	}
	switch e.Kind {
	case stream.KindPressureEnter:
		if open != nil { // a leave the sampler did not see: the new one ends it
			open.End = e.Time
		}
		a.s.Episodes = append(a.s.Episodes, &Episode{ID: e.PressureID, Start: e.Time, Holders: e.Holders,
			StartPages: e.Mem.Allocated, PeakPages: e.Mem.Allocated, PeakLimits: e.Mem.Limits})
	case stream.KindPressureLeave:
		if open != nil && (open.ID == e.PressureID || e.PressureID == 0) {
			open.End = e.Time
		}
	}
}

func (a *Aggregator) socket(e *stream.Event) {
	s := e.Socket
	if !s.Src.IsValid() {
		return // pressure, or a drop the kernel gave no socket for
	}
	k := sockKey{cookie: s.Cookie}
	if k.cookie == 0 {
		k = sockKey{netns: s.NetNS, src: s.Src, dst: s.Dst}
	}
	st := a.sockets[k]
	if st == nil {
		if len(a.sockets) >= MaxSockets {
			a.s.SocketsDropped++
			return
		}
		st = &SocketStats{Cookie: s.Cookie, NetNS: s.NetNS, Src: s.Src, Dst: s.Dst, Counts: stream.Counts{}}
		a.sockets[k] = st
	}
	st.Events++
	st.State, st.Orphan, st.Last = s.State, s.Orphan, e.Time
	if e.Owner.PID != 0 {
		st.Owner = e.Owner
	}
	c := &st.Counts
	switch e.Kind {
	case stream.KindAbort:
		if e.Cause == stream.CauseMemory {
			c.Events[stream.MemAborts]++
		} else {
			c.Events[stream.OrphanAborts]++
		}
	case stream.KindDrop:
		if r, ok := stream.ReasonByName(e.Reason); ok {
			c.Drops[stream.ProtoTCP][r]++
			c.DropBytes[stream.ProtoTCP][r] += uint64(e.Bytes)
		}
	case stream.KindRefusal:
		if e.Send {
			c.Events[stream.RefusalsSend]++
		} else {
			c.Events[stream.RefusalsRecv]++
		}
	}
}

// SetKernelLog records what /dev/kmsg showed during the trace, next to the
// exact number of events behind each warning.
func (a *Aggregator) SetKernelLog(c kmsg.Counts) {
	events := map[string]uint64{"mem_aborts": a.s.Totals.Events[stream.MemAborts], "orphan_aborts": a.s.Totals.Events[stream.OrphanAborts]}
	kl := &KernelLog{Suppressed: c.Suppressed}
	for _, w := range kmsg.Warnings {
		kl.Warnings = append(kl.Warnings, Warning{Message: "TCP: " + w.Text, Events: events[w.Key], Lines: c.Lines[w.Key]})
	}
	a.s.KernelLog = kl
}

// Summary returns the summary so far: owners and sockets most active first.
func (a *Aggregator) Summary() Summary {
	s := a.s
	// Events and sock_diag name a socket by the same cookie; events that
	// carry none (before 5.12 a cookie exists only once something asked
	// for one) by its addresses.
	stalledMs := map[sockKey]uint64{}
	if s.Stalled != nil {
		for _, so := range s.Stalled.Sockets {
			stalledMs[sockKey{cookie: so.Cookie}] = so.StalledMs
			stalledMs[sockKey{netns: so.NetNS, src: so.Src, dst: so.Dst}] = so.StalledMs
		}
	}
	s.Sockets = make([]*SocketStats, 0, len(a.sockets))
	for _, st := range a.sockets {
		if st.Cookie != 0 {
			st.StalledMs = stalledMs[sockKey{cookie: st.Cookie}]
		}
		if st.StalledMs == 0 {
			st.StalledMs = stalledMs[sockKey{netns: st.NetNS, src: st.Src, dst: st.Dst}]
		}
		s.Sockets = append(s.Sockets, st)
	}
	sort.Slice(s.Sockets, func(i, j int) bool {
		ai, aj := Activity(&s.Sockets[i].Counts), Activity(&s.Sockets[j].Counts)
		if ai != aj {
			return ai > aj
		}
		if !s.Sockets[i].Last.Equal(s.Sockets[j].Last) {
			return s.Sockets[i].Last.Before(s.Sockets[j].Last)
		}
		return s.Sockets[i].Cookie < s.Sockets[j].Cookie
	})
	s.Owners = append([]stream.OwnerCounts(nil), s.Owners...)
	sort.SliceStable(s.Owners, func(i, j int) bool {
		return Activity(&s.Owners[i].Counts) > Activity(&s.Owners[j].Counts)
	})
	return s
}

// Group is owners summed by one key: a cgroup, or a command name.
type Group struct {
	Key        string // the cgroup path or the comm
	CgroupID   uint64
	CgroupPath string
	Container  stream.Container
	Comm       string
	PIDs       []uint32
	Counts     stream.Counts
}

// ByCgroup sums the owners by cgroup.
func ByCgroup(owners []stream.OwnerCounts) []*Group {
	return group(owners, func(o *stream.OwnerCounts) (string, *Group) {
		key := o.CgroupPath
		if key == "" {
			key = "#" + strconv.FormatUint(o.CgroupID, 10)
		}
		return key, &Group{Key: key, CgroupID: o.CgroupID, CgroupPath: o.CgroupPath, Container: o.Container}
	})
}

// ByComm sums the owners by command name.
func ByComm(owners []stream.OwnerCounts) []*Group {
	return group(owners, func(o *stream.OwnerCounts) (string, *Group) {
		return o.Comm, &Group{Key: o.Comm, Comm: o.Comm}
	})
}

func group(owners []stream.OwnerCounts, key func(*stream.OwnerCounts) (string, *Group)) []*Group {
	byKey := map[string]*Group{}
	var out []*Group
	for i := range owners {
		o := &owners[i]
		k, fresh := key(o)
		g := byKey[k]
		if g == nil {
			g = fresh
			byKey[k] = g
			out = append(out, g)
		} else if !g.Container.Named() && o.Container.Named() {
			g.Container = o.Container // names came for a later process of the cgroup
		}
		g.PIDs = append(g.PIDs, o.PID)
		g.Counts.Add(&o.Counts)
	}
	sort.SliceStable(out, func(i, j int) bool { return Activity(&out[i].Counts) > Activity(&out[j].Counts) })
	return out
}
