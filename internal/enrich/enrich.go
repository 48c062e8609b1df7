// Package enrich names what the kernel gives as ids: the cgroup path and
// container of each socket's owner, what the container runtime calls that
// container (and its pod), the memory cgroup of a socket; and it says who
// holds the most TCP memory and which sockets wait for a reader that does
// not read, as a pressure episode begins, in the final snapshot and, when
// asked, in every snapshot.
//
// It is a stage between a source and its consumers. The source's records
// are queued as they come, and named off the source's goroutine by workers
// that cache their answers; a record waits for its names at most Wait, so
// a slow namespace, cgroup tree or container runtime costs detail, never
// the draining of the kernel's ring buffer. When the consumers fall behind
// by a full queue, the source waits, and a full ring buffer is counted in
// the kernel (lost samples), never silently.
package enrich

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tcpmemtrace/tcpmemtrace/internal/ctrnames"
	"github.com/tcpmemtrace/tcpmemtrace/internal/ksym"
	"github.com/tcpmemtrace/tcpmemtrace/internal/owner"
	"github.com/tcpmemtrace/tcpmemtrace/internal/sockdiag"
	"github.com/tcpmemtrace/tcpmemtrace/stream"
)

// Options tune the stage; zero values take the defaults.
type Options struct {
	// Cgroups names cgroup ids; nil: the host's cgroup hierarchies.
	Cgroups Cgroups
	// Holders lists the processes holding the most TCP memory, and the
	// stalled sockets; nil: sock_diag in every network namespace.
	Holders func(n int) (sockdiag.Holdings, error)
	// HoldersTop is how many holders a pressure episode records (5).
	HoldersTop int
	// Wait is the most a record waits for its names (1s).
	Wait time.Duration
	// Queue is how many records wait between source and consumers (4096).
	Queue int
	// Names asks container runtimes what they call a container; nil: the
	// host's runtimes (CRI, docker, podman, kubelet files), through
	// ctrnames. A runtime that does not answer costs the names only.
	Names Namer
	// HoldersEvery, when not 0, puts the processes holding the most TCP
	// memory now into a snapshot that often (sock_diag in every network
	// namespace: a few milliseconds each). The final snapshot has them
	// whatever it says. HoldersTracked bounds them (200).
	HoldersEvery   time.Duration
	HoldersTracked int
	// Symbols reads the kernel's symbol table, to name the places packets
	// are dropped; nil: /proc/kallsyms.
	Symbols func() (*ksym.Table, error)
}

// Namer names containers: ctrnames.Resolver is one.
type Namer = ctrnames.Namer

// Cgroups names cgroup ids: an owner's (cgroup v2) and a socket's memory
// cgroup's; "" when the id names nothing (any more).
type Cgroups interface {
	Path(id uint64) string
	MemcgPath(id uint64) string
}

// Wrap makes src's records come out named.
func Wrap(src stream.Source, o Options) stream.Source {
	if o.HoldersTop == 0 {
		o.HoldersTop = 5
	}
	if o.Wait == 0 {
		o.Wait = time.Second
	}
	if o.Queue == 0 {
		o.Queue = 4096
	}
	if o.Holders == nil {
		o.Holders = sockdiag.Holders
	}
	if o.HoldersTracked == 0 {
		o.HoldersTracked = 200
	}
	return &stage{src: src, o: o}
}

type stage struct {
	src stream.Source
	o   Options
	// Set by Run:
	owners  *cache[uint64, names]
	names   *cache[stream.Container, ctrnames.Names]
	holders atomic.Pointer[sockdiag.Holdings] // the last poll's, until a snapshot takes them
	symbols *symbols
}

func (s *stage) Info() stream.Info { return s.src.Info() }

// names is what a cgroup id says about its processes.
type names struct {
	path      string
	container stream.Container
}

// item is a record waiting in the queue, with the lookups it waits for.
type item struct {
	rec stream.Record
	ev  stream.Event
	// snap is made for snapshots only: most records are events, and a
	// snapshot's struct would double what each of them allocates.
	snap    *stream.Snapshot
	owner   *entry[names]
	memcg   *entry[string]
	owners  []*entry[names]
	holders chan *sockdiag.Holdings // a pressure episode's start, the final snapshot
	by      time.Time               // when to stop waiting
}

// containerNames fills in what the runtime calls c, if it answers in time.
func (s *stage) containerNames(c *stream.Container, d *deadline) {
	if !ctrnames.WorthAsking(c.Runtime, c.ID, c.Pod) || c.Named() {
		return
	}
	if n, ok := s.names.lookup(*c).wait(d); ok {
		c.Name, c.PodName, c.Namespace = n.Name, n.Pod, n.Namespace
	}
}

