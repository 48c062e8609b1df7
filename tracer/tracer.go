// Package tracer counts TCP socket-memory events in the kernel and streams
// them: memory aborts (out of memory / too many orphans), pressure episodes,
// memory drops and allocation refusals, each with its socket and owner.
//
// Counts are exact and kept in kernel maps; per-event records travel through
// a BPF ringbuf and are counted as lost when it is full.
package tracer

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/tcpmemtrace/tcpmemtrace/internal/procfs"
	"github.com/tcpmemtrace/tcpmemtrace/internal/sockdiag"
)

// Config chooses what to trace and how.
type Config struct {
	// NetNS restricts counts and events to one network namespace (its
	// inode number); 0 traces all. Pressure is global and always counted.
	NetNS uint32
	// Owner filters, applied in the kernel before counting: only sockets
	// owned by one of PIDs (process ids), with command name Comm, or in
	// the cgroup v2 subtree Cgroup. Sockets of unknown owner then match none.
	PIDs   []uint32
	Comm   string
	Cgroup *CgroupFilter
	Hooks  HookPolicy
	// RingBufSize in bytes: a power of two, at least one page. Default 4 MiB.
	RingBufSize int
	// SampleInterval paces the /proc/net/protocols reader and the pressure
	// sampler. Default 100ms.
	SampleInterval time.Duration
	// SnapshotInterval paces the Snapshot records in the stream. Default 1s.
	SnapshotInterval time.Duration
	// RecordRate caps the drop and refusal records sent per second, shared
	// evenly by the CPUs (100 ms windows); events over it are counted in
	// Totals.Unsampled. Counts stay exact; aborts and pressure changes are
	// always sent. 0 sends every record.
	RecordRate int
}

func (c *Config) setDefaults() error {
	if c.RingBufSize == 0 {
		c.RingBufSize = 4 << 20
	}
	if c.SampleInterval == 0 {
		c.SampleInterval = 100 * time.Millisecond
	}
	if c.SnapshotInterval == 0 {
		c.SnapshotInterval = time.Second
	}
	var errs []error
	if n := c.RingBufSize; n < os.Getpagesize() || n&(n-1) != 0 {
		errs = append(errs, fmt.Errorf("ring buffer size %d: must be a power of two of at least %d", n, os.Getpagesize()))
	}
	if c.RecordRate < 0 {
		errs = append(errs, fmt.Errorf("record rate %d: must be 0 (no limit) or positive", c.RecordRate))
	}
	if c.SampleInterval < 0 || c.SnapshotInterval < 0 {
		errs = append(errs, errors.New("intervals must be positive"))
	}
	if len(c.PIDs) > maxPIDFilter {
		errs = append(errs, fmt.Errorf("at most %d PIDs can be selected", maxPIDFilter))
	}
	if len(c.Comm) > commLen-1 {
		c.Comm = c.Comm[:commLen-1] // the kernel keeps 15 bytes of a command name
	}
	return errors.Join(errs...)
}

// CgroupFilter selects a cgroup v2 and its descendants.
type CgroupFilter struct {
	ID    uint64 // the cgroup's id (its directory's inode)
	Level uint32 // its depth below the root (the root is 0)
	Path  string // for display
}

const (
	maxPIDFilter = 1024 // pid_filter's size
	commLen      = 16   // TASK_COMM_LEN
	filterPID    = 1    // FILTER_* in bpf/tcpmemtrace.h
	filterComm   = 2
	filterCgroup = 4
)

