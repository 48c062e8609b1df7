package enrich

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tcpmemtrace/tcpmemtrace/internal/ctrnames"
	"github.com/tcpmemtrace/tcpmemtrace/internal/ksym"
	"github.com/tcpmemtrace/tcpmemtrace/internal/sockdiag"
	"github.com/tcpmemtrace/tcpmemtrace/stream"
)

// fakeSource emits its records as fast as the stage takes them, reusing
// one Event as the tracer does.
type fakeSource struct {
	recs   []stream.Record
	pauses map[int]time.Duration // before record i
	done   atomic.Int64          // when Run returned, unix ns
}

func (f *fakeSource) Info() stream.Info { return stream.Info{Hostname: "fake"} }

func (f *fakeSource) Run(ctx context.Context, fn func(stream.Record) error) error {
	defer func() { f.done.Store(time.Now().UnixNano()) }()
	var ev stream.Event
	for i, r := range f.recs {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(f.pauses[i])
		if r.Event != nil {
			ev = *r.Event
			r.Event = &ev
		}
		if err := fn(r); err != nil {
			return err
		}
	}
	return nil
}

type slowCgroups struct {
	delay map[uint64]time.Duration
	calls atomic.Int32
}

func (s *slowCgroups) Path(id uint64) string {
	s.calls.Add(1)
	time.Sleep(s.delay[id])
	return map[uint64]string{7: "/system.slice/docker-" + hex64 + ".scope", 8: "/slow"}[id]
}
func (s *slowCgroups) MemcgPath(id uint64) string { return "/memcg" }

const hex64 = "4f6d2c3b1a0e9f8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a29180706f5e4d3c2b1"

func drop(cgroup uint64) stream.Record {
	return stream.Record{Event: &stream.Event{Kind: stream.KindDrop, Owner: stream.Owner{PID: uint32(cgroup), CgroupID: cgroup},
		Socket: stream.Socket{MemcgID: 3}}}
}

