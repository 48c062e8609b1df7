package tracer

import (
	"errors"
	"fmt"
	"sort"

	"github.com/cilium/ebpf"
)

// Counts are the per-event-kind counters kept for the whole trace and for
// each owner.
type Counts struct {
	MemAborts    uint64 `json:"mem_aborts"`
	OrphanAborts uint64 `json:"orphan_aborts"`
	// Drops and DropBytes are memory drops on TCP sockets by kernel reason
	// name (every tracked reason is present, 0 included).
	Drops     map[string]uint64 `json:"drops"`
	DropBytes map[string]uint64 `json:"drop_bytes"`
	// OtherDrops are the same reasons on other protocols (UDP's SOCKET_RCVBUFF...).
	OtherDrops     map[string]uint64 `json:"other_drops"`
	OtherDropBytes map[string]uint64 `json:"other_drop_bytes"`
	RefusalsSend   uint64            `json:"refusals_send"`
	RefusalsRecv   uint64            `json:"refusals_recv"`
	// SendStalls are writes told EAGAIN while TCP was under memory pressure.
	SendStalls uint64 `json:"send_stalls"`
	// DropsByCause are the TCP PROTO_MEM drops (arriving data refused
	// memory) by DropCauses: they sum to Drops["PROTO_MEM"] when every drop
	// had its socket.
	DropsByCause map[string]uint64 `json:"drops_by_cause"`
}

// DropCauses name enum drop_cause, by value.
var DropCauses = []string{"unknown", "rcvbuf", "global_hard_limit", "global_pressure", "memcg"}

// Totals are the exact counts kept in the kernel since the tracer started.
// They do not depend on the ringbuf: a full ring loses events, not counts.
type Totals struct {
	Counts
	PressureEpisodes uint64 `json:"pressure_episodes"`
	// LostSamples are events that found the ringbuf full.
	LostSamples uint64 `json:"lost_samples"`
	// Unsampled are drop and refusal events over Config.RecordRate: counted,
	// not sent as records.
	Unsampled uint64 `json:"unsampled"`
	// MissedRuns are hook runs the kernel skipped because a program of
	// ours was already running on that CPU (BPF recursion guard, 5.12+).
	MissedRuns uint64 `json:"missed_runs"`
}

// NewCounts returns zero counts with every tracked reason present.
func NewCounts() Counts {
	c := Counts{
		Drops: map[string]uint64{}, DropBytes: map[string]uint64{},
		OtherDrops: map[string]uint64{}, OtherDropBytes: map[string]uint64{},
		DropsByCause: map[string]uint64{},
	}
	for _, name := range MemoryDropReasons {
		c.Drops[name], c.DropBytes[name] = 0, 0
		c.OtherDrops[name], c.OtherDropBytes[name] = 0, 0
	}
	for _, name := range DropCauses {
		c.DropsByCause[name] = 0
	}
	return c
}

// NewTotals returns zero totals with every tracked reason and cause present.
func NewTotals() Totals { return Totals{Counts: NewCounts()} }

// Aborts is every memory abort, whatever its cause.
func (c Counts) Aborts() uint64 { return c.MemAborts + c.OrphanAborts }

// DropCount sums the TCP memory drops over reasons.
func (c Counts) DropCount() uint64 {
	var n uint64
	for _, v := range c.Drops {
		n += v
	}
	return n
}

// AllDrops sums the memory drops of every protocol over reasons, and
// their bytes.
func (c Counts) AllDrops() (drops, bytes uint64) {
	for _, m := range []map[string]uint64{c.Drops, c.OtherDrops} {
		for _, v := range m {
			drops += v
		}
	}
	for _, m := range []map[string]uint64{c.DropBytes, c.OtherDropBytes} {
		for _, v := range m {
			bytes += v
		}
	}
	return drops, bytes
}