// Info describes a trace: the machine, the settings in force, the hooks.
type Info struct {
	Hostname   string    `json:"hostname"`
	Kernel     string    `json:"kernel"`
	BootID     string    `json:"boot_id"`
	PageSize   int       `json:"page_size"`
	Start      time.Time `json:"start"`
	TCPMem     [3]int64  `json:"tcp_mem"`  // pages
	TCPRmem    [3]int64  `json:"tcp_rmem"` // bytes
	TCPWmem    [3]int64  `json:"tcp_wmem"` // bytes
	MaxOrphans int64     `json:"tcp_max_orphans"`
	NetNS      uint32    `json:"netns,omitempty"`
	// RecordRate is Config.RecordRate: drop and refusal records per second
	// at most (0: all).
	RecordRate int `json:"record_rate,omitempty"`
	// Filters in force, as given.
	PIDs   []uint32 `json:"pids,omitempty"`
	Comm   string   `json:"comm,omitempty"`
	Cgroup string   `json:"cgroup,omitempty"`
	Hooks  []Hook   `json:"hooks"`
	// Notes are facts about this kernel that change how events are read.
	Notes []string `json:"notes,omitempty"`
	// DropReasons are the tracked drop reasons' values on the traced kernel.
	DropReasons map[string]uint32 `json:"drop_reasons"`
}

// Global is the protocol-wide state, sampled from /proc.
type Global struct {
	MemPages   int64    `json:"mem_pages"` // TCP memory in use (pages)
	Pressure   bool     `json:"pressure"`
	TCPMem     [3]int64 `json:"tcp_mem"`
	Orphans    int64    `json:"orphans"`     // global
	MaxOrphans int64    `json:"max_orphans"` // -1: unknown
	TimeWait   int64    `json:"time_wait"`   // in the tracer's network namespace
}

// Snapshot is a reading of the exact counts and of the global state.
type Snapshot struct {
	Time   time.Time
	Totals Totals
	// Owners are the exact per-owner counts (their sum is Totals' counts).
	Owners []OwnerCounts
	Global Global
	Final  bool // the last one, taken after the hooks were detached
}

// Record is one item of the stream: Event or Snapshot. Both point into
// memory the source reuses; they are valid until the callback returns.
type Record struct {
	Event    *Event
	Snapshot *Snapshot
}

// Source is a stream of records: the live kernel, or a recording.
type Source interface {
	Info() Info
	// Run calls fn for each record until ctx ends or the source is
	// exhausted; the last record is a final Snapshot.
	Run(ctx context.Context, fn func(Record) error) error
}

// holdersTop is how many holders a pressure episode records.
const holdersTop = 5

// Tracer is the live Source.
type Tracer struct {
	cfg      Config
	info     Info
	coll     *ebpf.Collection
	links    []link.Link
	progs    []*ebpf.Program
	rd       *ringbuf.Reader
	dec      *decoder
	names    *namer
	probeFD  int
	global   atomic.Pointer[Global]
	stopSamp chan struct{}
	sampDone chan struct{}
	detached sync.Once
	closed   sync.Once
}

