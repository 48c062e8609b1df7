package enrich

import (
	"context"
	"sync"
	"time"
)

// cache resolves keys on one worker goroutine and remembers the answers.
// A lookup never blocks: it returns an entry whose done channel closes once
// the value is known. Answers that name nothing are kept only for
// missTTL, so a cgroup made after its first event is named later; the
// map is bounded, and forgets everything when full.
type cache[K comparable, V any] struct {
	resolve func(K) (V, bool) // false: nothing known (yet)
	missTTL time.Duration
	max     int

	mu   sync.Mutex
	m    map[K]*entry[V]
	work chan workItem[K, V]
	stop chan struct{}
}

type entry[V any] struct {
	done  chan struct{}
	v     V
	found bool
	at    time.Time
}

type workItem[K comparable, V any] struct {
	k K
	e *entry[V]
}

func newCache[K comparable, V any](resolve func(K) (V, bool), missTTL time.Duration, max int) *cache[K, V] {
	c := &cache[K, V]{resolve: resolve, missTTL: missTTL, max: max, m: map[K]*entry[V]{},
		work: make(chan workItem[K, V], 1024), stop: make(chan struct{})}
	go c.worker()
	return c
}

func (c *cache[K, V]) worker() {
	for {
		select {
		case <-c.stop:
			return
		case w := <-c.work:
			w.e.v, w.e.found = c.resolve(w.k)
			w.e.at = time.Now()
			close(w.e.done)
		}
	}
}

// lookup returns the entry for k, starting its resolution if it has none.
func (c *cache[K, V]) lookup(k K) *entry[V] {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[k]; ok {
		select {
		case <-e.done:
			if e.found || time.Since(e.at) < c.missTTL {
				return e
			}
		default:
			return e // being resolved
		}
	}
	if len(c.m) >= c.max {
		c.m = map[K]*entry[V]{}
	}
	e := &entry[V]{done: make(chan struct{})}
	select {
	case c.work <- workItem[K, V]{k, e}:
		c.m[k] = e
	default: // the worker is far behind: unresolved this time, asked again later
		e.at = time.Now()
		close(e.done)
	}
	return e
}

// known reports whether the entry's resolution is over.
func (e *entry[V]) known() bool {
	select {
	case <-e.done:
		return true
	default:
		return false
	}
}

// wait gives the entry's value once known, or what is known at the deadline.
func (e *entry[V]) wait(d *deadline) (V, bool) {
	select { // known already: whatever the deadline says, and no timer
	case <-e.done:
		return e.v, e.found
	default:
	}
	select {
	case <-e.done:
		return e.v, e.found
	case <-d.done():
		var zero V
		return zero, false
	}
}

// close stops the worker; a resolution under way finishes on its own, so a
// stuck runtime or namespace does not hold up the end of the trace.
func (c *cache[K, V]) close() { close(c.stop) }

// deadline is how long a record waits for its names. Its timer starts
// only when some name is not known yet: the usual record, all of whose
// names are cached, needs none.
type deadline struct {
	by     time.Time
	ctx    context.Context
	cancel context.CancelFunc
}

func (d *deadline) done() <-chan struct{} {
	if d.ctx == nil {
		d.ctx, d.cancel = context.WithDeadline(context.Background(), d.by)
	}
	return d.ctx.Done()
}

// stop releases the timer, if one was started.
func (d *deadline) stop() {
	if d.cancel != nil {
		d.cancel()
	}
}