// Add adds o into c (c's maps must exist).
func (c *Counts) Add(o Counts) {
	c.MemAborts += o.MemAborts
	c.OrphanAborts += o.OrphanAborts
	c.RefusalsSend += o.RefusalsSend
	c.RefusalsRecv += o.RefusalsRecv
	c.SendStalls += o.SendStalls
	for k, v := range o.Drops {
		c.Drops[k] += v
	}
	for k, v := range o.DropBytes {
		c.DropBytes[k] += v
	}
	for k, v := range o.OtherDrops {
		c.OtherDrops[k] += v
	}
	for k, v := range o.OtherDropBytes {
		c.OtherDropBytes[k] += v
	}
	for k, v := range o.DropsByCause {
		c.DropsByCause[k] += v
	}
}

// addRaw folds one kernel struct counts into c.
func (c *Counts) addRaw(r *bpfCounts) {
	c.MemAborts += r.MemAborts
	c.OrphanAborts += r.OrphanAborts
	c.RefusalsSend += r.RefusalsSend
	c.RefusalsRecv += r.RefusalsRecv
	c.SendStalls += r.SendStalls
	for i, name := range MemoryDropReasons {
		c.Drops[name] += r.TcpDrops[i+1]
		c.DropBytes[name] += r.TcpDropBytes[i+1]
		c.OtherDrops[name] += r.OtherDrops[i+1]
		c.OtherDropBytes[name] += r.OtherDropBytes[i+1]
	}
	for i, name := range DropCauses {
		c.DropsByCause[name] += r.DropCauses[i]
	}
}

// sumCounters folds the per-CPU copies into Totals.
func sumCounters(percpu []bpfCounters) Totals {
	t := NewTotals()
	for i := range percpu {
		c := &percpu[i]
		t.addRaw(&c.All)
		t.PressureEpisodes += c.PressureEnters
		t.LostSamples += c.LostSamples
		t.Unsampled += c.Unsampled
	}
	return t
}

func readTotals(m *ebpf.Map, progs []*ebpf.Program) (Totals, error) {
	var percpu []bpfCounters
	if err := m.Lookup(uint32(0), &percpu); err != nil {
		return Totals{}, fmt.Errorf("reading counters: %w", err)
	}
	t := sumCounters(percpu)
	for _, p := range progs {
		if st, err := p.Stats(); err == nil {
			t.MissedRuns += st.RecursionMisses
		}
	}
	return t, nil
}

// OverflowPID marks the counts of owners that did not fit in the kernel's
// per-owner map: they are counted together, never dropped.
const OverflowPID = 0xffffffff

// OwnerCounts are one owner's exact counts. An owner is a process in a
// cgroup; PID 0 collects events on sockets whose owner is not known.
type OwnerCounts struct {
	Owner
	Counts
}

func readOwners(m *ebpf.Map, names func(*Owner)) ([]OwnerCounts, error) {
	var (
		k   bpfOwnerKey
		v   bpfOwnerStats
		out []OwnerCounts
	)
	it := m.Iterate()
	for it.Next(&k, &v) {
		o := OwnerCounts{Owner: Owner{PID: k.Tgid, CgroupID: k.CgroupId, Comm: cString(v.Comm[:])}, Counts: NewCounts()}
		o.addRaw(&v.C)
		if o.Aborts() == 0 && o.DropCount() == 0 && o.RefusalsSend == 0 && o.RefusalsRecv == 0 && o.SendStalls == 0 && countOther(o.Counts) == 0 {
			continue // the pre-inserted overflow entry, unused
		}
		names(&o.Owner)
		out = append(out, o)
	}
	if err := it.Err(); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil, fmt.Errorf("reading per-owner counts: %w", err)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].PID != out[j].PID {
			return out[i].PID < out[j].PID
		}
		return out[i].CgroupID < out[j].CgroupID
	})
	return out, nil
}

func countOther(c Counts) uint64 {
	var n uint64
	for _, v := range c.OtherDrops {
		n += v
	}
	return n
}

func cString(b []int8) string {
	n := 0
	for n < len(b) && b[n] != 0 {
		n++
	}
	s := make([]byte, n)
	for i := range s {
		s[i] = byte(b[i])
	}
	return string(s)
}
