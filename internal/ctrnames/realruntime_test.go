package ctrnames

import (
	"archive/tar"
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/tcpmemtrace/tcpmemtrace/internal/owner"
)

// These tests run real runtimes. They need root and the runtimes' Debian
// packages (podman, runc; containerd for the CRI test), and skip without
// them, and under -short.

func requireRealRuntime(t *testing.T, tools ...string) {
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

// run runs a command and returns its trimmed standard output, failing the
// test with its standard error.
func run(t *testing.T, name string, args ...string) string {
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

// cleanup runs a command at the end of the test, whatever its outcome, and
// only logs its failure.
func cleanup(t *testing.T, name string, args ...string) {
	t.Cleanup(func() {
		if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			t.Logf("cleanup: %s %s: %v: %s", name, strings.Join(args, " "), err, out)
		}
	})
}

// testImage makes a one-file image in podman's store: testdata/sleeper,
// built static. No registry is needed, and none is reachable here.
func testImage(t *testing.T, ref string) {
	t.Helper()
	dir, rootDir := t.TempDir(), t.TempDir()
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goTool); err != nil {
		goTool = "go"
	}
	build := exec.Command(goTool, "build", "-o", filepath.Join(rootDir, "sleeper"), "./testdata/sleeper")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the sleeper: %v: %s", err, out)
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
	run(t, "podman", "import", "--quiet", "--change", `CMD ["/sleeper"]`, rootfs, ref)
	cleanup(t, "podman", "rmi", "--force", ref)
}

// cgroupOf returns the cgroup v2 path of a process ("0::" in
// /proc/PID/cgroup), as the tracer sees it.
func cgroupOf(t *testing.T, pid string) string {
	t.Helper()
	f, err := os.Open(filepath.Join("/proc", pid, "cgroup"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if path, ok := strings.CutPrefix(s.Text(), "0::"); ok {
			return path
		}
	}
	t.Fatalf("no cgroup v2 line in /proc/%s/cgroup", pid)
	return ""
}

func TestPodmanContainersByName(t *testing.T) {
	requireRealRuntime(t, "podman", "runc")
	tag := randomID(t)[:10]
	image := "localhost/ctrnames-test:" + tag
	testImage(t, image)

	names := []string{"ctrnames-" + tag + "-web", "ctrnames-" + tag + "-db"}
	for _, name := range names {
		// crun refuses this kind of host's hybrid cgroups; runc does not.
		// Explicit ulimits: podman's defaults copy the host's, which can be
		// above what the runtime may set.
		run(t, "podman", "run", "--detach", "--runtime", "runc", "--network", "none",
			"--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
			"--name", name, image)
		cleanup(t, "podman", "rm", "--force", "--time", "0", name)
	}

	r := New(Options{CRIEndpoints: []string{filepath.Join(t.TempDir(), "no-cri.sock")}})
	defer r.Close()
	for _, name := range names {
		f := strings.Fields(run(t, "podman", "inspect", "--format", "{{.Id}} {{.State.Pid}} {{.Name}}", name))
		if len(f) != 3 {
			t.Fatalf("podman inspect: %q", f)
		}
		id, pid, inspected := f[0], f[1], f[2]
		path := cgroupOf(t, pid)
		c, ok := owner.ParseContainer(path)
		if !ok || c.Runtime != "podman" || c.ID != id {
			t.Fatalf("cgroup %s parses as %+v, %v; want podman %s", path, c, ok, id)
		}
		got, ok := r.Lookup(context.Background(), c.Runtime, c.ID, c.Pod)
		if want := (Names{Name: inspected, Source: SourcePodman}); !ok || got != want {
			t.Errorf("%s (cgroup %s): %+v, %v; want %+v", name, path, got, ok, want)
		}
	}

	// A rename shows once the cached answer is old.
	old, renamed := "ctrnames-"+tag+"-db", "ctrnames-"+tag+"-database"
	run(t, "podman", "rename", old, renamed)
	cleanup(t, "podman", "rm", "--force", "--time", "0", renamed)
	id := run(t, "podman", "inspect", "--format", "{{.Id}}", renamed)
	fresh := New(Options{CRIEndpoints: []string{filepath.Join(t.TempDir(), "no-cri.sock")}})
	defer fresh.Close()
	if got, ok := fresh.Lookup(context.Background(), "podman", id, ""); !ok || got.Name != renamed {
		t.Errorf("after podman rename: %+v, %v; want %s", got, ok, renamed)
	}
}
