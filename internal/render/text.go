package render

import (
	"bufio"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/tcpmemtrace/tcpmemtrace/internal/aggregate"
	"github.com/tcpmemtrace/tcpmemtrace/internal/kmsg"
	"github.com/tcpmemtrace/tcpmemtrace/internal/sockdiag"
	"github.com/tcpmemtrace/tcpmemtrace/internal/termsafe"
	"github.com/tcpmemtrace/tcpmemtrace/internal/units"
	"github.com/tcpmemtrace/tcpmemtrace/stream"
)

// Text writes a header, one line per event and a summary table, like the
// bcc tools.
type Text struct {
	w        *bufio.Writer
	pageSize int64
	by       string
	// line and detail are reused for every event line.
	line, detail []byte
}

// Groupings of the summary table (--by).
const (
	BySocket = "socket"
	ByPID    = "pid"
	ByComm   = "comm"
	ByCgroup = "cgroup"
)

// Groupings lists the --by values.
var Groupings = []string{BySocket, ByPID, ByComm, ByCgroup}

// TopN bounds the rows of a summary table.
const TopN = 20

// NewText writes to w; by is the summary's grouping (ByPID if empty).
func NewText(w io.Writer, by string) *Text {
	if by == "" {
		by = ByPID
	}
	return &Text{w: bufio.NewWriter(w), pageSize: 4096, by: by}
}

// lineFormat lays out the header; appendLine (line.go) writes the event
// lines to the same columns without fmt.
const lineFormat = "%-12s %-7s %-15s %-21s %-21s %-11s %-19s %s\n"

// Start writes the header: kernel, tcp_mem in pages and bytes, hooks.
func (t *Text) Start(info stream.Info) error {
	t.pageSize = int64(info.PageSize)
	w := t.w
	fmt.Fprintf(w, "tcpmemtrace on %s, Linux %s, page size %d\n", termsafe.Name(info.Hostname), termsafe.Name(info.Kernel), info.PageSize)
	m := info.TCPMem
	fmt.Fprintf(w, "tcp_mem: low %d, pressure %d, high %d pages (%s, %s, %s)\n",
		m[0], m[1], m[2], units.IEC(m[0]*t.pageSize), units.IEC(m[1]*t.pageSize), units.IEC(m[2]*t.pageSize))
	fmt.Fprintf(w, "tcp_rmem max %s, tcp_wmem max %s, tcp_max_orphans %d\n",
		units.IEC(info.TCPRmem[2]), units.IEC(info.TCPWmem[2]), info.MaxOrphans)
	if f := filters(info); f != "" {
		fmt.Fprintf(w, "only %s (pressure is global)\n", f)
	}
	WriteHooks(w, info.Hooks)
	if info.RecordRate > 0 {
		fmt.Fprintf(w, "at most %d drop and refusal lines per second (--record-rate); the counts include every event\n", info.RecordRate)
	}
	for _, n := range info.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	if tr := info.Trigger; tr != nil {
		fmt.Fprintf(w, "flight recording: triggered by %s at %s (%s); its counts run from %s\n", tr.Kind,
			tr.Time.Format("2006-01-02 15:04:05.000 MST"), termsafe.Name(tr.Detail), tr.From.Format("15:04:05"))
	}
	fmt.Fprintf(w, "Tracing TCP memory events... Hit Ctrl-C to end.\n\n")
	fmt.Fprintf(w, lineFormat, "TIME", "PID", "COMM", "LADDR:LPORT", "RADDR:RPORT", "STATE", "EVENT", "DETAIL")
	return w.Flush()
}

// WriteHooks lists each event's hook and the variants not used, with why.
func WriteHooks(w io.Writer, hooks []stream.Hook) {
	fmt.Fprintln(w, "hooks:")
	for _, h := range hooks {
		using := h.Using
		if !h.Available() {
			using = "UNAVAILABLE on this kernel"
		}
		fmt.Fprintf(w, "  %-20s %s\n", h.Event, using)
		for _, r := range h.Rejected {
			fmt.Fprintf(w, "  %-20s   not %s: %s\n", "", r.Hook, r.Reason)
		}
		for _, n := range h.Notes {
			fmt.Fprintf(w, "  %-20s   note: %s\n", "", n)
		}
	}
}

