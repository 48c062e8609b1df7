package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
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
	daemon := b.tools[0]
	daemon.Name, daemon.Argv = tmDaemon, []string{b.bin, "-q", "--metrics-addr", "127.0.0.1:0"}
	daemon.ready, daemon.event, daemon.jsonArgv = regexp.MustCompile(`metrics on http`), nil, nil
	runs := []tool{b.tools[0], daemon}
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

// perHolder is how many connections one holder process keeps: both ends,
// so twice as many descriptors, within a hard limit of 20000 files (no
// CAP_SYS_RESOURCE to raise it).
const perHolder = 5000

// connections times the start with connections already open: the start
// names every socket's owner from the open files (iter/task_file), so its
// cost grows with the sockets. They are loopback connections that holder
// processes keep, both ends, until the step ends.
func (b *bench) connections(r *Results) error {
	var holders []*exec.Cmd
	defer func() {
		for _, h := range holders {
			h.Process.Kill()
			h.Wait()
		}
	}()
	tm := &b.tools[0]
	open := 0
	for _, n := range connectionCounts {
		for open < n {
			k := min(perHolder, n-open)
			h, err := startHolder(k)
			if err != nil {
				return err
			}
			holders = append(holders, h)
			open += k
		}
		s := StartupWith{Connections: n}
		var err error
		if s.Ms, s.MedianMs, err = b.timeStarts(tm); err != nil {
			return err
		}
		r.StartupWith = append(r.StartupWith, s)
		progress("exec -> attached with %d connections: %.0f ms", n, s.MedianMs)
	}
	return nil
}

// startHolder runs this program as a holder of n loopback connections and
// waits until they are open.
func startHolder(n int) (*exec.Cmd, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), roleEnv+"=conns", "TCPMEMTRACE_BENCH_CONNS="+strconv.Itoa(n))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "open" {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, fmt.Errorf("holding %d connections: %q %v", n, line, err)
	}
	return cmd, nil
}

// holdConnections is the holder: n connections to its own listener, both
// ends kept until it is killed.
func holdConnections(n int) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	conns := make([]net.Conn, 0, 2*n)
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
	fmt.Println("open")
	select {}
}
