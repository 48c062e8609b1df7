package tracer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/tcpmemtrace/tcpmemtrace/stream"
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
	// SampleInterval paces the pressure sampler while TCP is under memory
	// pressure or holds at least half its pressure threshold; below that,
	// it samples with each snapshot. Default 100ms.
	SampleInterval time.Duration
	// SnapshotInterval paces the Snapshot records in the stream. Default 1s.
	SnapshotInterval time.Duration
	// RecordRate caps the drop and refusal records sent per second, shared
	// evenly by the CPUs (100 ms windows); events over it are counted in
	// Totals.Unsampled. Counts stay exact; aborts and pressure changes are
	// always sent. 0 sends every record.
	RecordRate int
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
)

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

// bpfSettings is the programs' load-time configuration (struct config) for
// this trace on this kernel.
func bpfSettings(cfg Config, k *kernelFacts, hooks []hook) bpfConfig {
	table, found := k.dropSlots()
	c := bpfConfig{
		DropSlot:            table,
		RstAbortOnMemory:    ^uint32(0),
		SockMinSndbuf:       k.sockMinSndbuf(),
		FilterNetns:         cfg.NetNS,
		ReasonProtoMem:      found["PROTO_MEM"],
		ReasonSocketBacklog: found["SOCKET_BACKLOG"],
		RecordsPerWindow:    recordsPerWindow(cfg.RecordRate, onlineCPUs()),
	}
	if rst, ok := k.rstReasons[stream.AbortResetReason]; ok {
		c.RstAbortOnMemory = rst
	}
	if len(cfg.PIDs) > 0 {
		c.FilterOwner |= uint8(bpfOwnerFilterOWNER_FILTER_PID)
	}
	if cfg.Comm != "" {
		c.FilterOwner |= uint8(bpfOwnerFilterOWNER_FILTER_COMM)
		var b [commLen]byte
		copy(b[:], cfg.Comm)
		c.FilterComm = [2]uint64{binary.NativeEndian.Uint64(b[:8]), binary.NativeEndian.Uint64(b[8:])}
	}
	if cfg.Cgroup != nil {
		c.FilterOwner |= uint8(bpfOwnerFilterOWNER_FILTER_CGROUP)
		c.FilterCgroupId, c.FilterCgroupLevel = cfg.Cgroup.ID, cfg.Cgroup.Level
	}
	for _, h := range hooks {
		c.TcpSlotsElsewhere |= h.tcpSlotsElsewhere
	}
	return c
}

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
