package owner

import (
	"github.com/tcpmemtrace/tcpmemtrace/stream"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

const id = "4f6d2c3b1a0e9f8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a29180706f5e4d3c2b1"

func TestParseContainer(t *testing.T) {
	for _, tc := range []struct {
		path string
		want stream.Container
		ok   bool
	}{
		{"/docker/" + id, stream.Container{Runtime: "docker", ID: id}, true},
		{"/system.slice/docker-" + id + ".scope", stream.Container{Runtime: "docker", ID: id}, true},
		{"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b2c3d4e_5f60_7182_93a4_b5c6d7e8f901.slice/cri-containerd-" + id + ".scope",
			stream.Container{Runtime: "containerd", ID: id, Pod: "1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901"}, true},
		{"/kubepods/besteffort/pod1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901/" + id,
			stream.Container{Runtime: "kubernetes", ID: id, Pod: "1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901"}, true},
		{"/kubepods.slice/kubepods-pod1b2c3d4e_5f60_7182_93a4_b5c6d7e8f901.slice/crio-" + id + ".scope",
			stream.Container{Runtime: "cri-o", ID: id, Pod: "1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901"}, true},
		{"/machine.slice/libpod-" + id + ".scope/container", stream.Container{Runtime: "podman", ID: id}, true},
		{"/libpod_parent/" + id, stream.Container{Runtime: "podman", ID: id}, true},
		{"/system.slice/nginx.service", stream.Container{Runtime: "systemd", ID: "nginx.service"}, true},
		{"/user.slice/user-1000.slice/session-3.scope", stream.Container{Runtime: "systemd", ID: "session-3.scope"}, true},
		{"/", stream.Container{}, false},
		{"/tcpmemtrace-reader-42", stream.Container{}, false},
		{"/docker/" + id[:63], stream.Container{}, false}, // not a full id
	} {
		got, ok := ParseContainer(tc.path)
		if got != tc.want || ok != tc.ok {
			t.Errorf("ParseContainer(%q) = %+v, %v; want %+v, %v", tc.path, got, ok, tc.want, tc.ok)
		}
	}
	if s := (stream.Container{Runtime: "docker", ID: id}).Short(); s != id[:12] {
		t.Errorf("Short() = %q", s)
	}
	if s := (stream.Container{Runtime: "systemd", ID: "nginx.service"}).Short(); s != "nginx.service" {
		t.Errorf("Short() = %q", s)
	}
}

// A fake hierarchy: ids are the directories' inodes.
func TestResolverAndSelect(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "a", "b"), 0o755); err != nil {
		t.Fatal(err)
	}
	sel, err := Select(root, "/a/b")
	if err != nil || sel.Path != "/a/b" || sel.Level != 2 {
		t.Fatalf("Select = %+v, %v", sel, err)
	}
	if r := NewResolver(root); r.Path(sel.ID) != "/a/b" {
		t.Errorf("Path(%d) = %q", sel.ID, r.Path(sel.ID))
	}
	if byID, err := Select(root, strconv.FormatUint(sel.ID, 10)); err != nil || byID != sel {
		t.Errorf("Select by id = %+v, %v", byID, err)
	}
	if _, err := Select(root, "/nope"); err == nil {
		t.Error("a missing cgroup was selected")
	}
	if _, err := Select(root, "/../etc"); err == nil {
		t.Error("a path outside the hierarchy was selected")
	}
	if s, err := Select(root, root); err != nil || s.Level != 0 || s.Path != "/" {
		t.Errorf("the root: %+v, %v", s, err)
	}
}

func TestUnescape(t *testing.T) {
	if got := unescape(`/sys/fs/cgroup/with\040space`); got != "/sys/fs/cgroup/with space" {
		t.Errorf("%q", got)
	}
}
