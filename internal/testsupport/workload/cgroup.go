package workload

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/tcpmemtrace/tcpmemtrace/internal/owner"
)

// MakeCgroup creates an empty cgroup v2 child of the root for a test and
// returns its absolute path and its path in the hierarchy. remove deletes
// it once its processes are gone.
func MakeCgroup(name string) (abs, rel string, remove func() error, err error) {
	m, err := owner.FindMounts()
	if err != nil {
		return "", "", nil, err
	}
	rel = fmt.Sprintf("/%s-%d", name, os.Getpid())
	abs = filepath.Join(m.V2, rel)
	if err := os.Mkdir(abs, 0o755); err != nil {
		return "", "", nil, err
	}
	remove = func() error { return removeWhenEmpty(abs) }
	return abs, rel, remove, nil
}

// MakeMemcgV1 creates a cgroup v1 memory-controller child whose TCP memory
// (memory.kmem.tcp.limit_in_bytes) is limited to limit bytes: writing the
// limit is what turns on its socket accounting. It fails where the v1
// memory controller is not mounted or has no TCP accounting.
func MakeMemcgV1(name string, limit int64) (abs string, remove func() error, err error) {
	m, err := owner.FindMounts()
	if err != nil {
		return "", nil, err
	}
	if m.Memory == "" || m.Memory == m.V2 {
		return "", nil, fmt.Errorf("no cgroup v1 memory controller is mounted")
	}
	abs = filepath.Join(m.Memory, fmt.Sprintf("%s-%d", name, os.Getpid()))
	if err := os.Mkdir(abs, 0o755); err != nil {
		return "", nil, err
	}
	remove = func() error { return removeWhenEmpty(abs) }
	if err := os.WriteFile(filepath.Join(abs, "memory.kmem.tcp.limit_in_bytes"), []byte(fmt.Sprint(limit)), 0); err != nil {
		remove()
		return "", nil, fmt.Errorf("limiting TCP memory of %s: %w", abs, err)
	}
	return abs, remove, nil
}

// removeWhenEmpty removes a cgroup once its last process has left.
func removeWhenEmpty(dir string) error {
	var err error
	for range 50 {
		if err = os.Remove(dir); err == nil || os.IsNotExist(err) {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}
