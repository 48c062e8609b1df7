package workload

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// lockPath serialises every test that lowers a global TCP sysctl, across
// test binaries (go test runs packages in parallel).
var lockPath = filepath.Join(os.TempDir(), "tcpmemtrace-sysctl.lock")

// Guard holds lowered global sysctls and puts them back.
type Guard struct {
	lock      *os.File
	orig      map[string]string
	restorers []*exec.Cmd
}

// Lock takes the machine-wide sysctl lock; Restore releases it.
func Lock() (*Guard, error) {
	f, err := os.OpenFile(lockPath, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return &Guard{lock: f, orig: map[string]string{}}, nil
}

// LockT is Lock for a test: it fails the test when the lock cannot be had,
// and restores every value the test set when it ends, even on failure.
func LockT(t testing.TB) *Guard {
	t.Helper()
	g, err := Lock()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := g.Restore(); err != nil {
			t.Error(err)
		}
	})
	return g
}

// Set writes a sysctl (e.g. "net/ipv4/tcp_mem") after saving its value. A
// detached process restores it after deadline even if this process dies.
func (g *Guard) Set(name, value string, deadline time.Duration) error {
	p := "/proc/sys/" + name
	b, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	orig := strings.TrimSpace(string(b))
	if _, ok := g.orig[name]; !ok {
		g.orig[name] = orig
		// setsid: the restorer must outlive a test binary killed on timeout.
		r := exec.Command("/bin/sh", "-c", fmt.Sprintf("sleep %d; printf '%%s\\n' '%s' > %s",
			int(deadline.Seconds())+1, orig, p))
		r.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := r.Start(); err != nil {
			return fmt.Errorf("starting the timed restorer: %w", err)
		}
		g.restorers = append(g.restorers, r)
	}
	return os.WriteFile(p, []byte(value+"\n"), 0)
}

// Restore writes back every saved value, stops the restorers and releases
// the lock. Safe to call twice.
func (g *Guard) Restore() error {
	var first error
	for name, v := range g.orig {
		if err := os.WriteFile("/proc/sys/"+name, []byte(v+"\n"), 0); err != nil && first == nil {
			first = fmt.Errorf("restoring %s: %w", name, err)
		}
	}
	g.orig = map[string]string{}
	for _, r := range g.restorers {
		// Its whole group (setsid made it the leader): its sleep too,
		// which would otherwise linger for the rest of the deadline.
		syscall.Kill(-r.Process.Pid, syscall.SIGKILL)
		r.Wait()
	}
	g.restorers = nil
	if g.lock != nil {
		g.lock.Close() // releases the flock
		g.lock = nil
	}
	return first
}
