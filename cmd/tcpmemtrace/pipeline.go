package main

import (
	"context"

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
}

// run streams every record through keep, then show, until the source ends
// or one of them fails.
func (p pipeline) run(ctx context.Context, show func(stream.Record) error) error {
	return p.src.Run(ctx, func(r stream.Record) error {
		for _, k := range p.keep {
			if err := k(r); err != nil {
				return err
			}
		}
		return show(r)
	})
}

// stopKernelLog ends the kernel log comparison, if there is one.
func (p pipeline) stopKernelLog() (kmsg.Counts, bool) {
	if p.kernelLog == nil {
		return kmsg.Counts{}, false
	}
	return p.kernelLog.Stop(), true
}