// Event writes one line. Receive-side refusals are left to the summary:
// each is the first half of a drop line that follows, or of a retry.
// Notice writes a line saying what the tool did.
func (t *Text) Notice(n *stream.Notice) error {
	_, err := fmt.Fprintf(t.w, "%-12s %s\n", n.Time.Format("15:04:05.000"), termsafe.Name(n.Text))
	return err
}

func (t *Text) Event(e *stream.Event) error {
	if e.Kind == stream.KindRefusal && !e.Send {
		return nil
	}
	var event string
	t.detail, event = eventDetail(t.detail[:0], e)
	t.line = appendLine(t.line[:0], e, event, t.detail)
	_, err := t.w.Write(t.line)
	return err
}

// Summary writes the totals table and the kernel log comparison.
func (t *Text) Summary(info stream.Info, s aggregate.Summary) error {
	w, tot := t.w, s.Totals
	if info.PageSize > 0 {
		t.pageSize = int64(info.PageSize)
	}
	fmt.Fprintf(w, "\nSUMMARY %s - %s (%.1fs)", s.Start.Format("15:04:05"), s.End.Format("15:04:05"), s.End.Sub(s.Start).Seconds())
	if f := filters(info); f != "" {
		fmt.Fprintf(w, ", only %s", f)
	}
	fmt.Fprintln(w)
	row := func(name string, v uint64, extra string) {
		fmt.Fprintln(w, strings.TrimRight(fmt.Sprintf("  %-36s %10d  %s", name, v, extra), " "))
	}
	// A count whose hook the kernel skipped says so where it stands.
	missed := func(event, extra string) string {
		if n := tot.Missed[event]; n > 0 {
			return strings.TrimSpace(extra + fmt.Sprintf(" (may miss up to %d: hook runs the kernel skipped)", n))
		}
		return extra
	}
	counter := func(c stream.Counter) { row(c.Doc().Label, tot.Events[c], missed(c.Doc().Event, c.Doc().Note)) }
	// The aborts first, then pressure and drops, then the other counters.
	for _, c := range stream.Counters[:stream.AbortCounters] {
		counter(c)
	}
	row("pressure episodes", tot.PressureEpisodes, missed(stream.EventPressure, ""))
	for _, r := range stream.Reasons {
		row("memory drops "+r.String(), tot.Drops[stream.ProtoTCP][r], missed(stream.EventDrops, units.IEC(int64(tot.DropBytes[stream.ProtoTCP][r]))))
	}
	for _, r := range stream.Reasons {
		if n := tot.Drops[stream.ProtoOther][r]; n > 0 {
			row("non-TCP memory drops "+r.String(), n, missed(stream.EventDrops, units.IEC(int64(tot.DropBytes[stream.ProtoOther][r]))))
		}
	}
	for _, c := range stream.DropCauses {
		if v := tot.Causes[c]; v > 0 || c != stream.CauseUnknown {
			row("TCP drops caused by "+c.String(), v, "")
		}
	}
	// Where in the kernel (named where kallsyms is readable): the most
	// common places, which a kernel engineer reads as the code path.
	for i, p := range tot.Places {
		if i == TopN {
			fmt.Fprintf(w, "  ... %d more places\n", len(tot.Places)-TopN)
			break
		}
		name := p.Name
		if name == "" {
			name = fmt.Sprintf("%#x", p.Addr)
		}
		row("  at "+termsafe.Name(name), p.Drops, p.Reason+" "+p.Protocol)
	}
	for _, c := range stream.Counters[stream.AbortCounters:] {
		counter(c)
	}
	hi := s.PeakLimits[2]
	fmt.Fprintf(w, "  %-36s %10d  pages, %s, %.0f%% of tcp_mem high (%d pages then)\n", "peak TCP memory", s.PeakMemPages,
		units.IEC(s.PeakMemPages*t.pageSize), pct(s.PeakMemPages, hi), hi)
	row("lost samples (ringbuf full)", tot.LostSamples, "counts above are exact regardless")
	if tot.Unsampled > 0 {
		row("events not shown (--record-rate)", tot.Unsampled, "counted above, not listed")
	}
	if tot.MissedRuns > 0 {
		row("hook runs skipped by the kernel", tot.MissedRuns, "BPF recursion guard: these events are not counted")
	}
	if len(s.Episodes) > 0 {
		fmt.Fprintln(w, "\nPRESSURE EPISODES")
		for _, ep := range s.Episodes {
			end := "still under pressure"
			if !ep.End.IsZero() {
				end = ep.End.Format("15:04:05.000")
			}
			fmt.Fprintf(w, "  %s - %s  %8s  start %d pages, peak %d pages (tcp_mem %d/%d/%d)\n",
				ep.Start.Format("15:04:05.000"), end, ep.Duration(s.End).Round(time.Millisecond),
				ep.StartPages, ep.PeakPages, ep.PeakLimits[0], ep.PeakLimits[1], ep.PeakLimits[2])
			var held []string
			for _, h := range ep.Holders {
				if h.StalledSockets > 0 {
					held = append(held, termsafe.Name(sockdiag.NotReading(h, "")))
					continue
				}
				held = append(held, fmt.Sprintf("%d %s %s in %d sockets", h.PID, termsafe.Name(h.Comm),
					units.IEC(int64(h.RecvBytes+h.SendBytes)), h.Sockets))
			}
			if len(held) > 0 {
				fmt.Fprintf(w, "    held by: %s\n", strings.Join(held, "; "))
			}
		}
	}
	t.groups(s)
	if st := s.Stalled; st != nil && len(st.Holders) > 0 {
		fmt.Fprintf(w, "\nNOT READING (at %s: unread data, nothing new for %s or more)\n", st.Time.Format("15:04:05"), units.Age(sockdiag.StallAfter))
		for i, h := range st.Holders {
			if i == TopN {
				fmt.Fprintf(w, "  ... %d more\n", len(st.Holders)-TopN)
				break
			}
			fmt.Fprintf(w, "  %s\n", termsafe.Name(sockdiag.NotReading(h, placeOf(h))))
		}
	}
	if kl := s.KernelLog; kl != nil {
		fmt.Fprintln(w, "\nKERNEL LOG (net_info_ratelimited: net.core.message_burst lines per message_cost)")
		for _, wn := range kl.Warnings {
			fmt.Fprintf(w, "  %-48q %7d events, %5d lines printed\n", wn.Message, wn.Events, wn.Lines)
		}
		if kl.Suppressed > 0 {
			fmt.Fprintf(w, "  net_ratelimit suppressed %d networking lines\n", kl.Suppressed)
		}
		fmt.Fprintf(w, "  (%s)\n", kmsg.LegacyNote)
	}
	return w.Flush()
}

