// Package owner names the owners of sockets: cgroup paths from cgroup ids,
// and the container, pod or systemd unit a cgroup path belongs to.
package owner

import (
	"regexp"
	"strings"
)

// Container is what a cgroup path says about where a process runs.
type Container struct {
	// Runtime: docker, containerd, cri-o, podman, kubernetes (a pod's
	// container whose runtime the path does not name), or systemd for a
	// plain unit.
	Runtime string `json:"runtime"`
	// ID is the container id (64 hex digits), or the systemd unit name.
	ID string `json:"id"`
	// Pod is the Kubernetes pod UID when the path has one.
	Pod string `json:"pod,omitempty"`
}

// Short is the id as operators see it: 12 hex digits, or the unit name.
func (c Container) Short() string {
	if c.Runtime != "systemd" && len(c.ID) > 12 {
		return c.ID[:12]
	}
	return c.ID
}

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
func ParseContainer(path string) (c Container, ok bool) {
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
		return Container{Runtime: "systemd", ID: last, Pod: c.Pod}, true
	}
	if c.Pod != "" {
		return Container{Runtime: "kubernetes", Pod: c.Pod}, true
	}
	return Container{}, false
}
