package tracer

import (
	"errors"
	"fmt"
	"sort"

	"github.com/cilium/ebpf"

	"github.com/tcpmemtrace/tcpmemtrace/stream"
)

// countsOf is the kernel's struct counts as the stream's Counts. The array
// types must be identical: if the C enums and the stream's generated
// constants disagree (make generate not run), this does not compile.
func countsOf(r *bpfCounts) stream.Counts {
	return stream.Counts{Events: r.Events, Drops: r.Drops, DropBytes: r.DropBytes, Causes: r.DropCauses}
}

// sumCounters folds the per-CPU copies into Totals.
func sumCounters(percpu []bpfCounters) stream.Totals {
	var t stream.Totals
	for i := range percpu {
		c := &percpu[i]
		all := countsOf(&c.All)
		t.Add(&all)
		t.PressureEpisodes += c.PressureEnters
		t.LostSamples += c.LostSamples
		t.Unsampled += c.Unsampled
	}
	return t
}

// attached is a program and the event whose counts it keeps.
type attached struct {
	prog    *ebpf.Program
	event   string
	section string // where it is attached, e.g. tp_btf/kfree_skb
}

// readTotals reads the counters, and the runs the kernel skipped for each
// event: a program already running on a CPU is not run again there (the
// recursion guard), and what it would have counted is missing.
func readTotals(m *ebpf.Map, progs []attached) (stream.Totals, error) {
	var percpu []bpfCounters
	if err := m.Lookup(uint32(0), &percpu); err != nil {
		return stream.Totals{}, fmt.Errorf("reading counters: %w", err)
	}
	t := sumCounters(percpu)
	for _, p := range progs {
		if st, err := p.prog.Stats(); err == nil && st.RecursionMisses > 0 {
			t.MissedRuns += st.RecursionMisses
			if t.Missed == nil {
				t.Missed = map[string]uint64{}
			}
			t.Missed[p.event] += st.RecursionMisses
		}
	}
	return t, nil
}

// readPlaces reads the drops by place: addresses only, named by the
// enrich stage. Sorted, most first, so that snapshots compare.
func readPlaces(m *ebpf.Map) ([]stream.Place, error) {
	var (
		k   bpfDropPlace
		n   uint64
		out []stream.Place
	)
	it := m.Iterate()
	for it.Next(&k, &n) {
		out = append(out, stream.Place{Addr: k.Location, Reason: stream.Reason(k.Slot % stream.NumReasons).String(),
			Protocol: stream.Proto(k.Proto % stream.NumProtos).String(), Drops: n})
	}
	if err := it.Err(); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil, fmt.Errorf("reading drops by place: %w", err)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Drops != out[j].Drops {
			return out[i].Drops > out[j].Drops
		}
		return out[i].Addr < out[j].Addr
	})
	return out, nil
}

// readOwners reads the per-owner counts: ids and command names only.
func readOwners(m *ebpf.Map) ([]stream.OwnerCounts, error) {
	var (
		k   bpfOwnerKey
		v   bpfOwnerStats
		out []stream.OwnerCounts
	)
	it := m.Iterate()
	for it.Next(&k, &v) {
		o := stream.OwnerCounts{Owner: stream.Owner{PID: k.Tgid, CgroupID: k.CgroupId, Comm: cString(v.Comm[:])}, Counts: countsOf(&v.C)}
		if o.Counts.IsZero() {
			continue // the pre-inserted overflow entry, unused
		}
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
