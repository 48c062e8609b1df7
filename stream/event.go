package stream

import (
	"fmt"
	"net/netip"
	"time"
)

func (k Kind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

func (c AbortCause) String() string {
	if int(c) < len(abortCauseNames) && abortCauseNames[c] != "" {
		return abortCauseNames[c]
	}
	return fmt.Sprintf("cause(%d)", uint8(c))
}

// Abort causes as they appear in output.
var (
	CauseMemory  = AbortMemory.String()  // "TCP: out of memory -- consider tuning tcp_mem"
	CauseOrphans = AbortOrphans.String() // "TCP: too many orphaned sockets"
)

// AbortResetReason is the tcp_send_reset reason of a memory abort (6.12+).
const AbortResetReason = "TCP_ABORT_ON_MEMORY"

// OverflowPID marks the counts of owners that did not fit in the kernel's
// per-owner map: they are counted together, never dropped.
const OverflowPID = 0xffffffff

// Event is one sampled record. Counts never depend on events: they are kept
// exactly in the kernel (see Totals); events can be lost when the ring is full.
type Event struct {
	Time   time.Time
	Kind   Kind
	Cause  string // abort: CauseMemory or CauseOrphans
	Reason string // drop reason name; abort: reset reason name (tracepoint variant)
	// DropCause says why a TCP PROTO_MEM drop happened (DropCause names).
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
	// Location is where the kernel freed a dropped packet (kfree_skb's
	// location): LocationAddr as the source gives it, Location named
	// function+0xoffset; both empty where the kernel gives none.
	LocationAddr uint64
	Location     string
	// Holders (pressure_enter, live only): the processes whose sockets held
	// the most TCP memory as the episode began, in every network namespace.
	Holders []Holder
}

// SinceClose is how long ago the owner closed the socket, at the event.
func (e *Event) SinceClose() (time.Duration, bool) {
	if e.Socket.ClosedAt.IsZero() {
		return 0, false
	}
	return e.Time.Sub(e.Socket.ClosedAt), true
}

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

// IsTCP reports whether the kernel gave a TCP socket.
func (s *Socket) IsTCP() bool { return s.Family != 0 && s.Protocol == ProtocolTCP }

// IP protocol numbers (include/uapi/linux/in.h).
const (
	ProtocolTCP = 6
	ProtocolUDP = 17
)

// Owner is the process that owns a socket (not whoever ran the hook).
type Owner struct {
	PID        uint32 // 0: not known
	Comm       string
	CgroupID   uint64 // cgroup v2 id of the owner
	CgroupPath string
	Container  Container // zero when the path names none
}

// Container is the container, pod or systemd unit an owner's cgroup names.
type Container struct {
	// Runtime: docker, containerd, cri-o, podman, kubernetes (a pod's
	// container whose runtime the path does not name), or systemd for a
	// plain unit.
	Runtime string `json:"runtime"`
	// ID is the container id (64 hex digits), or the systemd unit name.
	ID string `json:"id"`
	// Pod is the Kubernetes pod UID when the path has one.
	Pod string `json:"pod,omitempty"`
	// What the runtime calls it, when it answered: the container's name
	// (docker, podman, or the Kubernetes container's), the pod's name and
	// namespace.
	Name      string `json:"name,omitempty"`
	PodName   string `json:"pod_name,omitempty"`
	Namespace string `json:"namespace,omitempty"`
}

// Short is the id as operators see it: 12 hex digits, or the unit name.
func (c Container) Short() string {
	if c.Runtime != "systemd" && len(c.ID) > 12 {
		return c.ID[:12]
	}
	return c.ID
}

// Label is the container as people name it: namespace/pod/container for a
// Kubernetes pod, the runtime's name for a container, else runtime:id
// ("" for none).
func (c Container) Label() string {
	switch {
	case c.PodName != "":
		l := c.Namespace + "/" + c.PodName
		if c.Name != "" {
			l += "/" + c.Name
		}
		return l
	case c.Name != "":
		return c.Name
	case c.ID != "" && c.Runtime != "systemd":
		return c.Runtime + ":" + c.Short()
	}
	return c.ID
}

// Named reports whether a runtime gave the container a name.
func (c Container) Named() bool { return c.Name != "" || c.PodName != "" }

// Mem is the protocol's memory state at the event, in pages.
type Mem struct {
	Allocated int64
	Limits    [3]int64 // tcp_mem: low, pressure, high
}

// Process is a process id and command name.
type Process struct {
	PID  int    `json:"pid"`
	Comm string `json:"comm"`
}

// Holder is a process and the memory its sockets' queues hold.
type Holder struct {
	Process
	Sockets   int    `json:"sockets"` // those of its sockets that hold memory
	RecvBytes uint64 `json:"recv_queue_bytes"`
	SendBytes uint64 `json:"send_queue_bytes"`
	// The process's cgroup v2 and container, when known.
	CgroupPath string     `json:"cgroup,omitempty"`
	Container  *Container `json:"container,omitempty"`
	// Its stalled sockets (unread data waits, nothing new has arrived for
	// a while: sockdiag's StallAge): how many, what their receive queues
	// hold, and the shortest of their stall ages in milliseconds, so it
	// has read none of them for at least that long.
	StalledSockets int    `json:"stalled_sockets,omitempty"`
	StalledBytes   uint64 `json:"stalled_bytes,omitempty"`
	StalledMs      uint64 `json:"stalled_ms,omitempty"`
}

// Queued is what the holder's sockets' queues hold, in bytes.
func (h *Holder) Queued() uint64 { return h.RecvBytes + h.SendBytes }

// StallAge is how long the holder has read none of its stalled sockets.
func (h *Holder) StallAge() time.Duration { return time.Duration(h.StalledMs) * time.Millisecond }

// StalledSocket is a socket whose owner has not read it for a while.
type StalledSocket struct {
	Cookie uint64 `json:"cookie"` // the socket's, as in events
	// Its addresses: events before 5.12 may carry no cookie (none made yet).
	NetNS uint32         `json:"netns,omitempty"`
	Src   netip.AddrPort `json:"src,omitzero"`
	Dst   netip.AddrPort `json:"dst,omitzero"`
	Process
	Bytes     uint64 `json:"queued_bytes"` // its receive queue, as charged
	StalledMs uint64 `json:"stalled_ms"`   // since data last arrived
}

// StallAge is how long the socket's data has waited with nothing new.
func (s *StalledSocket) StallAge() time.Duration {
	return time.Duration(s.StalledMs) * time.Millisecond
}

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
