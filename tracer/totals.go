package tracer

import (
	"fmt"

	"github.com/cilium/ebpf"
)

// Totals are the exact counts kept in the kernel since the tracer started.
// They do not depend on the ringbuf: a full ring loses events, not counts.
type Totals struct {
	MemAborts        uint64 `json:"mem_aborts"`
	OrphanAborts     uint64 `json:"orphan_aborts"`
	PressureEpisodes uint64 `json:"pressure_episodes"`
	// Drops and DropBytes are memory drops on TCP sockets by kernel reason
	// name (every tracked reason is present, 0 included).
	Drops     map[string]uint64 `json:"drops"`
	DropBytes map[string]uint64 `json:"drop_bytes"`
	// OtherDrops are the same reasons on other protocols (UDP's SOCKET_RCVBUFF...).
	OtherDrops     map[string]uint64 `json:"other_drops"`
	OtherDropBytes map[string]uint64 `json:"other_drop_bytes"`
	RefusalsSend   uint64            `json:"refusals_send"`
	RefusalsRecv   uint64            `json:"refusals_recv"`
	// LostSamples are events that found the ringbuf full.
	LostSamples uint64 `json:"lost_samples"`
	// MissedRuns are hook runs the kernel skipped because a program of
	// ours was already running on that CPU (BPF recursion guard, 5.12+).
	MissedRuns uint64 `json:"missed_runs"`
}

// NewTotals returns zero totals with every tracked reason present.
func NewTotals() Totals {
	t := Totals{
		Drops: map[string]uint64{}, DropBytes: map[string]uint64{},
		OtherDrops: map[string]uint64{}, OtherDropBytes: map[string]uint64{},
	}
	for _, name := range MemoryDropReasons {
		t.Drops[name], t.DropBytes[name] = 0, 0
		t.OtherDrops[name], t.OtherDropBytes[name] = 0, 0
	}
	return t
}

// Aborts is every memory abort, whatever its cause.
func (t Totals) Aborts() uint64 { return t.MemAborts + t.OrphanAborts }

// DropCount sums the TCP memory drops over reasons.
func (t Totals) DropCount() uint64 {
	var n uint64
	for _, v := range t.Drops {
		n += v
	}
	return n
}

// sumCounters folds the per-CPU copies into Totals.
func sumCounters(percpu []bpfCounters) Totals {
	t := NewTotals()
	for _, c := range percpu {
		t.MemAborts += c.MemAborts
		t.OrphanAborts += c.OrphanAborts
		t.PressureEpisodes += c.PressureEnters
		t.RefusalsSend += c.ExceedSend
		t.RefusalsRecv += c.ExceedRecv
		t.LostSamples += c.LostSamples
		for i, name := range MemoryDropReasons {
			t.Drops[name] += c.TcpDrops[i+1]
			t.DropBytes[name] += c.TcpDropBytes[i+1]
			t.OtherDrops[name] += c.OtherDrops[i+1]
			t.OtherDropBytes[name] += c.OtherDropBytes[i+1]
		}
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
