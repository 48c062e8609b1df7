package sockdiag

import (
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Process is a socket's owner.
type Process struct {
	PID  int    `json:"pid"`
	Comm string `json:"comm"`
}

// Holder is a process and the memory its sockets' queues hold.
type Holder struct {
	Process
	Sockets   int    `json:"sockets"`
	RecvBytes uint64 `json:"recv_queue_bytes"`
	SendBytes uint64 `json:"send_queue_bytes"`
}

// Namespaces finds every network namespace: a file to enter it by, per
// inode, from the processes and /run/netns. Empty unless root (entering
// needs CAP_SYS_ADMIN).
func Namespaces() map[uint32]string {
	if os.Geteuid() != 0 {
		return nil
	}
	out := map[uint32]string{}
	paths, _ := filepath.Glob("/proc/[0-9]*/ns/net")
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

// Owners maps socket inodes to a process with an fd on them, as `ss -p`
// does, reading root (a /proc).
func Owners(root string) map[uint32]Process {
	out := map[uint32]Process{}
	fds, _ := filepath.Glob(filepath.Join(root, "[0-9]*/fd/*"))
	comms := map[int]string{}
	for _, fd := range fds {
		target, err := os.Readlink(fd)
		if err != nil || !strings.HasPrefix(target, "socket:[") {
			continue
		}
		ino, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(target, "socket:["), "]"), 10, 32)
		if err != nil {
			continue
		}
		if _, seen := out[uint32(ino)]; seen {
			continue
		}
		pid, _ := strconv.Atoi(strings.Split(strings.TrimPrefix(fd, root+"/"), "/")[0])
		comm, ok := comms[pid]
		if !ok {
			b, _ := os.ReadFile(filepath.Join(root, strconv.Itoa(pid), "comm"))
			comm = strings.TrimSpace(string(b))
			comms[pid] = comm
		}
		out[uint32(ino)] = Process{PID: pid, Comm: comm}
	}
	return out
}

// Holders sums the queued memory of every TCP socket, in every namespace
// it can enter, by owning process: the top n, most memory first.
func Holders(n int) ([]Holder, error) {
	var socks []Socket
	nss := Namespaces()
	for _, path := range nss {
		s, err := DumpNetns(path)
		if err != nil {
			continue // gone meanwhile
		}
		socks = append(socks, s...)
	}
	if len(nss) == 0 {
		s, err := Dump()
		if err != nil {
			return nil, err
		}
		socks = s
	}
	return Rank(socks, Owners("/proc"), n), nil
}

// Rank sums sockets' queued memory by owner, most first, at most n.
func Rank(socks []Socket, owners map[uint32]Process, n int) []Holder {
	by := map[int]*Holder{}
	for _, s := range socks {
		p, ok := owners[s.Inode]
		if !ok || s.Inode == 0 {
			continue
		}
		h := by[p.PID]
		if h == nil {
			h = &Holder{Process: p}
			by[p.PID] = h
		}
		h.Sockets++
		h.RecvBytes += uint64(s.Mem.RmemAlloc)
		h.SendBytes += uint64(s.Mem.WmemQueued)
	}
	out := make([]Holder, 0, len(by))
	for _, h := range by {
		out = append(out, *h)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].RecvBytes+out[i].SendBytes, out[j].RecvBytes+out[j].SendBytes
		if a != b {
			return a > b
		}
		return out[i].PID < out[j].PID
	})
	return out[:min(n, len(out))]
}
