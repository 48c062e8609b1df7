package record

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/tcpmemtrace/tcpmemtrace/stream"
)

var t0 = time.Unix(1764089000, 123456789)

func info() stream.Info {
	return stream.Info{Hostname: "h", Kernel: "6.18.44", BootID: "b", PageSize: 4096, Start: t0,
		TCPMem: [3]int64{1000, 2000, 3000}, DropReasons: map[string]uint32{"PROTO_MEM": 20},
		Hooks: []stream.Hook{{Event: stream.EventAborts, Using: "tp_btf/tcp_send_reset"}}}
}

func events() []stream.Event {
	lim := [3]int64{1000, 2000, 3000}
	return []stream.Event{
		{Time: t0, Kind: stream.KindPressureEnter, Mem: stream.Mem{Allocated: 2001, Limits: lim}, PressureID: 42,
			Holders: []stream.Holder{{Process: stream.Process{PID: 7, Comm: "reader"}, Sockets: 3, RecvBytes: 99}}},
		{Time: t0.Add(time.Millisecond), Kind: stream.KindDrop, Reason: "PROTO_MEM", DropCause: "global_hard_limit",
			Bytes: 65483, Truesize: 66000, CurrentPID: 8, PressureID: 42, Mem: stream.Mem{Allocated: 3100, Limits: lim},
			Socket: stream.Socket{Cookie: 5, NetNS: 4026532200, Family: 2, Protocol: 6, State: 1,
				Src: netip.MustParseAddrPort("127.0.0.1:4000"), Dst: netip.MustParseAddrPort("127.0.0.1:50000"),
				RmemAlloc: 33000, Rcvbuf: 131072, Memcg: true, MemcgID: 9, MemcgPath: "/m", CgroupID: 3},
			Owner: stream.Owner{PID: 7, Comm: "reader", CgroupID: 3, CgroupPath: "/docker/abc",
				Container: stream.Container{Runtime: "docker", ID: "abc"}}},
		{Time: t0.Add(2 * time.Millisecond), Kind: stream.KindAbort, Cause: stream.CauseOrphans,
			Socket: stream.Socket{Family: 10, Protocol: 6, State: 4, Orphan: true, ClosedAt: t0,
				Src: netip.MustParseAddrPort("[::1]:4001"), Dst: netip.MustParseAddrPort("[2001:db8::1]:443"), WmemQueued: -1},
			Owner: stream.Owner{PID: 8, Comm: "writer"}},
		{Time: t0.Add(3 * time.Millisecond), Kind: stream.KindRefusal, Send: true, Owner: stream.Owner{PID: 8, Comm: "writer"}},
		{Time: t0.Add(4 * time.Millisecond), Kind: stream.KindDrop, Reason: "SOCKET_RCVBUFF", Bytes: 10,
			Socket: stream.Socket{NetNS: 1, Protocol: 17}},
	}
}

func snapshot(n uint64, final bool) stream.Snapshot {
	tot := stream.Totals{}
	tot.Events[stream.MemAborts], tot.Drops[stream.ProtoTCP][stream.ReasonProtoMem], tot.LostSamples = n, 2*n, 1
	tot.Causes[stream.CauseGlobalHardLimit] = 2 * n
	o := stream.OwnerCounts{Owner: stream.Owner{PID: 7, Comm: "reader", CgroupPath: "/docker/abc"}, Counts: stream.Counts{}}
	o.Drops[stream.ProtoTCP][stream.ReasonProtoMem] = 2 * n
	return stream.Snapshot{Time: t0.Add(time.Duration(n) * time.Second), Totals: tot, Owners: []stream.OwnerCounts{o},
		Global: stream.Global{MemPages: 3000, Pressure: true, TCPMem: [3]int64{1000, 2000, 3000}}, Final: final}
}

