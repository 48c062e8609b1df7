package ctrnames

import (
	"bufio"
	"context"
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/tcpmemtrace/tcpmemtrace/internal/owner"
	"github.com/tcpmemtrace/tcpmemtrace/internal/testsupport/podmantest"
)

// These tests run real runtimes. They need root and the runtimes' Debian
// packages (podman, runc; containerd for the CRI test), and skip without
// them, and under -short.

var (
	requireRealRuntime = podmantest.Require
	run                = podmantest.Run
	cleanup            = podmantest.Cleanup
	randomID           = podmantest.RandomID
)

// testImage makes a one-file image in podman's store: testdata/sleeper.
func testImage(t *testing.T, ref string) { podmantest.Image(t, ref, "testdata/sleeper") }

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
		podmantest.Start(t, name, image)
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

// containerdConfig runs containerd beside anything else on the host: its
// own root, state and sockets in dir, the test image as the pause image,
// and no CNI (the pod uses the host's network).
const containerdConfig = `version = 2
root = "{{dir}}/root"
state = "{{dir}}/state"
disabled_plugins = ["io.containerd.internal.v1.tracing", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]
[grpc]
  address = "{{dir}}/c.sock"
[ttrpc]
  address = "{{dir}}/c.sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{{image}}"
  # The CRI gives sandboxes an OOM score of -998, which needs
  # CAP_SYS_RESOURCE: keep scores no lower than containerd's own.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "{{dir}}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{{dir}}/cni/bin"
    conf_dir = "{{dir}}/cni/conf"
`

// startContainerd runs a private containerd with its CRI plugin and
// returns its socket. At cleanup it is stopped, and so are the shims it
// started (they outlive it by design), and its mounts are undone.
func startContainerd(t *testing.T, image string) string {
	t.Helper()
	dir := shortTempDir(t)
	// containerd 1.6 puts its shims' sockets in /run/containerd/s whatever
	// its state directory. Where no other containerd had made the directory
	// before, all of it is ours to remove; elsewhere the shims remove their
	// own sockets when stopped.
	if _, err := os.Stat("/run/containerd"); os.IsNotExist(err) {
		t.Cleanup(func() { os.RemoveAll("/run/containerd") })
	}
	config := strings.NewReplacer("{{dir}}", dir, "{{image}}", image).Replace(containerdConfig)
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	logFile, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	daemon := exec.Command("containerd", "--config", filepath.Join(dir, "config.toml"))
	daemon.Stdout, daemon.Stderr = logFile, logFile
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	socket := filepath.Join(dir, "c.sock")
	t.Cleanup(func() {
		daemon.Process.Signal(syscall.SIGTERM)
		exited := make(chan struct{})
		go func() { daemon.Wait(); close(exited) }()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			daemon.Process.Kill()
			<-exited
		}
		logFile.Close()
		// Shims left by a failed test: they carry our socket's address.
		for _, pid := range processesMentioning(t, socket) {
			t.Logf("cleanup: killing shim %d", pid)
			syscall.Kill(pid, syscall.SIGKILL)
		}
		unmountUnder(t, dir)
		if t.Failed() {
			if b, err := os.ReadFile(logFile.Name()); err == nil {
				lines := strings.Split(string(b), "\n")
				t.Logf("containerd's log, last lines:\n%s", strings.Join(lines[max(0, len(lines)-20):], "\n"))
			}
		}
	})

	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	rs := runtimeapi.NewRuntimeServiceClient(conn)
	deadline := time.Now().Add(15 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := rs.Version(ctx, &runtimeapi.VersionRequest{})
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd's CRI did not answer: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return socket
}

// processesMentioning lists the processes whose command line holds s.
func processesMentioning(t *testing.T, s string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(cmdline), s) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// unmountUnder undoes the mounts left under dir, deepest first.
func unmountUnder(t *testing.T, dir string) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var points []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			points = append(points, f[4])
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(points)))
	for _, p := range points {
		if err := syscall.Unmount(p, syscall.MNT_DETACH); err != nil {
			t.Logf("cleanup: unmount %s: %v", p, err)
		}
	}
}

