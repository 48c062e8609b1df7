package owner

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Mounts are where the cgroup hierarchies tcpmemtrace uses are mounted.
type Mounts struct {
	V2     string // the cgroup2 hierarchy: owners' cgroups (bpf_get_current_cgroup_id)
	Memory string // the memory controller's: sockets' memory cgroups (v1, or the v2 root)
}

// FindMounts reads /proc/self/mountinfo.
func FindMounts() (Mounts, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return Mounts{}, err
	}
	defer f.Close()
	var m Mounts
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root mountpoint opts... - fstype source superopts
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		pf, qf := strings.Fields(pre), strings.Fields(post)
		if len(pf) < 5 || len(qf) < 3 {
			continue
		}
		switch {
		case qf[0] == "cgroup2" && m.V2 == "":
			m.V2 = unescape(pf[4])
		case qf[0] == "cgroup" && hasOpt(qf[2], "memory") && m.Memory == "":
			m.Memory = unescape(pf[4])
		}
	}
	if m.Memory == "" {
		m.Memory = m.V2
	}
	if m.V2 == "" {
		return m, errors.New("no cgroup2 hierarchy is mounted")
	}
	return m, sc.Err()
}

func hasOpt(opts, want string) bool {
	for _, o := range strings.Split(opts, ",") {
		if o == want {
			return true
		}
	}
	return false
}

// unescape undoes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Resolver maps cgroup ids (the kernfs node id, which is the directory's
// inode number) to paths below one hierarchy's mount.
type Resolver struct {
	root     string
	mu       sync.Mutex
	paths    map[uint64]string
	lastScan time.Time
}

// NewResolver resolves ids below root; an empty root resolves nothing.
func NewResolver(root string) *Resolver {
	return &Resolver{root: root, paths: map[uint64]string{}}
}

// Path returns the cgroup's path relative to the hierarchy ("/" for the
// root), or "" when no such cgroup exists (any more). A miss rescans the
// tree at most once a second.
func (r *Resolver) Path(id uint64) string {
	if r == nil || r.root == "" || id == 0 {
		return ""
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if p, ok := r.paths[id]; ok {
		return p
	}
	if time.Since(r.lastScan) < time.Second {
		return ""
	}
	r.lastScan = time.Now()
	filepath.WalkDir(r.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		var st unix.Stat_t
		if unix.Stat(p, &st) == nil {
			rel := strings.TrimPrefix(p, r.root)
			if rel == "" {
				rel = "/"
			}
			r.paths[st.Ino] = rel
		}
		return nil
	})
	return r.paths[id]
}

// Selector is a --cgroup argument resolved: the cgroup and its depth below
// the root, which bpf_get_current_ancestor_cgroup_id() compares at.
type Selector struct {
	ID    uint64
	Level uint32
	Path  string // relative to the hierarchy
}

// Select resolves a cgroup v2 path (absolute, or relative to the hierarchy)
// or id; it must exist.
func Select(root, arg string) (Selector, error) {
	var rel string
	if id, err := strconv.ParseUint(arg, 10, 64); err == nil {
		rel = NewResolver(root).Path(id)
		if rel == "" {
			return Selector{}, fmt.Errorf("no cgroup with id %d under %s", id, root)
		}
	} else {
		p := arg
		if !strings.HasPrefix(p, root+"/") && p != root {
			p = filepath.Join(root, arg)
		}
		p = filepath.Clean(p)
		if !strings.HasPrefix(p+"/", root+"/") {
			return Selector{}, fmt.Errorf("%s is not below the cgroup2 mount %s", arg, root)
		}
		if fi, err := os.Stat(p); err != nil || !fi.IsDir() {
			return Selector{}, fmt.Errorf("no cgroup %s (looked for %s)", arg, p)
		}
		rel = strings.TrimPrefix(p, root)
		if rel == "" {
			rel = "/"
		}
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(root, rel), &st); err != nil {
		return Selector{}, err
	}
	level := uint32(0)
	if rel != "/" {
		level = uint32(strings.Count(strings.Trim(rel, "/"), "/") + 1)
	}
	return Selector{ID: st.Ino, Level: level, Path: rel}, nil
}

// ProcessCgroup is the cgroup v2 path of a process, as /proc/PID/cgroup
// gives it ("0::/path"); "" when the process is gone or has none.
func ProcessCgroup(procRoot string, pid int) string {
	b, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "cgroup"))
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(l, "0::"); ok {
			return p
		}
	}
	return ""
}
