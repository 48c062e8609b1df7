package tui

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/charmbracelet/lipgloss"
	"github.com/muesli/termenv"

	"github.com/tcpmemtrace/tcpmemtrace/internal/aggregate"
	"github.com/tcpmemtrace/tcpmemtrace/tracer"
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
	tot := tracer.NewTotals()
	tot.MemAborts, tot.PressureEpisodes = 300, 1
	tot.Drops["PROTO_MEM"], tot.DropBytes["PROTO_MEM"] = 901, 29_490_000
	tot.DropsByCause["global_hard_limit"], tot.DropsByCause["global_pressure"] = 842, 59
	tot.OtherDrops["SOCKET_RCVBUFF"] = 3
	tot.Unsampled = 120
	return Frame{
		Info: tracer.Info{Hostname: "vm", Kernel: "6.18.44", PageSize: 4096, TCPMem: [3]int64{1000, 2000, 3000}},
		Now:  t0.Add(8 * time.Second),
		Global: tracer.Global{MemPages: 2520, Pressure: true, TCPMem: [3]int64{1000, 2000, 3000},
			Orphans: 12, MaxOrphans: 131072, TimeWait: 30},
		Totals: tot,
		Rates: Rates{MemAborts: 75, Drops: map[string]float64{"PROTO_MEM": 220, "SOCKET_RCVBUFF": 0.5},
			Causes: map[string]float64{"global_hard_limit": 200, "global_pressure": 20}, Unsampled: 30},
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
		Info:    tracer.Info{Hostname: "vm", Kernel: "6.18.44", PageSize: 4096},
		Now:     time.Date(2026, 11, 25, 17, 0, 0, 0, time.UTC),
		Global:  tracer.Global{MemPages: 280, MaxOrphans: -1},
		Totals:  tracer.NewTotals(),
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
