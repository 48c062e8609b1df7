package main

import (
	"fmt"
	"net"
	"regexp"
	"syscall"
	"time"
)

// ---- idle ------------------------------------------------------------------

// IdleRun is a tool's CPU while nothing happens on the machine.
type IdleRun struct {
	Tool       string  `json:"tool"`
	Seconds    float64 `json:"seconds"`
	CPUPercent float64 `json:"cpu_percent"` // of one core
}

// tmDaemon is how a fleet runs tcpmemtrace: no terminal output, metrics.
const tmDaemon = "tcpmemtrace -q --metrics-addr"

// idle measures each way of running the tool, and bpftrace's count, over a
// quiet stretch: what it costs a machine it never finds anything on.
func (b *bench) idle(r *Results) error {
	runs := []tool{b.tools[0], {Name: tmDaemon, Argv: []string{b.bin, "-q", "--metrics-addr", "127.0.0.1:0"},
		ready: regexp.MustCompile(`metrics on http`)}}
	for _, t := range b.tools[1:] {
		if t.Name == "bpftrace count" {
			runs = append(runs, t)
		}
	}
	for i := range runs {
		t := &runs[i]
		run, err := start(t, t.Argv)
		if err != nil {
			return err
		}
		time.Sleep(2 * time.Second) // past the start's own work
		c0, err := cpuTime(run.pid())
		if err != nil {
			return err
		}
		t0 := time.Now()
		time.Sleep(b.idleTime)
		c1, err := cpuTime(run.pid())
		el := time.Since(t0)
		if serr := run.stop(); err == nil {
			err = serr
		}
		if err != nil {
			return err
		}
		r.Idle = append(r.Idle, IdleRun{Tool: t.Name, Seconds: el.Seconds(), CPUPercent: 100 * (c1 - c0).Seconds() / el.Seconds()})
	}
	return nil
}

// ---- start with many connections ---------------------------------------------

// StartupWith is exec -> attached with that many TCP connections open.
type StartupWith struct {
	Connections int       `json:"connections"`
	Ms          []float64 `json:"ms"`
	MedianMs    float64   `json:"median_ms"`
}

var connectionCounts = []int{0, 5000, 20000}

// connections times the start with connections already open: the start
// names every socket's owner from the open files (iter/task_file), so its
// cost grows with the sockets. They are loopback connections this process
// holds, both ends, closed at the end.
func (b *bench) connections(r *Results) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	need := uint64(2*connectionCounts[len(connectionCounts)-1] + 1024)
	if lim.Cur < need {
		raised := syscall.Rlimit{Cur: need, Max: max(lim.Max, need)}
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err != nil {
			return fmt.Errorf("raising the open files limit to %d: %w", need, err)
		}
		defer syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	tm := &b.tools[0]
	for _, n := range connectionCounts {
		for len(conns) < 2*n {
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				return fmt.Errorf("connection %d: %w", len(conns)/2, err)
			}
			a, err := ln.Accept()
			if err != nil {
				return err
			}
			conns = append(conns, c, a)
		}
		s := StartupWith{Connections: n}
		for range b.starts {
			run, err := start(tm, tm.Argv)
			if err != nil {
				return err
			}
			s.Ms = append(s.Ms, ms(run.ReadyIn))
			if err := run.stop(); err != nil {
				return err
			}
		}
		s.MedianMs = median(s.Ms)
		r.StartupWith = append(r.StartupWith, s)
		progress("exec -> attached with %d connections: %.0f ms", n, s.MedianMs)
	}
	return nil
}