// write records events and snapshots as a live trace would.
func write(t *testing.T, path string, maxSize int64, rounds int) {
	t.Helper()
	w, err := Create(path, info(), maxSize, 2)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < rounds; i++ {
		for _, e := range events() {
			if err := w.Write(stream.Record{Event: &e}); err != nil {
				t.Fatal(err)
			}
		}
		s := snapshot(uint64(i+1), i == rounds-1)
		if err := w.Write(stream.Record{Snapshot: &s}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

type replay struct {
	events []stream.Event
	snaps  []stream.Snapshot
}

func read(t *testing.T, src stream.Source) (replay, error) {
	t.Helper()
	var out replay
	err := src.Run(context.Background(), func(r stream.Record) error {
		if r.Event != nil {
			out.events = append(out.events, *r.Event)
		}
		if r.Snapshot != nil {
			out.snaps = append(out.snaps, *r.Snapshot)
		}
		return nil
	})
	return out, err
}

func TestRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "trace.tmtrec")
	write(t, path, 0, 2)
	r, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if got := r.Info(); !reflect.DeepEqual(got.Hooks, info().Hooks) || got.TCPMem != info().TCPMem || !got.Start.Equal(t0) {
		t.Errorf("info %+v", got)
	}
	if h := r.Header(); h.DropReasons[0] != "PROTO_MEM" || h.ResetReason != "TCP_ABORT_ON_MEMORY" || h.Version != 1 {
		t.Errorf("header %+v", h)
	}
	got, err := read(t, r)
	if err != nil || r.Warning() != nil {
		t.Fatal(err, r.Warning())
	}
	want := append(events(), events()...)
	if len(got.events) != len(want) {
		t.Fatalf("%d events, want %d", len(got.events), len(want))
	}
	for i := range want {
		if !reflect.DeepEqual(normal(got.events[i]), normal(want[i])) {
			t.Errorf("event %d:\n got %+v\nwant %+v", i, got.events[i], want[i])
		}
	}
	last := got.snaps[len(got.snaps)-1]
	if len(got.snaps) != 2 || !last.Final || !reflect.DeepEqual(last.Totals, snapshot(2, true).Totals) ||
		!reflect.DeepEqual(last.Owners, snapshot(2, true).Owners) {
		t.Errorf("snapshots %d, last %+v", len(got.snaps), last)
	}
}

// normal drops the monotonic clock reading, which a file cannot keep.
func normal(e stream.Event) stream.Event {
	e.Time = e.Time.Round(0)
	e.Socket.ClosedAt = e.Socket.ClosedAt.Round(0)
	return e
}

// A file cut at any byte: never a panic; an error only before the header
// is whole; after it, every whole record and a warning when the cut is
// inside one.
func TestCutAtEveryByte(t *testing.T) {
	path := filepath.Join(t.TempDir(), "trace.tmtrec")
	write(t, path, 0, 2)
	whole, _ := os.ReadFile(path)
	full, _ := read(t, mustReader(t, whole))
	prev := -1
	for cut := 0; cut <= len(whole); cut++ {
		r, err := NewReader(bytes.NewReader(whole[:cut]))
		if err != nil {
			if cut == 0 && !errors.Is(err, ErrEmpty) || cut > 0 && err != errCutHeader {
				t.Fatalf("cut at %d: %v", cut, err)
			}
			continue
		}
		got, err := read(t, r)
		if err != nil {
			t.Fatalf("cut at %d: %v", cut, err)
		}
		if n := len(got.events); n < prev || n > len(full.events) {
			t.Fatalf("cut at %d: %d events (before: %d)", cut, n, prev)
		} else {
			prev = n
		}
		if last := got.snaps[len(got.snaps)-1]; !last.Final {
			t.Fatalf("cut at %d: the replay did not end with a final snapshot", cut)
		}
		if r.Warning() == nil && !endsOnRecord(t, whole[:cut]) {
			t.Fatalf("cut at %d, inside a record: no warning", cut)
		}
	}
	if prev != len(full.events) {
		t.Errorf("the whole file gave %d events, want %d", prev, len(full.events))
	}
}

func mustReader(t *testing.T, b []byte) *Reader {
	t.Helper()
	r, err := NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// endsOnRecord walks the frames of b and says whether it ends on a boundary.
func endsOnRecord(t *testing.T, b []byte) bool {
	off := len(magic) + 1
	for off < len(b) {
		_, _, n, err := readFrame(bytes.NewReader(b[off:]), nil, 0)
		if err != nil {
			return false
		}
		off += n
	}
	return off == len(b)
}

func TestCorruptRecord(t *testing.T) {
	path := filepath.Join(t.TempDir(), "trace.tmtrec")
	write(t, path, 0, 1)
	b, _ := os.ReadFile(path)
	b[len(b)/2] ^= 0x40
	r, err := NewReader(bytes.NewReader(b))
	if err == nil {
		_, err = read(t, r)
	}
	var ce *CorruptError
	if !errors.As(err, &ce) {
		t.Fatalf("flipped bit: %v, want a CorruptError", err)
	}
	// An absurd length is corruption too, not an allocation.
	b, _ = os.ReadFile(path)
	off := len(magic) + 1
	b[off+1], b[off+2], b[off+3], b[off+4] = 0xff, 0xff, 0xff, 0x7f
	if _, err := NewReader(bytes.NewReader(b)); !errors.As(err, &ce) {
		t.Fatalf("huge length: %v", err)
	}
}

func TestForeignAndEmpty(t *testing.T) {
	for name, b := range map[string][]byte{
		"text": []byte("hello, this is not a recording\n"),
		"elf":  {0x7f, 'E', 'L', 'F', 2, 1, 1, 0, 0, 0, 0, 0},
		"json": []byte(`{"type":"start"}`),
	} {
		if _, err := NewReader(bytes.NewReader(b)); !errors.Is(err, ErrForeign) {
			t.Errorf("%s: %v, want ErrForeign", name, err)
		}
	}
	if _, err := NewReader(bytes.NewReader(nil)); !errors.Is(err, ErrEmpty) {
		t.Errorf("empty: %v", err)
	}
	b := append([]byte(magic), 9)
	if _, err := NewReader(bytes.NewReader(b)); err == nil || errors.Is(err, ErrForeign) {
		t.Errorf("a future version: %v", err)
	}
}

// Past the size limit the file rotates; every file replays alone and the
// newest ends with the totals of the whole trace.
func TestRotation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "trace.tmtrec")
	write(t, path, 1500, 6)
	names, _ := filepath.Glob(path + "*")
	if len(names) != 3 { // path, path.1, path.2 (maxFiles 2)
		t.Fatalf("files %v", names)
	}
	for _, n := range names {
		r, err := Open(n)
		if err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		got, err := read(t, r)
		r.Close()
		if err != nil || r.Warning() != nil || len(got.snaps) == 0 {
			t.Fatalf("%s: %v %v", n, err, r.Warning())
		}
		if n == path && (!reflect.DeepEqual(got.snaps[len(got.snaps)-1].Totals, snapshot(6, true).Totals) || r.Header().Part == 0) {
			t.Errorf("newest file: totals %+v, part %d", got.snaps[len(got.snaps)-1].Totals, r.Header().Part)
		}
	}
}

