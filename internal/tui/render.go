package tui

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/charmbracelet/lipgloss"

	"github.com/tcpmemtrace/tcpmemtrace/internal/aggregate"
	"github.com/tcpmemtrace/tcpmemtrace/internal/units"
	"github.com/tcpmemtrace/tcpmemtrace/tracer"
)

// Frame is everything one screen shows; Render depends on nothing else.
type Frame struct {
	Info        tracer.Info
	Now         time.Time
	Global      tracer.Global
	Totals      tracer.Totals
	Rates       Rates
	MemHistory  []int64
	DropHistory []float64
	Episode     *aggregate.Episode // the current one; nil when none
	Pressure    bool               // under pressure now (events, else /proc)
	Rows        []Row
	Options     Options
	Replay      bool
	// Ended: the source has no more records; Stopped is its error, if any.
	Ended   bool
	Stopped string
}

// Styles color the frame; a renderer without colors gives plain text.
type Styles struct {
	Title, Dim, Bad, Warn, Good, Head, Key lipgloss.Style
}

// NewStyles makes the styles for a renderer (its terminal's color profile).
func NewStyles(r *lipgloss.Renderer) Styles {
	return Styles{
		Title: r.NewStyle().Bold(true),
		Dim:   r.NewStyle().Faint(true),
		Bad:   r.NewStyle().Bold(true).Foreground(lipgloss.Color("9")),
		Warn:  r.NewStyle().Foreground(lipgloss.Color("11")),
		Good:  r.NewStyle().Foreground(lipgloss.Color("10")),
		Head:  r.NewStyle().Bold(true).Reverse(true),
		Key:   r.NewStyle().Bold(true),
	}
}

