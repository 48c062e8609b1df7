package tracer

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cilium/ebpf"

	"github.com/tcpmemtrace/tcpmemtrace/stream"
)

// HookPolicy chooses between the preferred hooks and the fallbacks.
type HookPolicy int

const (
	// HooksAuto uses fentry/fexit where the kernel allows them.
	HooksAuto HookPolicy = iota
	// HooksTracepoints never uses fentry/fexit (to compare, or to test the fallbacks).
	HooksTracepoints
)

// variant is one way of observing an event: the programs that do it and
// what the running kernel must offer for them. Each event has its variants
// in order of preference (eventVariants); the first the kernel can run is
// used, and the ones before it are reported with the reason they were not.
type variant struct {
	label    string   // as --list-probes names it
	programs []string // to load and attach
	// needs says why this kernel cannot run the variant (nil: it can).
	needs func(k *kernel) error
	// detail is appended to the label once chosen (values read from BTF).
	detail func(k *kernel) string
	// notes say what the variant cannot see on this kernel.
	notes func(k *kernel) []string
	// tcpSlotsElsewhere: drop slots whose TCP drops fexit programs of this
	// variant count, so kfree_skb leaves them alone.
	tcpSlotsElsewhere uint8
	// sampler: the tracer runs the pressure sampler (every 100 ms near
	// pressure, every second far from it).
	sampler bool
}