// Names arrive in order; a slow cgroup lookup delays its own records at
// most Wait, never the source, and its name comes once resolved.
func TestNamesWithoutStallingTheSource(t *testing.T) {
	cg := &slowCgroups{delay: map[uint64]time.Duration{8: 2 * time.Second}}
	src := &fakeSource{}
	for range 1000 {
		src.recs = append(src.recs, drop(7))
	}
	src.recs = append(src.recs, drop(8), drop(7))
	src.recs = append(src.recs, stream.Record{Snapshot: &stream.Snapshot{Owners: []stream.OwnerCounts{{Owner: stream.Owner{PID: 7, CgroupID: 7}}}}})
	start := time.Now()
	var got []stream.Record
	err := Wrap(src, Options{Cgroups: cg, Wait: 200 * time.Millisecond}).Run(context.Background(), func(r stream.Record) error {
		cp := r
		if r.Event != nil {
			e := *r.Event
			cp.Event = &e
		}
		got = append(got, cp)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(src.recs) {
		t.Fatalf("%d records out of %d", len(got), len(src.recs))
	}
	e := got[0].Event
	if e.Owner.CgroupPath == "" || e.Owner.Container.Runtime != "docker" || e.Owner.Container.ID != hex64 || e.Socket.MemcgPath != "/memcg" {
		t.Errorf("first record not named: %+v", e)
	}
	if slow := got[1000].Event; slow.Owner.CgroupPath != "" {
		t.Errorf("the slow cgroup was named within the wait: %q", slow.Owner.CgroupPath)
	}
	if took := time.Since(start); took > 1500*time.Millisecond {
		t.Errorf("took %v: the slow lookup held the stream", took)
	}
	if ran := time.Duration(src.done.Load() - start.UnixNano()); ran > 100*time.Millisecond {
		t.Errorf("the source took %v to hand over 1003 records", ran)
	}
	if snap := got[len(got)-1].Snapshot; snap == nil || snap.Owners[0].CgroupPath == "" {
		t.Errorf("snapshot owners not named: %+v", snap)
	}
	if n := cg.calls.Load(); n != 2 {
		t.Errorf("%d cgroup lookups for two ids: the cache does not hold", n)
	}
}

// A pressure episode's start carries who held the memory then.
func TestHoldersAtPressureEnter(t *testing.T) {
	src := &fakeSource{recs: []stream.Record{{Event: &stream.Event{Kind: stream.KindPressureEnter}}, drop(7)}}
	holders := func(n int) (sockdiag.Holdings, error) {
		return sockdiag.Holdings{Holders: []stream.Holder{{Process: stream.Process{PID: 1, Comm: "reader"}, Sockets: n}}}, nil
	}
	var got []stream.Event
	err := Wrap(src, Options{Cgroups: &slowCgroups{}, Holders: holders, HoldersTop: 3}).Run(context.Background(), func(r stream.Record) error {
		got = append(got, *r.Event)
		return nil
	})
	if err != nil || len(got) != 2 || len(got[0].Holders) != 1 || got[0].Holders[0].Sockets != 3 || got[1].Holders != nil {
		t.Errorf("%v %+v", err, got)
	}
}

// The final snapshot looks afresh, even with no polling asked for: the
// summary says who held the memory and who stopped reading at the end. A
// look later than Wait leaves the last poll's, and others take none.
func TestFinalSnapshotLooks(t *testing.T) {
	stalled := []stream.StalledSocket{{Cookie: 5, Process: stream.Process{PID: 1, Comm: "reader"}, Bytes: 4 << 20, StalledMs: 93000}}
	var calls atomic.Int32
	look := func(delay time.Duration) func(int) (sockdiag.Holdings, error) {
		return func(n int) (sockdiag.Holdings, error) {
			calls.Add(1)
			time.Sleep(delay)
			return sockdiag.Holdings{Holders: []stream.Holder{{Process: stream.Process{PID: 1, Comm: "reader"}, Sockets: n,
				StalledSockets: 1, StalledBytes: 4 << 20, StalledMs: 93000}}, Stalled: stalled}, nil
		}
	}
	run := func(o Options) []stream.Snapshot {
		src := &fakeSource{recs: []stream.Record{{Snapshot: &stream.Snapshot{}}, drop(7), {Snapshot: &stream.Snapshot{Final: true}}}}
		var got []stream.Snapshot
		o.Cgroups = &slowCgroups{}
		if err := Wrap(src, o).Run(context.Background(), func(r stream.Record) error {
			if r.Snapshot != nil {
				got = append(got, *r.Snapshot)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return got
	}
	got := run(Options{Holders: look(0), HoldersTracked: 7})
	if len(got) != 2 || got[0].Holders != nil || got[0].Stalled != nil {
		t.Fatalf("a snapshot before the end looked, unasked: %+v", got)
	}
	if f := got[1]; len(f.Holders) != 1 || f.Holders[0].Sockets != 7 || len(f.Stalled) != 1 || f.Stalled[0] != stalled[0] {
		t.Errorf("the final snapshot: %+v", f)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("%d looks for one final snapshot", n)
	}
	start := time.Now()
	got = run(Options{Holders: look(2 * time.Second), Wait: 100 * time.Millisecond})
	if took := time.Since(start); took > time.Second || got[1].Holders != nil {
		t.Errorf("a late look: took %v, final snapshot %+v", took, got[1])
	}
}

// A consumer's error stops the source and is what Run returns.
func TestConsumerErrorStopsTheSource(t *testing.T) {
	src := &fakeSource{}
	for range 100000 {
		src.recs = append(src.recs, drop(7))
	}
	stop := errors.New("stop")
	n := 0
	err := Wrap(src, Options{Cgroups: &slowCgroups{}}).Run(context.Background(), func(stream.Record) error {
		if n++; n == 10 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 10 {
		t.Errorf("err %v after %d records", err, n)
	}
}

// slowNamer is a container runtime that answers after delay.
type slowNamer struct {
	delay time.Duration
	calls atomic.Int32
}

func (n *slowNamer) Lookup(ctx context.Context, runtime, id, podUID string) (ctrnames.Names, bool) {
	n.calls.Add(1)
	select {
	case <-time.After(n.delay):
		return ctrnames.Names{Name: "web", Pod: "web-7d9f", Namespace: "shop", Source: ctrnames.SourceCRI}, true
	case <-ctx.Done():
		return ctrnames.Names{}, false
	}
}

// A runtime slower than Wait costs the first records their names, never
// the source its pace; asked once, its answer names every later record
// and the snapshot's owners.
func TestSlowRuntimeNames(t *testing.T) {
	namer := &slowNamer{delay: 500 * time.Millisecond}
	src := &fakeSource{pauses: map[int]time.Duration{200: 800 * time.Millisecond}}
	for range 201 {
		src.recs = append(src.recs, drop(7))
	}
	src.recs = append(src.recs, stream.Record{Snapshot: &stream.Snapshot{Owners: []stream.OwnerCounts{{Owner: stream.Owner{PID: 7, CgroupID: 7}}}}})
	start := time.Now()
	var got []stream.Record
	err := Wrap(src, Options{Cgroups: &slowCgroups{}, Names: namer, Wait: 100 * time.Millisecond}).Run(context.Background(), func(r stream.Record) error {
		cp := r
		if r.Event != nil {
			e := *r.Event
			cp.Event = &e
		}
		got = append(got, cp)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 1500*time.Millisecond {
		t.Errorf("took %v (800ms of it the source's pause): the slow runtime held the stream", took)
	}
	if first := got[0].Event.Owner.Container; first.Named() || first.ID != hex64 {
		t.Errorf("first record %+v: named before the runtime answered, or without its id", first)
	}
	want := stream.Container{Runtime: "docker", ID: hex64, Name: "web", PodName: "web-7d9f", Namespace: "shop"}
	if later := got[200].Event.Owner.Container; later != want {
		t.Errorf("a record after the answer: %+v, want %+v", later, want)
	}
	if snap := got[201].Snapshot; snap == nil || snap.Owners[0].Container != want {
		t.Errorf("the snapshot's owner: %+v", snap)
	}
	if n := namer.calls.Load(); n != 1 {
		t.Errorf("the runtime was asked %d times for one container", n)
	}
}

// Places are named from the kernel's symbol table, read once, when the
// first place needs it; a table that cannot be read leaves them unnamed.
func TestPlacesNamed(t *testing.T) {
	table, err := ksym.Read(strings.NewReader("ffffffff81b00000 t tcp_data_queue\nffffffff81c00000 T tcp_v4_rcv\n"))
	if err != nil {
		t.Fatal(err)
	}
	var loads atomic.Int32
	for _, tc := range []struct {
		load func() (*ksym.Table, error)
		want string
	}{
		{func() (*ksym.Table, error) { loads.Add(1); return table, nil }, "tcp_data_queue+0x5e4"},
		{func() (*ksym.Table, error) { return nil, ksym.ErrHidden }, ""},
	} {
		ev := drop(7)
		ev.Event.LocationAddr = 0xffffffff81b005e4
		snap := &stream.Snapshot{}
		snap.Totals.Places = []stream.Place{{Addr: 0xffffffff81b005e4, Drops: 3}}
		src := &fakeSource{recs: []stream.Record{ev, drop(7), {Snapshot: snap}}}
		var got []stream.Record
		err := Wrap(src, Options{Cgroups: &slowCgroups{}, Names: &slowNamer{}, Symbols: tc.load}).Run(context.Background(), func(r stream.Record) error {
			if r.Event != nil {
				e := *r.Event
				r.Event = &e
			}
			got = append(got, r)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if got[0].Event.Location != tc.want || got[1].Event.Location != "" || got[2].Snapshot.Totals.Places[0].Name != tc.want {
			t.Errorf("named %q, %q, %q; want %q", got[0].Event.Location, got[1].Event.Location, got[2].Snapshot.Totals.Places[0].Name, tc.want)
		}
	}
	if n := loads.Load(); n != 1 {
		t.Errorf("the table was read %d times", n)
	}
}
