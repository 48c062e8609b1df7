package record

import (
	"sync"

	"github.com/tcpmemtrace/tcpmemtrace/stream"
)

// Async writes a recording off the trace's path: Write queues a copy of the
// record and returns at once; a goroutine of its own writes them. A slow or
// full disk costs the recording, never the trace: past queue records,
// events are dropped (and counted) while the latest snapshot is always
// kept; the first write error stops the recording and is reported once.
type Async struct {
	w       *Writer
	onError func(error)

	mu      sync.Mutex
	cond    *sync.Cond
	queue   []queued
	events  int // events in the queue
	snapAt  int // the queue's unwritten snapshot, -1 if none
	max     int
	dropped uint64
	err     error
	closing bool
	done    chan struct{}
}

// queued is an event or a snapshot; a snapshot a newer one made stale is
// neither.
type queued struct {
	ev   stream.Event
	snap *stream.Snapshot
	skip bool
}

// NewAsync starts writing to w; onError, if not nil, is called once, with
// the error that stopped the recording.
func NewAsync(w *Writer, queue int, onError func(error)) *Async {
	a := &Async{w: w, onError: onError, max: queue, snapAt: -1, done: make(chan struct{})}
	a.cond = sync.NewCond(&a.mu)
	go a.loop()
	return a
}

// Write queues a record; it never waits for the disk.
func (a *Async) Write(r stream.Record) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.err != nil || a.closing {
		return
	}
	switch {
	case r.Event != nil:
		if a.events >= a.max {
			a.dropped++
			return
		}
		a.queue = append(a.queue, queued{ev: *r.Event})
		a.events++
	case r.Snapshot != nil:
		if a.snapAt >= 0 { // a newer one makes it stale: its counts are in this one
			a.queue[a.snapAt].skip = true
		}
		s := *r.Snapshot
		a.snapAt = len(a.queue)
		a.queue = append(a.queue, queued{snap: &s})
	}
	a.cond.Signal()
}

func (a *Async) loop() {
	defer close(a.done)
	for {
		a.mu.Lock()
		for len(a.queue) == 0 && !a.closing {
			a.cond.Wait()
		}
		if len(a.queue) == 0 {
			a.mu.Unlock()
			return
		}
		batch := a.queue
		a.queue, a.events, a.snapAt = nil, 0, -1
		a.mu.Unlock()

		if err := a.writeBatch(batch); err != nil {
			a.mu.Lock()
			a.err, a.queue, a.events, a.snapAt = err, nil, 0, -1
			a.mu.Unlock()
			if a.onError != nil {
				a.onError(err)
			}
			return
		}
	}
}

func (a *Async) writeBatch(batch []queued) error {
	for i := range batch {
		q := &batch[i]
		var err error
		switch {
		case q.skip:
		case q.snap != nil:
			err = a.w.Write(stream.Record{Snapshot: q.snap})
		default:
			err = a.w.Write(stream.Record{Event: &q.ev})
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// Dropped is how many events the recording lost to a slow disk.
func (a *Async) Dropped() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.dropped
}

// Close writes what is queued and closes the file. It returns the error
// that stopped the recording, if one did.
func (a *Async) Close() error {
	a.mu.Lock()
	a.closing = true
	a.cond.Signal()
	a.mu.Unlock()
	<-a.done
	cerr := a.w.Close()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.err != nil {
		return a.err
	}
	return cerr
}

// Status is the recording's health: whether it stopped on an error, and
// how many events it lost to a slow disk.
func (a *Async) Status() (failed bool, dropped uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.err != nil, a.dropped
}