// eventVariants lists, for each kind of event, how it can be observed.
// Adding a fallback is adding a row.
var eventVariants = []struct {
	event string
	// optional: programs that fail to attach are noted, not fatal.
	optional bool
	variants []variant
}{
	{event: stream.EventAborts, variants: []variant{
		{label: "fexit/" + abortFunc, programs: []string{bpfProgFexitTcpCheckOom}, needs: fexit(abortFunc)},
		{label: "tp_btf/tcp_send_reset", programs: []string{bpfProgTpTcpSendReset},
			needs: func(k *kernel) error {
				if n, _ := k.tracepointArgs("tcp_send_reset"); n < 3 {
					return errors.New("no reset reason argument (needs 6.10)")
				}
				if _, ok := k.rstReasons[stream.AbortResetReason]; !ok {
					return errors.New("no " + stream.AbortResetReason + " reset reason (needs 6.12)")
				}
				return nil
			},
			detail: func(k *kernel) string {
				return fmt.Sprintf(" reason %s=%d", stream.AbortResetReason, k.rstReasons[stream.AbortResetReason])
			},
			notes: always("aborts that send no RST (tcp_out_of_resources without reset, RST allocation failure) are not seen")},
	}},
	{event: stream.EventPressure, variants: []variant{
		{label: "fexit/tcp_enter_memory_pressure + fexit/tcp_leave_memory_pressure",
			programs: []string{bpfProgFexitTcpEnterMemoryPressure, bpfProgFexitTcpLeaveMemoryPressure},
			needs:    fexit("tcp_enter_memory_pressure", "tcp_leave_memory_pressure"), detail: sendStalls},
		{label: variantSampled, programs: []string{bpfProgSamplePressureTick}, sampler: true, detail: sendStalls,
			needs: func(k *kernel) error {
				if !k.hasFunc("bpf_prog_test_run_raw_tp") {
					return errors.New("cannot run a sampler program on demand (needs 5.10)")
				}
				return nil
			},
			notes: always("an episode shorter than the time between samples (100 ms from half the pressure threshold up, 1 s below it), with no memory event in it, is not seen")},
		{label: "memory_pressure sampled in socket hooks",
			notes: always("episodes are seen only when a memory event fires during them, and end at the next one")},
	}},
	{event: stream.EventDrops, variants: []variant{
		{label: "tp_btf/kfree_skb (rx_sk)", programs: []string{bpfProgTpKfreeSkb}, needs: kfreeSkbArgs(4, "no rx_sk argument (needs 6.11)")},
		// Before 6.11 TCP frees a dropped incoming skb before it has a
		// socket: the check that failed tells which socket.
		{label: "fexit/tcp_add_backlog (TCP SOCKET_BACKLOG), fexit/tcp_try_rmem_schedule (TCP PROTO_MEM), tp_btf/kfree_skb (skb->sk)",
			programs: []string{bpfProgFexitTcpAddBacklog, bpfProgFexitTcpTryRmemSchedule, bpfProgTpKfreeSkbNorxsk},
			needs: all(kfreeSkbArgs(3, "no drop reasons (needs 5.17)"), fexit("tcp_try_rmem_schedule", "tcp_add_backlog"),
				funcParams("tcp_add_backlog", 3, "tcp_add_backlog has no drop reason parameter (needs 5.19)")),
			tcpSlotsElsewhere: 1<<stream.ReasonProtoMem | 1<<stream.ReasonSocketBacklog},
		{label: "fexit/tcp_try_rmem_schedule (TCP PROTO_MEM), tp_btf/kfree_skb (skb->sk)",
			programs:          []string{bpfProgFexitTcpTryRmemSchedule, bpfProgTpKfreeSkbNorxsk},
			needs:             all(kfreeSkbArgs(3, "no drop reasons (needs 5.17)"), fexit("tcp_try_rmem_schedule")),
			notes:             always("TCP SOCKET_BACKLOG drops carry no socket here"),
			tcpSlotsElsewhere: 1 << stream.ReasonProtoMem},
		{label: "tp_btf/kfree_skb (skb->sk)", programs: []string{bpfProgTpKfreeSkbNorxsk},
			needs: kfreeSkbArgs(3, "no drop reasons (needs 5.17)"),
			notes: always("TCP receive drops carry no socket here: no owner, and none counted under --netns or owner filters")},
		// Before drop reasons: TCP's memory drops where TCP decides them.
		{label: "fexit/tcp_try_rmem_schedule (TCP PROTO_MEM), fexit/tcp_add_backlog (TCP SOCKET_BACKLOG)",
			programs: []string{bpfProgFexitTcpTryRmemSchedule, bpfProgFexitTcpAddBacklogNoreason},
			needs: all(fexit("tcp_try_rmem_schedule", "tcp_add_backlog"),
				funcParams("tcp_add_backlog", 2, "tcp_add_backlog has a drop reason parameter (5.19+): a variant above serves")),
			notes: always(noReasons)},
		{label: "fexit/tcp_try_rmem_schedule (TCP PROTO_MEM)", programs: []string{bpfProgFexitTcpTryRmemSchedule},
			needs: fexit("tcp_try_rmem_schedule"),
			notes: always(noReasons, "TCP SOCKET_BACKLOG drops are not counted here")},
	}},
	{event: stream.EventRefusals, variants: []variant{
		{label: "tp_btf/sock_exceed_buf_limit", programs: []string{bpfProgTpSockExceedBufLimit},
			needs: tracepointArgs("sock_exceed_buf_limit", 4, "no kind argument (needs 4.16)")},
	}},
	// Owners are stamped where they change hands: connect (a state
	// change), listen (its syscall: the state is stored untraced), accept, a close by the owner while others hold the
	// socket, the owner's exit; sockets older than the trace, and those
	// handed over, from the open files (iter/task_file).
	{event: stream.EventOwners, optional: true, variants: []variant{
		{label: "tp_btf/inet_sock_set_state, tp_btf/tcp_destroy_sock, tracepoint/syscalls/sys_enter_listen, " +
			"tracepoint/syscalls/sys_exit_accept{,4}, tracepoint/syscalls/sys_enter_close, tp_btf/sched_process_exit",
			programs: []string{bpfProgTpInetSockSetState, bpfProgTpTcpDestroySock, bpfProgTpSysEnterListen, bpfProgTpSysExitAccept4,
				bpfProgTpSysExitAccept, bpfProgTpSysEnterClose, bpfProgTpSchedProcessExit},
			needs: all(tracepointArgs("inet_sock_set_state", 3, "no inet_sock_set_state (needs 4.16)"),
				tracepointArgs("tcp_destroy_sock", 1, "no tcp_destroy_sock (needs 5.3)"))},
	}},
}

const variantSampled = "memory_pressure sampled in socket hooks, and every 100 ms near pressure (1 s far from it)"

// stallsOnly is the program that counts send stalls, attached while TCP
// is under memory pressure only (it would run on every send of the host).
const stallsOnly = bpfProgTpSockSendLength

// sendStalls says how send stalls are counted, beside the pressure hook.
func sendStalls(k *kernel) string {
	if _, ok := k.tracepointArgs("sock_send_length"); !ok {
		return "; no send stalls (needs sock_send_length, 6.3)"
	}
	return "; send stalls: tp_btf/sock_send_length while under pressure"
}

// noReasons: what kernels without drop reasons cannot show.
const noReasons = "no drop reasons before 5.17: TCP_OFO_QUEUE_PRUNE and other protocols' drops (UDP's SOCKET_RCVBUFF...) are not counted"

