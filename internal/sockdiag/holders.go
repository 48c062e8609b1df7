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
func Owners(root string) map[uint32]stream.Process { return ownersOf(root, nil) }

// ownersOf is Owners for the inodes in want only (nil: all), and stops
// reading fds once it has found them all: the walk of every process's fds
// is the expensive part of a look.
func ownersOf(root string, want map[uint32]bool) map[uint32]stream.Process {
	out := map[uint32]stream.Process{}
	procs, _ := os.ReadDir(root)
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		dir := filepath.Join(root, p.Name(), "fd")
		fds, _ := os.ReadDir(dir)
		comm := ""
		for _, fd := range fds {
			target, err := os.Readlink(filepath.Join(dir, fd.Name()))
			if err != nil || !strings.HasPrefix(target, "socket:[") {
				continue
			}
			ino64, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(target, "socket:["), "]"), 10, 32)
			ino := uint32(ino64)
			if err != nil || want != nil && !want[ino] {
				continue
			}
			if _, seen := out[ino]; seen {
				continue
			}
			if comm == "" {
				b, _ := os.ReadFile(filepath.Join(root, p.Name(), "comm"))
				comm = strings.TrimSpace(string(b))
			}
			out[ino] = stream.Process{PID: pid, Comm: comm}
		}
		if want != nil && len(out) == len(want) {
			break
		}
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
// the stalled sockets among them. Only sockets that hold memory count, and
// only their owners are looked for, so a machine whose queues are empty
// pays for the dumps alone, not for a walk of every process's fds.
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
	socks = holding(socks)
	want := make(map[uint32]bool, len(socks))
	for i := range socks {
		if socks[i].Inode != 0 {
			want[socks[i].Inode] = true
		}
	}
	owners := map[uint32]stream.Process{}
	if len(want) > 0 {
		owners = ownersOf("/proc", want)
	}
	return Holdings{Holders: Rank(socks, owners, n), Stalled: StalledSockets(socks, owners, MaxStalled)}, nil
}

// holding keeps the sockets whose queues hold memory (a stalled socket's
// receive queue does).
func holding(socks []Socket) []Socket {
	out := socks[:0]
	for _, s := range socks {
		if s.Mem.Queued() > 0 {
			out = append(out, s)
		}
	}
	return out
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
