package record

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

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
			Holders: []stream.Holder{{Process: stream.Process{PID: 7, Comm: "reader"}, Sockets: 3, RecvBytes: 99,
				StalledSockets: 2, StalledBytes: 66, StalledMs: 93000}}},
		{Time: t0.Add(time.Millisecond), Kind: stream.KindDrop, Reason: "PROTO_MEM", DropCause: "global_hard_limit",
			Bytes: 65483, Truesize: 66000, CurrentPID: 8, PressureID: 42, Mem: stream.Mem{Allocated: 3100, Limits: lim},
			Socket: stream.Socket{Cookie: 5, NetNS: 4026532200, Family: 2, Protocol: 6, State: 1,
				Src: netip.MustParseAddrPort("127.0.0.1:4000"), Dst: netip.MustParseAddrPort("127.0.0.1:50000"),
				RmemAlloc: 33000, Rcvbuf: 131072, Memcg: true, MemcgID: 9, MemcgPath: "/m", CgroupID: 3},
			Owner: stream.Owner{PID: 7, Comm: "reader", CgroupID: 3, CgroupPath: "/docker/abc",
				Container: stream.Container{Runtime: "docker", ID: "abc"}}, Location: "tcp_data_queue+0x5e4"},
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
	tot.Places = []stream.Place{{Name: "tcp_data_queue+0x5e4", Reason: "PROTO_MEM", Protocol: "tcp", Drops: 2 * n}}
	o := stream.OwnerCounts{Owner: stream.Owner{PID: 7, Comm: "reader", CgroupPath: "/docker/abc"}, Counts: stream.Counts{}}
	o.Drops[stream.ProtoTCP][stream.ReasonProtoMem] = 2 * n
	s := stream.Snapshot{Time: t0.Add(time.Duration(n) * time.Second), Totals: tot, Owners: []stream.OwnerCounts{o},
		Global: stream.Global{MemPages: 3000, Pressure: true, TCPMem: [3]int64{1000, 2000, 3000}}, Final: final}
	if final { // the final snapshot looks at who holds the memory
		s.Holders = []stream.Holder{{Process: stream.Process{PID: 7, Comm: "reader"}, Sockets: 3, RecvBytes: 99,
			StalledSockets: 2, StalledBytes: 66, StalledMs: 93000 + n}}
		s.Stalled = []stream.StalledSocket{{Cookie: 5, Process: stream.Process{PID: 7, Comm: "reader"}, Bytes: 33, StalledMs: 93000 + n}}
	}
	return s
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
	r, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if got := r.Info(); !reflect.DeepEqual(got.Hooks, info().Hooks) || got.TCPMem != info().TCPMem || !got.Start.Equal(t0) {
		t.Errorf("info %+v", got)
	}
	if h := r.Header(); h.DropReasons[0] != "PROTO_MEM" || h.ResetReason != "TCP_ABORT_ON_MEMORY" || h.Version != version {
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

// A corrupt record in the middle ends the replay there, with a warning
// that says so, and the summary of the last good snapshot.
func TestCorruptRecord(t *testing.T) {
	path := filepath.Join(t.TempDir(), "trace.tmtrec")
	write(t, path, 0, 3)
	b, _ := os.ReadFile(path)
	// The second round's first event: after the first snapshot.
	second := bytes.Index(b[bytes.Index(b, []byte(`"Final":false`)):], []byte{recEvent}) + bytes.Index(b, []byte(`"Final":false`))
	b[second+10] ^= 0x40
	r, err := NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	got, err := read(t, r)
	if err != nil {
		t.Fatalf("a corrupt record ended the replay with %v: want the last good summary", err)
	}
	last := got.snaps[len(got.snaps)-1]
	if !last.Final || !reflect.DeepEqual(last.Totals, snapshot(1, false).Totals) {
		t.Errorf("final snapshot %+v, want the first one's counts", last)
	}
	if w := r.Warning(); w == nil || !strings.Contains(w.Error(), "checksum mismatch") || !strings.Contains(w.Error(), "last good record") {
		t.Errorf("warning %v", w)
	}
	// An absurd length is corruption too, not an allocation.
	b, _ = os.ReadFile(path)
	off := len(magic) + 1
	b[off+1], b[off+2], b[off+3], b[off+4] = 0xff, 0xff, 0xff, 0x7f
	var ce *CorruptError
	if _, err := NewReader(bytes.NewReader(b)); !errors.As(err, &ce) {
		t.Fatalf("huge length: %v", err)
	}
}

// Two recordings joined together: the first replays whole, and the
// warning says what happened.
func TestJoinedRecordings(t *testing.T) {
	path := filepath.Join(t.TempDir(), "trace.tmtrec")
	write(t, path, 0, 1)
	one, _ := os.ReadFile(path)
	r, err := NewReader(bytes.NewReader(append(append([]byte(nil), one...), one...)))
	if err != nil {
		t.Fatal(err)
	}
	got, err := read(t, r)
	if err != nil || len(got.events) != len(events()) || !got.snaps[len(got.snaps)-1].Final {
		t.Fatalf("%v: %d events", err, len(got.events))
	}
	if w := r.Warning(); w == nil || !strings.Contains(w.Error(), "a second recording starts at byte "+fmt.Sprint(len(one))) {
		t.Errorf("warning %v", w)
	}
}

// A file that ends between records, before the final snapshot (a killed
// tracer), replays with a warning that the end is missing.
func TestEndsWithoutFinalCounts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "trace.tmtrec")
	write(t, path, 0, 2)
	b, _ := os.ReadFile(path)
	cut := b[:bytes.LastIndex(b, []byte{recSnapshot})] // before the final snapshot's record
	cut = cut[:len(cut)-0]
	for !endsOnRecord(t, cut) { // back to a record boundary
		cut = cut[:len(cut)-1]
	}
	r := mustReader(t, cut)
	got, err := read(t, r)
	if err != nil || !got.snaps[len(got.snaps)-1].Final {
		t.Fatal(err)
	}
	if w := r.Warning(); w == nil || !strings.Contains(w.Error(), "without its final counts") {
		t.Errorf("warning %v", w)
	}
	r = mustReader(t, b)
	if _, err := read(t, r); err != nil || r.Warning() != nil {
		t.Errorf("the whole file: %v, warning %v", err, r.Warning())
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
		r, err := Open(context.Background(), n)
		if err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		got, err := read(t, r)
		r.Close()
		if err != nil || len(got.snaps) == 0 {
			t.Fatalf("%s: %v", n, err)
		}
		// The older parts say they go on in the next; the newest ends the trace.
		if w := r.Warning(); (n == path) != (w == nil) || (w != nil && !strings.Contains(w.Error(), "ends where the next one begins")) {
			t.Errorf("%s: warning %v", n, w)
		}
		if n == path && (!reflect.DeepEqual(got.snaps[len(got.snaps)-1].Totals, snapshot(6, true).Totals) || r.Header().Part == 0) {
			t.Errorf("newest file: totals %+v, part %d", got.snaps[len(got.snaps)-1].Totals, r.Header().Part)
		}
	}
}

