package tui

import (
	"math"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tcpmemtrace/tcpmemtrace/stream"
)

func snapshot(at time.Time, pages int64, drops, aborts uint64, owners ...stream.OwnerCounts) *stream.Snapshot {
	tot := stream.Totals{}
	tot.Drops[stream.ProtoTCP][stream.ReasonProtoMem], tot.Events[stream.MemAborts] = drops, aborts
	return &stream.Snapshot{Time: at, Totals: tot, Owners: owners,
		Global: stream.Global{MemPages: pages, TCPMem: [3]int64{1000, 2000, 3000}}}
}

func owner(pid uint32, comm string, drops, aborts uint64) stream.OwnerCounts {
	c := stream.Counts{}
	c.Drops[stream.ProtoTCP][stream.ReasonProtoMem], c.Events[stream.MemAborts] = drops, aborts
	return stream.OwnerCounts{Owner: stream.Owner{PID: pid, Comm: comm}, Counts: c}
}

// Rates come from the last two snapshots, history from every one, rows
// from the exact per-owner counts, sorted and filtered as asked.
func TestStateFolds(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 17, 0, 0, 0, time.UTC)
	s := NewState(stream.Info{Start: t0, PageSize: 4096})
	s.Add(stream.Record{Snapshot: snapshot(t0, 100, 0, 0)})
	s.Add(stream.Record{Snapshot: snapshot(t0.Add(time.Second), 2500, 400, 0, owner(10, "reader", 400, 0))})
	s.Add(stream.Record{Event: &stream.Event{Kind: stream.KindPressureEnter, Time: t0.Add(1500 * time.Millisecond), PressureID: 7}})
	s.Add(stream.Record{Snapshot: snapshot(t0.Add(3*time.Second), 3100, 500, 60,
		owner(10, "reader", 500, 0), owner(11, "writer", 0, 60))})

	f := s.Frame(Options{Group: "process", Sort: "drops"})
	if f.Rates.Drops[stream.ReasonProtoMem] != 50 || f.Rates.Events[stream.MemAborts] != 30 {
		t.Errorf("rates %+v, want 50 drops/s and 30 aborts/s over the last 2 s", f.Rates)
	}
	if len(f.MemHistory) != 3 || f.MemHistory[2] != 3100 || f.DropHistory[1] != 400 {
		t.Errorf("history %v %v", f.MemHistory, f.DropHistory)
	}
	if f.Episode == nil || !f.Pressure || !f.Episode.Start.Equal(t0.Add(1500*time.Millisecond)) {
		t.Errorf("episode %+v, want the one begun at +1.5 s", f.Episode)
	}
	if len(f.Rows) != 2 || f.Rows[0].Name != "reader" || f.Rows[1].Aborts != 60 || f.Rows[0].Queued != -1 {
		t.Errorf("rows by drops %+v", f.Rows)
	}
	if f := s.Frame(Options{Group: "process", Sort: "aborts"}); f.Rows[0].Name != "writer" {
		t.Errorf("rows by aborts %+v", f.Rows)
	}
	if f := s.Frame(Options{Group: "process", Sort: "drops", Filter: "writ"}); len(f.Rows) != 1 || f.Rows[0].Name != "writer" {
		t.Errorf("filtered rows %+v", f.Rows)
	}
	s.Queued = map[uint32]int64{11: 1 << 20}
	if f := s.Frame(Options{Group: "process", Sort: "queued"}); f.Rows[0].Name != "writer" || f.Rows[0].Queued != 1<<20 {
		t.Errorf("rows by queued %+v", f.Rows)
	}
}

