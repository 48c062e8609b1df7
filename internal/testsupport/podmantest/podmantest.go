// Package podmantest runs real containers for tests: podman with runc,
// from Debian's packages, and images made from a static Go program in a
// one-file root filesystem (no registry is needed, and none is reachable).
package podmantest

import (
	"archive/tar"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// Require skips the test, saying why, unless it may run containers: root,
// not -short, and every tool installed.
func Require(t testing.TB, tools ...string) {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: not running a real container runtime")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to run containers")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (apt-get install podman runc containerd)", tool)
		}
	}
}

// Run runs a command and returns its trimmed standard output, failing the
// test with its standard error.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		msg := err.Error()
		if ee, ok := err.(*exec.ExitError); ok {
			msg += ": " + strings.TrimSpace(string(ee.Stderr))
		}
		t.Fatalf("%s %s: %s", name, strings.Join(args, " "), msg)
	}
	return strings.TrimSpace(string(out))
}

// Cleanup runs a command at the end of the test, whatever its outcome,
// and only logs its failure.
func Cleanup(t testing.TB, name string, args ...string) {
	t.Cleanup(func() {
		if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			t.Logf("cleanup: %s %s: %v: %s", name, strings.Join(args, " "), err, out)
		}
	})
}

// RandomID is 64 random hex digits, a container id's shape; its head
// makes names no other run uses.
func RandomID(t testing.TB) string {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// Image builds the Go program in pkgDir (relative to the test's package)
// static, as the only file of an image's root filesystem, named /NAME
// after the directory and run as the image's command, and imports it into
// podman's store as ref; removed at the end of the test.
func Image(t testing.TB, ref, pkgDir string) {
	t.Helper()
	dir, rootDir := t.TempDir(), t.TempDir()
	name := filepath.Base(pkgDir)
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goTool); err != nil {
		goTool = "go"
	}
	build := exec.Command(goTool, "build", "-o", filepath.Join(rootDir, name), "./"+pkgDir)
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building %s: %v: %s", pkgDir, err, out)
	}
	rootfs := filepath.Join(dir, "rootfs.tar")
	f, err := os.Create(rootfs)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(f)
	if err := tw.AddFS(os.DirFS(rootDir)); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	Run(t, "podman", "import", "--quiet", "--change", `CMD ["/`+name+`"]`, rootfs, ref)
	Cleanup(t, "podman", "rmi", "--force", ref)
}

// Start runs image as a detached container named name, with no network
// but its own loopback, and removes it at the end of the test. crun
// refuses some hosts' hybrid cgroups, runc does not; the ulimits are
// explicit because podman's defaults copy the host's, which can be above
// what the runtime may set.
func Start(t testing.TB, name, image string) {
	t.Helper()
	Run(t, "podman", "run", "--detach", "--runtime", "runc", "--network", "none",
		"--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", "--name", name, image)
	Cleanup(t, "podman", "rm", "--force", "--time", "0", name)
}
