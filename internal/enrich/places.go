package enrich

import (
	"sync"

	"github.com/tcpmemtrace/tcpmemtrace/internal/ksym"
	"github.com/tcpmemtrace/tcpmemtrace/stream"
)

// symbols names the places the kernel drops packets. The kernel's symbol
// table takes tens of milliseconds to read: it is read once, off the
// records' path, when the first place needs a name, and never on a trace
// that has none.
type symbols struct {
	load  func() (*ksym.Table, error)
	once  sync.Once
	ready chan struct{}
	table *ksym.Table // nil when unreadable: places stay unnamed
	names map[uint64]string
}

func newSymbols(load func() (*ksym.Table, error)) *symbols {
	return &symbols{load: load, ready: make(chan struct{}), names: map[uint64]string{}}
}

// start begins reading the table, once.
func (y *symbols) start() {
	y.once.Do(func() {
		go func() {
			defer close(y.ready)
			if t, err := y.load(); err == nil {
				y.table = t
			}
		}()
	})
}

// name is addr's function+offset, "" when the table is unreadable or not
// read by the deadline. Only the consumers' goroutine calls it.
func (y *symbols) name(addr uint64, d *deadline) string {
	if addr == 0 {
		return ""
	}
	if n, ok := y.names[addr]; ok {
		return n
	}
	y.start()
	select {
	case <-y.ready:
	default:
		select {
		case <-y.ready:
		case <-d.done():
			return ""
		}
	}
	n := ""
	if y.table != nil {
		n = y.table.Name(addr)
	}
	y.names[addr] = n
	return n
}

// places names the drops by place of a snapshot's totals, in place (the
// slice is the stage's own copy).
func (y *symbols) places(ps []stream.Place, d *deadline) []stream.Place {
	if len(ps) == 0 {
		return ps
	}
	out := make([]stream.Place, len(ps))
	for i, p := range ps {
		if p.Name == "" {
			p.Name = y.name(p.Addr, d)
		}
		out[i] = p
	}
	return out
}
