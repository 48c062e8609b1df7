package ctrnames

import (
	"context"
	"sync"
	"time"
)

// background runs the fetches that may outlive the Lookup that started
// them, for the Resolver's lifetime: stop cancels them and waits for them,
// and none starts after.
type background struct {
	life   context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	stopped bool
	wg      sync.WaitGroup
}

func newBackground() *background {
	b := &background{}
	b.life, b.cancel = context.WithCancel(context.Background())
	return b
}

// run starts f in a goroutine, unless stop was called.
func (b *background) run(f func(life context.Context)) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopped {
		return false
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		f(b.life)
	}()
	return true
}

func (b *background) stop() {
	b.mu.Lock()
	b.stopped = true
	b.cancel()
	b.mu.Unlock()
	b.wg.Wait()
}

// A snapshot holds one whole list of containers (a runtime's, or a file's
// or directory's on disk), fetched again at most once per interval however
// many lookups miss it: a flood of unknown ids costs one fetch per
// interval, not one runtime call per id.
type snapshot[T any] struct {
	fetch    func(context.Context) (T, error)
	interval time.Duration
	// timeout bounds a fetch run in the background; zero: fetch in the
	// caller, for reads of local files that cannot hang on a daemon.
	timeout time.Duration
	bg      *background

	mu      sync.Mutex
	value   T
	started time.Time     // when the last fetch started
	running chan struct{} // closed when the fetch under way ends; nil when none is
	fetches int           // fetches started, for tests
}

// find reports whether match accepts the list. When it does not, and the
// last fetch started at least interval ago, the list is fetched again first
// (or a fetch already under way is waited for), within ctx. A failed fetch
// keeps the list it had: runtimes rarely forget containers that still run.
func (s *snapshot[T]) find(ctx context.Context, match func(T) bool) bool {
	s.mu.Lock()
	if !s.started.IsZero() && match(s.value) {
		s.mu.Unlock()
		return true
	}
	if s.running == nil && (s.started.IsZero() || time.Since(s.started) >= s.interval) {
		if s.bg.life.Err() != nil {
			s.mu.Unlock()
			return false
		}
		running := make(chan struct{})
		if s.timeout == 0 {
			s.started, s.running = time.Now(), running
			s.fetches++
			s.mu.Unlock()
			s.refresh(s.bg.life)
			s.mu.Lock()
			found := match(s.value)
			s.mu.Unlock()
			return found
		}
		// Not the caller's ctx: a fetch that outlives a hurried Lookup
		// still fills the list for the next one.
		if s.bg.run(func(life context.Context) {
			fctx, cancel := context.WithTimeout(life, s.timeout)
			defer cancel()
			s.refresh(fctx)
		}) {
			s.started, s.running = time.Now(), running
			s.fetches++
		}
	}
	running := s.running
	s.mu.Unlock()
	if running == nil {
		return false
	}
	select {
	case <-running:
	case <-ctx.Done():
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return match(s.value)
}

// refresh runs one fetch and publishes its list.
func (s *snapshot[T]) refresh(ctx context.Context) {
	v, err := s.fetch(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil {
		s.value = v
	}
	close(s.running)
	s.running = nil
}
