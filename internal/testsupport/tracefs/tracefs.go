// Package tracefs counts a tracepoint's hits through an ftrace instance of
// its own, for the tests: ftrace records a hit whatever the task it fires
// on, so beside a BPF program on the same tracepoint it tells which hits no
// BPF program ran for. (The development VM's kernel runs no BPF program for
// a hit in interrupt context while a thread of its agent, PID 1, is current;
// ftrace records those.)
package tracefs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/tcpmemtrace/tcpmemtrace/internal/procfs"
)

// root is where tracefs is mounted; instances live under it.
const root = "/sys/kernel/tracing"

// prefix names this package's instances; the process's pid follows it.
const prefix = "tcpmemtrace-test-"

// Counter is one ftrace instance recording one event that passes a filter.
type Counter struct {
	dir, event string
}

// Hits is what a counter recorded: every hit, and the hits by the task
// that was current ("comm-pid").
type Hits struct {
	Total  int64
	ByTask map[string]int64
}

// Start records event ("group/name", e.g. "tcp/tcp_send_reset") in a new
// instance, where filter (ftrace's syntax, e.g. "reason == 5"; "" for
// none) holds.
func Start(event, filter string) (*Counter, error) {
	if _, err := os.Stat(filepath.Join(root, "events", event)); err != nil {
		return nil, fmt.Errorf("tracefs: no event %s: %w", event, err)
	}
	removeOrphans()
	dir := filepath.Join(root, "instances", fmt.Sprintf("%s%d-%s", prefix, os.Getpid(), strings.ReplaceAll(event, "/", "-")))
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, fmt.Errorf("tracefs: %w", err)
	}
	c := &Counter{dir: dir, event: event}
	settings := []struct{ file, value string }{{"buffer_size_kb", "4096"}} // a few hundred thousand hits per CPU
	// An instance starts with the top level's options: one line per hit,
	// in text, whatever they are.
	for opt, v := range map[string]string{"stacktrace": "0", "userstacktrace": "0", "raw": "0", "hex": "0", "bin": "0",
		"context-info": "1", "overwrite": "1"} {
		settings = append(settings, struct{ file, value string }{filepath.Join("options", opt), v})
	}
	if filter != "" {
		settings = append(settings, struct{ file, value string }{filepath.Join("events", event, "filter"), filter})
	}
	settings = append(settings, struct{ file, value string }{filepath.Join("events", event, "enable"), "1"})
	for _, w := range settings {
		if err := os.WriteFile(filepath.Join(dir, w.file), []byte(w.value), 0); err != nil && !(errors.Is(err, os.ErrNotExist) && strings.HasPrefix(w.file, "options")) {
			c.remove()
			return nil, fmt.Errorf("tracefs: %s = %q: %w", w.file, w.value, err)
		}
	}
	return c, nil
}

// Stop stops recording, counts the hits and removes the instance. It fails
// where the count is not whole: a hit the buffer had no room for, or lines
// that disagree with the buffer's own count.
func (c *Counter) Stop() (Hits, error) {
	if c == nil {
		return Hits{}, errors.New("tracefs: no counter")
	}
	defer c.remove()
	if err := os.WriteFile(filepath.Join(c.dir, "events", c.event, "enable"), []byte("0"), 0); err != nil {
		return Hits{}, fmt.Errorf("tracefs: %w", err)
	}
	b, err := os.ReadFile(filepath.Join(c.dir, "trace"))
	if err != nil {
		return Hits{}, fmt.Errorf("tracefs: %w", err)
	}
	h := Hits{ByTask: map[string]int64{}}
	for _, line := range bytes.Split(b, []byte("\n")) {
		// A hit's line: "comm-pid [cpu] flags timestamp: ..."; anything
		// else (comments, a stack trace's "=>" lines) is not a hit.
		f := strings.Fields(string(line))
		if len(f) < 2 || strings.HasPrefix(f[0], "#") || !strings.HasPrefix(f[1], "[") || !strings.HasSuffix(f[1], "]") {
			continue
		}
		h.Total++
		h.ByTask[taskName(f[0])]++
	}
	var entries int64
	cpus, _ := filepath.Glob(filepath.Join(c.dir, "per_cpu", "cpu*", "stats"))
	for _, f := range cpus {
		st, err := procfs.Fields(f, ":")
		if err != nil {
			return Hits{}, fmt.Errorf("tracefs: %w", err)
		}
		if lost := st["overrun"] + st["commit overrun"] + st["dropped events"]; lost != 0 {
			return Hits{}, fmt.Errorf("tracefs: %s: %d hits lost for room", c.event, lost)
		}
		entries += st["entries"]
	}
	if entries != h.Total {
		return Hits{}, fmt.Errorf("tracefs: %s: %d lines of hits, %d entries in the buffer", c.event, h.Total, entries)
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

// removeOrphans deletes the instances of test processes that are gone (a
// test binary killed before its cleanup), which would go on recording.
func removeOrphans() {
	dirs, _ := filepath.Glob(filepath.Join(root, "instances", prefix+"*"))
	for _, d := range dirs {
		pid, _, _ := strings.Cut(strings.TrimPrefix(filepath.Base(d), prefix), "-")
		if _, err := os.Stat(filepath.Join("/proc", pid)); errors.Is(err, os.ErrNotExist) {
			os.Remove(d)
		}
	}
}
