package tui

import (
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/charmbracelet/lipgloss"
	"github.com/muesli/termenv"

	"github.com/tcpmemtrace/tcpmemtrace/internal/aggregate"
	"github.com/tcpmemtrace/tcpmemtrace/stream"
)

var update = flag.Bool("update", false, "rewrite the golden frames")

func plain() Styles {
	r := lipgloss.NewRenderer(io.Discard)
	r.SetColorProfile(termenv.Ascii)
	return NewStyles(r)
}

// incident is the tcp_mem reproduction as the view sees it mid-episode.
func incident() Frame {
	t0 := time.Date(2026, 11, 25, 17, 0, 20, 0, time.UTC)
	tot := stream.Totals{}
	tot.Events[stream.MemAborts], tot.PressureEpisodes = 300, 1
	tot.Drops[stream.ProtoTCP][stream.ReasonProtoMem], tot.DropBytes[stream.ProtoTCP][stream.ReasonProtoMem] = 901, 29_490_000
	tot.Causes[stream.CauseGlobalHardLimit], tot.Causes[stream.CauseGlobalPressure] = 842, 59
	tot.Drops[stream.ProtoOther][stream.ReasonSocketRcvbuff] = 3
	tot.Unsampled = 120
	return Frame{
		Info: stream.Info{Hostname: "vm", Kernel: "6.18.44", PageSize: 4096, TCPMem: [3]int64{1000, 2000, 3000}},
		Now:  t0.Add(8 * time.Second),
		Global: stream.Global{MemPages: 2520, Pressure: true, TCPMem: [3]int64{1000, 2000, 3000},
			Orphans: 12, MaxOrphans: 131072, TimeWait: 30},
		Totals: tot,
		Rates: Rates{Events: [stream.NumCounters]float64{stream.MemAborts: 75},
			Drops:     [stream.NumReasons]float64{stream.ReasonProtoMem: 220, stream.ReasonSocketRcvbuff: 0.5},
			Causes:    [stream.NumDropCauses]float64{stream.CauseGlobalHardLimit: 200, stream.CauseGlobalPressure: 20},
			Unsampled: 30},
		MemHistory:  []int64{300, 310, 900, 1800, 2300, 2700, 3068, 2520},
		DropHistory: []float64{0, 0, 12, 220, 400, 260, 9, 220},
		Episode:     &aggregate.Episode{ID: 4295, Start: t0.Add(4 * time.Second), StartPages: 2029},
		Pressure:    true,
		Rows: []Row{
			{Key: "7386", Name: "tmt-reader", Detail: "docker 4f6d2c3b1a0e", Drops: 901, Bytes: 29_490_000, Queued: 7_340_032},
			{Key: "7390", Name: "tmt-writer", Detail: "/user.slice/session-1.scope", Aborts: 300, Queued: 14_534_400},
			{Key: "?", Drops: 3, Bytes: 3600, Queued: -1},
		},
		Options: Options{Group: "process", Sort: "drops"},
	}
}

func TestGolden(t *testing.T) {
	quiet := Frame{
		Info:    stream.Info{Hostname: "vm", Kernel: "6.18.44", PageSize: 4096},
		Now:     time.Date(2026, 11, 25, 17, 0, 0, 0, time.UTC),
		Global:  stream.Global{MemPages: 280, MaxOrphans: -1},
		Totals:  stream.Totals{},
		Options: Options{Group: "cgroup", Sort: "aborts", Help: true},
		Replay:  true, Ended: true, Stopped: "reading the ringbuf: bad file descriptor",
	}
	for _, c := range []struct {
		name string
		f    Frame
		w, h int
	}{
		{"incident-80x24", incident(), 80, 24},
		{"incident-200x50", incident(), 200, 50},
		{"quiet-help-100x30", quiet, 100, 30},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := Render(c.f, c.w, c.h, plain())
			lines := strings.Split(got, "\n")
			if len(lines) != c.h {
				t.Errorf("%d lines, want %d", len(lines), c.h)
			}
			for i, l := range lines {
				if w := lipgloss.Width(l); w > c.w {
					t.Errorf("line %d is %d cells wide, more than %d: %q", i+1, w, c.w, l)
				}
			}
			file := filepath.Join("testdata", c.name+".golden")
			if *update {
				if err := os.WriteFile(file, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Errorf("frame differs from %s (go test ./internal/tui -update to accept):\n%s", file, got)
			}
		})
	}
}

