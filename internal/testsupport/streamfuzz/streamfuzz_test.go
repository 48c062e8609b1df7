// Package streamfuzz fuzzes what lies behind the recording reader: a
// stream built from the fuzzer's bytes is written by the real writer (so
// every record's framing and checksum is valid), read back, and fed to the
// summary, the text and JSON outputs and the view's renderer at several
// sizes. None may panic, and the view stays inside its screen.
package streamfuzz

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/charmbracelet/lipgloss"

	"github.com/tcpmemtrace/tcpmemtrace/internal/aggregate"
	"github.com/tcpmemtrace/tcpmemtrace/internal/record"
	"github.com/tcpmemtrace/tcpmemtrace/internal/render"
	"github.com/tcpmemtrace/tcpmemtrace/internal/tui"
	"github.com/tcpmemtrace/tcpmemtrace/stream"
)

// bytesource hands out the fuzzer's bytes as values; past the end, zeros.
type bytesource struct{ b []byte }

func (s *bytesource) byte() byte {
	if len(s.b) == 0 {
		return 0
	}
	v := s.b[0]
	s.b = s.b[1:]
	return v
}

func (s *bytesource) u64() uint64 {
	var b [8]byte
	for i := range b {
		b[i] = s.byte()
	}
	return binary.LittleEndian.Uint64(b[:])
}

// small is a number of a size that renders: mostly small, sometimes huge.
func (s *bytesource) small() uint64 {
	switch v := s.byte(); {
	case v < 200:
		return uint64(v)
	case v < 250:
		return s.u64() % 1_000_000
	default:
		return s.u64()
	}
}

var names = []string{"", "nginx", "tmt-reader", "\x1b]0;owned\a", "\x1b[2J", "caf\u00e9", "a\xffb",
	"/system.slice/docker-" + strings.Repeat("ab", 32) + ".scope", strings.Repeat("/deep", 40),
	"PROTO_MEM", "SOCKET_BACKLOG", "memcg", "unknown", "x\u202ey", "\x00"}

func (s *bytesource) str() string {
	if v := s.byte(); v < 240 {
		return names[int(v)%len(names)]
	}
	n := int(s.byte()) % 64
	out := make([]byte, n)
	for i := range out {
		out[i] = s.byte()
	}
	return string(out)
}

func (s *bytesource) addr() netip.AddrPort {
	switch s.byte() % 3 {
	case 0:
		return netip.AddrPort{}
	case 1:
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte{s.byte(), s.byte(), s.byte(), s.byte()}), uint16(s.u64()))
	}
	var a [16]byte
	for i := range a {
		a[i] = s.byte()
	}
	return netip.AddrPortFrom(netip.AddrFrom16(a), uint16(s.u64()))
}

func (s *bytesource) counts() stream.Counts {
	var c stream.Counts
	for i := range c.Events {
		c.Events[i] = s.small()
	}
	for p := range c.Drops {
		for _, r := range stream.Reasons {
			c.Drops[p][r], c.DropBytes[p][r] = s.small(), s.small()
		}
	}
	for _, dc := range stream.DropCauses {
		c.Causes[dc] = s.small()
	}
	return c
}

func (s *bytesource) event(t0 time.Time) stream.Event {
	reasons := append([]string{"", stream.AbortResetReason}, stream.MemoryDropReasons...)
	causes := []string{"", stream.CauseMemory, stream.CauseOrphans, "memcg", "rcvbuf", "global_hard_limit"}
	e := stream.Event{
		Time: t0.Add(time.Duration(s.small()) * time.Millisecond), Kind: stream.Kind(s.byte() % 7),
		Cause: causes[int(s.byte())%len(causes)], Reason: reasons[int(s.byte())%len(reasons)],
		DropCause: causes[int(s.byte())%len(causes)], Send: s.byte()%2 == 0,
		CurrentPID: uint32(s.small()), Bytes: uint32(s.small()), Truesize: uint32(s.small()),
		Mem:        stream.Mem{Allocated: int64(s.small()) - 5, Limits: [3]int64{int64(s.small()), int64(s.small()), int64(s.small())}},
		PressureID: s.small(), Location: s.str(),
	}
	e.Socket = stream.Socket{Cookie: s.small(), NetNS: uint32(s.small()), Family: []uint16{0, 2, 10}[s.byte()%3],
		Protocol: []uint8{0, 6, 17}[s.byte()%3], State: stream.State(s.byte() % 16), Src: s.addr(), Dst: s.addr(),
		RmemAlloc: int32(s.small()), Rcvbuf: int32(s.small()), WmemQueued: int32(s.small()) - 3, Sndbuf: int32(s.small()),
		Memcg: s.byte()%2 == 0, MemcgID: s.small(), MemcgPath: s.str(), CgroupID: s.small(), Orphan: s.byte()%2 == 0}
	if s.byte()%2 == 0 {
		e.Socket.ClosedAt = e.Time.Add(-time.Duration(s.small()) * time.Millisecond)
	}
	e.Owner = stream.Owner{PID: []uint32{0, 7, 8, stream.OverflowPID}[s.byte()%4], Comm: s.str(), CgroupID: s.small(),
		CgroupPath: s.str(), Container: stream.Container{Runtime: s.str(), ID: s.str(), Pod: s.str()}}
	for range s.byte() % 3 {
		e.Holders = append(e.Holders, s.holder())
	}
	return e
}

