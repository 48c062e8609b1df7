// Package kmsg counts the kernel's TCP memory warnings in /dev/kmsg while the
// tracer runs, to show how many the printk rate limit let through.
package kmsg

import (
	"bytes"
	"errors"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Warning is one kernel message the tracer has an event count for.
type Warning struct {
	Key  string // "mem_aborts", ...
	Text string // as printed, without the "TCP: " prefix
}

// Warnings are the lines the kernel prints for memory aborts. Both go through
// net_info_ratelimited(): net.core.message_burst lines per message_cost.
var Warnings = []Warning{
	{Key: "mem_aborts", Text: "out of memory -- consider tuning tcp_mem"},
	{Key: "orphan_aborts", Text: "too many orphaned sockets"},
}

// LegacyWarning is what kernels before 3.6 printed for either abort,
// without the "TCP: " prefix: guides still quote it, and a kernel this tool
// runs on (5.10 and later) prints the two Warnings above instead.
const LegacyWarning = "Out of socket memory"

// LegacyNote says what LegacyWarning became, for people who grep for it.
const LegacyNote = `kernels before 3.6 printed both as "` + LegacyWarning + `"`

// Counts is what was read since Start.
type Counts struct {
	Lines map[string]int // by Warning.Key
	// Suppressed sums "net_ratelimit: N callbacks suppressed": the lines the
	// shared net rate limiter dropped, for any networking message.
	Suppressed int
}

// Watcher reads /dev/kmsg from the moment it starts.
type Watcher struct {
	f    *os.File
	mu   sync.Mutex
	c    Counts
	done chan struct{}
}

// Start opens /dev/kmsg at its end. It needs CAP_SYSLOG unless
// kernel.dmesg_restrict is 0.
func Start() (*Watcher, error) {
	f, err := os.OpenFile("/dev/kmsg", os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	if _, err := f.Seek(0, 2); err != nil {
		f.Close()
		return nil, err
	}
	w := &Watcher{f: f, c: Counts{Lines: map[string]int{}}, done: make(chan struct{})}
	go w.loop()
	return w, nil
}

func (w *Watcher) loop() {
	defer close(w.done)
	buf := make([]byte, 8192) // one record per read; records are < 1 KiB
	for {
		n, err := w.f.Read(buf)
		if err != nil {
			if errors.Is(err, syscall.EPIPE) { // overwritten records: go on
				continue
			}
			return // closed
		}
		w.add(buf[:n])
	}
}

func (w *Watcher) add(rec []byte) {
	_, msg, ok := bytes.Cut(rec, []byte(";"))
	if !ok {
		return
	}
	if i := bytes.IndexByte(msg, '\n'); i >= 0 { // continuation lines follow
		msg = msg[:i]
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if k, ok := Match(msg); ok {
		w.c.Lines[k]++
		return
	}
	if n, ok := suppressed(msg); ok {
		w.c.Suppressed += n
	}
}

// Match tells which warning a message line is.
func Match(msg []byte) (string, bool) {
	rest, ok := bytes.CutPrefix(msg, []byte("TCP: "))
	if !ok {
		return "", false
	}
	for _, wn := range Warnings {
		if bytes.Equal(bytes.TrimSpace(rest), []byte(wn.Text)) {
			return wn.Key, true
		}
	}
	return "", false
}

func suppressed(msg []byte) (int, bool) {
	rest, ok := bytes.CutPrefix(msg, []byte("net_ratelimit: "))
	if !ok {
		return 0, false
	}
	num, _, ok := bytes.Cut(rest, []byte(" callbacks suppressed"))
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(string(num))
	return n, err == nil
}

// Stop reads what is already in the log (printk stores a line before the
// kernel goes on, so every warning of a traced event is there), then ends.
func (w *Watcher) Stop() Counts {
	// Past the deadline, Read still returns records until the log is drained.
	if err := w.f.SetReadDeadline(time.Now()); err != nil {
		w.f.Close()
	}
	<-w.done
	w.f.Close()
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.c
}
