package tracer

import (
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// HookPolicy chooses between the preferred hooks and the fallbacks.
type HookPolicy int

const (
	// HooksAuto uses fentry/fexit where the kernel allows them.
	HooksAuto HookPolicy = iota
	// HooksTracepoints never uses fentry/fexit (to compare, or to test the fallbacks).
	HooksTracepoints
)

// Event groups: one Hook each.
const (
	EventAborts    = "memory aborts"
	EventPressure  = "pressure episodes"
	EventDrops     = "memory drops"
	EventRefusals  = "allocation refusals"
	EventOwners    = "socket owners"
	variantSampled = "memory_pressure sampled in socket hooks + /proc/net/protocols"
)

// Hook says how one kind of event is observed, and why better hooks were not used.
type Hook struct {
	Event    string     `json:"event"`
	Using    string     `json:"using"` // empty when unavailable
	Rejected []Rejected `json:"rejected,omitempty"`
	Notes    []string   `json:"notes,omitempty"`

	programs []string // BPF programs to load for this variant
	optional bool     // attach failures are noted, not fatal
	// tcpSlotsElsewhere: drop slots whose TCP drops fexit programs count.
	tcpSlotsElsewhere uint8
}

// Rejected is a variant that was not used.
type Rejected struct {
	Hook   string `json:"hook"`
	Reason string `json:"reason"`
}

// Available reports whether the event is observed at all.
func (h Hook) Available() bool { return h.Using != "" }

// abortFunc is where the kernel decides a memory abort (fexit variant).
const abortFunc = "tcp_check_oom"

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

// selectHooks decides, per event, which variant to load. It only reads BTF
// facts and asks probe about fentry/fexit, so tests can feed it any kernel.
func selectHooks(k *kernelFacts, policy HookPolicy, probe tracingProbe) []Hook {
	fexit := func(fns ...string) (string, error) {
		names := make([]string, len(fns))
		for i, fn := range fns {
			names[i] = "fexit/" + fn
		}
		label := strings.Join(names, " + ")
		if policy == HooksTracepoints {
			return label, errors.New("disabled by --hooks=tracepoints")
		}
		for _, fn := range fns {
			if !k.hasFunc(fn) {
				return label, fmt.Errorf("%s is not in the kernel's BTF (inlined or renamed)", fn)
			}
			if err := probe(fn, ebpf.AttachTraceFExit); err != nil {
				return label, errors.New(shortReason(err))
			}
		}
		return label, nil
	}

	var hooks []Hook

	// Memory aborts: tcp_check_oom() returned true.
	h := Hook{Event: EventAborts}
	if label, err := fexit(abortFunc); err == nil {
		h.Using, h.programs = label, []string{bpfProgFexitTcpCheckOom}
	} else {
		h.Rejected = append(h.Rejected, Rejected{label, err.Error()})
		rst, hasRst := k.rstReasons[AbortResetReason]
		n, _ := k.tracepointArgs("tcp_send_reset")
		switch {
		case n < 3:
			h.Rejected = append(h.Rejected, Rejected{"tp_btf/tcp_send_reset", "no reset reason argument (needs 6.10)"})
		case !hasRst:
			h.Rejected = append(h.Rejected, Rejected{"tp_btf/tcp_send_reset", "no " + AbortResetReason + " reset reason (needs 6.12)"})
		default:
			h.Using = fmt.Sprintf("tp_btf/tcp_send_reset reason %s=%d", AbortResetReason, rst)
			h.programs = []string{bpfProgTpTcpSendReset}
			h.Notes = append(h.Notes, "aborts that send no RST (tcp_out_of_resources without reset, RST allocation failure) are not seen")
		}
	}
	hooks = append(hooks, h)

	// Pressure episodes: transitions of the protocol's memory_pressure word.
	h = Hook{Event: EventPressure}
	if label, err := fexit("tcp_enter_memory_pressure", "tcp_leave_memory_pressure"); err == nil {
		h.Using = label
		h.programs = []string{bpfProgFexitTcpEnterMemoryPressure, bpfProgFexitTcpLeaveMemoryPressure}
	} else {
		h.Rejected = append(h.Rejected, Rejected{label, err.Error()})
		h.Using = variantSampled
		if _, ok := k.tracepointArgs("sock_send_length"); !ok {
			h.Notes = append(h.Notes, "no sock_send_length (needs 6.3): episodes are seen only when a memory event fires during them")
		}
	}
	hooks = append(hooks, h)

	// Memory drops: kfree_skb with a memory reason, socket from rx_sk when the kernel passes it.
	h = Hook{Event: EventDrops}
	_, reasons := k.dropSlots()
	n, _ := k.tracepointArgs("kfree_skb")
	switch {
	case n >= 4:
		h.Using, h.programs = "tp_btf/kfree_skb (rx_sk)", []string{bpfProgTpKfreeSkb}
	case n == 3 && len(reasons) > 0:
		// TCP frees a dropped incoming skb before it has a socket: the
		// check that fails tells which socket, where fexit is allowed.
		h.Rejected = append(h.Rejected, Rejected{"tp_btf/kfree_skb (rx_sk)", "no rx_sk argument (needs 6.11)"})
		h.Using, h.programs = "tp_btf/kfree_skb (skb->sk)", []string{bpfProgTpKfreeSkbNorxsk}
		if label, err := fexit("tcp_try_rmem_schedule"); err != nil {
			h.Rejected = append(h.Rejected, Rejected{label, err.Error()})
			h.Notes = append(h.Notes, "TCP receive drops carry no socket here: no owner, and none counted under --netns or owner filters")
		} else {
			h.Using = label + " (TCP PROTO_MEM), " + h.Using
			h.programs = append(h.programs, bpfProgFexitTcpTryRmemSchedule)
			h.tcpSlotsElsewhere |= 1 << slotProtoMem
			if label, err := fexit("tcp_add_backlog"); err == nil && k.funcParams("tcp_add_backlog") == 3 {
				h.Using = label + " (TCP SOCKET_BACKLOG), " + h.Using
				h.programs = append(h.programs, bpfProgFexitTcpAddBacklog)
				h.tcpSlotsElsewhere |= 1 << slotSocketBacklog
			} else {
				h.Notes = append(h.Notes, "TCP SOCKET_BACKLOG drops carry no socket here")
			}
		}
	default:
		h.Rejected = append(h.Rejected, Rejected{"tp_btf/kfree_skb", "no drop reasons (needs 5.17)"})
	}
	if h.Available() {
		h.Using += " reasons " + formatReasons(reasons)
		for _, name := range MemoryDropReasons {
			if _, ok := reasons[name]; !ok {
				h.Notes = append(h.Notes, name+" is not a drop reason on this kernel")
			}
		}
	}
	hooks = append(hooks, h)

	// Allocation refusals: sock_exceed_buf_limit with its kind argument (4.16+).
	h = Hook{Event: EventRefusals}
	if n, _ := k.tracepointArgs("sock_exceed_buf_limit"); n >= 4 {
		h.Using, h.programs = "tp_btf/sock_exceed_buf_limit", []string{bpfProgTpSockExceedBufLimit}
	} else {
		h.Rejected = append(h.Rejected, Rejected{"tp_btf/sock_exceed_buf_limit", "no kind argument (needs 4.16)"})
	}
	hooks = append(hooks, h)

	// Socket owners, stamped from process context.
	h = Hook{Event: EventOwners, optional: true}
	var using []string
	for _, c := range []struct{ tp, prog string }{
		{"sock_send_length", bpfProgTpSockSendLength},
		{"sock_recv_length", bpfProgTpSockRecvLength},
		{"inet_sock_set_state", bpfProgTpInetSockSetState},
		{"tcp_destroy_sock", bpfProgTpTcpDestroySock},
	} {
		if _, ok := k.tracepointArgs(c.tp); ok {
			using = append(using, "tp_btf/"+c.tp)
			h.programs = append(h.programs, c.prog)
		} else {
			h.Rejected = append(h.Rejected, Rejected{"tp_btf/" + c.tp, "not on this kernel"})
			if c.tp == "sock_send_length" {
				h.Notes = append(h.Notes, "no send stalls (EAGAIN under pressure) before 6.3")
			}
		}
	}
	using = append(using, "tracepoint/syscalls/sys_exit_accept{,4}")
	h.programs = append(h.programs, bpfProgTpSysExitAccept4, bpfProgTpSysExitAccept)
	h.Using = strings.Join(using, ", ")
	hooks = append(hooks, h)

	return hooks
}

func formatReasons(m map[string]uint32) string {
	parts := make([]string, 0, len(m))
	for _, name := range MemoryDropReasons {
		if v, ok := m[name]; ok {
			parts = append(parts, fmt.Sprintf("%s=%d", name, v))
		}
	}
	return strings.Join(parts, " ")
}
