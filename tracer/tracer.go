// Package tracer is the live source of the record stream: it probes the
// kernel for the hooks each TCP socket-memory event can use (memory aborts,
// pressure episodes, memory drops, allocation refusals, socket owners),
// loads and attaches the BPF programs, and streams their records and the
// exact in-kernel counts as stream.Records.
//
// Counts are kept in kernel maps and are exact; per-event records travel
// through a BPF ringbuf and are counted as lost when it is full. Records
// carry ids (cgroups, memory cgroups): naming them is a later stage's work.
package tracer

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/tcpmemtrace/tcpmemtrace/stream"
)

// Tracer is the live stream.Source.
type Tracer struct {
	cfg      Config
	info     stream.Info
	hooks    []hook
	coll     *ebpf.Collection
	links    []link.Link
	progs    []attached // for their statistics
	rd       *ringbuf.Reader
	wake     *ringWaiter
	dec      *decoder
	settings bpfConfig // the programs' load-time configuration
	probeFD  int       // a TCP socket of ours: the snapshot learns TCP's struct proto from it
	sampler  *ebpf.Program
	stopSamp chan struct{}
	sampDone chan struct{}
	sampNear chan struct{} // wakes the sampler's quick pace
	settle   settler
	stalls   stallCounter
	last     lastCounts
	detached sync.Once
	closed   sync.Once
}

// Probe reports the hooks New would use, without loading anything but the
// probes themselves.
func Probe(policy HookPolicy) ([]stream.Hook, error) {
	cache := btf.NewCache()
	k, err := loadKernelFacts(cache)
	if err != nil {
		return nil, err
	}
	return reports(selectHooks(k, policy, prober(cache))), nil
}

// New probes the kernel, loads the programs and attaches them. When it
// returns, every hook is attached and counting.
func New(cfg Config) (_ *Tracer, err error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("raising the memlock limit: %w", err)
	}
	if err := kernelCanServe(); err != nil {
		return nil, err
	}
	// Parsed once for the facts, the probes and the loads; let go when New
	// returns. Meanwhile, on the other CPU: our ELF and its maps.
	cache := btf.NewCache()
	objc := prepareObject(cfg.RingBufSize)
	k, err := loadKernelFacts(cache)
	obj := <-objc
	defer obj.close() // cloned into the collection, or not needed
	if err != nil {
		return nil, err
	}
	if obj.err != nil {
		return nil, obj.err
	}
	t := &Tracer{cfg: cfg, probeFD: -1}
	defer func() {
		if err != nil {
			t.Close()
		}
	}()
	t.hooks = selectHooks(k, cfg.Hooks, prober(cache))
	t.info = describe(cfg, k, t.hooks)
	if t.coll, err = t.load(obj, k, cache); err != nil {
		return nil, err
	}
	if err := t.prepareMaps(); err != nil {
		return nil, err
	}
	if err := t.attachAll(obj.spec); err != nil {
		return nil, err
	}
	// The snapshot learns TCP's struct proto from our own socket.
	if t.probeFD, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0); err != nil {
		return nil, fmt.Errorf("opening a TCP socket: %w", err)
	}
	t.snapshotOwners()
	if t.rd, err = ringbuf.NewReader(t.coll.Maps[bpfMapEvents]); err != nil {
		return nil, fmt.Errorf("opening the ringbuf: %w", err)
	}
	if t.wake, err = newRingWaiter(t.coll.Maps[bpfMapEvents], t.rd); err != nil {
		return nil, fmt.Errorf("waiting on the ringbuf: %w", err)
	}
	t.dec = newDecoder(bootToWall(), t.settings.RstAbortOnMemory)
	t.stalls = stallCounter{prog: t.coll.Programs[stallsOnly]}
	if initialPressure() != 0 { // under pressure already: count stalls now
		t.stalls.on()
	}
	t.startSettling()
	t.startSampler()
	t.info.Start = time.Now()
	return t, nil
}

