// Package owner names the owners of sockets: cgroup paths from cgroup ids,
// and the container, pod or systemd unit a cgroup path belongs to.
package owner

import (
	"regexp"
	"strings"

	"github.com/tcpmemtrace/tcpmemtrace/stream"
)

var (
	// A container id in one path component, with the prefixes and suffix
	// the runtimes and their systemd drivers use.
	idRe  = regexp.MustCompile(`^(docker-|cri-containerd-|crio-|crio-conmon-|libpod-|libpod-conmon-)?([0-9a-f]{64})(\.scope)?$`)
	podRe = regexp.MustCompile(`pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})(\.slice)?$`)
)

var prefixRuntime = map[string]string{
	"docker-":         "docker",
	"cri-containerd-": "containerd",
	"crio-":           "cri-o",
	"crio-conmon-":    "cri-o",
	"libpod-":         "podman",
	"libpod-conmon-":  "podman",
}

// ParseContainer recognises the cgroup paths of docker, containerd, cri-o
// and podman (cgroupfs and systemd drivers, with or without Kubernetes) and
// of systemd services and scopes. ok is false for anything else.
func ParseContainer(path string) (c stream.Container, ok bool) {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	for _, p := range parts {
		if m := podRe.FindStringSubmatch(p); m != nil {
			c.Pod = strings.ReplaceAll(m[1], "_", "-")
		}
	}
	for i := len(parts) - 1; i >= 0; i-- {
		m := idRe.FindStringSubmatch(parts[i])
		if m == nil {
			continue
		}
		c.ID = m[2]
		switch {
		case m[1] != "":
			c.Runtime = prefixRuntime[m[1]]
		case i > 0 && parts[i-1] == "docker":
			c.Runtime = "docker"
		case i > 0 && parts[i-1] == "libpod_parent":
			c.Runtime = "podman"
		case c.Pod != "" || strings.HasPrefix(parts[0], "kubepods"):
			c.Runtime = "kubernetes"
		default:
			c.Runtime = "container"
		}
		return c, true
	}
	last := parts[len(parts)-1]
	if strings.HasSuffix(last, ".service") || strings.HasSuffix(last, ".scope") {
		return stream.Container{Runtime: "systemd", ID: last, Pod: c.Pod}, true
	}
	if c.Pod != "" {
		return stream.Container{Runtime: "kubernetes", Pod: c.Pod}, true
	}
	return stream.Container{}, false
}
