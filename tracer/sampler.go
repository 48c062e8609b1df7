package tracer

import (
	"os"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/tcpmemtrace/tcpmemtrace/internal/procfs"
	"github.com/tcpmemtrace/tcpmemtrace/stream"
)

// startSampler runs the pressure sampler program, where no fexit on
// tcp_{enter,leave}_memory_pressure tells of episodes: it catches the end of
// one, which no other hook reliably sees. Run on demand (BPF_PROG_TEST_RUN),
// it costs nothing between runs, and each run says whether TCP is near
// pressure. Far from it, each snapshot samples (sampleQuiet), so an idle
// machine wakes the tracer once a second; near or under pressure, this
// goroutine samples every SampleInterval until it is far again.
func (t *Tracer) startSampler() {
	if t.sampler == nil {
		return
	}
	t.stopSamp, t.sampDone = make(chan struct{}), make(chan struct{})
	t.sampNear = make(chan struct{}, 1)
	t.sampleQuiet()
	go func() {
		defer close(t.sampDone)
		tick := time.NewTicker(t.cfg.SampleInterval)
		defer tick.Stop()
		for {
			tick.Stop() // far from pressure: the snapshots sample
			select {
			case <-t.stopSamp:
				return
			case <-t.sampNear:
			}
			tick.Reset(t.cfg.SampleInterval)
			for near := true; near; {
				select {
				case <-t.stopSamp:
					return
				case <-tick.C:
					near = t.sampleOnce()
				}
			}
		}
	}()
}

// sampleOnce runs the sampler and reports whether TCP is near pressure
// (or the run failed, and it cannot tell).
func (t *Tracer) sampleOnce() bool {
	near, err := t.sampler.Run(&ebpf.RunOptions{})
	return err != nil || near != 0
}

// sampleQuiet is the sample taken with each snapshot; near pressure, it
// hands the pace to the sampler's goroutine.
func (t *Tracer) sampleQuiet() {
	if t.sampler == nil || !t.sampleOnce() {
		return
	}
	select {
	case t.sampNear <- struct{}{}:
	default: // already near
	}
}

func (t *Tracer) stopSampler() {
	if t.stopSamp != nil {
		close(t.stopSamp)
		<-t.sampDone
	}
}

// readGlobal reads the protocol-wide state from /proc.
func readGlobal() stream.Global {
	var g stream.Global
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

// machineInfo describes the machine and its TCP memory settings.
func machineInfo() stream.Info {
	var i stream.Info
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
func bootToWall() int64 { return time.Now().UnixNano() - int64(bootNow()) }

// bootNow is CLOCK_BOOTTIME, the clock of bpf_ktime_get_boot_ns.
func bootNow() time.Duration {
	var boot unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_BOOTTIME, &boot)
	return time.Duration(boot.Nano())
}
