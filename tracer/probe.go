package tracer

import (
	"errors"
	"fmt"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// tracingProbe tries to load and attach a do-nothing fentry/fexit program on
// fn; nil means the real one will attach too.
type tracingProbe func(fn string, at ebpf.AttachType) error

var (
	probeMu    sync.Mutex
	probeCache = map[string]error{}
)

// prober is the real tracingProbe, its answers remembered: they do not
// change while the process runs. cache holds the kernel's parsed BTF.
func prober(cache *btf.Cache) tracingProbe {
	return func(fn string, at ebpf.AttachType) error { return probeTracing(cache, fn, at) }
}

func probeTracing(cache *btf.Cache, fn string, at ebpf.AttachType) error {
	key := fmt.Sprint(fn, at)
	probeMu.Lock()
	defer probeMu.Unlock()
	if err, ok := probeCache[key]; ok {
		return err
	}
	// EPERM (lockdown, an LSM) refuses every program of the attach type:
	// ask once, not once per function.
	refused := fmt.Sprint("refused ", at)
	if err, ok := probeCache[refused]; ok {
		return err
	}
	err := tryTracing(cache, fn, at)
	probeCache[key] = err
	if errors.Is(err, unix.EPERM) {
		probeCache[refused] = err
	}
	return err
}

func tryTracing(cache *btf.Cache, fn string, at ebpf.AttachType) error {
	// A collection of one: NewProgram would parse the kernel's BTF again.
	coll, err := ebpf.NewCollectionWithOptions(&ebpf.CollectionSpec{Programs: map[string]*ebpf.ProgramSpec{"probe": {
		Type:         ebpf.Tracing,
		AttachType:   at,
		AttachTo:     fn,
		License:      "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
	}}}, ebpf.CollectionOptions{Cache: cache})
	if err != nil {
		return err
	}
	defer coll.Close()
	l, err := link.AttachTracing(link.TracingOptions{Program: coll.Programs["probe"]})
	if err != nil {
		return err
	}
	return l.Close()
}

// shortReason turns a load/attach error into the few words an operator needs.
func shortReason(err error) string {
	switch {
	case errors.Is(err, unix.EPERM):
		return "operation not permitted"
	case errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, ebpf.ErrNotSupported):
		return "not supported by this kernel"
	case errors.Is(err, unix.ENOENT):
		return "no such function"
	}
	return err.Error()
}
