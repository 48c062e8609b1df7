package netns

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

func TestListHasOurs(t *testing.T) {
	if _, ok := List()[Self()]; !ok {
		t.Errorf("our namespace %d is not listed", Self())
	}
}

// Entering the namespace one is in is allowed to root only, and leaves the
// thread where it was.
func TestDoComesBack(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("entering a namespace needs CAP_SYS_ADMIN (root)")
	}
	before := Self()
	var inside uint32
	if err := Do("/proc/self/ns/net", func() error { inside = Self(); return nil }); err != nil {
		t.Fatal(err)
	}
	if inside != before || Self() != before {
		t.Errorf("inside %d, after %d, want %d", inside, Self(), before)
	}
	if err := Do("/nonexistent", func() error { return nil }); err == nil {
		t.Error("a missing namespace file was entered")
	}
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/net", &st); err != nil || uint32(st.Ino) != before {
		t.Errorf("process namespace moved: %v %d", err, st.Ino)
	}
}