// Run runs the source, names its records and hands them to fn in order.
func (s *stage) Run(ctx context.Context, fn func(stream.Record) error) error {
	cg := s.o.Cgroups
	if cg == nil {
		cg = hostCgroups()
	}
	owners := newCache(func(id uint64) (names, bool) {
		p := cg.Path(id)
		c, _ := owner.ParseContainer(p)
		return names{p, c}, p != ""
	}, time.Second, 1<<16)
	defer owners.close()
	memcgs := newCache(func(id uint64) (string, bool) {
		p := cg.MemcgPath(id)
		return p, p != ""
	}, time.Second, 1<<16)
	defer memcgs.close()
	namer := s.o.Names
	if namer == nil {
		r := ctrnames.New(ctrnames.Options{})
		defer r.Close()
		namer = r
	}
	load := s.o.Symbols
	if load == nil {
		load = func() (*ksym.Table, error) { return ksym.Load("/proc/kallsyms") }
	}
	s.symbols = newSymbols(load)
	s.names = newCache(func(c stream.Container) (ctrnames.Names, bool) {
		return namer.Lookup(context.Background(), c.Runtime, c.ID, c.Pod) // bounded by the namer's timeout
	}, 5*time.Second, 1<<14)
	defer s.names.close()
	s.owners = owners
	if s.o.HoldersEvery > 0 {
		stop := s.pollHolders(ctx)
		defer stop()
	}

	srcCtx, stopSource := context.WithCancel(ctx)
	defer stopSource()
	q := newQueue(s.o.Queue)
	srcErr := make(chan error, 1)
	go func() {
		srcErr <- s.src.Run(srcCtx, func(r stream.Record) error {
			return q.push(s.prepare(r, owners, memcgs))
		})
		q.close()
	}()

	var consumerErr error
	for {
		it, ok := q.pop()
		if !ok {
			break
		}
		if consumerErr != nil {
			continue // drain, so the source can end
		}
		if err := fn(s.finish(it)); err != nil {
			consumerErr = err
			stopSource()
		}
	}
	if err := <-srcErr; consumerErr == nil {
		return err
	}
	return consumerErr
}

// prepare copies a record off the source's reused memory and starts the
// lookups it needs. It runs on the source's goroutine and never blocks.
func (s *stage) prepare(r stream.Record, owners *cache[uint64, names], memcgs *cache[uint64, string]) *item {
	it := &item{by: time.Now().Add(s.o.Wait)}
	if r.Event != nil && r.Event.LocationAddr != 0 || r.Snapshot != nil && len(r.Snapshot.Totals.Places) > 0 {
		s.symbols.start() // read by the time the record is finished, usually
	}
	if r.Event != nil {
		it.ev = *r.Event
		it.rec.Event = &it.ev
		if it.ev.Owner.CgroupID != 0 {
			it.owner = owners.lookup(it.ev.Owner.CgroupID)
		}
		if it.ev.Socket.MemcgID != 0 {
			it.memcg = memcgs.lookup(it.ev.Socket.MemcgID)
		}
		if it.ev.Kind == stream.KindPressureEnter && it.ev.Holders == nil {
			it.holders = s.look(s.o.HoldersTop)
		}
	}
	if r.Snapshot != nil {
		snap := *r.Snapshot
		it.snap = &snap
		it.snap.Owners = append([]stream.OwnerCounts(nil), r.Snapshot.Owners...)
		if h := s.holders.Swap(nil); h != nil && it.snap.Holders == nil {
			it.snap.Holders, it.snap.Stalled = h.Holders, h.Stalled
		}
		// The summary shows who holds the memory and who stopped reading
		// at the end: the last snapshot looks afresh (the hooks are gone,
		// the sockets are not), and keeps the last poll's if that is late.
		if it.snap.Final {
			it.holders = s.look(s.o.HoldersTracked)
		}
		it.rec.Snapshot = it.snap
		for _, o := range it.snap.Owners {
			var e *entry[names]
			if o.CgroupID != 0 && o.CgroupPath == "" {
				e = owners.lookup(o.CgroupID)
			}
			it.owners = append(it.owners, e)
		}
	}
	return it
}