// Probe reports the hooks New would use, without loading anything but the
// probes themselves.
func Probe(policy HookPolicy) ([]Hook, error) {
	cache := btf.NewCache()
	k, err := loadKernelFacts(cache)
	if err != nil {
		return nil, err
	}
	return selectHooks(k, policy, prober(cache)), nil
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
	// Parsed once for the facts, the probes and the loads; let go when New
	// returns.
	cache := btf.NewCache()
	// Meanwhile, on the other CPU: our ELF, and the maps whose shape owes
	// nothing to the kernel's facts.
	type object struct {
		spec *ebpf.CollectionSpec
		maps map[string]*ebpf.Map
		err  error
	}
	objc := make(chan object, 1)
	go func() {
		var o object
		if o.spec, o.err = loadBpf(); o.err == nil {
			o.spec.Maps[bpfMapEvents].MaxEntries = uint32(cfg.RingBufSize)
			o.maps, o.err = premakeMaps(o.spec)
		}
		objc <- o
	}()
	k, err := loadKernelFacts(cache)
	obj := <-objc
	defer func() { // cloned into the collection, or not needed
		for _, m := range obj.maps {
			m.Close()
		}
	}()
	if err != nil {
		return nil, err
	}
	t := &Tracer{cfg: cfg, probeFD: -1}
	defer func() {
		if err != nil {
			t.Close()
		}
	}()
	t.info = machineInfo()
	t.info.NetNS, t.info.PIDs, t.info.Comm, t.info.RecordRate = cfg.NetNS, cfg.PIDs, cfg.Comm, cfg.RecordRate
	var ownerFilters uint8
	var comm [2]uint64
	var cg CgroupFilter
	if len(cfg.PIDs) > 0 {
		ownerFilters |= filterPID
	}
	if cfg.Comm != "" {
		ownerFilters |= filterComm
		var b [commLen]byte
		copy(b[:], cfg.Comm)
		comm[0], comm[1] = binary.NativeEndian.Uint64(b[:8]), binary.NativeEndian.Uint64(b[8:])
	}
	if cfg.Cgroup != nil {
		ownerFilters |= filterCgroup
		cg = *cfg.Cgroup
		t.info.Cgroup = cg.Path
	}
	t.info.Hooks = selectHooks(k, cfg.Hooks, prober(cache))
	table, found := k.dropSlots()
	t.info.DropReasons = found
	rst, ok := k.rstReasons[AbortResetReason]
	if !ok {
		rst = 0xffffffff
	}

	spec := obj.spec
	if obj.err != nil {
		return nil, obj.err
	}
	vars := map[string]any{
		bpfVarDropSlot:            table,
		bpfVarRstAbortOnMemory:    rst,
		bpfVarSockMinSndbuf:       k.sockMinSndbuf(),
		bpfVarFilterNetns:         cfg.NetNS,
		bpfVarFilterOwner:         ownerFilters,
		bpfVarFilterComm:          comm,
		bpfVarFilterCgroupId:      cg.ID,
		bpfVarFilterCgroupLevel:   cg.Level,
		bpfVarPressureCur:         initialPressure(),
		bpfVarTcpSlotsElsewhere:   hooksSlotsElsewhere(t.info.Hooks),
		bpfVarReasonProtoMem:      found["PROTO_MEM"],
		bpfVarReasonSocketBacklog: found["SOCKET_BACKLOG"],
		bpfVarRecordsPerWindow:    recordsPerWindow(cfg.RecordRate, onlineCPUs()),
	}
	for name, v := range vars {
		if err := spec.Variables[name].Set(v); err != nil {
			return nil, fmt.Errorf("setting %s: %w", name, err)
		}
	}

	// Load only the programs the chosen variants need, and the snapshot.
	keep := map[string]bool{bpfProgSnapshotOwners: true}
	for _, h := range t.info.Hooks {
		for _, p := range h.programs {
			keep[p] = true
		}
	}
	sections := map[string]string{}
	for name, ps := range spec.Programs {
		if !keep[name] {
			delete(spec.Programs, name)
			continue
		}
		sections[name] = ps.SectionName
	}
	t.coll, err = loadCollection(spec, obj.maps, cache)
	if ve := (*ebpf.VerifierError)(nil); errors.As(err, &ve) && strings.Contains(strings.Join(ve.Log, "\n"), "invalid mem access 'scalar'") {
		// Older verifiers refuse loads through pointers to scalars; read
		// those few words with bpf_probe_read_kernel instead.
		if err := spec.Variables[bpfVarScalarPtrProbeRead].Set(uint8(1)); err != nil {
			return nil, err
		}
		t.coll, err = loadCollection(spec, obj.maps, cache)
		t.info.Notes = append(t.info.Notes, "this kernel's verifier refuses direct loads through pointers to scalars: memory_pressure and tcp_mem are read with bpf_probe_read_kernel")
	}
	if err != nil {
		return nil, loadError(err)
	}
	for _, pid := range cfg.PIDs {
		if err := t.coll.Maps[bpfMapPidFilter].Put(pid, uint8(1)); err != nil {
			return nil, fmt.Errorf("setting the PID filter: %w", err)
		}
	}
	// Present before any hook runs, so a full per-owner map still counts.
	overflow := bpfOwnerKey{Tgid: OverflowPID}
	if err := t.coll.Maps[bpfMapOwnerTotals].Put(&overflow, &bpfOwnerStats{}); err != nil {
		return nil, fmt.Errorf("preparing the per-owner counts: %w", err)
	}

	for i := range t.info.Hooks {
		if err := t.attach(&t.info.Hooks[i], sections); err != nil {
			return nil, err
		}
	}
	// Sockets that predate the hooks: their owners come from the open
	// files of every task. Run after attaching, so nothing falls between.
	if err := t.snapshotOwners(); err != nil {
		for i := range t.info.Hooks {
			if t.info.Hooks[i].Event == EventOwners {
				t.info.Hooks[i].Notes = append(t.info.Hooks[i].Notes, "no startup snapshot: "+shortReason(err))
			}
		}
	} else {
		for i := range t.info.Hooks {
			if t.info.Hooks[i].Event == EventOwners {
				t.info.Hooks[i].Using += ", iter/task_file snapshot at start"
			}
		}
	}
	t.names = newNamer()

	t.rd, err = ringbuf.NewReader(t.coll.Maps[bpfMapEvents])
	if err != nil {
		return nil, fmt.Errorf("opening the ringbuf: %w", err)
	}
	t.dec = newDecoder(bootToWall(), rst, t.names)
	t.startSampler()
	t.info.Start = time.Now()
	return t, nil
}