// An episode's end seen in the events outranks a /proc reading older than
// it; a /proc reading is all there is for an episode older than the trace.
func TestPressureFreshest(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 17, 0, 0, 0, time.UTC)
	s := NewState(stream.Info{Start: t0})
	sn := snapshot(t0, 2500, 0, 0)
	sn.Global.Pressure = true
	s.Add(stream.Record{Snapshot: sn})
	if f := s.Frame(Options{}); !f.Pressure || f.Episode != nil {
		t.Errorf("an episode older than the trace: pressure %v, episode %v", f.Pressure, f.Episode)
	}
	s.Add(stream.Record{Event: &stream.Event{Kind: stream.KindPressureEnter, Time: t0.Add(time.Second), PressureID: 9}})
	s.Add(stream.Record{Event: &stream.Event{Kind: stream.KindPressureLeave, Time: t0.Add(2 * time.Second), PressureID: 9}})
	if f := s.Frame(Options{}); f.Pressure {
		t.Error("pressure shown after the episode's end, from an older /proc reading")
	}
}

func TestHistoryIsCapped(t *testing.T) {
	t0 := time.Now()
	s := NewState(stream.Info{Start: t0})
	for i := range HistoryLen + 10 {
		s.Add(stream.Record{Snapshot: snapshot(t0.Add(time.Duration(i)*time.Second), int64(i), 0, 0)})
	}
	f := s.Frame(Options{Group: "process", Sort: "drops"})
	if len(f.MemHistory) != HistoryLen || f.MemHistory[HistoryLen-1] != HistoryLen+9 {
		t.Errorf("history of %d, last %d", len(f.MemHistory), f.MemHistory[len(f.MemHistory)-1])
	}
}

// A row counts drops and bytes of every protocol, as the summary's table
// does: sockets of unknown owner (UDP's) are listed with theirs.
func TestRowsCountEveryProtocol(t *testing.T) {
	t0 := time.Now()
	s := NewState(stream.Info{Start: t0})
	udp := owner(0, "", 0, 0)
	udp.Drops[stream.ProtoOther][stream.ReasonSocketRcvbuff], udp.DropBytes[stream.ProtoOther][stream.ReasonSocketRcvbuff] = 7, 700
	tcp := owner(10, "reader", 2, 0)
	tcp.DropBytes[stream.ProtoTCP][stream.ReasonProtoMem] = 200
	s.Add(stream.Record{Snapshot: snapshot(t0, 1, 9, 0, udp, tcp)})
	f := s.Frame(Options{Group: "process", Sort: "drops"})
	if len(f.Rows) != 2 || f.Rows[0].Key != "?" || f.Rows[0].Drops != 7 || f.Rows[0].Bytes != 700 ||
		f.Rows[1].Drops != 2 || f.Rows[1].Bytes != 200 {
		t.Errorf("rows %+v", f.Rows)
	}
}

// Names in the owners table and the header are escaped, in every grouping.
func TestHostileNamesEscaped(t *testing.T) {
	hostile := "\x1b]0;owned\a"
	st := NewState(stream.Info{Hostname: "h\x1b[2J", TCPMem: [3]int64{1, 2, 3}})
	o := owner(7, hostile, 5, 0)
	o.CgroupPath = "/x\x1b[31m"
	st.Add(stream.Record{Snapshot: snapshot(time.Unix(1, 0), 10, 5, 0, o)})
	e := stream.Event{Kind: stream.KindDrop, Reason: "PROTO_MEM", Owner: o.Owner,
		Socket: stream.Socket{Family: 2, Protocol: 6, Src: netip.MustParseAddrPort("127.0.0.1:1"), Dst: netip.MustParseAddrPort("127.0.0.1:2")}}
	st.Add(stream.Record{Event: &e})
	for _, g := range Groupings {
		out := Render(st.Frame(Options{Group: g, Sort: "drops"}), 160, 40, plain())
		if strings.ContainsAny(out, "\x1b\a") {
			t.Errorf("%s: raw control bytes on screen:\n%q", g, out)
		}
	}
}

