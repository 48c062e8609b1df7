// Package diagnose does the manual TCP-memory procedure read-only, without
// BPF: socket memory against tcp_mem (in pages and bytes), orphans against
// tcp_max_orphans, TIME-WAIT, worst-case buffer demand, the kernel's
// counters since boot in every network namespace, the sockets and
// processes holding the memory (sock_diag, as `ss -tmp`), then a verdict
// and the remedies that fit this machine.
package diagnose

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpmemtrace/tcpmemtrace/internal/ctrnames"
	"github.com/tcpmemtrace/tcpmemtrace/internal/netns"
	"github.com/tcpmemtrace/tcpmemtrace/internal/owner"
	"github.com/tcpmemtrace/tcpmemtrace/internal/procfs"
	"github.com/tcpmemtrace/tcpmemtrace/internal/sockdiag"
	"github.com/tcpmemtrace/tcpmemtrace/stream"
)

// Input is everything diagnose reads: gathered live, or from a fixture tree.
type Input struct {
	Hostname     string
	Kernel       string
	PageSize     int64
	MemTotal     int64 // bytes
	MemAvailable int64
	TCPMem       [3]int64 // pages
	TCPRmem      [3]int64 // bytes
	TCPWmem      [3]int64
	MaxOrphans   int64
	MaxTWBuckets int64
	TWReuse      int64
	// MemPages and Orphans are global (sockstat's "mem" and "orphan").
	MemPages   int64
	Orphans    int64
	Namespaces []Namespace
	// Owners maps socket inodes to a process holding them.
	Owners map[uint32]stream.Process
	// Places says where each owning process lives, by PID.
	Places map[int]Place
	// Notes say what could not be read (no root: one namespace, own processes).
	Notes []string
}

// Namespace is one network namespace's per-namespace figures.
type Namespace struct {
	Inode    uint32
	InUse    int64 // TCP sockets in use, IPv4 ("TCP: inuse") + IPv6 ("TCP6: inuse")
	TW       int64
	Counters procfs.Counters
	Sockets  []sockdiag.Socket
}

// Process is a socket's owner.
type Process = stream.Process

// Place is where a process lives: its cgroup v2, and the container, pod
// or unit that cgroup belongs to, with the runtime's names when it gave
// them.
type Place struct {
	CgroupPath string            `json:"cgroup,omitempty"`
	Container  *stream.Container `json:"container,omitempty"`
}

// namesWait bounds how long diagnose waits for container runtimes in all:
// a runtime that is down costs the names, not the report.
const namesWait = 2 * time.Second

// Gather reads the running machine. With CAP_SYS_ADMIN it enters every
// network namespace; otherwise it reads the caller's only. names, when not
// nil, names the owners' containers.
func Gather(names ctrnames.Namer) (*Input, error) {
	in, err := readGlobals("/proc")
	if err != nil {
		return nil, err
	}
	in.Hostname, _ = os.Hostname()
	in.PageSize = int64(os.Getpagesize())
	var refused error
	for ino, path := range netns.List() {
		ns, err := readNetns(path)
		switch {
		case errors.Is(err, unix.EPERM):
			refused = err
		case errors.Is(err, os.ErrNotExist), errors.Is(err, unix.ESRCH): // gone meanwhile
		case err != nil:
			in.Notes = append(in.Notes, fmt.Sprintf("network namespace %d: %v", ino, err))
		default:
			ns.Inode = ino
			in.Namespaces = append(in.Namespaces, ns)
		}
	}
	if len(in.Namespaces) == 0 { // no setns: our own
		ns, err := readNetnsFiles("/proc/self/net")
		if err != nil {
			return nil, err
		}
		ns.Sockets, err = sockdiag.Dump()
		if err != nil {
			in.Notes = append(in.Notes, "sockets: "+err.Error())
		}
		ns.Inode = netns.Self()
		in.Namespaces = append(in.Namespaces, ns)
		in.Notes = append(in.Notes, fmt.Sprintf("other network namespaces could not be entered (%v; it needs CAP_SYS_ADMIN): only this one was read", refused))
	}
	sort.Slice(in.Namespaces, func(i, j int) bool { return in.Namespaces[i].Inode < in.Namespaces[j].Inode })
	in.Owners = sockdiag.Owners("/proc")
	in.Places = places("/proc", in.Owners, names)
	return in, nil
}

