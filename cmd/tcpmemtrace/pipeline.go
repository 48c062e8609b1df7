package main

import (
	"context"

	"github.com/tcpmemtrace/tcpmemtrace/internal/flight"
	"github.com/tcpmemtrace/tcpmemtrace/internal/kmsg"
	"github.com/tcpmemtrace/tcpmemtrace/stream"
)

// pipeline is one source and what sees every record before it is shown:
// the recorder, the metrics. The line stream and the view each run it with
// the function that shows a record.
type pipeline struct {
	src  stream.Source
	keep []func(stream.Record) error
	// kernelLog, when readable, counts the kernel's warnings meanwhile.
	kernelLog *kmsg.Watcher
	// flight, when on, writes files beside the trace and says so in
	// notices, shown between records.
	flight *flight.Recorder
}

// run streams every record through keep, then show, until the source ends
// or one of them fails; the notices waiting are shown after each record.
func (p pipeline) run(ctx context.Context, show func(stream.Record) error) error {
	return p.src.Run(ctx, func(r stream.Record) error {
		for _, k := range p.keep {
			if err := k(r); err != nil {
				return err
			}
		}
		if err := show(r); err != nil {
			return err
		}
		if p.flight == nil {
			return nil
		}
		for {
			select {
			case n := <-p.flight.Notices():
				if err := show(stream.Record{Notice: &n}); err != nil {
					return err
				}
			default:
				return nil
			}
		}
	})
}

// end finishes what writes beside the trace once the source has ended: a
// flight recording under way is cut short and written; its last notices
// are shown.
func (p pipeline) end(show func(stream.Record) error) error {
	if p.flight == nil {
		return nil
	}
	p.flight.Close()
	var err error
	for n := range p.flight.Notices() {
		if err == nil {
			err = show(stream.Record{Notice: &n})
		}
	}
	return err
}

// stopKernelLog ends the kernel log comparison, if there is one.
func (p pipeline) stopKernelLog() (kmsg.Counts, bool) {
	if p.kernelLog == nil {
		return kmsg.Counts{}, false
	}
	return p.kernelLog.Stop(), true
}
