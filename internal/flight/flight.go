// Package flight is the flight recorder: it keeps the last minutes of the
// record stream in memory and, when an incident begins (an abort, a
// pressure episode, drops above a rate), writes them to a recording
// together with what follows, so that the minute before the kernel's
// warnings is there when someone looks, though nobody was watching.
//
// It is a consumer like the metrics: Add sees every record, on the
// source's path, and never waits for a disk. A file is written by a
// goroutine of its own; records that arrive faster than the disk takes
// them are dropped from the file and counted, never from the counts.
package flight

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/tcpmemtrace/tcpmemtrace/internal/record"
	"github.com/tcpmemtrace/tcpmemtrace/stream"
)

// Options tune the recorder.
type Options struct {
	// Dir is where files are written, as tcpmem-<UTC time>-<trigger>.tmtrec.
	Dir string
	// Window is how much of the stream is kept before a trigger, and
	// MaxBytes bounds the memory it takes (an estimate of the records'
	// size); the older records go first.
	Window   time.Duration
	MaxBytes int64
	// After is how long a file goes on after its trigger, and after each
	// later trigger while it is written (an incident that goes on), up to
	// 10 times After or Window past its first trigger, whichever is more.
	After time.Duration
	// HoldOff is how long after a file ends triggers are ignored: a long
	// incident gives one file, not hundreds.
	HoldOff time.Duration
	// Triggers are the trigger kinds armed (stream.Trigger*).
	Triggers []string
	// DropRate is the drops per second (memory drops, every protocol,
	// between two snapshots) that trigger a file.
	DropRate float64
	// MaxSize and MaxFiles rotate each file as -w's are (0: never).
	MaxSize  int64
	MaxFiles int
	// Queue bounds the records waiting for the disk while a file is
	// written (8192).
	Queue int
}

// Stats say what the recorder has done.
type Stats struct {
	Files   map[string]uint64 // files begun, by trigger kind (created; some may then fail)
	Failed  uint64            // files a write error cut short
	Dropped uint64            // events left out of files: the disk was too slow
}

// Recorder is the flight recorder.
type Recorder struct {
	info    stream.Info
	o       Options
	armed   map[string]bool
	notices chan stream.Notice

	// Touched by Add only (the source's goroutine).
	ring       []stream.Record
	head       int   // ring[head:] is the window
	bytes      int64 // the window's estimated size
	base       *stream.Snapshot
	last       *stream.Snapshot // the newest snapshot
	prevDrop   uint64
	prevAborts uint64
	prevAt     time.Time
	sawAbort   bool      // an abort event since the last snapshot
	dump       *dump     // the file being written, nil when none
	quietTo    time.Time // the hold-off's end

	mu    sync.Mutex
	stats Stats
	wg    sync.WaitGroup
}

// New makes a recorder for a trace described by info. The directory must
// exist: a typo should fail at start, not at the first incident.
func New(info stream.Info, o Options) (*Recorder, error) {
	if o.Queue == 0 {
		o.Queue = 8192
	}
	st, err := os.Stat(o.Dir)
	if err != nil {
		return nil, fmt.Errorf("flight recorder directory: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("flight recorder directory %s is not a directory", o.Dir)
	}
	r := &Recorder{info: info, o: o, armed: map[string]bool{}, notices: make(chan stream.Notice, 64),
		stats: Stats{Files: map[string]uint64{}}}
	for _, t := range o.Triggers {
		switch t {
		case stream.TriggerAbort, stream.TriggerPressure, stream.TriggerDrops:
			r.armed[t] = true
		default:
			return nil, fmt.Errorf("flight recorder trigger %q: not abort, pressure or drops", t)
		}
	}
	return r, nil
}

// Notices says when a file begins and ends, and where it went.
func (r *Recorder) Notices() <-chan stream.Notice { return r.notices }

// Stats are the files written so far.
func (r *Recorder) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.stats
	s.Files = make(map[string]uint64, len(r.stats.Files))
	for k, v := range r.stats.Files {
		s.Files[k] = v
	}
	return s
}

