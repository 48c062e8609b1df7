package aggregate

import (
	"net/netip"
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

func owners() []tracer.OwnerCounts {
	mk := func(pid uint32, comm, cg string, drops, aborts uint64) tracer.OwnerCounts {
		o := tracer.OwnerCounts{Owner: tracer.Owner{PID: pid, Comm: comm, CgroupPath: cg, CgroupID: uint64(len(cg))}, Counts: tracer.NewCounts()}
		o.Drops["PROTO_MEM"], o.MemAborts = drops, aborts
		return o
	}
	return []tracer.OwnerCounts{
		mk(10, "nginx", "/system.slice/nginx.service", 5, 0),
		mk(11, "nginx", "/system.slice/nginx.service", 7, 1),
		mk(20, "client", "/user.slice", 0, 300),
		mk(30, "nginx", "/docker/x", 1, 0),
	}
}

func TestGrouping(t *testing.T) {
	byCg := ByCgroup(owners())
	if len(byCg) != 3 {
		t.Fatalf("%d cgroups", len(byCg))
	}
	// Aborts weigh most: the client's cgroup first.
	if byCg[0].CgroupPath != "/user.slice" || byCg[0].Counts.MemAborts != 300 {
		t.Errorf("first %+v", byCg[0])
	}
	if g := byCg[1]; g.CgroupPath != "/system.slice/nginx.service" || g.Counts.Drops["PROTO_MEM"] != 12 ||
		g.Counts.MemAborts != 1 || len(g.PIDs) != 2 {
		t.Errorf("nginx.service %+v", g)
	}
	byComm := ByComm(owners())
	if len(byComm) != 2 || byComm[1].Comm != "nginx" || byComm[1].Counts.Drops["PROTO_MEM"] != 13 || len(byComm[1].PIDs) != 3 {
		t.Errorf("by comm %+v %+v", byComm[0], byComm[1])
	}
}

func TestSocketsFromEvents(t *testing.T) {
	a := New(time.Unix(0, 0))
	sock := tracer.Socket{Cookie: 5, Family: 2, Protocol: 6, State: 1,
		Src: netip.MustParseAddrPort("127.0.0.1:1"), Dst: netip.MustParseAddrPort("127.0.0.1:2")}
	for i := 0; i < 3; i++ {
		e := tracer.Event{Kind: tracer.KindDrop, Reason: "PROTO_MEM", Bytes: 100, Socket: sock, Owner: tracer.Owner{PID: 7}}
		a.Add(tracer.Record{Event: &e})
	}
	closed := sock
	closed.Cookie, closed.State, closed.Orphan = 6, 7, true
	e := tracer.Event{Kind: tracer.KindAbort, Cause: tracer.CauseOrphans, Socket: closed}
	a.Add(tracer.Record{Event: &e})
	s := a.Summary()
	if len(s.Sockets) != 2 {
		t.Fatalf("%d sockets", len(s.Sockets))
	}
	if top := s.Sockets[0]; top.Cookie != 6 || top.Counts.OrphanAborts != 1 || !top.Orphan {
		t.Errorf("aborted socket first: %+v", top)
	}
	if d := s.Sockets[1]; d.Events != 3 || d.Counts.Drops["PROTO_MEM"] != 3 || d.Counts.DropBytes["PROTO_MEM"] != 300 || d.Owner.PID != 7 {
		t.Errorf("dropping socket %+v", d)
	}
}
