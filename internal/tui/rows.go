package tui

import (
	"fmt"
	"sort"
	"strings"

	"github.com/tcpmemtrace/tcpmemtrace/internal/aggregate"
	"github.com/tcpmemtrace/tcpmemtrace/internal/termsafe"
	"github.com/tcpmemtrace/tcpmemtrace/stream"
)

// Groupings of the owners table, in the order the g key cycles them.
var Groupings = []string{"process", "cgroup", "socket"}

// Sorts of the owners table, in the order the s key cycles them.
var Sorts = []string{"drops", "aborts", "bytes", "queued"}

// Options are the viewer's choices.
type Options struct {
	Group  string // one of Groupings
	Sort   string // one of Sorts
	Filter string // rows whose text contains it (pid, comm, cgroup, address)
	Paused bool
	Help   bool
	// Editing is the filter being typed, shown in the key line.
	Editing *string
}

// Row is one line of the owners table.
type Row struct {
	Key    string // pid, cgroup or socket
	Name   string // comm, container or owner
	Detail string // cgroup or state
	Drops  uint64
	Aborts uint64
	Bytes  uint64
	Queued int64 // -1: unknown
}

func (r Row) text() string { return r.Key + " " + r.Name + " " + r.Detail }

// row is the table's figures for some counts: drops and bytes of every
// protocol, as the summary's table counts them.
func row(key, name, detail string, c *stream.Counts, queued int64) Row {
	drops, bytes := c.AllDrops()
	return Row{Key: termsafe.Name(key), Name: termsafe.Name(name), Detail: termsafe.Name(detail),
		Drops: drops, Aborts: c.Aborts(), Bytes: bytes, Queued: queued}
}

func rows(sum aggregate.Summary, queued map[uint32]int64, o Options) []Row {
	q := func(pids ...uint32) int64 {
		if queued == nil {
			return -1
		}
		var n int64
		for _, p := range pids {
			n += queued[p]
		}
		return n
	}
	var out []Row
	switch o.Group {
	case "cgroup":
		for _, g := range aggregate.ByCgroup(sum.Owners) {
			name := g.Container.Label()
			if g.Container.ID != "" && !g.Container.Named() && g.Container.Runtime != "systemd" {
				name = g.Container.Runtime + " " + g.Container.Short()
			}
			out = append(out, row(g.Key, name, "", &g.Counts, q(g.PIDs...)))
		}
	case "socket":
		for _, so := range sum.Sockets {
			out = append(out, row(so.Src.String()+" > "+so.Dst.String(), fmt.Sprintf("%d %s", so.Owner.PID, so.Owner.Comm),
				so.State.String(), &so.Counts, -1))
		}
	default:
		for _, ow := range sum.Owners {
			if ow.Counts.IsZero() {
				continue
			}
			key := fmt.Sprint(ow.PID)
			switch ow.PID {
			case 0:
				key = "?"
			case stream.OverflowPID:
				key = "(more)"
			}
			detail := ow.CgroupPath
			if l := ow.Container.Label(); l != "" {
				detail = l
			}
			out = append(out, row(key, ow.Comm, detail, &ow.Counts, q(ow.PID)))
		}
	}
	if o.Filter != "" {
		kept := out[:0]
		for _, r := range out {
			if strings.Contains(r.text(), o.Filter) {
				kept = append(kept, r)
			}
		}
		out = kept
	}
	key := func(r *Row) [3]int64 {
		switch o.Sort {
		case "aborts":
			return [3]int64{int64(r.Aborts), int64(r.Drops), int64(r.Bytes)}
		case "bytes":
			return [3]int64{int64(r.Bytes), int64(r.Drops), int64(r.Aborts)}
		case "queued":
			return [3]int64{r.Queued, int64(r.Drops), int64(r.Aborts)}
		}
		return [3]int64{int64(r.Drops), int64(r.Aborts), int64(r.Bytes)}
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := key(&out[i]), key(&out[j])
		for k := range a {
			if a[k] != b[k] {
				return a[k] > b[k]
			}
		}
		return out[i].Key < out[j].Key
	})
	return out
}
