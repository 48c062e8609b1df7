package tracefs_test

import (
	"fmt"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tcpmemtrace/tcpmemtrace/internal/testsupport/privtest"
	"github.com/tcpmemtrace/tcpmemtrace/internal/testsupport/tracefs"
)

// A counter filtered on this thread sees exactly the getppid calls it
// made, by this task, and no other task's.
func TestCountsFilteredHits(t *testing.T) {
	privtest.Require(t)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tid := unix.Gettid()
	c, err := tracefs.Start("syscalls/sys_enter_getppid", fmt.Sprintf("common_pid == %d", tid))
	if err != nil {
		t.Skipf("no syscall events here: %v", err)
	}
	const calls = 1000
	for range calls {
		unix.Getppid()
	}
	h, err := c.Stop()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", h)
	if h.Total != calls || h.Overrun != 0 || len(h.ByTask) != 1 {
		t.Errorf("counted %d hits (%d overrun) by %v, want %d by this thread alone", h.Total, h.Overrun, h.ByTask, calls)
	}
	if _, err := c.Stop(); err == nil {
		t.Error("a stopped counter stopped again without an error")
	}
}

func TestUnknownEvent(t *testing.T) {
	privtest.Require(t)
	if _, err := tracefs.Start("tcp/no_such_event", ""); err == nil {
		t.Error("an unknown event started")
	}
}
