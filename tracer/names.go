package tracer

import (
	"sync"

	"github.com/tcpmemtrace/tcpmemtrace/internal/owner"
)

// namer names cgroup ids, once per id: the tree walk is the only cost.
type namer struct {
	v2, mem *owner.Resolver
	mu      sync.Mutex
	parsed  map[uint64]Container
}

func newNamer() *namer {
	m, _ := owner.FindMounts() // without cgroup2, ids stay unnamed
	return &namer{v2: owner.NewResolver(m.V2), mem: owner.NewResolver(m.Memory), parsed: map[uint64]Container{}}
}

// owner fills the cgroup path and container of o from its cgroup id.
func (n *namer) owner(o *Owner) {
	if o.CgroupID == 0 {
		o.CgroupPath, o.Container = "", Container{}
		return
	}
	o.CgroupPath = n.v2.Path(o.CgroupID)
	n.mu.Lock()
	c, ok := n.parsed[o.CgroupID]
	if !ok && o.CgroupPath != "" {
		c, _ = owner.ParseContainer(o.CgroupPath)
		n.parsed[o.CgroupID] = c
	}
	n.mu.Unlock()
	o.Container = c
}

func (n *namer) memcg(id uint64) string { return n.mem.Path(id) }
