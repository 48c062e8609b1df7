package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/tcpmemtrace/tcpmemtrace/internal/netns"
	"github.com/tcpmemtrace/tcpmemtrace/internal/owner"
	"github.com/tcpmemtrace/tcpmemtrace/tracer"
)

const (
	capSysAdmin = 21
	capPerfmon  = 38
	capBPF      = 39
)

var errPrivileges = errors.New("needs root, or the capabilities CAP_BPF and CAP_PERFMON " +
	"(and CAP_SYSLOG for the kernel log): run it with sudo")

// checkPrivileges tells, before anything is loaded, what is missing.
func checkPrivileges() error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("reading capabilities: %w", err)
	}
	has := func(c uint) bool { return data[c/32].Effective&(1<<(c%32)) != 0 }
	if has(capSysAdmin) || (has(capBPF) && has(capPerfmon)) {
		return nil
	}
	return errPrivileges
}

// netnsInode resolves --netns: an inode number, a namespace file
// (/proc/PID/ns/net), or a name under /run/netns.
func netnsInode(arg string) (uint32, error) {
	if n, err := strconv.ParseUint(arg, 10, 32); err == nil {
		if _, ok := netns.List()[uint32(n)]; !ok {
			return 0, fmt.Errorf("no network namespace with inode %d (no process or /run/netns entry uses it)", n)
		}
		return uint32(n), nil
	}
	p := arg
	if !strings.Contains(arg, "/") {
		p = filepath.Join("/run/netns", arg)
	}
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		return 0, fmt.Errorf("%s: %w", p, err)
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(p, &fs); err == nil && fs.Type != unix.NSFS_MAGIC && fs.Type != unix.PROC_SUPER_MAGIC {
		return 0, fmt.Errorf("%s is not a namespace file", p)
	}
	return uint32(st.Ino), nil
}

// resolveFilters checks the filters against the running system: an unknown
// process, command or cgroup is an error, not a silent empty trace.
func resolveFilters(o options, cfg *tracer.Config) error {
	if o.netns != "" {
		ino, err := netnsInode(o.netns)
		if err != nil {
			return fmt.Errorf("--netns: %w", err)
		}
		cfg.NetNS = ino
	}
	for _, pid := range o.pids {
		tgid, err := processTgid(pid)
		if err != nil {
			return fmt.Errorf("--pid: %w", err)
		}
		if !slices.Contains(cfg.PIDs, tgid) {
			cfg.PIDs = append(cfg.PIDs, tgid)
		}
	}
	if o.comm != "" {
		if !commRunning(o.comm) {
			return fmt.Errorf("--comm: no process is named %q", o.comm)
		}
		cfg.Comm = o.comm
	}
	if o.cgroup != "" {
		m, err := owner.FindMounts()
		if err != nil {
			return fmt.Errorf("--cgroup: %w", err)
		}
		sel, err := owner.Select(m.V2, o.cgroup)
		if err != nil {
			return fmt.Errorf("--cgroup: %w", err)
		}
		cfg.Cgroup = &tracer.CgroupFilter{ID: sel.ID, Level: sel.Level, Path: sel.Path}
	}
	return nil
}

// processTgid checks that pid exists and returns its process (thread group)
// id: sockets belong to processes, and a thread id would match nothing.
func processTgid(pid int) (uint32, error) {
	if pid <= 0 {
		return 0, fmt.Errorf("%d is not a process id", pid)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("no process with PID %d", pid)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Tgid:"); ok {
			tgid, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32)
			if err != nil {
				break
			}
			return uint32(tgid), nil
		}
	}
	return 0, fmt.Errorf("PID %d: no Tgid in /proc/%d/status", pid, pid)
}

// commRunning reports whether a process has this command name (as the
// kernel keeps it: 15 bytes).
func commRunning(comm string) bool {
	if len(comm) > 15 {
		comm = comm[:15]
	}
	paths, _ := filepath.Glob("/proc/[0-9]*/comm")
	for _, p := range paths {
		if b, err := os.ReadFile(p); err == nil && strings.TrimSuffix(string(b), "\n") == comm {
			return true
		}
	}
	return false
}

// ensureTracefs mounts tracefs when neither usual place has it: classic
// tracepoints are attached through their ids there. The returned function
// unmounts what this process mounted.
func ensureTracefs(stderr io.Writer) (unmount func()) {
	for _, p := range []string{"/sys/kernel/tracing/events", "/sys/kernel/debug/tracing/events"} {
		if _, err := os.Stat(p); err == nil {
			return func() {}
		}
	}
	const at = "/sys/kernel/tracing"
	if err := unix.Mount("tracefs", at, "tracefs", 0, ""); err != nil {
		fmt.Fprintf(stderr, "tcpmemtrace: tracefs is not mounted and mounting it at %s failed (%v): listening and accepted sockets get their owner from the open files, up to a second late\n", at, err)
		return func() {}
	}
	return func() { _ = unix.Unmount(at, 0) }
}

// pipeOut is stdout when it is a pipe: the trace ends as soon as the
// pipe's reader goes away (`| head -1`), rather than at its next write,
// which may be long after, with every program still attached. What is
// left to write after that goes nowhere.
type pipeOut struct {
	f      *os.File
	closed atomic.Bool
}

// watchPipe returns w, or, if w is a pipe, a pipeOut that calls stop when
// the pipe's reader is gone.
func watchPipe(w io.Writer, stop context.CancelFunc) io.Writer {
	f, ok := w.(*os.File)
	if !ok {
		return w
	}
	var st unix.Stat_t
	if unix.Fstat(int(f.Fd()), &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
		return w
	}
	signal.Ignore(syscall.SIGPIPE) // a write to it then fails with EPIPE rather than killing us
	p := &pipeOut{f: f}
	go func() {
		fds := []unix.PollFd{{Fd: int32(f.Fd())}} // POLLERR comes whatever the events asked
		for {
			n, err := unix.Poll(fds, -1)
			if err == unix.EINTR {
				continue
			}
			if err != nil || (n > 0 && fds[0].Revents&(unix.POLLERR|unix.POLLHUP) != 0) {
				p.closed.Store(true)
				stop()
				return
			}
		}
	}()
	return p
}

func (p *pipeOut) Write(b []byte) (int, error) {
	if p.closed.Load() {
		return len(b), nil
	}
	n, err := p.f.Write(b)
	if errors.Is(err, syscall.EPIPE) {
		p.closed.Store(true)
		return len(b), nil
	}
	return n, err
}
