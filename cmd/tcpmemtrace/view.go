package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"

	"github.com/tcpmemtrace/tcpmemtrace/internal/aggregate"
	"github.com/tcpmemtrace/tcpmemtrace/internal/render"
	"github.com/tcpmemtrace/tcpmemtrace/internal/tui"
	"github.com/tcpmemtrace/tcpmemtrace/stream"
)

// view runs the full-screen live view over a source until the viewer quits
// or ctx ends (SIGINT, SIGTERM, -d), then prints the usual summary.
// bubbletea restores the terminal on every way out, panics in the view
// included; a panic in the stream is turned into an error for the same.
func view(ctx context.Context, p pipeline, o output) error {
	out := o.w.(*os.File) // a terminal
	info := p.src.Info()
	shared := tui.NewShared(tui.NewState(info))
	replay := o.replay
	model := tui.NewModel(shared, o.interval, lipgloss.NewRenderer(out), replay)
	// Signals end ctx (main's NotifyContext); bubbletea's own handler would
	// race it and can hang on a program already shutting down.
	prog := tea.NewProgram(model, tea.WithAltScreen(), tea.WithOutput(out), tea.WithContext(ctx), tea.WithoutSignalHandler())

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		var err error
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("panic: %v\n%s", r, debug.Stack())
				prog.Quit()
			}
			done <- err
			prog.Send(tui.Ended{Err: err})
		}()
		var first time.Time
		began := time.Now()
		show := func(r stream.Record) error {
			if o.realtime && r.Snapshot != nil { // a replay at its recorded pace
				if first.IsZero() {
					first = r.Snapshot.Time
				}
				select {
				case <-time.After(time.Until(began.Add(r.Snapshot.Time.Sub(first)))):
				case <-runCtx.Done():
				}
			}
			shared.Update(func(s *tui.State) { s.Add(r) })
			return nil
		}
		err = p.run(runCtx, show)
		if eerr := p.end(show); err == nil {
			err = eerr
		}
	}()
	_, perr := prog.Run()
	if errors.Is(perr, tea.ErrProgramKilled) && ctx.Err() != nil {
		perr = nil // a signal or -d: the terminal is restored, go on to the summary
	}
	cancel()
	err := <-done
	if perr != nil {
		return errors.Join(fmt.Errorf("the view: %w", perr), err)
	}
	var sum aggregate.Summary // the view's own fold of the stream
	kl, hasKernelLog := p.stopKernelLog()
	shared.Update(func(s *tui.State) {
		if hasKernelLog {
			s.SetKernelLog(kl)
		}
		sum = s.Summary()
	})
	if err != nil {
		return err
	}
	return render.NewText(out, o.by).Summary(info, sum)
}
