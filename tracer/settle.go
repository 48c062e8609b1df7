package tracer

import (
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// settler settles owners from the open files (the settle_owners iterator)
// when the kernel says a socket changed hands, its owner exited, or an
// event found a socket with no known owner. It runs on a goroutine of its
// own: a pass walks every task's files, and must not hold up the reader.
type settler struct {
	prog       *ebpf.Program
	handovers  *ebpf.Map
	exited     *ebpf.Map
	requests   chan struct{}
	stop, done chan struct{}
}

const (
	// settleDelay lets the close that asked for a pass finish first, so the
	// pass finds the socket in the new holder's files only.
	settleDelay = 10 * time.Millisecond
	// settleRetry: a socket still in flight (passed over a unix socket and
	// not yet received) is looked for again this often...
	settleRetry = 100 * time.Millisecond
	// ... for this long; then its last owner stays.
	handoverGiveUp = 10 * time.Second
	// A previous owner found still holding it (a dup) keeps it after this.
	handoverKeep = time.Second
)

func (t *Tracer) startSettling() {
	t.settle = settler{prog: t.coll.Programs[bpfProgSettleOwners], handovers: t.coll.Maps[bpfMapHandovers],
		exited: t.coll.Maps[bpfMapExitedOwners], requests: make(chan struct{}, 1),
		stop: make(chan struct{}), done: make(chan struct{})}
	go t.settle.loop()
}

func (s *settler) request() {
	select {
	case s.requests <- struct{}{}:
	default: // one is pending: it will see this one's socket too
	}
}

func (s *settler) loop() {
	defer close(s.done)
	var retry <-chan time.Time
	for {
		select {
		case <-s.stop:
			return
		case <-s.requests:
			time.Sleep(settleDelay)
		case <-retry:
		}
		retry = nil
		if s.pass() {
			retry = time.After(settleRetry)
		}
	}
}

// pass runs the iterator once, then tidies what it leaves: it reports
// whether hand-overs are still to be settled.
func (s *settler) pass() (pending bool) {
	if err := runIterator(s.prog); err != nil {
		return false
	}
	now := uint64(bootNow().Nanoseconds())
	var (
		key uint64
		h   bpfHandover
	)
	var done []uint64
	it := s.handovers.Iterate()
	for it.Next(&key, &h) {
		age := time.Duration(now - h.At)
		if age > handoverGiveUp || (h.FromHolds != 0 && age > handoverKeep) {
			done = append(done, key)
			continue
		}
		pending = true
		if h.FromHolds != 0 { // look again: the old owner may be closing it still
			h.FromHolds = 0
			s.handovers.Update(key, h, ebpf.UpdateExist)
		}
	}
	for _, k := range done {
		s.handovers.Delete(k)
	}
	var tgid uint32
	var at uint64
	var gone []uint32
	for it := s.exited.Iterate(); it.Next(&tgid, &at); {
		gone = append(gone, tgid)
	}
	for _, g := range gone {
		s.exited.Delete(g)
	}
	return pending
}

func (t *Tracer) stopSettling() {
	if t.settle.stop != nil {
		close(t.settle.stop)
		<-t.settle.done
	}
}

// stallCounter attaches the send-stall program while TCP is under memory
// pressure: it would otherwise run on every send of the machine.
type stallCounter struct {
	prog *ebpf.Program // nil before 6.3
	link link.Link
}

func (s *stallCounter) on() {
	if s.prog == nil || s.link != nil {
		return
	}
	if l, err := link.AttachTracing(link.TracingOptions{Program: s.prog}); err == nil {
		s.link = l
	}
}

func (s *stallCounter) off() {
	if s.link != nil {
		s.link.Close()
		s.link = nil
	}
}
