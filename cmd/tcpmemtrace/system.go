package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
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
		if !netnsExists(uint32(n)) {
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

func netnsExists(ino uint32) bool {
	paths, _ := filepath.Glob("/proc/[0-9]*/ns/net")
	more, _ := filepath.Glob("/run/netns/*")
	for _, p := range append(paths, more...) {
		var st unix.Stat_t
		if unix.Stat(p, &st) == nil && uint32(st.Ino) == ino {
			return true
		}
	}
	return false
}
