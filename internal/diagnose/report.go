package diagnose

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/tcpmemtrace/tcpmemtrace/internal/termsafe"
	"github.com/tcpmemtrace/tcpmemtrace/internal/units"
)

// WriteJSON writes the report as one JSON object.
func (r Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText writes the report for people, verdict and remedies last.
func (r Report) WriteText(w io.Writer) error {
	p := r.Pool
	fmt.Fprintf(w, "TCP MEMORY DIAGNOSIS: %s, Linux %s, %s RAM (%s available), page size %d\n\n",
		termsafe.Name(r.Hostname), termsafe.Name(r.Kernel), units.IEC(r.MemTotal), units.IEC(r.MemAvail), r.PageSize)
	fmt.Fprintf(w, "  %-11s %d pages = %s in use; tcp_mem low %d (%s), pressure %d (%s), high %d (%s): %.0f%% of high\n",
		"pool", p.Pages, units.IEC(p.Bytes), p.Limits[0], units.IEC(p.LimitBytes[0]), p.Limits[1],
		units.IEC(p.LimitBytes[1]), p.Limits[2], units.IEC(p.LimitBytes[2]), p.PctOfHigh)
	fmt.Fprintf(w, "  %-11s %d of tcp_max_orphans %d (%.0f%%)\n", "orphans", r.Orphans.Count, r.Orphans.Max, r.Orphans.Pct)
	fmt.Fprintf(w, "  %-11s %d of tcp_max_tw_buckets %d (%.0f%%)\n", "time-wait", r.TimeWait.Count, r.TimeWait.Max, r.TimeWait.Pct)
	wc := r.WorstCase
	fmt.Fprintf(w, "  %-11s %d TCP sockets in use; at tcp_rmem/tcp_wmem maximums (%s + %s) they would need %s, %.1fx the pool\n",
		"sockets", r.Sockets, units.IEC(wc.RmemMax), units.IEC(wc.WmemMax), units.IEC(wc.DemandBytes), wc.Ratio)
	var sb []string
	for _, name := range SinceBootCounters {
		sb = append(sb, fmt.Sprintf("%s %d", name, r.SinceBoot[name]))
	}
	fmt.Fprintf(w, "  %-11s %s (summed over %d network namespaces)\n", "since boot", strings.Join(sb, ", "), r.Namespaces)

	if len(r.TopSockets) > 0 {
		fmt.Fprintf(w, "\nTOP SOCKETS BY QUEUED MEMORY\n  %-11s %-22s %-22s %-10s %9s %9s %10s %12s  %s\n",
			"NETNS", "LOCAL", "PEER", "STATE", "RECV-Q", "SEND-Q", "QUEUED", "NOT READ FOR", "PROCESS")
		for _, s := range r.TopSockets {
			owner := "-"
			if s.Owner != nil {
				owner = fmt.Sprintf("%d %s", s.Owner.PID, termsafe.Name(s.Owner.Comm))
				if l := s.Owner.Label(); l != "" {
					owner += " " + termsafe.Name(l)
				}
			}
			notRead := "-"
			if s.StalledMs > 0 {
				notRead = units.Age(time.Duration(s.StalledMs) * time.Millisecond)
			}
			fmt.Fprintf(w, "  %-11d %-22s %-22s %-10s %9d %9d %10s %12s  %s\n", s.NetNS, s.Src, s.Dst, s.State, s.RecvQ, s.SendQ,
				units.IEC(int64(s.Queued)), notRead, owner)
		}
	}
	if len(r.TopOwners) > 0 {
		fmt.Fprintf(w, "\nTOP PROCESSES BY QUEUED MEMORY\n  %-8s %-16s %8s %14s %14s  %s\n", "PID", "COMM", "SOCKETS", "RECV QUEUES", "SEND QUEUES",
			"CONTAINER OR CGROUP")
		for _, o := range r.TopOwners {
			place := Place{o.CgroupPath, o.Container}.Label()
			if place == "" {
				place = "-"
			}
			fmt.Fprintf(w, "  %-8d %-16s %8d %14s %14s  %s\n", o.PID, termsafe.Name(o.Comm), o.Sockets, units.IEC(int64(o.RecvBytes)),
				units.IEC(int64(o.SendBytes)), termsafe.Name(place))
		}
	}
	fmt.Fprintln(w, "\nVERDICT")
	for _, v := range r.Verdicts {
		fmt.Fprintf(w, "  %-9s %s\n", strings.ToUpper(v.Severity), termsafe.Name(v.Text))
	}
	if len(r.Remedies) > 0 {
		fmt.Fprintln(w, "\nREMEDIES")
		for i, m := range r.Remedies {
			fmt.Fprintf(w, "  %d. %s\n", i+1, termsafe.Name(m.Text))
			if m.Command != "" {
				fmt.Fprintf(w, "     %s\n", m.Command)
			}
		}
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "\nnote: %s\n", n)
	}
	return nil
}