// Add sees one record of the stream. It never waits for a disk.
func (r *Recorder) Add(rec stream.Record) {
	rec, at := keep(rec)
	if rec.Event == nil && rec.Snapshot == nil {
		return
	}
	if r.dump != nil {
		r.dump.add(rec, at)
		if !at.Before(r.dump.until) && rec.Snapshot != nil {
			r.endDump(at)
		}
	}
	r.push(rec, at)
	kind, detail := r.trigger(rec, at)
	switch {
	case kind == "":
	case r.dump != nil: // the incident goes on: so does its file
		if end := at.Add(r.o.After); end.After(r.dump.until) && !end.After(r.dump.latest) {
			r.dump.until = end
		}
	case !at.Before(r.quietTo):
		r.startDump(kind, detail, at)
	}
}

// Close ends a file being written (its post-trigger part cut short) and
// waits for the disk.
func (r *Recorder) Close() {
	if r.dump != nil {
		r.endDump(time.Time{})
	}
	r.wg.Wait()
	close(r.notices)
}

// keep copies a record off the source's memory, and says when it was.
func keep(rec stream.Record) (stream.Record, time.Time) {
	switch {
	case rec.Event != nil:
		e := *rec.Event
		e.Holders = append([]stream.Holder(nil), e.Holders...)
		return stream.Record{Event: &e}, e.Time
	case rec.Snapshot != nil:
		s := *rec.Snapshot
		s.Owners = append([]stream.OwnerCounts(nil), s.Owners...)
		s.Holders = append([]stream.Holder(nil), s.Holders...)
		if rec.Snapshot.Holders == nil {
			s.Holders = nil
		}
		return stream.Record{Snapshot: &s}, s.Time
	}
	return stream.Record{}, time.Time{}
}

// push adds a record to the window and lets the oldest go: past Window,
// or past MaxBytes. The newest snapshot let go is the counts' base.
func (r *Recorder) push(rec stream.Record, at time.Time) {
	if rec.Snapshot != nil {
		r.last = rec.Snapshot
	}
	r.ring = append(r.ring, rec)
	r.bytes += size(rec)
	for r.head < len(r.ring)-1 {
		old := r.ring[r.head]
		if t := when(old); !t.Before(at.Add(-r.o.Window)) && r.bytes <= r.o.MaxBytes {
			break
		}
		if old.Snapshot != nil {
			r.base = old.Snapshot
		}
		r.bytes -= size(old)
		r.ring[r.head] = stream.Record{}
		r.head++
	}
	// Compact into a new array, never in place: a file being written may
	// still read the old one.
	if r.head > 1024 && r.head > len(r.ring)/2 {
		r.ring = append([]stream.Record(nil), r.ring[r.head:]...)
		r.head = 0
	}
}

func when(rec stream.Record) time.Time {
	if rec.Event != nil {
		return rec.Event.Time
	}
	return rec.Snapshot.Time
}

// size estimates what a record takes in memory, in bytes.
func size(rec stream.Record) int64 {
	if e := rec.Event; e != nil {
		return 320 + int64(len(e.Owner.Comm)+len(e.Owner.CgroupPath)+len(e.Socket.MemcgPath)+len(e.Reason)) + 96*int64(len(e.Holders))
	}
	s := rec.Snapshot
	return 512 + 240*int64(len(s.Owners)) + 128*int64(len(s.Holders))
}

// trigger says whether the record begins an incident, and how.
func (r *Recorder) trigger(rec stream.Record, at time.Time) (kind, detail string) {
	if e := rec.Event; e != nil {
		switch {
		case e.Kind == stream.KindAbort && r.armed[stream.TriggerAbort]:
			r.sawAbort = true
			return stream.TriggerAbort, fmt.Sprintf("%s: %s > %s, owner pid %d (%s)", e.Cause, e.Socket.Src, e.Socket.Dst, e.Owner.PID, e.Owner.Comm)
		case e.Kind == stream.KindPressureEnter && r.armed[stream.TriggerPressure]:
			return stream.TriggerPressure, fmt.Sprintf("TCP memory pressure began at %d pages (tcp_mem %v)", e.Mem.Allocated, e.Mem.Limits)
		}
		return "", ""
	}
	s := rec.Snapshot
	drops, _ := s.Totals.AllDrops()
	aborts := s.Totals.Aborts()
	prevDrops, prevAborts, prevAt, sawAbort := r.prevDrop, r.prevAborts, r.prevAt, r.sawAbort
	r.prevDrop, r.prevAborts, r.prevAt, r.sawAbort = drops, aborts, at, false
	// Aborts whose events were lost (a full ring buffer) are still counted.
	if r.armed[stream.TriggerAbort] && aborts > prevAborts && !sawAbort {
		return stream.TriggerAbort, fmt.Sprintf("%d aborts counted (their events were lost)", aborts-prevAborts)
	}
	if prevAt.IsZero() || !r.armed[stream.TriggerDrops] {
		return "", ""
	}
	if dt := at.Sub(prevAt).Seconds(); dt > 0 && drops > prevDrops {
		if rate := float64(drops-prevDrops) / dt; rate > r.o.DropRate {
			return stream.TriggerDrops, fmt.Sprintf("%.0f memory drops/s over %.1fs (trigger: %.0f/s)", rate, dt, r.o.DropRate)
		}
	}
	return "", ""
}