// What stands at -w's path is never written in place: links, FIFOs,
// directories, other users' files and files that are not recordings are
// refused and left as they are; an earlier recording moves to FILE.1.
func TestFileSafety(t *testing.T) {
	dir := t.TempDir()
	keep := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	target := keep("target", "keep", 0o644)
	link := filepath.Join(dir, "link")
	os.Symlink(target, link)
	hard := filepath.Join(dir, "hard")
	os.Link(target, hard)
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o666); err != nil {
		t.Fatal(err)
	}
	notours := keep("notours", "", 0o666)
	os.Chmod(notours, 0o666) // whatever the umask
	if os.Geteuid() == 0 {
		os.Chown(notours, 65534, 65534)
	}
	for path, want := range map[string]string{
		link:                         "symbolic link",
		hard:                         "hard links",
		dir:                          "directory",
		fifo:                         "FIFO",
		keep("text", "hello", 0o644): "not a tcpmemtrace recording",
	} {
		start := time.Now()
		if _, err := Create(path, info(), 0, 2); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error saying %q", path, err, want)
		}
		if time.Since(start) > time.Second {
			t.Errorf("%s: refusing took %v", path, time.Since(start))
		}
	}
	if os.Geteuid() == 0 {
		if _, err := Create(notours, info(), 0, 2); err == nil || !strings.Contains(err.Error(), "uid 65534") {
			t.Errorf("another user's file: %v", err)
		}
		if st, _ := os.Stat(notours); st.Size() != 0 || st.Mode().Perm() != 0o666 {
			t.Errorf("another user's file changed: %v", st.Mode())
		}
	}
	if b, _ := os.ReadFile(target); string(b) != "keep" {
		t.Error("the link's target changed")
	}

	// An earlier recording is kept as FILE.1; the new one is 0600.
	path := filepath.Join(dir, "trace.tmtrec")
	write(t, path, 0, 1)
	old, _ := os.ReadFile(path)
	w, err := Create(path, info(), 0, 2)
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	if b, _ := os.ReadFile(path + ".1"); !bytes.Equal(b, old) {
		t.Error("the earlier recording was not kept as .1")
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", st.Mode().Perm())
	}
}

