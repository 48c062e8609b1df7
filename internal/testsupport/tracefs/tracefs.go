// Package tracefs counts a tracepoint's hits through an ftrace instance of
// its own, for the tests: ftrace records a hit whatever the task it fires
// on, so beside a BPF program on the same tracepoint it tells which hits no
// BPF program ran for. (The development VM's kernel runs no BPF program for
// a hit in interrupt context while a thread of its agent, PID 1, is current;
// ftrace records those.)
package tracefs

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// root is where tracefs is mounted; instances live under it.
const root = "/sys/kernel/tracing"

// Counter is one ftrace instance recording one event that passes a filter.
type Counter struct {
	dir, event string
}

// Hits is what a counter recorded: every hit, and the hits by the task
// that was current ("comm-pid", as ftrace names it). Overrun counts hits
// the instance's buffer had no room for: Total is short by that many.
type Hits struct {
	Total   int64
	ByTask  map[string]int64
	Overrun int64
}

// Start records event ("group/name", e.g. "tcp/tcp_send_reset") in a new
// instance, where filter (ftrace's syntax, e.g. "reason == 5"; "" for
// none) holds.
func Start(event, filter string) (*Counter, error) {
	if _, err := os.Stat(filepath.Join(root, "events", event)); err != nil {
		return nil, fmt.Errorf("tracefs: no event %s: %w", event, err)
	}
	dir := filepath.Join(root, "instances", fmt.Sprintf("tcpmemtrace-test-%d-%s", os.Getpid(), strings.ReplaceAll(event, "/", "-")))
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, fmt.Errorf("tracefs: %w", err)
	}
	c := &Counter{dir: dir, event: event}
	for _, w := range []struct{ file, value string }{
		{"buffer_size_kb", "4096"}, // a few hundred thousand hits per CPU
		{filepath.Join("events", event, "filter"), filter},
		{filepath.Join("events", event, "enable"), "1"},
	} {
		if w.value == "" {
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, w.file), []byte(w.value), 0); err != nil {
			c.remove()
			return nil, fmt.Errorf("tracefs: %s = %q: %w", w.file, w.value, err)
		}
	}
	return c, nil
}

// Stop stops recording, counts the hits and removes the instance; a nil
// counter counts nothing.
func (c *Counter) Stop() (Hits, error) {
	if c == nil {
		return Hits{}, errors.New("tracefs: no counter")
	}
	defer c.remove()
	if err := os.WriteFile(filepath.Join(c.dir, "events", c.event, "enable"), []byte("0"), 0); err != nil {
		return Hits{}, fmt.Errorf("tracefs: %w", err)
	}
	h := Hits{ByTask: map[string]int64{}}
	b, err := os.ReadFile(filepath.Join(c.dir, "trace"))
	if err != nil {
		return Hits{}, fmt.Errorf("tracefs: %w", err)
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		fields := strings.Fields(string(line))
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		h.Total++
		h.ByTask[taskName(fields[0])]++
	}
	cpus, _ := filepath.Glob(filepath.Join(c.dir, "per_cpu", "cpu*", "stats"))
	for _, f := range cpus {
		h.Overrun += statsField(f, "overrun")
	}
	return h, nil
}

// taskName is ftrace's "comm-pid" for a hit, with the comm read from /proc
// where ftrace kept none ("<...>-pid").
func taskName(task string) string {
	i := strings.LastIndex(task, "-") // a comm may hold dashes, a pid not
	if comm, pid := task[:max(i, 0)], task[i+1:]; comm == "<...>" {
		if b, err := os.ReadFile(filepath.Join("/proc", pid, "comm")); err == nil {
			return strings.TrimSpace(string(b)) + "-" + pid
		}
	}
	return task
}

// remove deletes the instance (tracefs removes its buffers with it).
func (c *Counter) remove() {
	os.Remove(c.dir)
}

// statsField reads one "name: value" line of a per-CPU stats file (0 if
// absent).
func statsField(path, name string) int64 {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		k, v, ok := strings.Cut(s.Text(), ":")
		if ok && k == name {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}
