// Package tui is the live incident view: a full-screen frame, refreshed
// every second, of TCP memory against its limits, the rates of aborts and
// drops, and the owners losing data. State folds the record stream; Render
// turns a Frame into text, a pure function the golden tests pin down; the
// bubbletea program in program.go only wires keys and time to them.
package tui

import (
	"time"

	"github.com/tcpmemtrace/tcpmemtrace/internal/aggregate"
	"github.com/tcpmemtrace/tcpmemtrace/internal/kmsg"
	"github.com/tcpmemtrace/tcpmemtrace/stream"
)

// HistoryLen is how many snapshots the sparklines keep (one a second).
const HistoryLen = 300

// State is what the view knows: the stream folded so far.
type State struct {
	Info   stream.Info
	agg    *aggregate.Aggregator
	now    time.Time
	global stream.Global
	prev   *stream.Snapshot // the snapshot before the last, for rates
	last   *stream.Snapshot
	mem    []int64   // allocated pages, one per snapshot
	drops  []float64 // drops/s, one per snapshot
	// Queued is TCP memory queued per process (receive + send queues,
	// bytes), from the snapshots that carry holders; nil when unknown.
	Queued map[uint32]int64
	notice string // the latest notice (a flight recording written)
}

// NewState starts an empty view of a trace.
func NewState(info stream.Info) *State {
	return &State{Info: info, agg: aggregate.New(info.Start), now: info.Start}
}

// Add folds one record in. Records point into reused memory: what is kept
// is copied.
func (s *State) Add(r stream.Record) {
	if n := r.Notice; n != nil { // the latest stays on screen
		s.notice = n.Time.Format("15:04:05") + " " + n.Text
		return
	}
	s.agg.Add(r)
	if e := r.Event; e != nil && e.Time.After(s.now) {
		s.now = e.Time
	}
	sn := r.Snapshot
	if sn == nil {
		return
	}
	cp := *sn
	s.prev, s.last = s.last, &cp
	if sn.Holders != nil {
		s.Queued = make(map[uint32]int64, len(sn.Holders))
		for i := range sn.Holders {
			s.Queued[uint32(sn.Holders[i].PID)] = int64(sn.Holders[i].Queued())
		}
	}
	s.now, s.global = sn.Time, sn.Global
	s.mem = appendCapped(s.mem, sn.Global.MemPages)
	var rate float64
	if s.prev != nil {
		if dt := s.last.Time.Sub(s.prev.Time).Seconds(); dt > 0 {
			rate = rise(s.prev.Totals.TCPDrops(), s.last.Totals.TCPDrops()) / dt
		}
	}
	s.drops = appendCapped(s.drops, rate)
}

// rise is how much a counter grew. A counter that went down (two recordings
// joined, or a damaged one) shows no rate rather than a wrapped-around one.
func rise(before, after uint64) float64 {
	if after < before {
		return 0
	}
	return float64(after - before)
}

func appendCapped[T any](s []T, v T) []T {
	s = append(s, v)
	if len(s) > HistoryLen {
		s = s[len(s)-HistoryLen:]
	}
	return s
}

// Summary is the trace so far, for the summary printed after the view.
func (s *State) Summary() aggregate.Summary { return s.agg.Summary() }

// SetKernelLog adds the kernel log's comparison to the summary.
func (s *State) SetKernelLog(c kmsg.Counts) { s.agg.SetKernelLog(c) }

// Rates are per second over the last snapshot interval.
type Rates struct {
	Events          [stream.NumCounters]float64
	Drops           [stream.NumReasons]float64 // by reason, TCP and others
	Causes          [stream.NumDropCauses]float64
	Lost, Unsampled float64
}

func (s *State) rates() Rates {
	var r Rates
	if s.prev == nil || s.last == nil {
		return r
	}
	dt := s.last.Time.Sub(s.prev.Time).Seconds()
	if dt <= 0 {
		return r
	}
	a, b := &s.prev.Totals, &s.last.Totals
	per := func(x, y uint64) float64 { return rise(x, y) / dt }
	for c := range r.Events {
		r.Events[c] = per(a.Events[c], b.Events[c])
	}
	for _, reason := range stream.Reasons {
		r.Drops[reason] = per(a.ReasonDrops(reason), b.ReasonDrops(reason))
	}
	for c := range r.Causes {
		r.Causes[c] = per(a.Causes[c], b.Causes[c])
	}
	r.Lost, r.Unsampled = per(a.LostSamples, b.LostSamples), per(a.Unsampled, b.Unsampled)
	return r
}

// Frame builds the input of Render for the chosen options.
func (s *State) Frame(o Options) Frame {
	sum := s.agg.Summary()
	f := Frame{
		Info: s.Info, Now: s.now, Global: s.global, Totals: sum.Totals, Rates: s.rates(),
		MemHistory: s.mem, DropHistory: s.drops, Options: o,
	}
	if s.last == nil { // no snapshot yet: the limits the trace began with
		f.Global.TCPMem, f.Global.MaxOrphans = s.Info.TCPMem, s.Info.MaxOrphans
	}
	// Events say when an episode begins and ends at once; /proc says so only
	// at the last snapshot, and is the only word on an episode older than
	// the trace.
	f.Pressure = f.Global.Pressure
	if n := len(sum.Episodes); n > 0 {
		last := sum.Episodes[n-1]
		if last.End.IsZero() {
			f.Episode, f.Pressure = last, true
		} else if s.last != nil && !s.last.Time.After(last.End) {
			f.Pressure = false
		}
	}
	f.Notice = s.notice
	f.Rows = rows(sum, s.Queued, o)
	for i := range sum.Owners {
		f.Named = f.Named || sum.Owners[i].Container.Named()
	}
	return f
}
