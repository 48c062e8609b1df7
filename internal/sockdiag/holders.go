package sockdiag

import (
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/tcpmemtrace/tcpmemtrace/internal/netns"
	"github.com/tcpmemtrace/tcpmemtrace/stream"
)

// Owners maps socket inodes to a process with an fd on them, as `ss -p`
// does, reading root (a /proc).
func Owners(root string) map[uint32]stream.Process {
	out := map[uint32]stream.Process{}
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
		out[uint32(ino)] = stream.Process{PID: pid, Comm: comm}
	}
	return out
}

// Holdings is who holds TCP memory now, as one sock_diag pass over every
// network namespace sees it.
type Holdings struct {
	Holders []stream.Holder        // most queued memory first
	Stalled []stream.StalledSocket // at most MaxStalled, most queued memory first
}

// Holders sums the queued memory of every TCP socket, in every namespace
// it can enter, by owning process: the top n, most memory first; and lists
// the stalled sockets among them.
func Holders(n int) (Holdings, error) {
	var socks []Socket
	entered := 0
	for ino, path := range netns.List() {
		s, err := DumpNetns(path)
		if err != nil {
			continue // gone meanwhile, or not ours to enter
		}
		for i := range s {
			s[i].NetNS = ino
		}
		socks = append(socks, s...)
		entered++
	}
	if entered == 0 { // no CAP_SYS_ADMIN: our own
		s, err := Dump()
		if err != nil {
			return Holdings{}, err
		}
		for i := range s {
			s[i].NetNS = netns.Self()
		}
		socks = s
	}
	owners := Owners("/proc")
	return Holdings{Holders: Rank(socks, owners, n), Stalled: StalledSockets(socks, owners, MaxStalled)}, nil
}

// Rank sums sockets' queued memory by owner, most first, at most n, with
// each owner's stalled sockets (StallAge).
func Rank(socks []Socket, owners map[uint32]stream.Process, n int) []stream.Holder {
	by := map[int]*stream.Holder{}
	for i := range socks {
		s := &socks[i]
		p, ok := owners[s.Inode]
		if !ok || s.Inode == 0 {
			continue
		}
		h := by[p.PID]
		if h == nil {
			h = &stream.Holder{Process: p}
			by[p.PID] = h
		}
		h.Sockets++
		h.RecvBytes += uint64(s.Mem.RmemAlloc)
		h.SendBytes += uint64(s.Mem.WmemQueued)
		if age, stalled := s.StallAge(); stalled {
			// The shortest age: it has read none of them for at least that long.
			if ms := uint64(age.Milliseconds()); h.StalledSockets == 0 || ms < h.StalledMs {
				h.StalledMs = ms
			}
			h.StalledSockets++
			h.StalledBytes += uint64(s.Mem.RmemAlloc)
		}
	}
	out := make([]stream.Holder, 0, len(by))
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