// recordDrain bounds how late a drop or refusal record is read.
const recordDrain = 100 * time.Millisecond

// recordWindow is RECORD_WINDOW_NS: the budget's period on each CPU.
const recordWindow = 100 * time.Millisecond

// recordsPerWindow splits a rate over the CPUs' windows, rounding up so a
// positive rate never becomes "no limit".
func recordsPerWindow(rate, cpus int) uint32 {
	if rate <= 0 {
		return 0
	}
	perSec := int(time.Second / recordWindow)
	return uint32(max(1, (rate+perSec*cpus-1)/(perSec*cpus)))
}

// onlineCPUs counts /sys/devices/system/cpu/online ("0-3,8"): the CPUs
// events can happen on, whatever this process's affinity.
func onlineCPUs() int {
	b, err := os.ReadFile("/sys/devices/system/cpu/online")
	if err != nil {
		return max(1, runtime.NumCPU())
	}
	n := 0
	for _, r := range strings.Split(strings.TrimSpace(string(b)), ",") {
		lo, hi, isRange := strings.Cut(r, "-")
		a, err1 := strconv.Atoi(lo)
		z, err2 := strconv.Atoi(hi)
		switch {
		case err1 != nil:
		case isRange && err2 == nil && z >= a:
			n += z - a + 1
		default:
			n++
		}
	}
	return max(1, n)
}

// snapshotOwners runs the task_file iterator once; its program writes the
// owners map directly and prints nothing.
func (t *Tracer) snapshotOwners() error {
	l, err := link.AttachIter(link.IterOptions{Program: t.coll.Programs[bpfProgSnapshotOwners]})
	if err != nil {
		return err
	}
	defer l.Close()
	it, err := l.Open()
	if err != nil {
		return err
	}
	defer it.Close()
	_, err = io.Copy(io.Discard, it)
	return err
}

func hooksSlotsElsewhere(hooks []Hook) uint8 {
	var m uint8
	for _, h := range hooks {
		m |= h.tcpSlotsElsewhere
	}
	return m
}

// loadError makes a verifier rejection readable: its last lines say why.
func loadError(err error) error {
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		log := ve.Log
		if len(log) > 12 {
			log = log[len(log)-12:]
		}
		return fmt.Errorf("the kernel's verifier rejected a program: %s\n%s", ve.Cause, strings.Join(log, "\n"))
	}
	return fmt.Errorf("loading BPF programs: %w", err)
}