// Render draws a frame in width x height cells.
func Render(f Frame, width, height int, st Styles) string {
	if width < 40 || height < 10 {
		return "tcpmemtrace: the terminal is too small (at least 40x10)"
	}
	var lines []string
	add := func(s string) { lines = append(lines, clip(s, width)) }

	mode := "live"
	if f.Replay {
		mode = "replay"
	}
	if f.Options.Paused {
		mode += ", paused"
	}
	if f.Ended {
		mode += ", ended"
	}
	add(spread(st.Title.Render("tcpmemtrace")+" "+f.Info.Hostname+" Linux "+f.Info.Kernel,
		f.Now.Format("15:04:05")+" ["+mode+"]", width))

	// The gauge: allocated against the watermarks.
	g := f.Global
	page := int64(max(f.Info.PageSize, 1))
	label := fmt.Sprintf(" %d pages %s", g.MemPages, units.IEC(g.MemPages*page))
	if g.TCPMem[2] > 0 {
		label += fmt.Sprintf(", %.0f%% of high", 100*float64(g.MemPages)/float64(g.TCPMem[2]))
	}
	barW := min(100, max(10, width-len("TCP memory ")-len(label)-2))
	add("TCP memory " + gauge(g.MemPages, g.TCPMem, barW, st) + label)
	if g.TCPMem[2] > 0 {
		lim := fmt.Sprintf("           tcp_mem: low %d, pressure %d, high %d pages", g.TCPMem[0], g.TCPMem[1], g.TCPMem[2])
		if bytes := fmt.Sprintf(" (%s, %s, %s)", units.IEC(g.TCPMem[0]*page), units.IEC(g.TCPMem[1]*page), units.IEC(g.TCPMem[2]*page)); len(lim)+len(bytes) <= width {
			lim += bytes
		}
		add(st.Dim.Render(lim))
	} else {
		add(st.Warn.Render("           tcp_mem unknown (not in the host's network namespace?)"))
	}
	pressure := st.Good.Render("no pressure")
	if f.Pressure {
		pressure = st.Bad.Render("UNDER PRESSURE")
		if f.Episode != nil {
			pressure += fmt.Sprintf(" for %s (since %s)", f.Episode.Duration(f.Now).Round(100*time.Millisecond), f.Episode.Start.Format("15:04:05"))
		}
	}
	orphans := fmt.Sprintf("orphans %d", g.Orphans)
	if g.MaxOrphans > 0 {
		orphans += fmt.Sprintf("/%d (%.0f%%)", g.MaxOrphans, 100*float64(g.Orphans)/float64(g.MaxOrphans))
	}
	add(fmt.Sprintf("%s   %s   TIME-WAIT %d   episodes %d", pressure, orphans, g.TimeWait, f.Totals.PressureEpisodes))

	// History.
	sparkW := min(60, max(8, (width-28)/2))
	add(fmt.Sprintf("memory  %s  drops/s %s", spark(ints(f.MemHistory), sparkW), spark(f.DropHistory, sparkW)))
	add("")

	// Rates and totals.
	t, r := f.Totals, f.Rates
	add(st.Head.Render(fmt.Sprintf("%-34s %10s %12s", "EVENTS", "PER SECOND", "TOTAL")))
	row := func(name string, rate float64, total uint64, bad bool) {
		s := fmt.Sprintf("%-34s %10s %12d", trunc(name, 34), fmtRate(rate), total)
		if bad && total > 0 {
			s = st.Bad.Render(s)
		}
		add(s)
	}
	row("aborts: out of memory", r.MemAborts, t.MemAborts, true)
	row("aborts: too many orphans", r.OrphanAborts, t.OrphanAborts, true)
	for _, name := range tracer.MemoryDropReasons {
		if n := t.Drops[name] + t.OtherDrops[name]; n > 0 {
			row("drops: "+name, r.Drops[name], n, true)
		}
	}
	for _, c := range tracer.DropCauses {
		if n := t.DropsByCause[c]; n > 0 {
			row("  cause: "+c, r.Causes[c], n, false)
		}
	}
	if t.LostSamples+t.Unsampled > 0 {
		row("records not shown (counts exact)", r.Lost+r.Unsampled, t.LostSamples+t.Unsampled, false)
	}
	add("")

	// Owners, in what height is left above the key line.
	o := f.Options
	title := fmt.Sprintf("TOP BY %s, sorted by %s", strings.ToUpper(o.Group), o.Sort)
	if o.Filter != "" {
		title += fmt.Sprintf(", filter %q", o.Filter)
	}
	add(st.Title.Render(title))
	keyW, nameW, detailW := columns(o.Group, width)
	add(st.Head.Render(clip(fmt.Sprintf("%-*s %-*s %-*s %8s %8s %9s %9s", keyW, keyHead(o.Group), nameW, nameHead(o.Group),
		detailW, detailHead(o.Group), "DROPS", "ABORTS", "DROPPED", "QUEUED"), width)))
	room := height - len(lines) - footer(f)
	for i, rw := range f.Rows {
		if i == room-1 && len(f.Rows) > room {
			add(st.Dim.Render(fmt.Sprintf("... %d more", len(f.Rows)-i)))
			break
		}
		if i >= room {
			break
		}
		queued := "-"
		if rw.Queued >= 0 {
			queued = units.IEC(rw.Queued)
		}
		s := fmt.Sprintf("%-*s %-*s %-*s %8d %8d %9s %9s", keyW, trunc(rw.Key, keyW), nameW, trunc(rw.Name, nameW),
			detailW, trunc(rw.Detail, detailW), rw.Drops, rw.Aborts, units.IEC(int64(rw.Bytes)), queued)
		add(s)
	}
	if len(f.Rows) == 0 {
		add(st.Dim.Render("(no owner has lost data yet)"))
	}
	for len(lines) < height-footer(f) {
		lines = append(lines, "")
	}
	if o.Help {
		for _, h := range helpLines {
			add(h)
		}
	}
	if f.Stopped != "" {
		add(st.Bad.Render("stopped: " + f.Stopped))
	}
	keys := "g group  s sort  p pause  / filter  ? help  q quit"
	if o.Editing != nil {
		keys = "filter: " + *o.Editing + "_   (enter: apply, esc: clear)"
	}
	add(st.Key.Render(keys))
	return strings.Join(lines[:min(len(lines), height)], "\n")
}