// Opening a FIFO waits for a writer, and reading for data; both end when
// the context does.
func TestFIFOReplayIsInterruptible(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := Open(ctx, fifo); err == nil || !strings.Contains(err.Error(), "interrupted") {
		t.Errorf("no writer: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the open took %v to give up", d)
	}

	// A writer that sends the header, then stalls.
	path := filepath.Join(t.TempDir(), "trace.tmtrec")
	write(t, path, 0, 1)
	b, _ := os.ReadFile(path)
	afterHeader := len(magic) + 1 + 5 + int(binary.LittleEndian.Uint32(b[len(magic)+2:])) + 4
	go func() {
		f, err := os.OpenFile(fifo, os.O_WRONLY, 0)
		if err != nil {
			return
		}
		f.Write(b[:afterHeader+20])
		time.Sleep(3 * time.Second)
		f.Close()
	}()
	ctx, cancel = context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	r, err := Open(ctx, fifo)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	start = time.Now()
	r.Run(ctx, func(stream.Record) error { return nil })
	if d := time.Since(start); d > 2500*time.Millisecond {
		t.Errorf("a stalled FIFO held the replay %v after the context ended", d)
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
		r, err := Open(context.Background(), path)
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
	r, err := Open(context.Background(), "../../testdata/rcvbuf-6.18.tmtrec")
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

// The asynchronous writer records what a synchronous one would, in order,
// when the disk keeps up.
func TestAsyncWritesInOrder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "trace.tmtrec")
	w, err := Create(path, info(), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	a := NewAsync(w, 1024, func(err error) { t.Error(err) })
	for i := range 3 {
		for _, e := range events() {
			a.Write(stream.Record{Event: &e})
		}
		s := snapshot(uint64(i+1), i == 2)
		a.Write(stream.Record{Snapshot: &s})
	}
	if err := a.Close(); err != nil || a.Dropped() != 0 {
		t.Fatal(err, a.Dropped())
	}
	r, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	got, err := read(t, r)
	if err != nil || r.Warning() != nil || len(got.events) != 3*len(events()) {
		t.Fatalf("%v %v: %d events", err, r.Warning(), len(got.events))
	}
	if last := got.snaps[len(got.snaps)-1]; !reflect.DeepEqual(last.Totals, snapshot(3, true).Totals) {
		t.Errorf("last %+v", last.Totals)
	}
}

// A full disk stops the recording, reports it once, and never blocks the
// writer's caller.
func TestAsyncFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs")
	}
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=64k"); err != nil {
		t.Skipf("mounting a tmpfs: %v", err)
	}
	defer unix.Unmount(dir, unix.MNT_DETACH)
	w, err := Create(filepath.Join(dir, "trace.tmtrec"), info(), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var reported []error
	var mu sync.Mutex
	a := NewAsync(w, 64, func(err error) { mu.Lock(); reported = append(reported, err); mu.Unlock() })
	start := time.Now()
	for i := range 20000 {
		for _, e := range events() {
			a.Write(stream.Record{Event: &e})
		}
		s := snapshot(uint64(i+1), false)
		a.Write(stream.Record{Snapshot: &s})
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("queueing took %v", d)
	}
	err = a.Close()
	mu.Lock()
	defer mu.Unlock()
	if err == nil || !errors.Is(err, unix.ENOSPC) || len(reported) != 1 {
		t.Errorf("close: %v; reported %v", err, reported)
	}
}
