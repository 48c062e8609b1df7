// Package aggregate folds a record stream into what the summary reports.
// Counts come from the kernel's exact totals; events only add what counts
// cannot say (peaks, who, where). It knows nothing about output formats.
package aggregate

import (
	"time"

	"github.com/tcpmemtrace/tcpmemtrace/internal/kmsg"
	"github.com/tcpmemtrace/tcpmemtrace/tracer"
)

// Summary is the state of a trace at its end.
type Summary struct {
	Start, End time.Time
	Totals     tracer.Totals
	// PeakMemPages is the highest TCP memory seen, in pages: by any event or
	// by the /proc sampler; PeakLimits is tcp_mem at that moment.
	PeakMemPages int64
	PeakLimits   [3]int64
	// Events counts the sampled events received per kind.
	Events map[tracer.Kind]uint64
	// KernelLog compares warnings printed with events counted; nil when
	// /dev/kmsg could not be read.
	KernelLog *KernelLog
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

// Aggregator consumes records.
type Aggregator struct {
	s Summary
}

// New starts a summary at start.
func New(start time.Time) *Aggregator {
	return &Aggregator{s: Summary{Start: start, Totals: tracer.NewTotals(), Events: map[tracer.Kind]uint64{}}}
}

// Add folds one record in.
func (a *Aggregator) Add(r tracer.Record) {
	if e := r.Event; e != nil {
		a.s.Events[e.Kind]++
		a.peak(e.Mem.Allocated, e.Mem.Limits)
	}
	if sn := r.Snapshot; sn != nil {
		a.s.Totals = sn.Totals
		a.s.End = sn.Time
		a.peak(sn.Global.MemPages, sn.Global.TCPMem)
	}
}

func (a *Aggregator) peak(pages int64, limits [3]int64) {
	if pages > a.s.PeakMemPages && limits[2] > 0 {
		a.s.PeakMemPages, a.s.PeakLimits = pages, limits
	}
}

// SetKernelLog records what /dev/kmsg showed during the trace, next to the
// exact number of events behind each warning.
func (a *Aggregator) SetKernelLog(c kmsg.Counts) {
	events := map[string]uint64{"mem_aborts": a.s.Totals.MemAborts, "orphan_aborts": a.s.Totals.OrphanAborts}
	kl := &KernelLog{Suppressed: c.Suppressed}
	for _, w := range kmsg.Warnings {
		kl.Warnings = append(kl.Warnings, Warning{Message: "TCP: " + w.Text, Events: events[w.Key], Lines: c.Lines[w.Key]})
	}
	a.s.KernelLog = kl
}

// Summary returns the summary so far.
func (a *Aggregator) Summary() Summary { return a.s }