var helpLines = []string{
	"g  owners by process, by cgroup/container, by socket",
	"s  sort by drops, aborts, bytes dropped, memory queued now",
	"p  pause the screen (counting goes on)   /  filter rows by text",
	"Counts are exact (kernel); rates are over the last second.",
}

// columns sizes the owners table's text columns; the four figures take 37.
func columns(group string, width int) (key, name, detail int) {
	rest := width - 37 - 3
	switch group {
	case "cgroup":
		name = 24 // runtime and a 12-digit container id
		return rest - name, name, 0
	case "socket":
		name, detail = 16, 11
		if rest-name-detail < 33 { // two addresses first
			detail = 0
		}
		return rest - name - detail, name, detail
	}
	return 7, 16, rest - 7 - 16
}

func detailHead(group string) string {
	switch group {
	case "socket":
		return "STATE"
	case "cgroup":
		return ""
	}
	return "CGROUP"
}

// footer is the lines under the owners table: help, an error, the keys.
func footer(f Frame) int {
	n := 1
	if f.Options.Help {
		n += len(helpLines)
	}
	if f.Stopped != "" {
		n++
	}
	return n
}

func keyHead(group string) string {
	switch group {
	case "cgroup":
		return "CGROUP"
	case "socket":
		return "LOCAL > REMOTE"
	}
	return "PID"
}

func nameHead(group string) string {
	switch group {
	case "cgroup":
		return "CONTAINER"
	case "socket":
		return "OWNER"
	}
	return "COMM"
}

// gauge is a bar of w cells: filled up to allocated, with | at the low and
// pressure watermarks, scaled to the high one.
func gauge(pages int64, lim [3]int64, w int, st Styles) string {
	if lim[2] <= 0 {
		return "[" + strings.Repeat("?", w) + "]"
	}
	cell := func(v int64) int { return int(math.Min(float64(w), float64(v)*float64(w)/float64(lim[2]))) }
	fill := cell(pages)
	b := []rune(strings.Repeat("█", fill) + strings.Repeat("░", w-fill))
	for _, m := range []int64{lim[0], lim[1]} {
		if i := cell(m); i > 0 && i < w {
			b[i] = '|'
		}
	}
	s := string(b)
	switch {
	case pages > lim[2]:
		s = st.Bad.Render(s)
	case pages > lim[1]:
		s = st.Warn.Render(s)
	}
	return "[" + s + "]"
}

var sparkRunes = []rune("▁▂▃▄▅▆▇█")

// spark draws the last w values, scaled to their maximum.
func spark(v []float64, w int) string {
	if len(v) > w {
		v = v[len(v)-w:]
	}
	var top float64
	for _, x := range v {
		top = math.Max(top, x)
	}
	var b strings.Builder
	for i := 0; i < w-len(v); i++ {
		b.WriteRune(' ')
	}
	for _, x := range v {
		i := 0
		if top > 0 {
			i = int(x / top * float64(len(sparkRunes)-1))
		}
		b.WriteRune(sparkRunes[i])
	}
	return b.String()
}

func ints(v []int64) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

func fmtRate(r float64) string {
	switch {
	case r == 0:
		return "0"
	case r < 10:
		return fmt.Sprintf("%.1f", r)
	}
	return fmt.Sprintf("%.0f", r)
}

// spread puts left and right at the two ends of a line.
func spread(left, right string, width int) string {
	gap := width - lipgloss.Width(left) - lipgloss.Width(right)
	if gap < 1 {
		gap = 1
	}
	return left + strings.Repeat(" ", gap) + right
}

func trunc(s string, w int) string {
	if r := []rune(s); len(r) > w {
		return string(r[:w-1]) + "…"
	}
	return s
}

// clip cuts a line to width cells (styles included).
func clip(s string, width int) string {
	if lipgloss.Width(s) <= width {
		return s
	}
	return lipgloss.NewStyle().MaxWidth(width).Render(s)
}