func (t *Tracer) attach(h *Hook, sections map[string]string) error {
	for _, name := range h.programs {
		prog := t.coll.Programs[name]
		var (
			l   link.Link
			err error
		)
		if group, tp, ok := strings.Cut(strings.TrimPrefix(sections[name], "tracepoint/"), "/"); ok && strings.HasPrefix(sections[name], "tracepoint/") {
			if note := ensureTracefs(); note != "" {
				h.Notes = append(h.Notes, note)
			}
			l, err = link.Tracepoint(group, tp, prog, nil)
		} else {
			l, err = link.AttachTracing(link.TracingOptions{Program: prog})
		}
		if err != nil {
			if h.optional {
				h.Notes = append(h.Notes, fmt.Sprintf("%s: not attached: %s", sections[name], shortReason(err)))
				continue
			}
			return fmt.Errorf("attaching %s (%s): %w", sections[name], h.Event, err)
		}
		t.links = append(t.links, l)
		t.progs = append(t.progs, prog)
	}
	return nil
}

var tracefsOnce sync.Once

// ensureTracefs mounts tracefs when neither usual place has it: classic
// tracepoints are attached through their ids there.
func ensureTracefs() (note string) {
	tracefsOnce.Do(func() {
		for _, p := range []string{"/sys/kernel/tracing/events", "/sys/kernel/debug/tracing/events"} {
			if _, err := os.Stat(p); err == nil {
				return
			}
		}
		if err := unix.Mount("tracefs", "/sys/kernel/tracing", "tracefs", 0, ""); err == nil {
			note = "mounted tracefs at /sys/kernel/tracing"
		}
	})
	return note
}

// initialPressure seeds the BPF's pressure state: "no pressure" when /proc
// says so, so an episode starting right after attach is counted; otherwise
// unknown, so an episode older than the tracer is not.
func initialPressure() uint64 {
	p, err := procfs.Protocols()
	if err == nil && p["TCP"].Pressure == "no" {
		return 0
	}
	return ^uint64(0)
}

// Info describes this trace.
func (t *Tracer) Info() Info { return t.info }

// startSampler reads /proc/net/protocols and triggers a pressure sample in
// the kernel at every tick: a send on an unconnected TCP socket fires
// sock_send_length, whose program reads memory_pressure. This catches the
// end of an episode, which no other hook reliably sees.
func (t *Tracer) startSampler() {
	if fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0); err == nil {
		t.probeFD = fd
	}
	t.stopSamp, t.sampDone = make(chan struct{}), make(chan struct{})
	t.sampleOnce()
	go func() {
		defer close(t.sampDone)
		tick := time.NewTicker(t.cfg.SampleInterval)
		defer tick.Stop()
		for {
			select {
			case <-t.stopSamp:
				return
			case <-tick.C:
				t.sampleOnce()
			}
		}
	}()
}

func (t *Tracer) sampleOnce() {
	if t.probeFD >= 0 {
		_ = unix.Sendto(t.probeFD, nil, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL, nil) // EPIPE by design
	}
	g := readGlobal()
	t.global.Store(&g)
}

func readGlobal() Global {
	var g Global
	if p, err := procfs.Protocols(); err == nil {
		g.MemPages = max(p["TCP"].Memory, 0)
		g.Pressure = p["TCP"].Pressure == "yes"
	}
	g.TCPMem, _ = procfs.Triple("net/ipv4/tcp_mem")
	var err error
	if g.MaxOrphans, err = procfs.Int("net/ipv4/tcp_max_orphans"); err != nil {
		g.MaxOrphans = -1 // unreadable outside the host's network namespace
	}
	if st, err := procfs.Sockstat(procfs.Root + "/net/sockstat"); err == nil {
		g.Orphans, g.TimeWait = st["TCP orphan"], st["TCP tw"]
	}
	return g
}

// Totals reads the exact in-kernel counts now.
func (t *Tracer) Totals() (Totals, error) {
	return readTotals(t.coll.Maps[bpfMapTotals], t.progs)
}