// places finds where the owning processes live, and what their runtimes
// call their containers (each container asked once, all within namesWait).
func places(procRoot string, owners map[uint32]stream.Process, names ctrnames.Namer) map[int]Place {
	out := map[int]Place{}
	named := map[stream.Container]stream.Container{}
	ctx, cancel := context.WithTimeout(context.Background(), namesWait)
	defer cancel()
	for _, p := range owners {
		if _, done := out[p.PID]; done {
			continue
		}
		pl := Place{CgroupPath: owner.ProcessCgroup(procRoot, p.PID)}
		if c, ok := owner.ParseContainer(pl.CgroupPath); ok {
			if n, seen := named[c]; seen {
				c = n
			} else if names != nil && ctrnames.WorthAsking(c.Runtime, c.ID, c.Pod) && ctx.Err() == nil {
				key := c
				if n, ok := names.Lookup(ctx, c.Runtime, c.ID, c.Pod); ok {
					c.Name, c.PodName, c.Namespace = n.Name, n.Pod, n.Namespace
				}
				named[key] = c
			}
			pl.Container = &c
		}
		out[p.PID] = pl
	}
	return out
}

// readGlobals reads the machine-wide files below root (a /proc).
func readGlobals(root string) (*Input, error) {
	in := &Input{PageSize: 4096}
	var errs []error
	must := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	triple := func(name string) [3]int64 {
		v, err := procfs.TripleFile(filepath.Join(root, "sys/net/ipv4", name))
		must(err)
		return v
	}
	in.TCPMem, in.TCPRmem, in.TCPWmem = triple("tcp_mem"), triple("tcp_rmem"), triple("tcp_wmem")
	var err error
	in.MaxOrphans, err = procfs.IntFile(filepath.Join(root, "sys/net/ipv4/tcp_max_orphans"))
	must(err)
	in.MaxTWBuckets, _ = procfs.IntFile(filepath.Join(root, "sys/net/ipv4/tcp_max_tw_buckets"))
	in.TWReuse, _ = procfs.IntFile(filepath.Join(root, "sys/net/ipv4/tcp_tw_reuse"))
	if b, err := os.ReadFile(filepath.Join(root, "sys/kernel/osrelease")); err == nil {
		in.Kernel = strings.TrimSpace(string(b))
	}
	mem, err := procfs.Fields(filepath.Join(root, "meminfo"), ":")
	must(err)
	in.MemTotal, in.MemAvailable = mem["MemTotal"]*1024, mem["MemAvailable"]*1024
	st, err := procfs.Sockstat(filepath.Join(root, "net/sockstat"))
	must(err)
	in.MemPages, in.Orphans = st["TCP mem"], st["TCP orphan"]
	return in, errors.Join(errs...)
}

// readNetnsFiles reads one namespace's sockstat(6) and MIB files from dir
// (a /proc/.../net directory).
func readNetnsFiles(dir string) (Namespace, error) {
	var ns Namespace
	st, err := procfs.Sockstat(filepath.Join(dir, "sockstat"))
	if err != nil {
		return ns, err
	}
	st6, _ := procfs.Sockstat(filepath.Join(dir, "sockstat6"))
	ns.InUse, ns.TW = st["TCP inuse"]+st6["TCP6 inuse"], st["TCP tw"]
	ns.Counters = procfs.Counters{}
	for _, f := range []string{"netstat", "snmp"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			return ns, err
		}
		if err := procfs.ParseMIB(b, ns.Counters); err != nil {
			return ns, err
		}
	}
	return ns, nil
}

// readNetns enters a namespace on a locked thread just long enough to read
// its files through /proc/thread-self and open a sock_diag socket.
func readNetns(path string) (Namespace, error) {
	var ns Namespace
	err := netns.Do(path, func() error {
		var err error
		ns, err = readNetnsFiles("/proc/thread-self/net")
		return err
	})
	if err != nil {
		return ns, err
	}
	ns.Sockets, err = sockdiag.DumpNetns(path)
	return ns, err
}

// GatherFixture reads a fixture tree: /proc-like globals at the top,
// netns/<inode>/{sockstat,sockstat6,netstat,snmp,sockets.json} and
// owners.json (socket inode -> process) and places.json (PID -> cgroup
// and container).
func GatherFixture(dir string) (*Input, error) {
	in, err := readGlobals(dir)
	if err != nil {
		return nil, err
	}
	in.Hostname, in.PageSize = "fixture", 4096
	nsDirs, _ := filepath.Glob(filepath.Join(dir, "netns", "*"))
	for _, d := range nsDirs {
		ns, err := readNetnsFiles(d)
		if err != nil {
			return nil, err
		}
		ino, _ := strconv.ParseUint(filepath.Base(d), 10, 32)
		ns.Inode = uint32(ino)
		if b, err := os.ReadFile(filepath.Join(d, "sockets.json")); err == nil {
			if err := json.Unmarshal(b, &ns.Sockets); err != nil {
				return nil, fmt.Errorf("%s/sockets.json: %w", d, err)
			}
		}
		in.Namespaces = append(in.Namespaces, ns)
	}
	in.Owners, in.Places = map[uint32]stream.Process{}, map[int]Place{}
	for name, v := range map[string]any{"owners.json": &in.Owners, "places.json": &in.Places} {
		if b, err := os.ReadFile(filepath.Join(dir, name)); err == nil {
			if err := json.Unmarshal(b, v); err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
		}
	}
	return in, nil
}