// fileName is where a file for a trigger at t goes: a name no file has.
func (r *Recorder) fileName(kind string, t time.Time) string {
	name := "tcpmem-" + t.UTC().Format("20060102T150405Z") + "-" + kind
	p := filepath.Join(r.o.Dir, name+".tmtrec")
	for i := 2; ; i++ {
		if _, err := os.Lstat(p); errors.Is(err, os.ErrNotExist) {
			return p
		}
		p = filepath.Join(r.o.Dir, fmt.Sprintf("%s-%d.tmtrec", name, i))
	}
}

func (r *Recorder) notify(n stream.Notice) {
	select {
	case r.notices <- n:
	default: // nobody reads them fast enough: the metrics still count files
	}
}

// startDump begins a file: the window so far, then what comes until After.
func (r *Recorder) startDump(kind, detail string, at time.Time) {
	path := r.fileName(kind, at)
	from := r.info.Start
	if r.base != nil {
		from = r.base.Time
	}
	info := r.info
	info.Trigger = &stream.Trigger{Kind: kind, Time: at, Detail: detail, From: from}
	w, err := record.Create(path, info, r.o.MaxSize, r.o.MaxFiles)
	if err != nil {
		r.failed(path, kind, at, err)
		r.quietTo = at.Add(r.o.HoldOff)
		return
	}
	r.mu.Lock()
	r.stats.Files[kind]++
	r.mu.Unlock()
	window := append([]stream.Record(nil), r.ring[r.head:]...)
	r.dump = newDump(w, path, kind, window, r.base, r.o.Queue, at.Add(r.o.After))
	r.dump.latest = at.Add(10 * max(r.o.After, r.o.Window))
	r.notify(stream.Notice{Time: at, Kind: stream.NoticeFlightStarted, File: path, Trigger: kind,
		Text: fmt.Sprintf("flight recorder: %s (%s); writing %s from %s to at least %s", kind, detail, path,
			from.UTC().Format(time.TimeOnly), at.Add(r.o.After).UTC().Format(time.TimeOnly))})
	r.wg.Add(1)
	go func(d *dump) {
		defer r.wg.Done()
		err := d.write()
		r.mu.Lock()
		r.stats.Dropped += d.droppedEvents()
		r.mu.Unlock()
		if err != nil {
			r.failed(path, kind, at, err)
			return
		}
		r.notify(stream.Notice{Time: time.Now(), Kind: stream.NoticeFlightWritten, File: path, Trigger: kind,
			Text: fmt.Sprintf("flight recorder: wrote %s (%d events, %d left out: the disk was too slow)", path, d.events, d.droppedEvents())})
	}(r.dump)
}

// endDump ends the file being written; triggers are ignored for HoldOff.
func (r *Recorder) endDump(at time.Time) {
	r.dump.end()
	r.dump = nil
	if !at.IsZero() {
		r.quietTo = at.Add(r.o.HoldOff)
	}
}

func (r *Recorder) failed(path, kind string, at time.Time, err error) {
	r.mu.Lock()
	r.stats.Failed++
	r.mu.Unlock()
	r.notify(stream.Notice{Time: time.Now(), Kind: stream.NoticeFlightFailed, File: path, Trigger: kind,
		Text: fmt.Sprintf("flight recorder: %s stopped: %v (the trace and its counts go on)", path, err)})
}
