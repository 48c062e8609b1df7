package ctrnames

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Ids of the containers in testdata/host.
const (
	dockerPlain      = "4fd88b678ecadb93030bb98dfb4733c038f1fa2022c789c9a0f2bcf070a0e0d7"
	dockerKube       = "89016fc1ebe735d5d6bfa8fa9b5c0431890483da9035da7f4031b4fd87aff831"
	dockerSandbox    = "c4102e1e8eeb08ebb5017372666049625667e6fc7e1b0eca47b1a6e3fff583a2"
	dockerShim       = "ba790e93387fcb9283cf67e7a8d51ddce508f35f22b21a55882bddb573680dc8"
	podmanRenamed    = "aaaffebf043067862df0df5c6287dff629db51c4d841c52416153c7ecca790d7"
	podmanVolatile   = "59e3ff6247d3d086e6ab878daf47091ca09bc334e96b8127c9607d7e489c77e6"
	podmanRootless   = "12b961af5feb3e9d39f93b2cefb9a1a944f18d02cca0cac2f04f5a982240605f"
	crioSandbox      = "a18bfabd3cf1d74d0267b59ef276e9c1c94d4e31a9fb482340d884a4c4275b94"
	crioContainer    = "0a6b3e5f414ad08d641f30fcf656d8e75dc5a9be7a6b197dfd9d0ef064d34a37"
	logsNginx        = "29500a241a9dd22b35b849a02c1bc8a9ad7163522f1555311fc03be3995fade0"
	logsShipper      = "86d826600b64a557f71019931b6b071e5700e2c8295495509ba27d2ea7c0c872"
	logsStorefront   = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"
	logsStaticEtcd   = "a226e9fbdfc1c8dd7e7fef4d333f86ed"
	unknownContainer = "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
	unlinkedInPod    = "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"
	unlinkedInStatic = "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd"
)

// fixtureResolver reads testdata/host and has no CRI to ask.
func fixtureResolver(t *testing.T, root string) *Resolver {
	t.Helper()
	r := New(Options{
		Root:         root,
		CRIEndpoints: []string{filepath.Join(t.TempDir(), "no-cri.sock")},
	})
	t.Cleanup(func() { r.Close() })
	return r
}

func TestFixtureNames(t *testing.T) {
	r := fixtureResolver(t, "testdata/host")
	cases := []struct {
		what, runtime, id, podUID string
		want                      Names
	}{
		{"docker container", "docker", dockerPlain, "",
			Names{Name: "web-frontend", Source: SourceDocker}},
		{"cri-dockerd container: names from its labels, not its k8s_ name", "docker", dockerKube, "",
			Names{Name: "api", Pod: "checkout-7d9f8b6c5-x2x4q", Namespace: "shop", Source: SourceDocker}},
		{"cri-dockerd sandbox, labelled container POD", "docker", dockerSandbox, "",
			Names{Pod: "checkout-7d9f8b6c5-x2x4q", Namespace: "shop", Source: SourceDocker}},
		{"dockershim container without labels: names from its k8s_ name", "kubernetes", dockerShim, "",
			Names{Name: "worker", Pod: "batch-job-8x7kq", Namespace: "jobs", Source: SourceDocker}},
		{"podman container renamed: its current name", "podman", podmanRenamed, "",
			Names{Name: "probe-renamed", Source: SourcePodman}},
		{"podman --rm container", "podman", podmanVolatile, "",
			Names{Name: "probe-rm", Source: SourcePodman}},
		{"rootless podman, vfs driver", "podman", podmanRootless, "",
			Names{Name: "alice-notebook", Source: SourcePodman}},
		{"CRI-O container in containers/storage", "cri-o", crioContainer, "",
			Names{Name: "postgres", Pod: "ledger-0", Namespace: "payments", Source: SourceCRIOStorage}},
		{"CRI-O sandbox in containers/storage", "cri-o", crioSandbox, "",
			Names{Pod: "ledger-0", Namespace: "payments", Source: SourceCRIOStorage}},
		{"container linked from /var/log/containers", "containerd", logsNginx, logsStorefront,
			Names{Name: "nginx", Pod: "storefront-5c8d7b9f4-q7m2p", Namespace: "web", Source: SourcePodLogs}},
		{"its sibling, whose name holds a dash", "kubernetes", logsShipper, "",
			Names{Name: "log-shipper", Pod: "storefront-5c8d7b9f4-q7m2p", Namespace: "web", Source: SourcePodLogs}},
		{"unlinked container of a two-container pod: the pod only", "kubernetes", unlinkedInPod, logsStorefront,
			Names{Pod: "storefront-5c8d7b9f4-q7m2p", Namespace: "web", Source: SourcePodLogs}},
		{"unlinked container of a one-container static pod", "kubernetes", unlinkedInStatic, logsStaticEtcd,
			Names{Name: "etcd", Pod: "etcd-node-1", Namespace: "kube-system", Source: SourcePodLogs}},
		{"a pod by its UID alone", "kubernetes", "", logsStorefront,
			Names{Pod: "storefront-5c8d7b9f4-q7m2p", Namespace: "web", Source: SourcePodLogs}},
	}
	for _, c := range cases {
		got, ok := r.Lookup(context.Background(), c.runtime, c.id, c.podUID)
		if !ok || got != c.want {
			t.Errorf("%s: Lookup(%q, %.12s, %q) = %+v, %v; want %+v", c.what, c.runtime, c.id, c.podUID, got, ok, c.want)
		}
	}
}

