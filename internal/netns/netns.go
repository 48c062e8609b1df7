// Package netns finds the machine's network namespaces and runs code
// inside one: the two things every reader of per-namespace state needs.
package netns

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"golang.org/x/sys/unix"
)

// List finds every network namespace a process or /run/netns holds: a file
// to enter it by, per inode.
func List() map[uint32]string {
	out := map[uint32]string{}
	var paths []string
	procs, _ := os.ReadDir("/proc") // not a glob: that would read each process's ns directory too
	for _, p := range procs {
		if n := p.Name(); n[0] >= '0' && n[0] <= '9' {
			paths = append(paths, "/proc/"+n+"/ns/net")
		}
	}
	named, _ := filepath.Glob("/run/netns/*")
	for _, p := range append(paths, named...) {
		var st unix.Stat_t
		if unix.Stat(p, &st) == nil {
			if _, ok := out[uint32(st.Ino)]; !ok {
				out[uint32(st.Ino)] = p
			}
		}
	}
	return out
}

// Self is the inode of the caller's network namespace.
func Self() uint32 {
	var st unix.Stat_t
	unix.Stat("/proc/thread-self/ns/net", &st)
	return uint32(st.Ino)
}

// Do runs fn with its OS thread in the namespace at path (/proc/PID/ns/net),
// then puts the thread back. Sockets fn creates stay in that namespace;
// /proc/thread-self/net shows its files. Entering needs CAP_SYS_ADMIN.
func Do(path string, fn func() error) error {
	target, err := os.Open(path)
	if err != nil {
		return err
	}
	defer target.Close()
	runtime.LockOSThread()
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer self.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("entering %s: %w", path, err)
	}
	ferr := fn()
	if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
		// Stuck in another namespace: the locked thread ends with its
		// goroutine instead of running other Go code there.
		return fmt.Errorf("returning from %s: %w", path, err)
	}
	runtime.UnlockOSThread()
	return ferr
}