// Owners reads the exact per-owner counts now.
func (t *Tracer) Owners() ([]OwnerCounts, error) {
	return readOwners(t.coll.Maps[bpfMapOwnerTotals], t.names.owner)
}

func (t *Tracer) snapshot(final bool) (Snapshot, error) {
	tot, err := t.Totals()
	if err != nil {
		return Snapshot{}, err
	}
	owners, err := t.Owners()
	if err != nil {
		return Snapshot{}, err
	}
	g := t.global.Load()
	if final {
		fresh := readGlobal()
		g = &fresh
	}
	return Snapshot{Time: time.Now(), Totals: tot, Owners: owners, Global: *g, Final: final}, nil
}

// Run streams records until ctx ends; then it detaches every hook, drains
// the ringbuf and ends with a final Snapshot whose totals are complete.
func (t *Tracer) Run(ctx context.Context, fn func(Record) error) error {
	stop := context.AfterFunc(ctx, func() { _ = t.rd.Flush() })
	defer stop()
	var (
		ev       Event
		rec      ringbuf.Record
		draining bool
		next     = time.Now() // a first snapshot at once: a baseline for every consumer
	)
	for {
		if !draining && ctx.Err() != nil {
			t.detach()
			draining = true
			t.rd.SetDeadline(time.Time{})
			if err := t.rd.Flush(); err != nil {
				return err
			}
		}
		if !draining {
			if now := time.Now(); !now.Before(next) {
				next = now.Add(t.cfg.SnapshotInterval)
				snap, err := t.snapshot(false)
				if err != nil {
					return err
				}
				if err := fn(Record{Snapshot: &snap}); err != nil {
					return err
				}
				continue
			}
			// Drop and refusal records do not wake the reader (see
			// submit() in the BPF): drain at least every recordDrain.
			deadline := time.Now().Add(recordDrain)
			if next.Before(deadline) {
				deadline = next
			}
			t.rd.SetDeadline(deadline)
		}
		err := t.rd.ReadInto(&rec)
		switch {
		case err == nil:
			if err := t.dec.decode(rec.RawSample, &ev); err != nil {
				return err
			}
			if ev.Kind == KindPressureEnter {
				// Who holds the memory as the episode begins: a few ms of
				// sock_diag, once per episode.
				ev.Holders, _ = sockdiag.Holders(holdersTop)
			}
			if err := fn(Record{Event: &ev}); err != nil {
				return err
			}
		case errors.Is(err, os.ErrDeadlineExceeded):
		case errors.Is(err, ringbuf.ErrFlushed):
			if draining {
				snap, err := t.snapshot(true)
				if err != nil {
					return err
				}
				return fn(Record{Snapshot: &snap})
			}
		default:
			return fmt.Errorf("reading the ringbuf: %w", err)
		}
	}
}

// detach closes every link and stops the sampler. Programs already running
// on another CPU finish within microseconds; the pause lets their counts and
// records land before the final read.
func (t *Tracer) detach() {
	t.detached.Do(func() {
		if t.stopSamp != nil {
			close(t.stopSamp)
			<-t.sampDone
		}
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

func machineInfo() Info {
	var i Info
	i.Hostname, _ = os.Hostname()
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		i.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/sys/kernel/random/boot_id"); err == nil {
		i.BootID = strings.TrimSpace(string(b))
	}
	i.PageSize = os.Getpagesize()
	i.TCPMem, _ = procfs.Triple("net/ipv4/tcp_mem")
	i.TCPRmem, _ = procfs.Triple("net/ipv4/tcp_rmem")
	i.TCPWmem, _ = procfs.Triple("net/ipv4/tcp_wmem")
	i.MaxOrphans, _ = procfs.Int("net/ipv4/tcp_max_orphans")
	return i
}

// bootToWall is wall-clock time minus CLOCK_BOOTTIME, to date BPF timestamps.
func bootToWall() int64 {
	var boot unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_BOOTTIME, &boot)
	return time.Now().UnixNano() - boot.Nano()
}
