package ctrnames

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
)

// dockerSource reads docker's own record of a container,
// <data-root>/containers/<id>/config.v2.json, which docker rewrites on
// every change (a rename too). One small file per id: no list to fetch.
type dockerSource struct {
	containers string // <data-root>/containers
}

// labelDockerType is cri-dockerd's: "podsandbox" or "container".
const labelDockerType = "io.kubernetes.docker.type"

// dockerConfig is the part of config.v2.json used here.
type dockerConfig struct {
	Name   string `json:"Name"` // "/name"
	Config struct {
		Labels map[string]string `json:"Labels"`
	} `json:"Config"`
}

func newDockerSource(root string) *dockerSource {
	dataRoot := "/var/lib/docker"
	// A daemon.json that moves the data root is followed; anything it says
	// is a path in the host's view, so under root too.
	if b, err := os.ReadFile(filepath.Join(root, "/etc/docker/daemon.json")); err == nil {
		var d struct {
			DataRoot string `json:"data-root"`
		}
		if json.Unmarshal(b, &d) == nil && filepath.IsAbs(d.DataRoot) {
			dataRoot = d.DataRoot
		}
	}
	return &dockerSource{containers: filepath.Join(root, dataRoot, "containers")}
}

func (s *dockerSource) lookup(_ context.Context, id, _ string) (Names, bool) {
	if id == "" {
		return Names{}, false
	}
	// id is 64 hex digits (Lookup checks), so the path stays in the
	// directory.
	b, err := os.ReadFile(filepath.Join(s.containers, id, "config.v2.json"))
	if err != nil {
		return Names{}, false
	}
	var c dockerConfig
	if err := json.Unmarshal(b, &c); err != nil {
		return Names{}, false
	}
	name := strings.TrimPrefix(c.Name, "/")
	n := Names{Name: name, Source: SourceDocker}
	labels := c.Config.Labels
	if labels[labelPodName] != "" {
		// Made by cri-dockerd for the kubelet: the labels carry the
		// Kubernetes names. A sandbox is labelled container "POD".
		n.Name = labels[labelContainerName]
		if labels[labelDockerType] == "podsandbox" || n.Name == "POD" {
			n.Name = ""
		}
		n.Pod = labels[labelPodName]
		n.Namespace = labels[labelPodNamespace]
	} else if k, ok := parseKubeName(name); ok {
		n.Name, n.Pod, n.Namespace = k.Name, k.Pod, k.Namespace
	}
	if n.Name == "" && n.Pod == "" {
		return Names{}, false
	}
	return n, true
}

// parseKubeName reads the names that cri-dockerd (and dockershim before
// it) gives docker containers, and CRI-O gives its containers in
// containers/storage:
//
//	k8s_<container>_<pod>_<namespace>_<pod uid>_<attempt>[_<random>]
//	k8s_POD_<pod>_<namespace>_<pod uid>_<attempt>[_<random>] (the sandbox)
//
// Kubernetes names cannot hold "_", so the fields split cleanly. The
// sandbox gets no container name, as in the CRI's lists ("POD" cannot be
// a Kubernetes container name: those are lowercase).
func parseKubeName(name string) (Names, bool) {
	f := strings.Split(name, "_")
	if (len(f) != 6 && len(f) != 7) || f[0] != "k8s" || f[1] == "" || f[2] == "" || f[3] == "" || f[5] == "" {
		return Names{}, false
	}
	for _, c := range f[5] {
		if c < '0' || c > '9' {
			return Names{}, false
		}
	}
	n := Names{Name: f[1], Pod: f[2], Namespace: f[3]}
	if n.Name == "POD" {
		n.Name = ""
	}
	return n, true
}
