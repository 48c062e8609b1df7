package tracer

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"
)

// ringWaiter parks the reader until the kernel wakes the ring buffer, a
// deadline passes or the trace ends, on Go's netpoller.
//
// Why not the ring buffer reader's own wait: it blocks a thread in
// epoll_wait. With the trace on one Go processor, every such block has the
// runtime's monitor take the processor back, which sets the monitor polling
// every 20 µs for a while: at 100k drops a second that was a quarter of the
// tool's CPU. A netpoller wait holds no processor, and an idle runtime lets
// the monitor sleep.
type ringWaiter struct {
	rd *ringbuf.Reader
	f  *os.File // a non-blocking duplicate of the ring buffer's map fd
	rc syscall.RawConn

	mu      sync.Mutex
	stopped bool
}

func newRingWaiter(m *ebpf.Map, rd *ringbuf.Reader) (*ringWaiter, error) {
	fd, err := unix.FcntlInt(uintptr(m.FD()), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	// A non-blocking fd that epoll takes goes to the netpoller.
	f := os.NewFile(uintptr(fd), "ringbuf")
	if err := f.SetReadDeadline(time.Time{}); err != nil {
		f.Close()
		return nil, fmt.Errorf("the ring buffer cannot be polled: %w", err)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &ringWaiter{rd: rd, f: f, rc: rc}, nil
}

// wait returns when records may be waiting, at deadline, or once stop has
// been called.
func (w *ringWaiter) wait(deadline time.Time) error {
	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		return nil
	}
	err := w.f.SetReadDeadline(deadline)
	w.mu.Unlock()
	if err != nil {
		return err
	}
	// The netpoller watches edges: a wake-up that came while records were
	// being read leaves a stale "ready", so look at the ring itself.
	err = w.rc.Read(func(uintptr) bool { return w.rd.AvailableBytes() > 0 })
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return nil
	}
	return err
}

// stop ends the current wait and makes later ones return at once.
func (w *ringWaiter) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
	_ = w.f.SetReadDeadline(time.Now())
}

func (w *ringWaiter) close() { w.f.Close() }