// abortFunc is where the kernel decides a memory abort (fexit variant).
const abortFunc = "tcp_check_oom"

// kernel is what the variants' needs are asked of: the BTF facts, the
// policy, and the fentry/fexit probe.
type kernel struct {
	*kernelFacts
	policy HookPolicy
	probe  tracingProbe
}

// hook is the choice made for one event: what it reports, and what to load.
type hook struct {
	stream.Hook
	programs          []string
	optional          bool
	tcpSlotsElsewhere uint8
	sampler           bool
}

// selectHooks walks the table: per event, the first variant this kernel can
// run. It only reads BTF facts and asks the probe about fentry/fexit, so
// tests can feed it any kernel.
func selectHooks(k *kernelFacts, policy HookPolicy, probe tracingProbe) []hook {
	kk := &kernel{kernelFacts: k, policy: policy, probe: probe}
	var hooks []hook
	for _, ev := range eventVariants {
		h := hook{Hook: stream.Hook{Event: ev.event}, optional: ev.optional}
		for _, v := range ev.variants {
			if v.needs != nil {
				if err := v.needs(kk); err != nil {
					h.Rejected = append(h.Rejected, stream.Rejected{Hook: v.label, Reason: err.Error()})
					continue
				}
			}
			h.Using, h.programs, h.tcpSlotsElsewhere, h.sampler = v.label, v.programs, v.tcpSlotsElsewhere, v.sampler
			if v.detail != nil {
				h.Using += v.detail(kk)
			}
			if v.notes != nil {
				h.Notes = append(h.Notes, v.notes(kk)...)
			}
			break
		}
		if ev.event == stream.EventDrops && h.Available() {
			h.Using, h.Notes = describeReasons(kk, h.Using, h.Notes)
		}
		hooks = append(hooks, h)
	}
	return hooks
}

// describeReasons adds the reasons' values on this kernel, and says which
// tracked reasons it lacks.
func describeReasons(k *kernel, using string, notes []string) (string, []string) {
	_, found := k.dropSlots()
	var parts []string
	for _, name := range stream.MemoryDropReasons {
		if v, ok := found[name]; ok {
			parts = append(parts, fmt.Sprintf("%s=%d", name, v))
		} else if len(found) > 0 {
			notes = append(notes, name+" is not a drop reason on this kernel")
		}
	}
	if len(parts) > 0 {
		using += " reasons " + strings.Join(parts, " ")
	}
	return using, notes
}

// Needs, composable.

func fexit(fns ...string) func(*kernel) error {
	return func(k *kernel) error {
		if k.policy == HooksTracepoints {
			return errors.New("disabled by --hooks=tracepoints")
		}
		for _, fn := range fns {
			if !k.hasFunc(fn) {
				return fmt.Errorf("%s is not in the kernel's BTF (inlined or renamed)", fn)
			}
			if err := k.probe(fn, ebpf.AttachTraceFExit); err != nil {
				return errors.New(shortReason(err))
			}
		}
		return nil
	}
}

func tracepointArgs(tp string, n int, why string) func(*kernel) error {
	return func(k *kernel) error {
		if got, ok := k.tracepointArgs(tp); !ok || got < n {
			return errors.New(why)
		}
		return nil
	}
}

// kfreeSkbArgs: kfree_skb passes at least n arguments, and a reason among
// them names a tracked memory drop on this kernel.
func kfreeSkbArgs(n int, why string) func(*kernel) error {
	return func(k *kernel) error {
		got, _ := k.tracepointArgs("kfree_skb")
		if _, found := k.dropSlots(); got < 3 || len(found) == 0 {
			return errors.New("no drop reasons (needs 5.17)")
		}
		if got < n {
			return errors.New(why)
		}
		return nil
	}
}

func funcParams(fn string, n int, why string) func(*kernel) error {
	return func(k *kernel) error {
		if k.funcParams(fn) != n {
			return errors.New(why)
		}
		return nil
	}
}

// all needs every one of needs, and says why the first failed.
func all(needs ...func(*kernel) error) func(*kernel) error {
	return func(k *kernel) error {
		for _, n := range needs {
			if err := n(k); err != nil {
				return err
			}
		}
		return nil
	}
}

func always(notes ...string) func(*kernel) []string {
	return func(*kernel) []string { return notes }
}

// reports is what the hooks say, without what they load.
func reports(hooks []hook) []stream.Hook {
	out := make([]stream.Hook, len(hooks))
	for i, h := range hooks {
		out[i] = h.Hook
	}
	return out
}
