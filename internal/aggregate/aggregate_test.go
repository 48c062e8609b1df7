package aggregate

import (
	"net/netip"
	"testing"
	"time"

	"github.com/tcpmemtrace/tcpmemtrace/internal/kmsg"
	"github.com/tcpmemtrace/tcpmemtrace/stream"
)

func TestCountsComeFromTheKernelTotals(t *testing.T) {
	start := time.Unix(100, 0)
	a := New(start)
	ev := stream.Event{Kind: stream.KindAbort, Mem: stream.Mem{Allocated: 3330, Limits: [3]int64{1000, 2000, 3000}}}
	a.Add(stream.Record{Event: &ev})
	ev = stream.Event{Kind: stream.KindDrop} // no socket, no memory reading
	a.Add(stream.Record{Event: &ev})
	tot := stream.Totals{}
	tot.Events[stream.MemAborts], tot.Events[stream.OrphanAborts] = 62, 1 // more than the events seen: samples were lost
	a.Add(stream.Record{Snapshot: &stream.Snapshot{Time: start.Add(2 * time.Second), Totals: tot,
		Global: stream.Global{MemPages: 500, TCPMem: [3]int64{10, 20, 30}}}})
	a.SetKernelLog(kmsg.Counts{Lines: map[string]int{"mem_aborts": 10}, Suppressed: 52})

	s := a.Summary()
	if s.Totals.Events[stream.MemAborts] != 62 || s.Events[stream.KindAbort] != 1 || s.Events[stream.KindDrop] != 1 {
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

func owners() []stream.OwnerCounts {
	mk := func(pid uint32, comm, cg string, drops, aborts uint64) stream.OwnerCounts {
		o := stream.OwnerCounts{Owner: stream.Owner{PID: pid, Comm: comm, CgroupPath: cg, CgroupID: uint64(len(cg))}, Counts: stream.Counts{}}
		o.Drops[stream.ProtoTCP][stream.ReasonProtoMem], o.Events[stream.MemAborts] = drops, aborts
		return o
	}
	return []stream.OwnerCounts{
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
	if byCg[0].CgroupPath != "/user.slice" || byCg[0].Counts.Events[stream.MemAborts] != 300 {
		t.Errorf("first %+v", byCg[0])
	}
	if g := byCg[1]; g.CgroupPath != "/system.slice/nginx.service" || g.Counts.Drops[stream.ProtoTCP][stream.ReasonProtoMem] != 12 ||
		g.Counts.Events[stream.MemAborts] != 1 || len(g.PIDs) != 2 {
		t.Errorf("nginx.service %+v", g)
	}
	byComm := ByComm(owners())
	if len(byComm) != 2 || byComm[1].Comm != "nginx" || byComm[1].Counts.Drops[stream.ProtoTCP][stream.ReasonProtoMem] != 13 || len(byComm[1].PIDs) != 3 {
		t.Errorf("by comm %+v %+v", byComm[0], byComm[1])
	}
}

func TestSocketsFromEvents(t *testing.T) {
	a := New(time.Unix(0, 0))
	sock := stream.Socket{Cookie: 5, Family: 2, Protocol: 6, State: 1,
		Src: netip.MustParseAddrPort("127.0.0.1:1"), Dst: netip.MustParseAddrPort("127.0.0.1:2")}
	for i := 0; i < 3; i++ {
		e := stream.Event{Kind: stream.KindDrop, Reason: "PROTO_MEM", Bytes: 100, Socket: sock, Owner: stream.Owner{PID: 7}}
		a.Add(stream.Record{Event: &e})
	}
	closed := sock
	closed.Cookie, closed.State, closed.Orphan = 6, 7, true
	e := stream.Event{Kind: stream.KindAbort, Cause: stream.CauseOrphans, Socket: closed}
	a.Add(stream.Record{Event: &e})
	s := a.Summary()
	if len(s.Sockets) != 2 {
		t.Fatalf("%d sockets", len(s.Sockets))
	}
	if top := s.Sockets[0]; top.Cookie != 6 || top.Counts.Events[stream.OrphanAborts] != 1 || !top.Orphan {
		t.Errorf("aborted socket first: %+v", top)
	}
	if d := s.Sockets[1]; d.Events != 3 || d.Counts.Drops[stream.ProtoTCP][stream.ReasonProtoMem] != 3 || d.Counts.DropBytes[stream.ProtoTCP][stream.ReasonProtoMem] != 300 || d.Owner.PID != 7 {
		t.Errorf("dropping socket %+v", d)
	}
}

// A socket's stall age comes from the last look that found stalled
// sockets, joined by cookie; a look that found none keeps the one before;
// holders that read are not listed as stalled.
func TestStalledFromTheLastLook(t *testing.T) {
	a := New(time.Unix(0, 0))
	for _, cookie := range []uint64{5, 6} {
		e := stream.Event{Kind: stream.KindDrop, Reason: "PROTO_MEM", Socket: stream.Socket{Cookie: cookie, Family: 2, Protocol: 6,
			Src: netip.MustParseAddrPort("127.0.0.1:1"), Dst: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(cookie))}}
		a.Add(stream.Record{Event: &e})
	}
	nginx := stream.Process{PID: 4242, Comm: "nginx"}
	look := func(sec int64, ms uint64, holders ...stream.Holder) {
		sn := stream.Snapshot{Time: time.Unix(sec, 0), Holders: holders}
		if ms > 0 {
			sn.Stalled = []stream.StalledSocket{{Cookie: 5, Process: nginx, Bytes: 4 << 20, StalledMs: ms}}
		}
		a.Add(stream.Record{Snapshot: &sn})
	}
	reader := stream.Holder{Process: stream.Process{PID: 7, Comm: "curl"}, Sockets: 1, RecvBytes: 8 << 20}
	stalled := func(ms uint64) stream.Holder {
		return stream.Holder{Process: nginx, Sockets: 2, RecvBytes: 5 << 20, StalledSockets: 1, StalledBytes: 4 << 20, StalledMs: ms}
	}
	if s := a.Summary(); s.Stalled != nil || s.Sockets[0].StalledMs != 0 || s.Sockets[1].StalledMs != 0 {
		t.Fatalf("stalled before any look: %+v", s.Stalled)
	}
	look(1, 10000, reader, stalled(10000))
	look(2, 0, reader) // nobody stalled then: the earlier look stays
	check := func(at int64, ms uint64) {
		t.Helper()
		s := a.Summary()
		st := s.Stalled
		if st == nil || !st.Time.Equal(time.Unix(at, 0)) || len(st.Holders) != 1 || st.Holders[0].PID != 4242 || st.Holders[0].StalledMs != ms ||
			len(st.Sockets) != 1 {
			t.Fatalf("stalled %+v", st)
		}
		for _, so := range s.Sockets {
			if want := map[uint64]uint64{5: ms}[so.Cookie]; so.StalledMs != want {
				t.Errorf("socket %d: stalled %d ms, want %d", so.Cookie, so.StalledMs, want)
			}
		}
	}
	check(1, 10000)
	look(3, 13000, stalled(13000), reader)
	check(3, 13000)
}

// Before 5.12 an event's socket may have no cookie yet (nothing had asked
// for one): its stall age is found by its addresses.
func TestStalledWithoutCookie(t *testing.T) {
	a := New(time.Unix(0, 0))
	src, dst := netip.MustParseAddrPort("127.0.0.1:80"), netip.MustParseAddrPort("127.0.0.1:5000")
	other := netip.MustParseAddrPort("127.0.0.1:5001")
	for _, d := range []netip.AddrPort{dst, other} {
		e := stream.Event{Kind: stream.KindDrop, Reason: "PROTO_MEM", Socket: stream.Socket{NetNS: 7, Family: 2, Protocol: 6, Src: src, Dst: d}}
		a.Add(stream.Record{Event: &e})
	}
	sn := stream.Snapshot{Time: time.Unix(1, 0), Stalled: []stream.StalledSocket{{Cookie: 99, NetNS: 7, Src: src, Dst: dst, StalledMs: 9000}}}
	a.Add(stream.Record{Snapshot: &sn})
	for _, so := range a.Summary().Sockets {
		if want := map[netip.AddrPort]uint64{dst: 9000}[so.Dst]; so.StalledMs != want {
			t.Errorf("%v: stalled %d ms, want %d", so.Dst, so.StalledMs, want)
		}
	}
}