// kernelCanServe says, in one line, what an older kernel lacks that every
// variant needs, and which kernel brought it.
func kernelCanServe() error {
	for _, f := range []struct {
		have  func() error
		what  string
		since string
	}{
		{func() error { return features.HaveProgramType(ebpf.Tracing) }, "BTF tracing programs (tp_btf, fexit)", "5.5"},
		{func() error { return features.HaveMapType(ebpf.RingBuf) }, "BPF ring buffers", "5.8"},
	} {
		if err := f.have(); errors.Is(err, ebpf.ErrNotSupported) {
			return fmt.Errorf("this kernel has no %s, which Linux %s brought: tcpmemtrace needs them", f.what, f.since)
		}
	}
	return nil
}

// describe is the trace's Info: the machine, the settings, the hooks.
func describe(cfg Config, k *kernelFacts, hooks []hook) stream.Info {
	info := machineInfo()
	info.NetNS, info.PIDs, info.Comm, info.RecordRate = cfg.NetNS, cfg.PIDs, cfg.Comm, cfg.RecordRate
	if cfg.Cgroup != nil {
		info.Cgroup = cfg.Cgroup.Path
	}
	info.Hooks = reports(hooks)
	_, info.DropReasons = k.dropSlots()
	return info
}

// prepareMaps fills the maps the programs expect before they run.
func (t *Tracer) prepareMaps() error {
	for _, pid := range t.cfg.PIDs {
		if err := t.coll.Maps[bpfMapPidFilter].Put(pid, uint8(1)); err != nil {
			return fmt.Errorf("setting the PID filter: %w", err)
		}
	}
	// Present before any hook runs, so a full per-owner map still counts.
	overflow := bpfOwnerKey{Tgid: stream.OverflowPID}
	if err := t.coll.Maps[bpfMapOwnerTotals].Put(&overflow, &bpfOwnerStats{}); err != nil {
		return fmt.Errorf("preparing the per-owner counts: %w", err)
	}
	return nil
}

// snapshotOwners gives sockets that predate the hooks the owner of an fd
// that holds them (the task_file iterator writes the owners map itself).
// It runs after attaching, so nothing falls between.
func (t *Tracer) snapshotOwners() {
	err := runIterator(t.coll.Programs[bpfProgSnapshotOwners])
	for i := range t.hooks {
		h := &t.hooks[i]
		if h.Event != stream.EventOwners {
			continue
		}
		if err != nil {
			h.Notes = append(h.Notes, "no startup snapshot: "+shortReason(err))
		} else {
			h.Using += ", iter/task_file snapshot at start"
		}
	}
	t.info.Hooks = reports(t.hooks)
}

// Info describes this trace.
func (t *Tracer) Info() stream.Info { return t.info }

// Totals reads the exact in-kernel counts now.
func (t *Tracer) Totals() (stream.Totals, error) {
	return readTotals(t.coll.Maps[bpfMapTotals], t.progs)
}

// Places reads the drops by place now.
func (t *Tracer) Places() ([]stream.Place, error) {
	return readPlaces(t.coll.Maps[bpfMapDropPlaces])
}

// Owners reads the exact per-owner counts now.
func (t *Tracer) Owners() ([]stream.OwnerCounts, error) {
	return readOwners(t.coll.Maps[bpfMapOwnerTotals])
}

// detach closes every link and stops the sampler and the settling.
// Programs already running on another CPU finish within microseconds; the
// pause lets their counts and records land before the final read.
func (t *Tracer) detach() {
	t.detached.Do(func() {
		t.stopSampler()
		t.stopSettling()
		t.stalls.off()
		for _, l := range t.links {
			l.Close()
		}
		time.Sleep(20 * time.Millisecond)
	})
}

// Close detaches and frees everything; it is safe to call more than once.
func (t *Tracer) Close() error {
	t.closed.Do(func() {
		t.detach()
		if t.wake != nil {
			t.wake.close()
		}
		if t.rd != nil {
			t.rd.Close()
		}
		if t.coll != nil {
			t.coll.Close()
		}
		if t.probeFD >= 0 {
			unix.Close(t.probeFD)
		}
	})
	return nil
}
