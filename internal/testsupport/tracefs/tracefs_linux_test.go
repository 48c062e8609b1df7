package tracefs_test

import (
	"fmt"
	"os"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tcpmemtrace/tcpmemtrace/internal/testsupport/privtest"
	"github.com/tcpmemtrace/tcpmemtrace/internal/testsupport/tracefs"
)

// A counter filtered on this thread sees exactly the getppid calls it
// made, by this task, and no other task's, whatever the top level's
// options (a stack trace per hit adds lines that are not hits).
func TestCountsFilteredHits(t *testing.T) {
	privtest.Require(t)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tid := unix.Gettid()
	const stacks = "/sys/kernel/tracing/options/stacktrace"
	if old, err := os.ReadFile(stacks); err == nil {
		os.WriteFile(stacks, []byte("1"), 0)
		defer os.WriteFile(stacks, old, 0)
	}
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
	if h.Total != calls || len(h.ByTask) != 1 {
		t.Errorf("counted %d hits by %v, want %d by this thread alone", h.Total, h.ByTask, calls)
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
