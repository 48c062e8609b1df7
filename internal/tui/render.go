package tui

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/charmbracelet/lipgloss"

	"github.com/tcpmemtrace/tcpmemtrace/internal/aggregate"
	"github.com/tcpmemtrace/tcpmemtrace/internal/termsafe"
	"github.com/tcpmemtrace/tcpmemtrace/internal/units"
	"github.com/tcpmemtrace/tcpmemtrace/stream"
)

// Frame is everything one screen shows; Render depends on nothing else.
type Frame struct {
	Info        stream.Info
	Now         time.Time
	Global      stream.Global
	Totals      stream.Totals
	Rates       Rates
	MemHistory  []int64
	DropHistory []float64
	Episode     *aggregate.Episode // the current one; nil when none
	Pressure    bool               // under pressure now (events, else /proc)
	Rows        []Row
	// Named: some owner's container has names from its runtime, so the
	// column that shows containers is headed POD/CONTAINER.
	Named   bool
	Options Options
	Replay  bool
	// Ended: the source has no more records; Stopped is its error, if any.
	Ended   bool
	Stopped string
	// Notice is the latest thing the tool did beside tracing.
	Notice string
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

// The smallest screen the view draws on; below it, it says so.
const (
	minWidth  = 40
	minHeight = 10
)

// Render draws a frame in width x height cells: a header, TCP memory
// against its limits, the history, the event rates and totals, the owners
// table in what height is left, and the key line.
func Render(f Frame, width, height int, st Styles) string {
	if width < minWidth || height < minHeight {
		return tooSmall(width, height)
	}
	s := &screen{width: width, st: st}
	s.header(f)
	s.memory(f)
	s.events(f)
	s.owners(f, height-len(s.lines)-footer(f))
	for len(s.lines) < height-footer(f) {
		s.lines = append(s.lines, "")
	}
	s.footer(f)
	return strings.Join(s.lines[:min(len(s.lines), height)], "\n")
}

// tooSmall says so, in words wrapped to the screen.
func tooSmall(width, height int) string {
	var lines []string
	line := ""
	for _, w := range strings.Fields(fmt.Sprintf("tcpmemtrace: the terminal is too small (at least %dx%d)", minWidth, minHeight)) {
		switch {
		case line == "":
			line = w
		case len(line)+1+len(w) <= width:
			line += " " + w
		default:
			lines, line = append(lines, line), w
		}
	}
	lines = append(lines, line)
	for i := range lines {
		lines[i] = trunc(lines[i], max(width, 1))
	}
	return strings.Join(lines[:min(len(lines), max(height, 1))], "\n")
}

// screen collects a frame's lines, each cut to the width.
type screen struct {
	width int
	st    Styles
	lines []string
}

func (s *screen) add(line string) { s.lines = append(s.lines, clip(line, s.width)) }

func (s *screen) header(f Frame) {
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
	s.add(spread(s.st.Title.Render("tcpmemtrace")+" "+termsafe.Name(f.Info.Hostname)+" Linux "+termsafe.Name(f.Info.Kernel),
		f.Now.Format("15:04:05")+" ["+mode+"]", s.width))
}

// memory is the gauge of allocated pages against the watermarks, the
// pressure state, orphans and TIME-WAIT, and the history.
func (s *screen) memory(f Frame) {
	g, st, width := f.Global, s.st, s.width
	page := int64(max(f.Info.PageSize, 1))
	label := fmt.Sprintf(" %d pages %s", g.MemPages, units.IEC(g.MemPages*page))
	if g.TCPMem[2] > 0 {
		label += fmt.Sprintf(", %.0f%% of high", 100*float64(g.MemPages)/float64(g.TCPMem[2]))
	}
	barW := min(100, max(10, width-len("TCP memory ")-len(label)-2))
	s.add("TCP memory " + gauge(g.MemPages, g.TCPMem, barW, st) + label)
	if g.TCPMem[2] > 0 {
		lim := fmt.Sprintf("           tcp_mem: low %d, pressure %d, high %d pages", g.TCPMem[0], g.TCPMem[1], g.TCPMem[2])
		if bytes := fmt.Sprintf(" (%s, %s, %s)", units.IEC(g.TCPMem[0]*page), units.IEC(g.TCPMem[1]*page), units.IEC(g.TCPMem[2]*page)); len(lim)+len(bytes) <= width {
			lim += bytes
		}
		s.add(st.Dim.Render(lim))
	} else {
		s.add(st.Warn.Render("           tcp_mem unknown (not in the host's network namespace?)"))
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
	s.add(fmt.Sprintf("%s   %s   TIME-WAIT %d   episodes %d", pressure, orphans, g.TimeWait, f.Totals.PressureEpisodes))
	sparkW := min(60, max(8, (width-28)/2))
	s.add(fmt.Sprintf("memory  %s  drops/s %s", spark(ints(f.MemHistory), sparkW), spark(f.DropHistory, sparkW)))
	s.add("")
}

// events is the rates and exact totals of aborts, drops and their causes.
func (s *screen) events(f Frame) {
	t, r, st := f.Totals, f.Rates, s.st
	s.add(st.Head.Render(fmt.Sprintf("%-34s %10s %12s", "EVENTS", "PER SECOND", "TOTAL")))
	row := func(name string, rate float64, total uint64, bad bool) {
		line := fmt.Sprintf("%-34s %10s %12d", trunc(name, 34), fmtRate(rate), total)
		if bad && total > 0 {
			line = st.Bad.Render(line)
		}
		s.add(line)
	}
	row("aborts: out of memory", r.Events[stream.MemAborts], t.Events[stream.MemAborts], true)
	row("aborts: too many orphans", r.Events[stream.OrphanAborts], t.Events[stream.OrphanAborts], true)
	for _, reason := range stream.Reasons {
		if n := t.ReasonDrops(reason); n > 0 {
			row("drops: "+reason.String(), r.Drops[reason], n, true)
		}
	}
	for _, c := range stream.DropCauses {
		if n := t.Causes[c]; n > 0 {
			row("  cause: "+c.String(), r.Causes[c], n, false)
		}
	}
	if t.LostSamples+t.Unsampled > 0 {
		row("records not shown (counts exact)", r.Lost+r.Unsampled, t.LostSamples+t.Unsampled, false)
	}
	if t.MissedRuns > 0 {
		row("hook runs skipped: counts may miss", 0, t.MissedRuns, true)
	}
	s.add("")
}

// owners is the owners table in room lines, title and head included.
func (s *screen) owners(f Frame, room int) {
	o, st := f.Options, s.st
	title := fmt.Sprintf("TOP BY %s, sorted by %s", strings.ToUpper(o.Group), o.Sort)
	if o.Filter != "" {
		title += fmt.Sprintf(", filter %q", o.Filter) // %q escapes
	}
	if room < 3 { // not even one row: the events above matter more
		return
	}
	s.add(st.Title.Render(title))
	keyW, nameW, detailW := columns(o.Group, s.width)
	s.add(st.Head.Render(fmt.Sprintf("%-*s %-*s %-*s %8s %8s %9s %9s", keyW, keyHead(o.Group), nameW, nameHead(o.Group, f.Named),
		detailW, detailHead(o.Group, f.Named), "DROPS", "ABORTS", "DROPPED", "QUEUED")))
	room -= 2
	for i, rw := range f.Rows {
		if i == room-1 && len(f.Rows) > room {
			s.add(st.Dim.Render(fmt.Sprintf("... %d more", len(f.Rows)-i)))
			break
		}
		if i >= room {
			break
		}
		queued := "-"
		if rw.Queued >= 0 {
			queued = units.IEC(rw.Queued)
		}
		s.add(fmt.Sprintf("%-*s %-*s %-*s %8d %8d %9s %9s", keyW, trunc(rw.Key, keyW), nameW, trunc(rw.Name, nameW),
			detailW, trunc(rw.Detail, detailW), rw.Drops, rw.Aborts, units.IEC(int64(rw.Bytes)), queued))
	}
	if len(f.Rows) == 0 {
		s.add(st.Dim.Render("(no owner has lost data yet)"))
	}
}

// footer is the help, an error, and the key line.
func (s *screen) footer(f Frame) {
	if f.Options.Help {
		for _, h := range helpLines {
			s.add(h)
		}
	}
	if f.Stopped != "" {
		s.add(s.st.Bad.Render("stopped: " + termsafe.Name(f.Stopped)))
	}
	if f.Notice != "" {
		s.add(s.st.Warn.Render(termsafe.Name(f.Notice)))
	}
	keys := "g group  s sort  p pause  / filter  ? help  q quit"
	if e := f.Options.Editing; e != nil {
		keys = "filter: " + termsafe.Name(*e) + "_   (enter: apply, esc: clear)"
	}
	s.add(s.st.Key.Render(keys))
}

var helpLines = []string{
	"g  owners by process, by cgroup/container, by socket",
	"s  sort by drops, aborts, bytes dropped, memory queued now",
	"p  pause the screen (counting goes on)   /  filter rows by text",
	"Counts are exact (kernel); rates are over the last second.",
}

// columns sizes the owners table's text columns in what the four figures
// (37 cells) leave, never below zero: on a narrow screen the columns that
// matter least shrink first.
func columns(group string, width int) (key, name, detail int) {
	rest := max(0, width-37-3)
	take := func(want int) int {
		n := min(want, rest)
		rest -= n
		return n
	}
	switch group {
	case "cgroup":
		name = take(24) // runtime and a 12-digit container id
		return rest, name, 0
	case "socket":
		key = take(33) // two addresses first
		name = take(16)
		if rest >= 11 {
			detail = 11
			rest -= 11
		}
		return key + rest, name, detail
	}
	key = take(7)
	name = take(16)
	return key, name, rest
}

func detailHead(group string, named bool) string {
	switch {
	case group == "socket":
		return "STATE"
	case group == "cgroup":
		return ""
	case named:
		return "POD/CONTAINER"
	}
	return "CGROUP"
}

// footer counts the lines under the owners table: help, an error, the keys.
func footer(f Frame) int {
	n := 1
	if f.Options.Help {
		n += len(helpLines)
	}
	if f.Stopped != "" {
		n++
	}
	if f.Notice != "" {
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

func nameHead(group string, named bool) string {
	switch group {
	case "cgroup":
		if named {
			return "POD/CONTAINER"
		}
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
	// Clamped to the bar both ways: a damaged recording can say anything.
	cell := func(v int64) int {
		return int(math.Max(0, math.Min(float64(w), float64(v)*float64(w)/float64(lim[2]))))
	}
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

// spark draws the last w values, scaled to their maximum. Values below zero,
// NaN or infinite (a damaged recording can carry them) draw as the lowest bar
// rather than indexing outside the runes.
func spark(v []float64, w int) string {
	if len(v) > w {
		v = v[len(v)-w:]
	}
	var top float64
	for _, x := range v {
		if drawable(x) {
			top = math.Max(top, x)
		}
	}
	var b strings.Builder
	for i := 0; i < w-len(v); i++ {
		b.WriteRune(' ')
	}
	last := len(sparkRunes) - 1
	for _, x := range v {
		i := 0
		if top > 0 && drawable(x) && x > 0 {
			i = min(last, int(x/top*float64(last)))
		}
		b.WriteRune(sparkRunes[i])
	}
	return b.String()
}

func drawable(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

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

// trunc cuts s to w runes, marking the cut; a width of 0 or less is empty.
func trunc(s string, w int) string {
	if w <= 0 {
		return ""
	}
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