// The same frame through the same function is the same text: nothing but
// the Frame goes in.
func TestRenderIsPure(t *testing.T) {
	a := Render(incident(), 120, 40, plain())
	b := Render(incident(), 120, 40, plain())
	if a != b {
		t.Error("two renders of one frame differ")
	}
}

func TestTooSmall(t *testing.T) {
	if got := Render(incident(), 30, 8, plain()); !strings.Contains(got, "too small") {
		t.Errorf("got %q", got)
	}
}

// Every screen size a terminal can have, every grouping, live and replay,
// with owners and without: no panic, no line wider than the screen, no
// more lines than its height.
func TestEverySize(t *testing.T) {
	frames := map[string]Frame{}
	for _, owners := range []bool{true, false} {
		st := NewState(stream.Info{Hostname: "a-rather-long-hostname.example.com", Kernel: "6.18.44-fc-v782", PageSize: 4096,
			TCPMem: [3]int64{1000, 2000, 3000}})
		for _, r := range stateRecords(owners) {
			st.Add(r)
		}
		for _, g := range Groupings {
			for _, replay := range []bool{false, true} {
				f := st.Frame(Options{Group: g, Sort: "drops", Help: replay})
				f.Replay, f.Ended = replay, replay
				if replay {
					f.Stopped = "corrupt recording at byte 4711: checksum mismatch"
				}
				frames[fmt.Sprintf("%s/owners=%v/replay=%v", g, owners, replay)] = f
			}
		}
	}
	frames["incident"] = incident()
	for name, f := range frames {
		for w := 20; w <= 220; w++ {
			for h := 5; h <= 60; h++ {
				out := Render(f, w, h, plain())
				lines := strings.Split(out, "\n")
				if len(lines) > h {
					t.Fatalf("%s at %dx%d: %d lines", name, w, h, len(lines))
				}
				for _, l := range lines {
					if lipgloss.Width(l) > w {
						t.Fatalf("%s at %dx%d: line %q is %d wide", name, w, h, l, lipgloss.Width(l))
					}
				}
			}
		}
	}
}

// stateRecords is a stream with owners of every kind (or none): a process
// in a container, one with a long cgroup path, an unknown one, sockets.
func stateRecords(owners bool) []stream.Record {
	t0 := time.Date(2026, 11, 25, 17, 0, 0, 0, time.UTC)
	var recs []stream.Record
	tot := stream.Totals{}
	tot.Events[stream.MemAborts] = 300
	tot.Drops[stream.ProtoTCP][stream.ReasonProtoMem] = 900
	var os []stream.OwnerCounts
	if owners {
		long := strings.Repeat("/a-very-long-cgroup-path-component", 6)
		for i, o := range []stream.Owner{
			{PID: 7386, Comm: "tmt-reader-with-", CgroupPath: "/system.slice/docker-" + strings.Repeat("ab", 32) + ".scope",
				Container: stream.Container{Runtime: "docker", ID: strings.Repeat("ab", 32)}},
			{PID: 7390, Comm: "w", CgroupPath: long},
			{PID: 0},
		} {
			oc := stream.OwnerCounts{Owner: o}
			oc.Drops[stream.ProtoTCP][stream.ReasonProtoMem] = uint64(100 * (i + 1))
			os = append(os, oc)
		}
		e := stream.Event{Time: t0, Kind: stream.KindDrop, Reason: "PROTO_MEM", Owner: os[0].Owner,
			Socket: stream.Socket{Family: 10, Protocol: 6, State: 1,
				Src: netip.MustParseAddrPort("[2001:db8:ffff:ffff:ffff:ffff:ffff:1]:65535"),
				Dst: netip.MustParseAddrPort("[2001:db8:ffff:ffff:ffff:ffff:ffff:2]:65535")}}
		recs = append(recs, stream.Record{Event: &e})
	}
	for i := range 3 {
		recs = append(recs, stream.Record{Snapshot: &stream.Snapshot{Time: t0.Add(time.Duration(i) * time.Second), Totals: tot, Owners: os,
			Global: stream.Global{MemPages: 3100, Pressure: true, TCPMem: [3]int64{1000, 2000, 3000}, MaxOrphans: 131072}}})
	}
	return recs
}