// finish waits for the item's lookups (until its deadline) and fills in
// what they found.
func (s *stage) finish(it *item) stream.Record {
	// One deadline for every wait below: a record waits Wait in all.
	d := &deadline{by: it.by}
	defer d.stop()
	if it.owner != nil {
		if n, ok := it.owner.wait(d); ok {
			it.ev.Owner.CgroupPath, it.ev.Owner.Container = n.path, n.container
		}
	}
	s.containerNames(&it.ev.Owner.Container, d)
	if it.ev.LocationAddr != 0 && it.ev.Location == "" {
		it.ev.Location = s.symbols.name(it.ev.LocationAddr, d)
	}
	if it.rec.Snapshot != nil {
		it.snap.Totals.Places = s.symbols.places(it.snap.Totals.Places, d)
	}
	if it.memcg != nil {
		if p, ok := it.memcg.wait(d); ok {
			it.ev.Socket.MemcgPath = p
		}
	}
	if it.holders != nil {
		var h *sockdiag.Holdings
		select {
		case h = <-it.holders:
		default:
			select {
			case h = <-it.holders:
			case <-d.done():
			}
		}
		switch {
		case h == nil: // late, or sock_diag failed
		case it.rec.Event != nil:
			it.ev.Holders = h.Holders
		default:
			it.snap.Holders, it.snap.Stalled = h.Holders, h.Stalled
		}
	}
	for i, e := range it.owners {
		o := &it.snap.Owners[i]
		if e != nil {
			if n, ok := e.wait(d); ok {
				o.CgroupPath, o.Container = n.path, n.container
			}
		}
		s.containerNames(&o.Container, d)
	}
	return it.rec
}

// nameHolders gives each holder its cgroup and container, and what the
// runtime calls it if it answers within Wait. It runs off the records'
// path (a poll, or a pressure episode's start).
func (s *stage) nameHolders(hs []stream.Holder) {
	d := &deadline{by: time.Now().Add(s.o.Wait)}
	defer d.stop()
	for i := range hs {
		h := &hs[i]
		h.CgroupPath = owner.ProcessCgroup("/proc", h.PID)
		if c, ok := owner.ParseContainer(h.CgroupPath); ok {
			s.containerNames(&c, d)
			h.Container = &c
		}
	}
}

// look asks who holds TCP memory now, off the records' path; the answer,
// named, comes on the channel (nil when sock_diag failed).
func (s *stage) look(n int) chan *sockdiag.Holdings {
	c := make(chan *sockdiag.Holdings, 1)
	go func() {
		h, err := s.o.Holders(n)
		if err != nil {
			c <- nil
			return
		}
		s.nameHolders(h.Holders)
		c <- &h
	}()
	return c
}

// pollHolders looks at who holds TCP memory every HoldersEvery, for the
// next snapshot to carry, until the returned function is called.
func (s *stage) pollHolders(ctx context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(s.o.HoldersEvery)
		defer t.Stop()
		for {
			if hs, err := s.o.Holders(s.o.HoldersTracked); err == nil {
				s.nameHolders(hs.Holders)
				s.holders.Store(&hs)
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return func() { cancel(); <-done }
}

// queue hands items from the source's goroutine to the consumers', in
// order, a batch at a time; push waits while it is full.
type queue struct {
	mu     sync.Mutex
	cond   *sync.Cond
	items  []*item
	max    int
	closed bool
}

func newQueue(max int) *queue {
	q := &queue{max: max}
	q.cond = sync.NewCond(&q.mu)
	return q
}

func (q *queue) push(it *item) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.items) >= q.max && !q.closed {
		q.cond.Wait()
	}
	q.items = append(q.items, it)
	q.cond.Broadcast()
	return nil
}

// pop returns the next item; false once the queue is closed and empty.
func (q *queue) pop() (*item, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.items) == 0 && !q.closed {
		q.cond.Wait()
	}
	if len(q.items) == 0 {
		return nil, false
	}
	it := q.items[0]
	q.items[0] = nil
	q.items = q.items[1:]
	if len(q.items) == 0 {
		q.items = q.items[:0:0] // let the backing array go
	}
	q.cond.Broadcast()
	return it, true
}

func (q *queue) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = true
	q.cond.Broadcast()
}

// hostCgroups names ids below the host's cgroup mounts.
func hostCgroups() Cgroups {
	m, _ := owner.FindMounts() // without cgroup2, ids stay unnamed
	return resolvers{v2: owner.NewResolver(m.V2), mem: owner.NewResolver(m.Memory)}
}

type resolvers struct{ v2, mem *owner.Resolver }

func (r resolvers) Path(id uint64) string      { return r.v2.Path(id) }
func (r resolvers) MemcgPath(id uint64) string { return r.mem.Path(id) }