// groups writes the summary's table for the chosen grouping.
func (t *Text) groups(s aggregate.Summary) {
	w := t.w
	const cols = "%-6s %-6s %-8s %-10s %s"
	// Drops of every protocol: the totals above tell TCP from the rest.
	counts := func(c *stream.Counts) string {
		n, b := c.AllDrops()
		return fmt.Sprintf(cols+"\n", fmt.Sprint(c.Events[stream.MemAborts]), fmt.Sprint(c.Events[stream.OrphanAborts]), fmt.Sprint(n),
			units.IEC(int64(b)), fmt.Sprintf("%d/%d", c.Events[stream.RefusalsSend], c.Events[stream.RefusalsRecv]))
	}
	head := fmt.Sprintf(cols+"\n", "A.MEM", "A.ORPH", "DROPS", "DROPPED", "REFUSED S/R")
	switch t.by {
	case BySocket:
		note := "from events"
		if n := s.Totals.LostSamples + s.Totals.Unsampled; n > 0 {
			note = fmt.Sprintf("from events: incomplete, %d not recorded", n)
		}
		fmt.Fprintf(w, "\nTOP SOCKETS (%s)\n  %-21s %-21s %-11s %-7s %-15s %-8s %s", note, "LADDR:LPORT", "RADDR:RPORT", "STATE", "PID", "COMM",
			"NOT READ", head)
		for i, so := range s.Sockets {
			if i == TopN {
				fmt.Fprintf(w, "  ... %d more\n", len(s.Sockets)-TopN)
				break
			}
			state := so.State.String()
			if so.Orphan {
				state += "*"
			}
			notRead := "-" // not found stalled (by the last look that found any)
			if so.StalledMs > 0 {
				notRead = units.Age(time.Duration(so.StalledMs) * time.Millisecond)
			}
			fmt.Fprintf(w, "  %-21s %-21s %-11s %-7s %-15s %-8s %s", so.Src, so.Dst, state, pidString(so.Owner.PID), termsafe.Name(so.Owner.Comm),
				notRead, counts(&so.Counts))
		}
	case ByPID:
		fmt.Fprintf(w, "\nBY PROCESS (exact)\n  %-7s %-15s %-32s %s", "PID", "COMM", "CGROUP", head)
		for i := range s.Owners {
			if i == TopN {
				fmt.Fprintf(w, "  ... %d more\n", len(s.Owners)-TopN)
				break
			}
			o := &s.Owners[i]
			fmt.Fprintf(w, "  %-7s %-15s %-32s %s", pidString(o.PID), commString(o.PID, o.Comm), cgroupString(o.CgroupPath, o.Container, 32), counts(&o.Counts))
		}
	case ByComm, ByCgroup:
		title, groups := "BY COMMAND (exact)", aggregate.ByComm(s.Owners)
		if t.by == ByCgroup {
			title, groups = "BY CGROUP (exact)", aggregate.ByCgroup(s.Owners)
		}
		fmt.Fprintf(w, "\n%s\n  %-40s %-6s %s", title, strings.ToUpper(t.by), "PROCS", head)
		for i, g := range groups {
			if i == TopN {
				fmt.Fprintf(w, "  ... %d more\n", len(groups)-TopN)
				break
			}
			key := termsafe.Name(g.Comm)
			if t.by == ByCgroup {
				key = cgroupString(g.CgroupPath, g.Container, 40)
			} else if len(g.PIDs) == 1 {
				key = commString(g.PIDs[0], g.Comm)
			}
			fmt.Fprintf(w, "  %-40s %-6d %s", key, len(g.PIDs), counts(&g.Counts))
		}
	}
}