func TestContainerdCRIPodByName(t *testing.T) {
	requireRealRuntime(t, "containerd", "ctr", "runc", "podman")
	tag := randomID(t)[:10]
	image := "localhost/ctrnames-test:" + tag
	testImage(t, image)
	podUID := "5d3c2b1a-0f9e-4d8c-b7a6-" + tag[:10] + "ab"
	// A cgroup parent of our own, shaped like the kubelet's (cgroupfs
	// driver), so that owner.ParseContainer finds the pod UID. Removed
	// after containerd has stopped.
	cgroupTop := "/ctrnames-" + tag
	cgroupParent := cgroupTop + "/pod" + podUID
	t.Cleanup(func() { removeCgroups(t, cgroupTop) })
	socket := startContainerd(t, image)

	archive := filepath.Join(t.TempDir(), "image.tar")
	run(t, "podman", "save", "--quiet", "--format", "oci-archive", "--output", archive, image)
	run(t, "ctr", "--address", socket, "--namespace", "k8s.io", "images", "import", archive)

	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() }) // after the pod's cleanup below
	rs := runtimeapi.NewRuntimeServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	logDir := t.TempDir()
	sandboxConfig := &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: "web-0", Namespace: "shop", Uid: podUID},
		LogDirectory: logDir,
		// The labels the kubelet puts on a pod's sandbox.
		Labels: map[string]string{labelPodName: "web-0", labelPodNamespace: "shop", labelPodUID: podUID},
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			CgroupParent: cgroupParent,
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE},
			},
		},
	}
	pod, err := rs.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: sandboxConfig})
	if err != nil {
		t.Fatalf("RunPodSandbox: %v", err)
	}
	sandbox := pod.GetPodSandboxId()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if _, err := rs.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: sandbox}); err != nil {
			t.Logf("cleanup: StopPodSandbox: %v", err)
		}
		if _, err := rs.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sandbox}); err != nil {
			t.Logf("cleanup: RemovePodSandbox: %v", err)
		}
	})

	// "api" as the kubelet makes it, with its labels; "debug" as crictl
	// would, with metadata only.
	containers := []struct {
		name   string
		labels map[string]string
		id     string
		pid    int
	}{
		{name: "api", labels: map[string]string{labelPodName: "web-0", labelPodNamespace: "shop", labelPodUID: podUID, labelContainerName: "api"}},
		{name: "debug"},
	}
	for i := range containers {
		c := &containers[i]
		created, err := rs.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{
			PodSandboxId: sandbox,
			Config: &runtimeapi.ContainerConfig{
				Metadata: &runtimeapi.ContainerMetadata{Name: c.name},
				Image:    &runtimeapi.ImageSpec{Image: image},
				Labels:   c.labels,
				LogPath:  c.name + "/0.log",
			},
			SandboxConfig: sandboxConfig,
		})
		if err != nil {
			t.Fatalf("CreateContainer %s: %v", c.name, err)
		}
		c.id = created.GetContainerId()
		if _, err := rs.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: c.id}); err != nil {
			t.Fatalf("StartContainer %s: %v", c.name, err)
		}
		status, err := rs.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: c.id, Verbose: true})
		if err != nil {
			t.Fatalf("ContainerStatus %s: %v", c.name, err)
		}
		var info struct {
			Pid int `json:"pid"`
		}
		if err := json.Unmarshal([]byte(status.GetInfo()["info"]), &info); err != nil || info.Pid == 0 {
			t.Fatalf("ContainerStatus %s gives no pid: %v", c.name, err)
		}
		c.pid = info.Pid
	}

	// Root is empty: every answer must come from the CRI.
	r := New(Options{CRIEndpoints: []string{socket}, Root: t.TempDir()})
	defer r.Close()
	for _, c := range containers {
		path := cgroupOf(t, strconv.Itoa(c.pid))
		oc, ok := owner.ParseContainer(path)
		if !ok || oc.ID != c.id || oc.Pod != podUID {
			t.Fatalf("%s: cgroup %s parses as %+v, %v; want id %s in pod %s", c.name, path, oc, ok, c.id, podUID)
		}
		got, ok := r.Lookup(context.Background(), oc.Runtime, oc.ID, oc.Pod)
		if want := (Names{Name: c.name, Pod: "web-0", Namespace: "shop", Source: SourceCRI}); !ok || got != want {
			t.Errorf("%s (cgroup %s, runtime %q): %+v, %v; want %+v", c.name, path, oc.Runtime, got, ok, want)
		}
	}
	if got, ok := r.Lookup(context.Background(), "kubernetes", "", podUID); !ok || got.Pod != "web-0" || got.Namespace != "shop" {
		t.Errorf("pod %s: %+v, %v; want web-0 in shop", podUID, got, ok)
	}
	if got, ok := r.Lookup(context.Background(), "kubernetes", sandbox, podUID); !ok || got != (Names{Pod: "web-0", Namespace: "shop", Source: SourceCRI}) {
		t.Errorf("sandbox: %+v, %v", got, ok)
	}
}

// removeCgroups removes the cgroup directory rel (and those under it) from
// every hierarchy mounted under /sys/fs/cgroup, deepest first: runc made
// them for the pod's cgroup parent, and no kubelet is here to remove them.
// Processes still in them (a failed test's containers, which outlive
// containerd and its shims) are killed first.
func removeCgroups(t *testing.T, rel string) {
	roots, _ := filepath.Glob("/sys/fs/cgroup/*")
	roots = append(roots, "/sys/fs/cgroup")
	var dirs []string
	for _, root := range roots {
		filepath.WalkDir(filepath.Join(root, rel), func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
	}
	killed := map[int]bool{}
	for _, d := range dirs {
		b, _ := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil && !killed[pid] {
				t.Logf("cleanup: killing %d, left in %s", pid, d)
				syscall.Kill(pid, syscall.SIGKILL)
				killed[pid] = true
			}
		}
	}
	if len(killed) > 0 {
		time.Sleep(200 * time.Millisecond)
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := os.Remove(dirs[i]); err != nil {
			t.Logf("cleanup: %v", err)
		}
	}
}
