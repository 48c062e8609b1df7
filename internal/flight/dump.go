package flight

import (
	"sync"
	"time"

	"github.com/tcpmemtrace/tcpmemtrace/internal/record"
	"github.com/tcpmemtrace/tcpmemtrace/stream"
)

// dump is one file being written: the window before its trigger, then
// the records that come until its end, on a goroutine of its own.
type dump struct {
	w      *record.Writer
	path   string
	kind   string
	window []stream.Record
	base   *stream.Snapshot // counts are written since this one
	until  time.Time        // extended by later triggers, never past latest
	latest time.Time
	live   chan stream.Record

	mu      sync.Mutex
	dropped uint64 // events the queue had no room for
	events  int    // events written (the writer's goroutine only)
}

func newDump(w *record.Writer, path, kind string, window []stream.Record, base *stream.Snapshot, queue int, until time.Time) *dump {
	return &dump{w: w, path: path, kind: kind, window: window, base: base, until: until, live: make(chan stream.Record, queue)}
}

// add queues a record that came after the trigger; it never waits. An
// event with no room is counted and left out; a snapshot with no room
// costs nothing, the next one holds its counts.
func (d *dump) add(rec stream.Record, at time.Time) {
	select {
	case d.live <- rec:
	default:
		if rec.Event != nil {
			d.mu.Lock()
			d.dropped++
			d.mu.Unlock()
		}
	}
}

// end says no more records come (the source's goroutine, like add).
func (d *dump) end() { close(d.live) }

func (d *dump) droppedEvents() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.dropped
}

// write writes the window, then the queued records as they come, and ends
// the file with the newest snapshot marked final. On a write error it
// stops writing but keeps taking records until the end, so that add never
// finds a queue nobody empties.
func (d *dump) write() error {
	var pending *stream.Snapshot // held back to be the final one
	var err error
	put := func(rec stream.Record) {
		if err != nil {
			return
		}
		if rec.Event != nil {
			if err = d.w.Write(rec); err == nil {
				d.events++
			}
			return
		}
		if pending != nil {
			err = d.w.Write(stream.Record{Snapshot: pending})
		}
		s := rec.Snapshot.Since(d.base)
		pending = &s
	}
	for _, rec := range d.window {
		put(rec)
	}
	d.window = nil
	for rec := range d.live {
		put(rec)
	}
	if err == nil && pending != nil {
		pending.Final = true
		err = d.w.Write(stream.Record{Snapshot: pending})
	}
	if cerr := d.w.Close(); err == nil {
		err = cerr
	}
	return err
}
