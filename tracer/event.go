package tracer

import (
	"fmt"
	"net/netip"
	"time"
	"unsafe"

	"github.com/tcpmemtrace/tcpmemtrace/internal/owner"
	"github.com/tcpmemtrace/tcpmemtrace/internal/sockdiag"
)

// Limits of the BPF side (bpf/tcpmemtrace.h); a test checks them against the object.
const (
	maxDropReasons    = 256
	dropSlots         = 8
	slotProtoMem      = 1 // SLOT_PROTO_MEM: MemoryDropReasons[0] + 1
	slotSocketBacklog = 2 // SLOT_SOCKET_BACKLOG
)

// Kind is the kind of a sampled event.
type Kind uint8

// Event kinds (enum event_kind).
const (
	KindAbort         Kind = 1
	KindDrop          Kind = 2
	KindRefusal       Kind = 3
	KindPressureEnter Kind = 4
	KindPressureLeave Kind = 5
)

var kindNames = map[Kind]string{
	KindAbort:         "abort",
	KindDrop:          "drop",
	KindRefusal:       "refusal",
	KindPressureEnter: "pressure_enter",
	KindPressureLeave: "pressure_leave",
}

func (k Kind) String() string {
	if s, ok := kindNames[k]; ok {
		return s
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Abort causes (enum abort_cause) as they appear in output.
const (
	CauseMemory  = "memory"  // "TCP: out of memory -- consider tuning tcp_mem"
	CauseOrphans = "orphans" // "TCP: too many orphaned sockets"
)

// Socket is the socket an event happened on.
type Socket struct {
	Cookie     uint64
	NetNS      uint32
	Family     uint16 // AF_INET, AF_INET6; 0 when the kernel gave no socket
	Protocol   uint8
	State      State
	Src, Dst   netip.AddrPort
	RmemAlloc  int32 // bytes
	Rcvbuf     int32
	WmemQueued int32
	Sndbuf     int32
	Memcg      bool   // charged to a memory cgroup
	MemcgID    uint64 // that memory cgroup
	MemcgPath  string
	CgroupID   uint64 // the socket's own cgroup v2 (its creator's; accepted sockets: the listener's)
	// Orphan: its owner closed it and the kernel still holds it (SOCK_DEAD).
	Orphan bool
	// ClosedAt is when the owner's close() or shutdown() sent the FIN.
	ClosedAt time.Time
}

// Owner is the process that owns a socket (not whoever ran the hook).
type Owner struct {
	PID        uint32 // 0: not known
	Comm       string
	CgroupID   uint64 // cgroup v2 id of the owner
	CgroupPath string
	Container  Container // zero when the path names none
}

// Container is the container, pod or systemd unit a cgroup path names.
type Container = owner.Container

// Mem is the protocol's memory state at the event, in pages.
type Mem struct {
	Allocated int64
	Limits    [3]int64 // tcp_mem: low, pressure, high
}

// Event is one sampled record. Counts never depend on events: they are kept
// exactly in the kernel (see Totals); events can be lost when the ring is full.
type Event struct {
	Time   time.Time
	Kind   Kind
	Cause  string // abort: CauseMemory or CauseOrphans
	Reason string // drop reason name; abort: reset reason name (tracepoint variant)
	// DropCause says why a TCP PROTO_MEM drop happened (DropCauses).
	DropCause string
	Send      bool // refusal: the send side (else receive)
	Socket    Socket
	Owner     Owner
	// CurrentPID ran the hook: on receive paths the sender, ksoftirqd or idle.
	CurrentPID uint32
	Bytes      uint32 // drop: skb->len
	Truesize   uint32
	Mem        Mem
	PressureID uint64 // jiffies at the start of the pressure episode in force, 0 if none
	// Holders (pressure_enter, live only): the processes whose sockets held
	// the most TCP memory as the episode began, in every network namespace.
	Holders []Holder
}

// Holder is a process and the memory its sockets' queues hold.
type Holder = sockdiag.Holder

// Process is a process id and command name.
type Process = sockdiag.Process

// decoder turns ringbuf records into Events without reflection.
type decoder struct {
	slots     [dropSlots]string // drop slot -> reason name
	rstValue  uint32
	bootToNow int64 // wall clock ns - CLOCK_BOOTTIME ns
	comms     map[[16]int8]string
	names     *namer // nil: ids only
}

var eventSize = int(unsafe.Sizeof(bpfEvent{}))

func newDecoder(bootToWall int64, rstValue uint32, names *namer) *decoder {
	d := &decoder{rstValue: rstValue, bootToNow: bootToWall, comms: map[[16]int8]string{}, names: names}
	for i, name := range MemoryDropReasons {
		d.slots[i+1] = name
	}
	return d
}

func (d *decoder) decode(raw []byte, ev *Event) error {
	if len(raw) < eventSize {
		return fmt.Errorf("short event: %d bytes, want %d", len(raw), eventSize)
	}
	r := (*bpfEvent)(unsafe.Pointer(&raw[0]))
	*ev = Event{
		Time:       time.Unix(0, d.bootToNow+int64(r.TsBootNs)),
		Kind:       Kind(r.Kind),
		CurrentPID: r.CurTgid,
		Bytes:      r.Len,
		Truesize:   r.Truesize,
		Mem:        Mem{Allocated: r.Allocated, Limits: r.MemLimit},
		PressureID: r.PressureId,
		Owner:      Owner{PID: r.Tgid, CgroupID: r.CgroupId, Comm: d.comm(r.Comm)},
	}
	switch ev.Kind {
	case KindAbort:
		ev.Cause = CauseOrphans
		if r.Detail == 1 {
			ev.Cause = CauseMemory
		}
		if r.Reason == d.rstValue && r.Reason != 0 {
			ev.Reason = AbortResetReason
		}
	case KindDrop:
		ev.Reason = d.slots[r.Detail&(dropSlots-1)]
		if r.Detail == slotProtoMem && r.Family != 0 && r.Protocol == 6 && int(r.Cause) < len(DropCauses) {
			ev.DropCause = DropCauses[r.Cause]
		}
	case KindRefusal:
		ev.Send = r.Detail == 0
	}
	s := &ev.Socket
	s.Cookie, s.NetNS, s.Family, s.Protocol = r.Cookie, r.Netns, r.Family, r.Protocol
	s.State = State(r.State)
	s.RmemAlloc, s.Rcvbuf, s.WmemQueued, s.Sndbuf = r.RmemAlloc, r.Rcvbuf, r.WmemQueued, r.Sndbuf
	s.Memcg, s.MemcgID, s.CgroupID, s.Orphan = r.Memcg != 0, r.MemcgId, r.SkCgroupId, r.Orphan != 0
	if r.ClosedNs != 0 {
		s.ClosedAt = time.Unix(0, d.bootToNow+int64(r.ClosedNs))
	} else {
		s.ClosedAt = time.Time{}
	}
	if d.names != nil {
		d.names.owner(&ev.Owner)
		s.MemcgPath = d.names.memcg(s.MemcgID)
	}
	switch r.Family {
	case afInet:
		s.Src = netip.AddrPortFrom(netip.AddrFrom4([4]byte(r.Saddr[:4])), r.Sport)
		s.Dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte(r.Daddr[:4])), r.Dport)
	case afInet6:
		s.Src = netip.AddrPortFrom(netip.AddrFrom16(r.Saddr), r.Sport)
		s.Dst = netip.AddrPortFrom(netip.AddrFrom16(r.Daddr), r.Dport)
	}
	return nil
}