func TestFileSafety(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	os.WriteFile(target, []byte("keep"), 0o644)
	link := filepath.Join(dir, "link")
	os.Symlink(target, link)
	if _, err := Create(link, info(), 0, 0); err == nil {
		t.Error("wrote through a symlink")
	}
	if b, _ := os.ReadFile(target); string(b) != "keep" {
		t.Error("the symlink's target changed")
	}
	if _, err := Create(dir, info(), 0, 0); err == nil {
		t.Error("wrote to a directory")
	}
	path := filepath.Join(dir, "new")
	os.WriteFile(path, []byte("old"), 0o666)
	w, err := Create(path, info(), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", st.Mode().Perm())
	}
}

// The reader never panics and never runs away, whatever the bytes.
func FuzzReader(f *testing.F) {
	path := filepath.Join(f.TempDir(), "seed.tmtrec")
	w, err := Create(path, info(), 0, 0)
	if err != nil {
		f.Fatal(err)
	}
	for _, e := range events() {
		w.Write(stream.Record{Event: &e})
	}
	s := snapshot(1, true)
	w.Write(stream.Record{Snapshot: &s})
	w.Close()
	seed, _ := os.ReadFile(path)
	f.Add(seed)
	f.Add(seed[:len(seed)/2])
	f.Add([]byte(magic))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := NewReader(bytes.NewReader(b))
		if err != nil {
			return
		}
		r.Run(context.Background(), func(stream.Record) error { return nil })
	})
}

// Replay filters keep the selected owners' events, and totals made of
// their exact counts.
func TestFilter(t *testing.T) {
	path := filepath.Join(t.TempDir(), "trace.tmtrec")
	write(t, path, 0, 1)
	for _, tc := range []struct {
		f      Filter
		events int // of the 5, pressure included
		drops  uint64
	}{
		{Filter{PIDs: []uint32{7}}, 2, 2},
		{Filter{Comm: "writer"}, 3, 0},
		{Filter{Cgroup: "/docker"}, 2, 2},
		{Filter{Cgroup: "/dock"}, 1, 0}, // a path prefix is not a parent
		{Filter{PIDs: []uint32{99}}, 1, 0},
	} {
		r, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		got, err := read(t, Filtered(r, tc.f))
		r.Close()
		if err != nil {
			t.Fatal(err)
		}
		last := got.snaps[len(got.snaps)-1]
		if len(got.events) != tc.events || last.Totals.Drops[stream.ProtoTCP][stream.ReasonProtoMem] != tc.drops || last.Totals.LostSamples != 1 {
			t.Errorf("%+v: %d events, %d drops (lost %d); want %d, %d", tc.f, len(got.events), last.Totals.Drops[stream.ProtoTCP][stream.ReasonProtoMem],
				last.Totals.LostSamples, tc.events, tc.drops)
		}
	}
}

// A recording made on 6.18, where PROTO_MEM is drop reason 20. On Debian's
// 6.1 (BTF: PROTO_MEM 16, SOCKET_BACKLOG 20) a replay that looked numbers
// up would say SOCKET_BACKLOG; names travel in the file, so it cannot.
func TestRecordedOnAnotherKernel(t *testing.T) {
	r, err := Open("../../testdata/rcvbuf-6.18.tmtrec")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	info := r.Info()
	if info.DropReasons["PROTO_MEM"] != 20 || info.DropReasons["SOCKET_BACKLOG"] != 29 || info.Kernel[:5] != "6.18." {
		t.Fatalf("recorded on %s with %v", info.Kernel, info.DropReasons)
	}
	got, err := read(t, r)
	if err != nil || r.Warning() != nil {
		t.Fatal(err, r.Warning())
	}
	var drops uint64
	for _, e := range got.events {
		if e.Kind != stream.KindDrop {
			continue
		}
		if e.Reason != "PROTO_MEM" || e.DropCause != "rcvbuf" || e.Owner.Comm != "tmt-reader" {
			t.Errorf("drop %+v", e)
		}
		drops++
	}
	tot := got.snaps[len(got.snaps)-1].Totals
	if drops != 50 || tot.Drops[stream.ProtoTCP][stream.ReasonProtoMem] != 50 || tot.Causes[stream.CauseRcvbuf] != 50 {
		t.Errorf("%d drop events, totals %v by cause %v", drops, tot.Drops, tot.Causes)
	}
}