// A container its runtime named shows by its names, under a POD/CONTAINER
// head, by process and by cgroup; the QUEUED column comes from the
// holders a snapshot carries.
func TestPodColumn(t *testing.T) {
	s := NewState(stream.Info{TCPMem: [3]int64{1, 2, 3}})
	o := owner(7, "nginx", 5, 0)
	o.CgroupPath = "/kubepods/x"
	o.Container = stream.Container{Runtime: "containerd", ID: strings.Repeat("ab", 32), Name: "nginx", PodName: "web-7d9f", Namespace: "shop"}
	plainOwner := owner(8, "curl", 1, 0)
	sn := snapshot(time.Unix(1, 0), 10, 6, 0, o, plainOwner)
	sn.Holders = []stream.Holder{{Process: stream.Process{PID: 7, Comm: "nginx"}, RecvBytes: 3 << 20}}
	s.Add(stream.Record{Snapshot: sn})
	for _, g := range []string{"process", "cgroup"} {
		out := Render(s.Frame(Options{Group: g, Sort: "drops"}), 160, 40, plain())
		if !strings.Contains(out, "POD/CONTAINER") || !strings.Contains(out, "shop/web-7d9f/nginx") || !strings.Contains(out, "3.0 MiB") {
			t.Errorf("by %s:\n%s", g, out)
		}
	}
	unnamed := NewState(stream.Info{TCPMem: [3]int64{1, 2, 3}})
	unnamed.Add(stream.Record{Snapshot: snapshot(time.Unix(1, 0), 10, 1, 0, plainOwner)})
	if out := Render(unnamed.Frame(Options{Group: "process", Sort: "drops"}), 160, 40, plain()); strings.Contains(out, "POD/CONTAINER") {
		t.Errorf("POD/CONTAINER head with no named container:\n%s", out)
	}
}

// The latest notice stays on screen, at every size the view draws.
func TestNoticeShown(t *testing.T) {
	s := NewState(stream.Info{TCPMem: [3]int64{1, 2, 3}})
	s.Add(stream.Record{Snapshot: snapshot(time.Unix(1, 0), 10, 0, 0)})
	s.Add(stream.Record{Notice: &stream.Notice{Time: time.Unix(2, 0), Text: "flight recorder: wrote /tmp/tcpmem-x.tmtrec"}})
	if out := Render(s.Frame(Options{Group: "process", Sort: "drops"}), 120, 30, plain()); !strings.Contains(out, "wrote /tmp/tcpmem-x.tmtrec") {
		t.Errorf("notice not on screen:\n%s", out)
	}
	for h := 5; h <= 12; h++ {
		if out := Render(s.Frame(Options{Group: "process", Sort: "drops"}), 40, h, plain()); strings.Count(out, "\n")+1 > h {
			t.Errorf("height %d: %d lines", h, strings.Count(out, "\n")+1)
		}
	}
}

// A damaged recording can carry a negative memory figure and counters that go
// down; the view draws them as nothing rather than panicking or showing a
// wrapped-around rate (FuzzStream found the first in CI).
func TestDamagedValuesDrawn(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 18, 0, 0, 0, time.UTC)
	s := NewState(stream.Info{Start: t0, PageSize: 4096})
	s.Add(stream.Record{Snapshot: snapshot(t0, -7, 500, 9)})
	s.Add(stream.Record{Snapshot: snapshot(t0.Add(time.Second), -1<<40, 100, 3)})
	f := s.Frame(Options{Group: "process", Sort: "drops"})
	if f.Rates.Drops[stream.ReasonProtoMem] != 0 || f.Rates.Events[stream.MemAborts] != 0 || f.DropHistory[1] != 0 {
		t.Errorf("counters that went down give rates %+v and history %v, want 0", f.Rates, f.DropHistory)
	}
	for _, w := range []int{80, 120} {
		if out := Render(f, w, 40, plain()); !strings.Contains(out, "memory") {
			t.Errorf("%d columns: no memory line in\n%s", w, out)
		}
	}
	if got := spark([]float64{-1, math.NaN(), math.Inf(1), 2, 4}, 5); got != "▁▁▁▄█" {
		t.Errorf("spark of damaged values = %q", got)
	}
}