// placeOf names where a holder lives: its container as people name it,
// else its cgroup path ("" when unknown).
func placeOf(h stream.Holder) string {
	if h.Container != nil {
		if l := h.Container.Label(); l != "" {
			return l
		}
	}
	return h.CgroupPath
}

func pidString(pid uint32) string {
	switch pid {
	case 0:
		return "-"
	case stream.OverflowPID:
		return "other"
	}
	return fmt.Sprint(pid)
}

func commString(pid uint32, comm string) string {
	switch pid {
	case 0:
		return "(unknown owner)"
	case stream.OverflowPID:
		return "(other owners)"
	}
	return termsafe.Name(comm)
}

// cgroupString names a cgroup in width columns: the container it holds,
// as its runtime names it (shop/web-7d9f/nginx, or podman's name) or else
// by id (docker:4f6d2c3b1a0e); without one, its path. Cut from the left to
// keep the tail, the most telling part.
func cgroupString(path string, c stream.Container, width int) string {
	path = termsafe.Name(path)
	switch {
	case c.Named() || c.ID != "" && c.Runtime != "systemd":
		path = termsafe.Name(c.Label())
	case path == "":
		return "-"
	}
	if r := []rune(path); len(r) > width {
		return "…" + string(r[len(r)-width+1:])
	}
	return path
}

// filters describes the filters in force.
func filters(info stream.Info) string {
	var f []string
	if info.NetNS != 0 {
		f = append(f, fmt.Sprintf("network namespace %d", info.NetNS))
	}
	if len(info.PIDs) > 0 {
		f = append(f, fmt.Sprintf("PIDs %v", info.PIDs))
	}
	if info.Comm != "" {
		f = append(f, fmt.Sprintf("command %q", info.Comm)) // %q escapes
	}
	if info.Cgroup != "" {
		f = append(f, "cgroup "+termsafe.Name(info.Cgroup))
	}
	return strings.Join(f, ", ")
}

// Flush writes out buffered lines.
func (t *Text) Flush() error { return t.w.Flush() }
