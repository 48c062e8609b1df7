package ctrnames

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// podLogsSource reads the names the kubelet writes into its log layout,
// whatever the runtime, for when no CRI answers:
//
//	/var/log/containers/<pod>_<namespace>_<container>-<container id>.log
//	  (a symlink per container, the only place on disk that ties a
//	  container id to its names; the kubelet cuts the name at 255 bytes,
//	  which can cut the id off)
//	/var/log/pods/<namespace>_<pod>_<pod uid>/<container>/<restart>.log
//	  (names by pod UID; the container directories carry no id, so a
//	  container is named from here only when its pod has just one)
type podLogsSource struct {
	podsDir    string
	containers *snapshot[map[string]Names] // container id → names
	pods       *snapshot[map[string]Names] // pod UID → pod and namespace
}

func newPodLogsSource(root string, refresh time.Duration, bg *background) *podLogsSource {
	s := &podLogsSource{podsDir: filepath.Join(root, "/var/log/pods")}
	containersDir := filepath.Join(root, "/var/log/containers")
	s.containers = &snapshot[map[string]Names]{
		fetch:    func(context.Context) (map[string]Names, error) { return readContainerLogLinks(containersDir) },
		interval: refresh,
		bg:       bg,
	}
	s.pods = &snapshot[map[string]Names]{
		fetch:    func(context.Context) (map[string]Names, error) { return readPodLogDirs(s.podsDir) },
		interval: refresh,
		bg:       bg,
	}
	return s
}

func (s *podLogsSource) lookup(ctx context.Context, id, podUID string) (Names, bool) {
	var n Names
	if id != "" && s.containers.find(ctx, func(m map[string]Names) bool {
		var ok bool
		n, ok = m[id]
		return ok
	}) {
		return n, true
	}
	if podUID == "" {
		return Names{}, false
	}
	if !s.pods.find(ctx, func(m map[string]Names) bool {
		var ok bool
		n, ok = m[podUID]
		return ok
	}) {
		return Names{}, false
	}
	if id != "" {
		// The pod is known but not which of its containers this is, unless
		// it has only one (a sandbox's id would get that name too, but the
		// pause process owns no sockets).
		dir := filepath.Join(s.podsDir, n.Namespace+"_"+n.Pod+"_"+podUID)
		ents, err := os.ReadDir(dir)
		if err != nil {
			return Names{}, false
		}
		var names []string
		for _, e := range ents {
			if e.IsDir() {
				names = append(names, e.Name())
			}
		}
		if len(names) == 1 {
			n.Name = names[0]
		}
	}
	return n, true
}

func readContainerLogLinks(dir string) (map[string]Names, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	m := make(map[string]Names, len(ents))
	for _, e := range ents {
		base, ok := strings.CutSuffix(e.Name(), ".log")
		// "-" and 64 hex digits end the name, unless it was cut.
		if !ok || len(base) < 66 || base[len(base)-65] != '-' {
			continue
		}
		id := base[len(base)-64:]
		if !isContainerID(id) {
			continue
		}
		f := strings.Split(base[:len(base)-65], "_")
		if len(f) != 3 || f[0] == "" || f[1] == "" || f[2] == "" {
			continue
		}
		m[id] = Names{Pod: f[0], Namespace: f[1], Name: f[2], Source: SourcePodLogs}
	}
	return m, nil
}

func readPodLogDirs(dir string) (map[string]Names, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	m := make(map[string]Names, len(ents))
	for _, e := range ents {
		f := strings.Split(e.Name(), "_")
		if !e.IsDir() || len(f) != 3 || f[0] == "" || f[1] == "" || !isPodUID(f[2]) {
			continue
		}
		m[f[2]] = Names{Namespace: f[0], Pod: f[1], Source: SourcePodLogs}
	}
	return m, nil
}
