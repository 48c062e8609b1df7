package ctrnames

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"time"
)

// storageSource reads the container lists of containers/storage, the store
// podman and CRI-O share: <store>/<driver>-containers/containers.json,
// with an entry per container holding its id, its names and the metadata
// its creator wrote. Podman's first name is the container's name (podman
// rename rewrites it; the name in the metadata stays the first one). CRI-O
// names its entries k8s_<container>_<pod>_<namespace>_<uid>_<attempt> and
// notes the pod in the metadata.
type storageSource struct {
	root string
	list *snapshot[map[string]Names]
}

// storageGlobs are where the lists are: the rootful store (graphroot), the
// run root (containers/storage keeps the lists there in its transient-store
// mode), and rootless podman's stores under users' homes. Containers
// created volatile (all of CRI-O's, and podman's --rm ones) are listed
// apart, in volatile-containers.json, by newer containers/storage; podman
// 4.3's keeps them in containers.json, flagged.
var storageGlobs = []string{
	"/var/lib/containers/storage/*-containers/containers.json",
	"/var/lib/containers/storage/*-containers/volatile-containers.json",
	"/run/containers/storage/*-containers/containers.json",
	"/run/containers/storage/*-containers/volatile-containers.json",
	"/home/*/.local/share/containers/storage/*-containers/containers.json",
	"/home/*/.local/share/containers/storage/*-containers/volatile-containers.json",
}

// storageEntry is the part of an entry of containers.json used here.
type storageEntry struct {
	ID       string   `json:"id"`
	Names    []string `json:"names"`
	Metadata string   `json:"metadata"` // JSON, written by podman or CRI-O
}

// crioMetadata is the part of CRI-O's metadata used here: podman's has no
// pod fields.
type crioMetadata struct {
	PodName      string `json:"pod-name"`
	PodID        string `json:"pod-id"`
	MetadataName string `json:"metadata-name"` // the container's name in the CRI
	Pod          bool   `json:"pod"`           // the entry is a pod's sandbox
}

func newStorageSource(root string, refresh time.Duration, bg *background) *storageSource {
	s := &storageSource{root: root}
	s.list = &snapshot[map[string]Names]{fetch: s.fetch, interval: refresh, bg: bg}
	return s
}

func (s *storageSource) lookup(ctx context.Context, id, _ string) (Names, bool) {
	if id == "" {
		return Names{}, false
	}
	var n Names
	ok := s.list.find(ctx, func(m map[string]Names) bool {
		var ok bool
		n, ok = m[id]
		return ok
	})
	return n, ok
}

// fetch reads every list. It fails only when there is none to read, so that
// a list that cannot be read this time keeps the last one.
func (s *storageSource) fetch(context.Context) (map[string]Names, error) {
	m := make(map[string]Names)
	read := 0
	for _, g := range storageGlobs {
		files, _ := filepath.Glob(filepath.Join(s.root, g))
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				continue
			}
			var entries []storageEntry
			if json.Unmarshal(b, &entries) != nil {
				continue
			}
			read++
			for _, e := range entries {
				if n, ok := storageNames(e); ok {
					m[e.ID] = n
				}
			}
		}
	}
	if read == 0 {
		return nil, errors.New("no containers/storage container list")
	}
	return m, nil
}

func storageNames(e storageEntry) (Names, bool) {
	if len(e.Names) == 0 || e.Names[0] == "" {
		return Names{}, false
	}
	var md crioMetadata
	_ = json.Unmarshal([]byte(e.Metadata), &md) // podman's has none of these fields
	if md.PodID == "" && md.PodName == "" {
		return Names{Name: e.Names[0], Source: SourcePodman}, true
	}
	n, ok := parseKubeName(e.Names[0])
	if !ok {
		return Names{}, false
	}
	if md.Pod {
		n.Name = ""
	} else if md.MetadataName != "" {
		n.Name = md.MetadataName
	}
	n.Source = SourceCRIOStorage
	return n, true
}