func TestFixtureMisses(t *testing.T) {
	r := fixtureResolver(t, "testdata/host")
	cases := []struct{ what, runtime, id, podUID string }{
		{"unknown id", "container", unknownContainer, ""},
		{"systemd unit", "systemd", "sshd.service", ""},
		{"a path, not an id", "docker", "../../../../etc", ""},
		{"short id", "docker", dockerPlain[:12], ""},
		{"podman is not asked about docker's containers", "podman", dockerPlain, ""},
		{"docker's files are not asked about podman's", "docker", podmanRenamed, ""},
		{"unknown pod", "kubernetes", "", "00000000-0000-4000-8000-000000000000"},
		{"nothing at all", "kubernetes", "", ""},
	}
	for _, c := range cases {
		if got, ok := r.Lookup(context.Background(), c.runtime, c.id, c.podUID); ok {
			t.Errorf("%s: Lookup(%q, %q, %q) = %+v, want no answer", c.what, c.runtime, c.id, c.podUID, got)
		}
	}
}

// copyTree copies testdata/host to a temporary root that a test may change.
func copyTree(t *testing.T) string {
	t.Helper()
	dst := t.TempDir()
	if err := os.CopyFS(dst, os.DirFS("testdata/host")); err != nil {
		t.Fatal(err)
	}
	return dst
}

func TestDockerDataRootFromDaemonJSON(t *testing.T) {
	root := copyTree(t)
	if err := os.MkdirAll(filepath.Join(root, "srv/docker"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(root, "var/lib/docker/containers"), filepath.Join(root, "srv/docker/containers")); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "etc/docker"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "etc/docker/daemon.json"), []byte(`{"data-root": "/srv/docker", "log-driver": "json-file"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	r := fixtureResolver(t, root)
	if got, ok := r.Lookup(context.Background(), "docker", dockerPlain, ""); !ok || got.Name != "web-frontend" {
		t.Errorf("with data-root /srv/docker: %+v, %v; want web-frontend", got, ok)
	}
}

// A container list on disk is read again once the refresh interval has
// passed, not before: a container created since is found then.
func TestStorageListRefresh(t *testing.T) {
	root := copyTree(t)
	list := filepath.Join(root, "var/lib/containers/storage/overlay-containers/containers.json")
	const refresh = 150 * time.Millisecond
	r := New(Options{
		Root:         root,
		CRIEndpoints: []string{filepath.Join(t.TempDir(), "no-cri.sock")},
		Refresh:      refresh,
		MissTTL:      time.Nanosecond,
	})
	defer r.Close()
	ctx := context.Background()
	if _, ok := r.Lookup(ctx, "podman", podmanRenamed, ""); !ok {
		t.Fatal("fixture container not found")
	}
	newID := "1111111111111111111111111111111111111111111111111111111111111111"
	entry := `[{"id":"` + newID + `","names":["late-comer"],"metadata":"{\"name\":\"late-comer\"}"}]`
	if err := os.WriteFile(list, []byte(entry), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, ok := r.Lookup(ctx, "podman", newID, ""); ok {
		t.Fatalf("found %+v before the refresh interval passed: the list was read again too soon", got)
	}
	time.Sleep(refresh + 50*time.Millisecond)
	got, ok := r.Lookup(ctx, "podman", newID, "")
	if !ok || got.Name != "late-comer" {
		t.Fatalf("after the refresh interval: %+v, %v; want late-comer", got, ok)
	}
	// The container that left the list keeps its cached name.
	if got, ok := r.Lookup(ctx, "podman", podmanRenamed, ""); !ok || got.Name != "probe-renamed" {
		t.Errorf("cached name lost: %+v, %v", got, ok)
	}
	if n := r.storage.list.fetches; n != 2 {
		t.Errorf("the storage list was read %d times, want 2", n)
	}
}

func TestParseKubeName(t *testing.T) {
	cases := []struct {
		in   string
		want Names
		ok   bool
	}{
		{"k8s_app_web-0_default_0b5c5f0e-3c1a-4b8e-9a7d-2f6e1c0d9b8a_0", Names{Name: "app", Pod: "web-0", Namespace: "default"}, true},
		{"k8s_POD_web-0_default_0b5c5f0e-3c1a-4b8e-9a7d-2f6e1c0d9b8a_0", Names{Pod: "web-0", Namespace: "default"}, true},
		// cri-dockerd adds a random suffix after a name conflict.
		{"k8s_app_web-0_default_0b5c5f0e-3c1a-4b8e-9a7d-2f6e1c0d9b8a_12_9f3a2b1c", Names{Name: "app", Pod: "web-0", Namespace: "default"}, true},
		{"k8s_app_web-0_default_uid_x", Names{}, false},
		{"k8s_app_web-0_default_uid_", Names{}, false},
		{"k8s_app_web-0", Names{}, false},
		{"my_app_web-0_default_uid_0", Names{}, false},
		{"web-frontend", Names{}, false},
	}
	for _, c := range cases {
		got, ok := parseKubeName(c.in)
		if ok != c.ok || got != c.want {
			t.Errorf("parseKubeName(%q) = %+v, %v; want %+v, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}