func (s *bytesource) holder() stream.Holder {
	return stream.Holder{Process: stream.Process{PID: int(s.small()), Comm: s.str()}, Sockets: int(s.small()),
		RecvBytes: s.small(), SendBytes: s.small(), StalledSockets: int(s.small()), StalledBytes: s.small(), StalledMs: s.small()}
}

func (s *bytesource) snapshot(at time.Time, final bool) stream.Snapshot {
	sn := stream.Snapshot{Time: at, Final: final,
		Totals: stream.Totals{Counts: s.counts(), PressureEpisodes: s.small(), LostSamples: s.small(), Unsampled: s.small(), MissedRuns: s.small()},
		Global: stream.Global{MemPages: int64(s.small()) - 2, Pressure: s.byte()%2 == 0,
			TCPMem:  [3]int64{int64(s.small()), int64(s.small()), int64(s.small())},
			Orphans: int64(s.small()), MaxOrphans: int64(s.small()) - 1, TimeWait: int64(s.small())}}
	if s.byte()%3 == 0 {
		sn.Totals.Missed = map[string]uint64{stream.EventDrops: s.small(), s.str(): s.small()}
		sn.Totals.Places = []stream.Place{{Name: s.str(), Reason: s.str(), Protocol: "tcp", Drops: s.small()}}
	}
	for range s.byte() % 5 {
		sn.Owners = append(sn.Owners, stream.OwnerCounts{Owner: stream.Owner{PID: uint32(s.small()), Comm: s.str(),
			CgroupID: s.small(), CgroupPath: s.str(), Container: stream.Container{Runtime: s.str(), ID: s.str()}}, Counts: s.counts()})
	}
	for range s.byte() % 3 { // a look: who holds the memory, which sockets stalled
		sn.Holders = append(sn.Holders, s.holder())
		sn.Stalled = append(sn.Stalled, stream.StalledSocket{Cookie: s.small(), Process: stream.Process{PID: int(s.small()), Comm: s.str()},
			Bytes: s.small(), StalledMs: s.small()})
	}
	return sn
}

// recording writes the stream the bytes describe with the real writer.
func recording(t *testing.T, b []byte) []byte {
	s := &bytesource{b: b}
	t0 := time.Unix(1764089000, 0)
	info := stream.Info{Hostname: s.str(), Kernel: s.str(), PageSize: int(s.small()) + 1, Start: t0,
		TCPMem: [3]int64{int64(s.small()), int64(s.small()), int64(s.small())}, NetNS: uint32(s.small()),
		Hooks: []stream.Hook{{Event: stream.EventDrops, Using: s.str(), Notes: []string{s.str()}}}, Comm: s.str()}
	path := t.TempDir() + "/f.tmtrec"
	w, err := record.Create(path, info, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	at := t0
	for i := 0; len(s.b) > 0 && i < 200; i++ {
		if s.byte()%4 == 0 {
			at = at.Add(time.Duration(s.small()) * time.Millisecond)
			sn := s.snapshot(at, false)
			w.Write(stream.Record{Snapshot: &sn})
		} else {
			e := s.event(at)
			w.Write(stream.Record{Event: &e})
		}
	}
	if s.byte()%2 == 0 {
		sn := s.snapshot(at.Add(time.Second), true)
		w.Write(stream.Record{Snapshot: &sn})
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	out, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// consume replays a recording through every consumer.
func consume(t *testing.T, file []byte) {
	r, err := record.NewReader(bytes.NewReader(file))
	if err != nil {
		return
	}
	info := r.Info()
	agg := aggregate.New(info.Start)
	st := tui.NewState(info)
	var text, js bytes.Buffer
	tx, jx := render.NewText(&text, render.ByPID), render.NewJSON(&js)
	tx.Start(info)
	jx.Start(info)
	r.Run(context.Background(), func(rec stream.Record) error {
		agg.Add(rec)
		st.Add(rec)
		if rec.Event != nil {
			tx.Event(rec.Event)
			jx.Event(rec.Event)
		}
		return nil
	})
	sum := agg.Summary()
	for _, by := range render.Groupings {
		render.NewText(io.Discard, by).Summary(info, sum)
	}
	if err := jx.Summary(info, sum); err != nil {
		t.Fatalf("JSON summary: %v", err)
	}
	for _, line := range bytes.Split(bytes.TrimSpace(js.Bytes()), []byte("\n")) {
		if !json.Valid(line) {
			t.Fatalf("invalid JSON line %q", line)
		}
	}
	styles := tui.NewStyles(lipgloss.NewRenderer(io.Discard))
	for _, g := range tui.Groupings {
		for _, size := range [][2]int{{20, 5}, {40, 10}, {80, 24}, {113, 37}, {220, 60}} {
			out := tui.Render(st.Frame(tui.Options{Group: g, Sort: tui.Sorts[int(size[0])%len(tui.Sorts)], Help: size[1] > 30}), size[0], size[1], styles)
			lines := strings.Split(out, "\n")
			if len(lines) > size[1] {
				t.Fatalf("%s at %dx%d: %d lines", g, size[0], size[1], len(lines))
			}
			for _, l := range lines {
				if w := lipgloss.Width(l); w > size[0] {
					t.Fatalf("%s at %dx%d: a line of %d cells: %q", g, size[0], size[1], w, l)
				}
			}
		}
	}
}

func FuzzStream(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte("some bytes to start from, with \x1b escapes and \xff"))
	f.Add(bytes.Repeat([]byte{1, 2, 3, 250, 255, 7, 0, 9}, 64))
	f.Fuzz(func(t *testing.T, b []byte) {
		file := recording(t, b)
		consume(t, file)
	})
}
