// Package ctrnames names containers and pods from their runtimes' own
// metadata: the CRI of containerd, CRI-O or cri-dockerd, docker's and
// podman's files on disk, and the kubelet's log directories.
//
// A cgroup path gives a container id and a pod UID (package owner); people
// know their workloads by name. A Resolver turns the one into the other
// without ever holding up the caller for long: every runtime call is
// bounded by a timeout, a runtime's container list is fetched at most once
// per refresh interval however many ids are asked for, and answers (and,
// for a short while, misses) are kept in a bounded cache.
package ctrnames

import (
	"context"
	"path/filepath"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
)

// Names is what a runtime calls a container.
type Names struct {
	// Name is the container's name: docker's or podman's name, or the
	// Kubernetes container name. Empty for a pod's sandbox (pause)
	// container and when only the pod is known.
	Name string `json:"name,omitempty"`
	// Pod and Namespace name the Kubernetes pod, when there is one.
	Pod       string `json:"pod,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	// Source says where the answer came from: one of the Source constants.
	Source string `json:"source"`
}

// Namer names containers: a Resolver, or a stand-in in tests.
type Namer interface {
	Lookup(ctx context.Context, runtime, id, podUID string) (Names, bool)
}

// WorthAsking: a container with an id or a pod, not yet named: a
// systemd unit's name is already all there is.
func WorthAsking(runtime, id, podUID string) bool {
	return (id != "" || podUID != "") && runtime != "systemd"
}

// Where an answer came from.
const (
	SourceCRI         = "cri"          // a CRI runtime's container and pod sandbox lists
	SourceDocker      = "docker"       // docker's config.v2.json of the container
	SourcePodman      = "podman"       // podman's entry in containers/storage
	SourceCRIOStorage = "crio-storage" // CRI-O's entry in containers/storage
	SourcePodLogs     = "pod-logs"     // the kubelet's /var/log/containers and /var/log/pods
)

// Options tune a Resolver; the zero value suits a host.
type Options struct {
	// CRIEndpoints are the unix sockets of CRI runtimes, as paths in this
	// process's view. Empty: the well-known sockets of containerd, CRI-O
	// and cri-dockerd, under Root. Every endpoint whose socket exists is
	// asked, since a node may run more than one runtime.
	CRIEndpoints []string
	// Root is where the host's filesystem is seen: "" or "/" on the host,
	// the mount point of the host's root in a container, a fixture tree in
	// tests. Docker's, podman's and the kubelet's files are read under it.
	Root string
	// Timeout bounds one Lookup, and so every runtime call made for it.
	// Default 1s.
	Timeout time.Duration
	// Refresh is the least time between two fetches of one runtime's
	// container list (or one read of a directory or file that lists
	// containers). Default 2s.
	Refresh time.Duration
	// HitTTL is how long an answer is used before it is looked up again
	// (a container may be renamed); an answer the runtimes no longer give
	// (the container is gone, its sockets may linger) is kept. Default 5m.
	HitTTL time.Duration
	// MissTTL is how long an id no source knows is answered "unknown"
	// without asking again. Default 5s.
	MissTTL time.Duration
	// CacheSize bounds the answers kept, and separately the misses.
	// Default 4096.
	CacheSize int
}

func (o Options) withDefaults() Options {
	if o.Root == "" {
		o.Root = "/"
	}
	if o.Timeout <= 0 {
		o.Timeout = time.Second
	}
	if o.Refresh <= 0 {
		o.Refresh = 2 * time.Second
	}
	if o.HitTTL <= 0 {
		o.HitTTL = 5 * time.Minute
	}
	if o.MissTTL <= 0 {
		o.MissTTL = 5 * time.Second
	}
	if o.CacheSize <= 0 {
		o.CacheSize = 4096
	}
	if len(o.CRIEndpoints) == 0 {
		for _, p := range wellKnownCRISockets {
			o.CRIEndpoints = append(o.CRIEndpoints, filepath.Join(o.Root, p))
		}
	}
	return o
}

// wellKnownCRISockets are the default sockets of the CRI runtimes, as their
// packages and the Kubernetes documentation give them (/var/run is /run),
// and that of the containerd k3s and RKE2 bundle. Docker's own containerd
// also listens on the first, with its CRI plugin off: it answers
// Unimplemented, at once.
var wellKnownCRISockets = []string{
	"/run/containerd/containerd.sock",
	"/run/crio/crio.sock",
	"/run/cri-dockerd.sock",
	"/run/k3s/containerd/containerd.sock",
}

// A source answers from one kind of runtime metadata.
type source interface {
	// lookup names the container id, or (id empty) the pod podUID.
	lookup(ctx context.Context, id, podUID string) (Names, bool)
}

// Resolver names containers. It is safe for concurrent use.
type Resolver struct {
	opts    Options
	cri     *criSource
	docker  *dockerSource
	storage *storageSource
	podLogs *podLogsSource

	hits   *lru.Cache[string, cached]
	misses *lru.Cache[string, time.Time] // key → when the miss expires

	bg        *background // the fetches Close ends
	closeOnce sync.Once
}

type cached struct {
	names   Names
	expires time.Time
}

// New makes a Resolver. It connects to nothing until a Lookup needs it.
func New(o Options) *Resolver {
	o = o.withDefaults()
	r := &Resolver{opts: o, bg: newBackground()}
	r.cri = newCRISource(o, r.bg)
	r.docker = newDockerSource(o.Root)
	r.storage = newStorageSource(o.Root, o.Refresh, r.bg)
	r.podLogs = newPodLogsSource(o.Root, o.Refresh, r.bg)
	// lru.New fails only for a size below one, which withDefaults rules out.
	r.hits, _ = lru.New[string, cached](o.CacheSize)
	r.misses, _ = lru.New[string, time.Time](o.CacheSize)
	return r
}

// sources are asked in turn, best first for the runtime the cgroup path
// names: the CRI knows Kubernetes names for sure, files on disk are the
// fallback when no CRI answers.
func (r *Resolver) sources(runtime string) []source {
	switch runtime {
	case "systemd":
		return nil
	case "podman":
		return []source{r.storage}
	case "docker":
		// Docker's own file has the name and, through cri-dockerd, the
		// Kubernetes labels; the CRI adds nothing but is a fallback.
		return []source{r.docker, r.cri, r.podLogs}
	default:
		// containerd, cri-o, kubernetes (runtime unnamed), container.
		return []source{r.cri, r.storage, r.docker, r.podLogs}
	}
}

// Lookup names a container: runtime and id as owner.Container gives them
// (runtime may be "kubernetes" or "container" when the cgroup path does not
// say), podUID when known. With id empty it names the pod podUID (Pod and
// Namespace only).
//
// It returns within the Resolver's timeout (sooner if ctx ends), answers
// from a bounded cache, and a missing or dead runtime is never an error: ok
// is false and the caller shows the id.
func (r *Resolver) Lookup(ctx context.Context, runtime, id, podUID string) (Names, bool) {
	// An id belongs to one pod for its whole life: it alone keys the cache.
	key := id
	if id == "" {
		if podUID == "" {
			return Names{}, false
		}
		key = "pod:" + podUID
	} else if !isContainerID(id) {
		// A systemd unit, or anything no runtime would call a container id:
		// not worth a runtime call, and never a file path.
		return Names{}, false
	}
	if podUID != "" && !isPodUID(podUID) {
		podUID = ""
	}
	now := time.Now()
	old, had := r.hits.Get(key)
	if had && now.Before(old.expires) {
		return old.names, true
	}
	if until, missed := r.misses.Get(key); missed && now.Before(until) {
		return Names{}, false
	}
	if r.bg.life.Err() != nil {
		return old.names, had
	}

	caller := ctx
	ctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	for _, s := range r.sources(runtime) {
		if n, ok := s.lookup(ctx, id, podUID); ok {
			r.hits.Add(key, cached{names: n, expires: time.Now().Add(r.opts.HitTTL)})
			r.misses.Remove(key)
			return n, true
		}
	}
	if had {
		// The runtimes have forgotten the container (it exited), but its
		// sockets may outlive it: keep the name it had.
		r.hits.Add(key, cached{names: old.names, expires: time.Now().Add(r.opts.HitTTL)})
		return old.names, true
	}
	// A miss for want of time is remembered too (a hung runtime is not
	// asked again for every socket), unless the caller gave up first: then
	// the sources had no fair chance.
	if caller.Err() == nil {
		r.misses.Add(key, time.Now().Add(r.opts.MissTTL))
	}
	return Names{}, false
}

// Close stops the fetches under way, waits for them and closes the
// connections to the runtimes. Lookups after Close answer from the cache
// only.
func (r *Resolver) Close() error {
	var err error
	r.closeOnce.Do(func() {
		r.bg.stop()
		err = r.cri.close()
	})
	return err
}

// isContainerID: the ids docker, podman, containerd and CRI-O give
// containers are 64 lowercase hex digits.
func isContainerID(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// isPodUID: a Kubernetes UID, 8-4-4-4-12 hex digits from the API server,
// or 32 hex digits for a static pod (the kubelet hashes its manifest).
func isPodUID(s string) bool {
	if len(s) != 36 && len(s) != 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') && c != '-' {
			return false
		}
	}
	return true
}
