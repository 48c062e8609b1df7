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
	remove = func() error {
		var err error
		for range 50 { // the last process may take a moment to leave
			if err = os.Remove(abs); err == nil || os.IsNotExist(err) {
				return nil
			}
			time.Sleep(100 * time.Millisecond)
		}
		return err
	}
	return abs, rel, remove, nil
}
