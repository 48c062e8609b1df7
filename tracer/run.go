package tracer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/cilium/ebpf/ringbuf"

	"github.com/tcpmemtrace/tcpmemtrace/stream"
)

// recordDrain bounds how late a drop or refusal record is read while
// records come: only the first of a CPU's window wakes the reader (see
// submit() in the BPF), so the reader drains this often until a drain
// finds nothing; then it sleeps until a record or a snapshot is due.
// Each drain wakes the Go runtime, whose monitor then polls every 20 µs
// while the work lasts: at 100k drops a second, 250 ms drains cost about
// two thirds of 100 ms ones, and a record in a storm is read at most a
// quarter of a second late (the view and snapshots move once a second).
const recordDrain = 250 * time.Millisecond

// Run streams records until ctx ends; then it detaches every hook, drains
// the ringbuf and ends with a final Snapshot whose totals are complete.
//
// The reader itself never blocks: it reads what the ring holds, then waits
// on the netpoller (see ringWaiter) for a wake-up, the drain or the next
// snapshot.
func (t *Tracer) Run(ctx context.Context, fn func(stream.Record) error) error {
	stop := context.AfterFunc(ctx, t.wake.stop)
	defer stop()
	t.rd.SetDeadline(nonBlocking)
	var (
		ev       stream.Event
		rec      ringbuf.Record
		draining bool
		active   bool         // records came since the last wait
		next     = time.Now() // a first snapshot at once: a baseline for every consumer
	)
	for {
		if !draining && ctx.Err() != nil {
			t.detach()
			draining = true
		}
		if !draining {
			if now := time.Now(); !now.Before(next) {
				next = now.Add(t.cfg.SnapshotInterval)
				t.sampleQuiet()
				if err := t.emitSnapshot(false, fn); err != nil {
					return err
				}
				continue
			}
		}
		err := t.rd.ReadInto(&rec)
		switch {
		case err == nil:
			active = true
			if err := t.dec.decode(rec.RawSample, &ev); err != nil {
				return err
			}
			if t.internal(&ev) {
				continue
			}
			if err := fn(stream.Record{Event: &ev}); err != nil {
				return err
			}
		case errors.Is(err, os.ErrDeadlineExceeded): // the ring is empty
			if draining {
				return t.emitSnapshot(true, fn)
			}
			deadline := next
			if active {
				deadline = min2(deadline, time.Now().Add(recordDrain))
			}
			active = false
			if err := t.wake.wait(deadline); err != nil {
				return fmt.Errorf("waiting on the ringbuf: %w", err)
			}
		default:
			return fmt.Errorf("reading the ringbuf: %w", err)
		}
	}
}

// nonBlocking, as the ring buffer reader's deadline, makes a read return
// at once when the ring is empty.
var nonBlocking = time.Unix(1, 0)

func min2(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// internal acts on what the tracer itself asked the kernel to say, and
// reports whether the record stops here.
func (t *Tracer) internal(ev *stream.Event) bool {
	switch ev.Kind {
	case stream.KindHandover:
		t.settle.request()
		return true
	case stream.KindPressureEnter:
		t.stalls.on()
	case stream.KindPressureLeave:
		t.stalls.off()
	}
	return false
}

func (t *Tracer) emitSnapshot(final bool, fn func(stream.Record) error) error {
	snap, err := t.snapshot(final)
	if err != nil {
		return err
	}
	return fn(stream.Record{Snapshot: &snap})
}

// lastCounts is the last snapshot's counts, whose owners and places need
// not be read again while the totals have not moved.
type lastCounts struct {
	totals stream.Totals
	owners []stream.OwnerCounts
	places []stream.Place
	valid  bool
}

func (t *Tracer) snapshot(final bool) (stream.Snapshot, error) {
	tot, err := t.Totals()
	if err != nil {
		return stream.Snapshot{}, err
	}
	owners, places := t.last.owners, t.last.places
	if !t.last.valid || tot.Counts != t.last.totals.Counts {
		if owners, err = t.Owners(); err != nil {
			return stream.Snapshot{}, err
		}
		owners = withUnknownOwner(owners, &tot.Counts)
		if places, err = t.Places(); err != nil {
			return stream.Snapshot{}, err
		}
		t.last = lastCounts{totals: tot, owners: owners, places: places, valid: true}
	}
	tot.Places = places
	if !final && t.unownedSeen() {
		t.settle.request()
	}
	return stream.Snapshot{Time: time.Now(), Totals: tot, Owners: owners, Global: readGlobal(), Final: final}, nil
}

// withUnknownOwner adds the counts of sockets with no known owner, which
// the kernel keeps in the totals only: the totals less every owner's.
func withUnknownOwner(owners []stream.OwnerCounts, total *stream.Counts) []stream.OwnerCounts {
	rest := *total
	for i := range owners {
		rest.Sub(&owners[i].Counts)
	}
	if rest.IsZero() {
		return owners
	}
	return append([]stream.OwnerCounts{{Counts: rest}}, owners...)
}

// unownedSeen reads and clears the kernel's flag for events on sockets of
// no known owner.
func (t *Tracer) unownedSeen() bool {
	v := t.coll.Variables[bpfVarUnownedSeen]
	var seen uint8
	if v == nil || v.Get(&seen) != nil || seen == 0 {
		return false
	}
	_ = v.Set(uint8(0))
	return true
}
