package record

import (
	"context"
	"slices"
	"strconv"
	"strings"

	"github.com/tcpmemtrace/tcpmemtrace/stream"
)

// Filter selects owners in a replay. Counts were recorded per owner, so the
// totals of the selected owners are as exact as the recording's.
type Filter struct {
	PIDs   []uint32
	Comm   string // as the kernel keeps it: 15 bytes
	Cgroup string // a cgroup path (and what is below it), or an id
}

// Empty reports whether the filter selects everything.
func (f Filter) Empty() bool { return len(f.PIDs) == 0 && f.Comm == "" && f.Cgroup == "" }

func (f Filter) match(o stream.Owner) bool {
	if len(f.PIDs) > 0 && !slices.Contains(f.PIDs, o.PID) {
		return false
	}
	if f.Comm != "" && o.Comm != f.Comm[:min(len(f.Comm), 15)] {
		return false
	}
	if f.Cgroup != "" {
		if id, err := strconv.ParseUint(f.Cgroup, 10, 64); err == nil {
			return o.CgroupID == id
		}
		want := "/" + strings.Trim(f.Cgroup, "/")
		return o.CgroupPath == want || strings.HasPrefix(o.CgroupPath, want+"/") || want == "/"
	}
	return true
}

// Filtered replays src keeping the selected owners' events and counts;
// pressure is global and always kept.
func Filtered(src stream.Source, f Filter) stream.Source { return filtered{src, f} }

type filtered struct {
	src stream.Source
	f   Filter
}

func (s filtered) Info() stream.Info {
	i := s.src.Info()
	i.PIDs, i.Comm, i.Cgroup = s.f.PIDs, s.f.Comm, s.f.Cgroup
	return i
}

func (s filtered) Run(ctx context.Context, fn func(stream.Record) error) error {
	return s.src.Run(ctx, func(r stream.Record) error {
		if e := r.Event; e != nil && e.Kind != stream.KindPressureEnter && e.Kind != stream.KindPressureLeave && !s.f.match(e.Owner) {
			return nil
		}
		if sn := r.Snapshot; sn != nil {
			out := *sn
			out.Owners = nil
			counts := stream.Counts{}
			for _, o := range sn.Owners {
				if s.f.match(o.Owner) {
					out.Owners = append(out.Owners, o)
					counts.Add(&o.Counts)
				}
			}
			out.Totals.Counts = counts
			r = stream.Record{Snapshot: &out}
		}
		return fn(r)
	})
}
