package render

import (
	"bufio"
	"fmt"
	"io"
	"strings"

	"github.com/tcpmemtrace/tcpmemtrace/internal/aggregate"
	"github.com/tcpmemtrace/tcpmemtrace/tracer"
)

// Text writes a header, one line per event and a summary table, like the
// bcc tools.
type Text struct {
	w        *bufio.Writer
	pageSize int64
}

// NewText writes to w.
func NewText(w io.Writer) *Text { return &Text{w: bufio.NewWriter(w), pageSize: 4096} }

const lineFormat = "%-12s %-7s %-15s %-21s %-21s %-11s %-19s %s\n"

// Start writes the header: kernel, tcp_mem in pages and bytes, hooks.
func (t *Text) Start(info tracer.Info) error {
	t.pageSize = int64(info.PageSize)
	w := t.w
	fmt.Fprintf(w, "tcpmemtrace on %s, Linux %s, page size %d\n", info.Hostname, info.Kernel, info.PageSize)
	m := info.TCPMem
	fmt.Fprintf(w, "tcp_mem: low %d, pressure %d, high %d pages (%s, %s, %s)\n",
		m[0], m[1], m[2], IEC(m[0]*t.pageSize), IEC(m[1]*t.pageSize), IEC(m[2]*t.pageSize))
	fmt.Fprintf(w, "tcp_rmem max %s, tcp_wmem max %s, tcp_max_orphans %d\n",
		IEC(info.TCPRmem[2]), IEC(info.TCPWmem[2]), info.MaxOrphans)
	if info.NetNS != 0 {
		fmt.Fprintf(w, "network namespace: %d only (pressure is global)\n", info.NetNS)
	}
	WriteHooks(w, info.Hooks)
	fmt.Fprintf(w, "Tracing TCP memory events... Hit Ctrl-C to end.\n\n")
	fmt.Fprintf(w, lineFormat, "TIME", "PID", "COMM", "LADDR:LPORT", "RADDR:RPORT", "STATE", "EVENT", "DETAIL")
	return w.Flush()
}

// WriteHooks lists each event's hook and the variants not used, with why.
func WriteHooks(w io.Writer, hooks []tracer.Hook) {
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
func (t *Text) Event(e *tracer.Event) error {
	if e.Kind == tracer.KindRefusal && !e.Send {
		return nil
	}
	pid, comm := "-", "-"
	if e.Owner.PID != 0 {
		pid, comm = fmt.Sprint(e.Owner.PID), e.Owner.Comm
	}
	laddr, raddr, state := "-", "-", "-"
	if e.Socket.Src.IsValid() {
		laddr, raddr, state = e.Socket.Src.String(), e.Socket.Dst.String(), e.Socket.State.String()
	}
	var event string
	var detail []string
	mem := memVsLimits(e.Mem.Allocated, e.Mem.Limits)
	s := e.Socket
	switch e.Kind {
	case tracer.KindAbort:
		event = "ABORT " + e.Cause
		detail = append(detail, fmt.Sprintf("wmem_queued %d", s.WmemQueued), mem)
	case tracer.KindDrop:
		event = "DROP " + e.Reason
		detail = append(detail, fmt.Sprintf("%d bytes", e.Bytes))
		if s.Family != 0 && s.Protocol == 6 {
			detail = append(detail, fmt.Sprintf("rmem %d/%d", s.RmemAlloc, s.Rcvbuf), mem)
		}
		if s.Protocol != 6 && s.Protocol != 0 {
			event += "/" + protoName(s.Protocol)
		}
	case tracer.KindRefusal:
		dir := "recv"
		if e.Send {
			dir = "send"
		}
		event = "REFUSED " + dir
		detail = append(detail, fmt.Sprintf("rmem %d/%d wmem_queued %d/%d", s.RmemAlloc, s.Rcvbuf, s.WmemQueued, s.Sndbuf), mem)
		if s.Memcg {
			detail = append(detail, "memcg")
		}
	case tracer.KindPressureEnter:
		event = "PRESSURE enter"
		detail = append(detail, mem)
	case tracer.KindPressureLeave:
		event = "PRESSURE leave"
		detail = append(detail, mem)
	default:
		event = e.Kind.String()
	}
	_, err := fmt.Fprintf(t.w, lineFormat, e.Time.Format("15:04:05.000"), pid, comm, laddr, raddr, state, event,
		strings.Join(detail, "; "))
	return err
}

// Summary writes the totals table and the kernel log comparison.
func (t *Text) Summary(info tracer.Info, s aggregate.Summary) error {
	w, tot := t.w, s.Totals
	fmt.Fprintf(w, "\nSUMMARY %s - %s (%.1fs)", s.Start.Format("15:04:05"), s.End.Format("15:04:05"), s.End.Sub(s.Start).Seconds())
	if info.NetNS != 0 {
		fmt.Fprintf(w, ", network namespace %d", info.NetNS)
	}
	fmt.Fprintln(w)
	row := func(name string, v uint64, extra string) {
		fmt.Fprintln(w, strings.TrimRight(fmt.Sprintf("  %-36s %10d  %s", name, v, extra), " "))
	}
	row("memory aborts: out of memory", tot.MemAborts, "")
	row("memory aborts: too many orphans", tot.OrphanAborts, "")
	row("pressure episodes", tot.PressureEpisodes, "")
	for _, r := range tracer.MemoryDropReasons {
		row("memory drops "+r, tot.Drops[r], IEC(int64(tot.DropBytes[r])))
	}
	for _, r := range tracer.MemoryDropReasons {
		if tot.OtherDrops[r] > 0 {
			row("non-TCP memory drops "+r, tot.OtherDrops[r], IEC(int64(tot.OtherDropBytes[r])))
		}
	}
	row("allocation refusals: send", tot.RefusalsSend, "")
	row("allocation refusals: receive", tot.RefusalsRecv, "")
	hi := s.PeakLimits[2]
	fmt.Fprintf(w, "  %-36s %10d  pages, %s, %.0f%% of tcp_mem high (%d pages then)\n", "peak TCP memory", s.PeakMemPages,
		IEC(s.PeakMemPages*t.pageSize), pct(s.PeakMemPages, hi), hi)
	row("lost samples (ringbuf full)", tot.LostSamples, "counts above are exact regardless")
	if tot.MissedRuns > 0 {
		row("hook runs skipped by the kernel", tot.MissedRuns, "BPF recursion guard: these events are not counted")
	}
	if kl := s.KernelLog; kl != nil {
		fmt.Fprintln(w, "\nKERNEL LOG (net_info_ratelimited: net.core.message_burst lines per message_cost)")
		for _, wn := range kl.Warnings {
			fmt.Fprintf(w, "  %-48q %7d events, %5d lines printed\n", wn.Message, wn.Events, wn.Lines)
		}
		if kl.Suppressed > 0 {
			fmt.Fprintf(w, "  net_ratelimit suppressed %d networking lines\n", kl.Suppressed)
		}
	} else {
		fmt.Fprintln(w, "\nKERNEL LOG: not readable (/dev/kmsg needs CAP_SYSLOG)")
	}
	return w.Flush()
}

// Flush writes out buffered lines.
func (t *Text) Flush() error { return t.w.Flush() }