// SinceClose is how long ago the owner closed the socket, at the event.
func (e *Event) SinceClose() (time.Duration, bool) {
	if e.Socket.ClosedAt.IsZero() {
		return 0, false
	}
	return e.Time.Sub(e.Socket.ClosedAt), true
}

// comm interns command names: a storm repeats a few, so no allocation per event.
func (d *decoder) comm(c [16]int8) string {
	if c[0] == 0 {
		return ""
	}
	if s, ok := d.comms[c]; ok {
		return s
	}
	b := make([]byte, 0, len(c))
	for _, ch := range c {
		if ch == 0 {
			break
		}
		b = append(b, byte(ch))
	}
	s := string(b)
	if len(d.comms) < 4096 {
		d.comms[c] = s
	}
	return s
}

const (
	afInet  = 2
	afInet6 = 10
)

// State is a TCP state (include/net/tcp_states.h).
type State uint8

var stateNames = [...]string{
	1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
	6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN",
	11: "CLOSING", 12: "NEW_SYN_RECV", 13: "BOUND_INACTIVE",
}

func (s State) String() string {
	if int(s) < len(stateNames) && stateNames[s] != "" {
		return stateNames[s]
	}
	if s == 0 {
		return ""
	}
	return fmt.Sprintf("STATE%d", uint8(s))
}
