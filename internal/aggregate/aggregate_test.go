package aggregate

import (
	"testing"
	"time"

	"github.com/tcpmemtrace/tcpmemtrace/internal/kmsg"
	"github.com/tcpmemtrace/tcpmemtrace/tracer"
)

func TestCountsComeFromTheKernelTotals(t *testing.T) {
	start := time.Unix(100, 0)
	a := New(start)
	ev := tracer.Event{Kind: tracer.KindAbort, Mem: tracer.Mem{Allocated: 3330, Limits: [3]int64{1000, 2000, 3000}}}
	a.Add(tracer.Record{Event: &ev})
	ev = tracer.Event{Kind: tracer.KindDrop} // no socket, no memory reading
	a.Add(tracer.Record{Event: &ev})
	tot := tracer.NewTotals()
	tot.MemAborts, tot.OrphanAborts = 62, 1 // more than the events seen: samples were lost
	a.Add(tracer.Record{Snapshot: &tracer.Snapshot{Time: start.Add(2 * time.Second), Totals: tot,
		Global: tracer.Global{MemPages: 500, TCPMem: [3]int64{10, 20, 30}}}})
	a.SetKernelLog(kmsg.Counts{Lines: map[string]int{"mem_aborts": 10}, Suppressed: 52})

	s := a.Summary()
	if s.Totals.MemAborts != 62 || s.Events[tracer.KindAbort] != 1 || s.Events[tracer.KindDrop] != 1 {
		t.Errorf("totals %+v events %v", s.Totals, s.Events)
	}
	if s.PeakMemPages != 3330 || s.PeakLimits != [3]int64{1000, 2000, 3000} {
		t.Errorf("peak %d at %v", s.PeakMemPages, s.PeakLimits)
	}
	if s.End.Sub(s.Start) != 2*time.Second {
		t.Errorf("duration %v", s.End.Sub(s.Start))
	}
	kl := s.KernelLog
	if kl == nil || len(kl.Warnings) != 2 || kl.Suppressed != 52 {
		t.Fatalf("kernel log %+v", kl)
	}
	if w := kl.Warnings[0]; w.Message != "TCP: out of memory -- consider tuning tcp_mem" || w.Events != 62 || w.Lines != 10 {
		t.Errorf("%+v", w)
	}
	if w := kl.Warnings[1]; w.Message != "TCP: too many orphaned sockets" || w.Events != 1 || w.Lines != 0 {
		t.Errorf("%+v", w)
	}
}
