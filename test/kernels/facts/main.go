//go:build linux

// Command facts reports what a kernel offers the tracer, from inside a
// test guest (TMT_FACTS=1 test/kernels/run.sh): whether each of the tracer's
// programs loads on its own (with the verifier's last words if not), which
// functions take fexit and which tracepoints take tp_btf, with their
// prototypes from the kernel's BTF, the struct members the tracer depends
// on, and the helpers a tracing program may call.
package main

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
)

var functions = []string{
	"tcp_check_oom", "tcp_out_of_memory", "tcp_enter_memory_pressure", "tcp_leave_memory_pressure",
	"tcp_try_rmem_schedule", "tcp_add_backlog", "tcp_prune_ofo_queue", "tcp_data_queue",
	"tcp_data_queue_ofo", "tcp_prune_queue", "__sk_mem_raise_allocated", "__sk_mem_schedule",
	"mem_cgroup_charge_skmem", "sk_stream_wait_memory", "__udp_enqueue_schedule_skb",
}

var tracepoints = []string{
	"kfree_skb", "sock_exceed_buf_limit", "inet_sock_set_state", "tcp_destroy_sock", "tcp_send_reset",
	"sock_rcvqueue_full", "tcp_rcv_space_adjust", "sched_process_fork", "sock_send_length",
	"sock_recv_length",
}

var members = map[string][]string{
	"mem_cgroup": {"tcpmem", "tcpmem_active", "tcpmem_pressure", "socket_pressure"},
	"cgroup":     {"level", "ancestor_ids", "ancestors"},
	"proto":      {"memory_allocated", "memory_pressure", "sysctl_mem", "orphan_count", "per_cpu_fw_alloc"},
	"sock":       {"sk_memcg", "sk_forward_alloc", "sk_wmem_queued"},
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: facts BPF-OBJECT")
		os.Exit(2)
	}
	// Before 5.11 BPF memory is charged to RLIMIT_MEMLOCK.
	if err := rlimit.RemoveMemlock(); err != nil {
		fmt.Println("rlimit:", err)
	}
	kernel, err := btf.LoadKernelSpec()
	if err != nil {
		fmt.Println("btf: none:", err)
		os.Exit(1)
	}
	if fi, err := os.Stat("/sys/kernel/btf/vmlinux"); err == nil {
		fmt.Printf("btf: /sys/kernel/btf/vmlinux, %d bytes\n", fi.Size())
	}
	programs(os.Args[1])
	for _, fn := range functions {
		fmt.Printf("fexit %s: %s\n", fn, attachable(kernel, ebpf.AttachTraceFExit, fn, fn))
	}
	for _, tp := range tracepoints {
		fmt.Printf("tp_btf %s: %s\n", tp, attachable(kernel, ebpf.AttachTraceRawTp, tp, "btf_trace_"+tp))
	}
	names := make([]string, 0, len(members))
	for s := range members {
		names = append(names, s)
	}
	sort.Strings(names)
	for _, s := range names {
		fmt.Printf("struct %s: %s\n", s, hasMembers(kernel, s, members[s]))
	}
	helpers(kernel)
}

// programs loads each of the object's programs alone, with its maps, and
// as the tracer does, again with bpf_probe_read_kernel for the loads
// through pointers to scalars if the verifier refuses those.
func programs(object string) {
	spec, err := ebpf.LoadCollectionSpec(object)
	if err != nil {
		fmt.Println("object:", err)
		return
	}
	names := make([]string, 0, len(spec.Programs))
	for name := range spec.Programs {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		one := spec.Copy()
		for other := range one.Programs {
			if other != name {
				delete(one.Programs, other)
			}
		}
		how := "loads"
		coll, err := ebpf.NewCollection(one)
		if err != nil && strings.Contains(fmt.Sprintf("%+v", err), "invalid mem access 'scalar'") {
			if err := one.Variables["scalar_ptr_probe_read"].Set(uint8(1)); err != nil {
				panic(err)
			}
			how = "loads with scalar_ptr_probe_read"
			coll, err = ebpf.NewCollection(one)
		}
		if err == nil {
			coll.Close()
			fmt.Printf("prog %s (%s): %s\n", name, spec.Programs[name].SectionName, how)
			continue
		}
		fmt.Printf("prog %s (%s): %s\n", name, spec.Programs[name].SectionName, verdict(err))
	}
}

// verdict: the error, and the verifier's last lines when it has them.
func verdict(err error) string {
	var ve *ebpf.VerifierError
	if !errors.As(err, &ve) {
		return err.Error()
	}
	log := ve.Log
	for len(log) > 0 && (strings.HasPrefix(log[len(log)-1], "processed ") || log[len(log)-1] == "") {
		log = log[:len(log)-1]
	}
	if len(log) > 3 {
		log = log[len(log)-3:]
	}
	return fmt.Sprintf("%v: %s", ve.Cause, strings.Join(log, " | "))
}

// attachable: whether a no-op tracing program attaches to target, and the
// target's prototype from BTF (a function, or a btf_trace_* typedef).
func attachable(kernel *btf.Spec, at ebpf.AttachType, target, btfName string) string {
	proto := "not in BTF"
	if t, err := kernel.AnyTypeByName(btfName); err == nil {
		switch t := t.(type) {
		case *btf.Func:
			proto = cdecl(t.Type, target)
		case *btf.Typedef:
			if p, ok := t.Type.(*btf.Pointer); ok {
				proto = cdecl(p.Target, btfName)
			}
		}
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ebpf.Tracing, AttachType: at, AttachTo: target, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
	})
	if err != nil {
		return fmt.Sprintf("NO (%v); %s", err, proto)
	}
	defer prog.Close()
	l, err := link.AttachTracing(link.TracingOptions{Program: prog})
	if err != nil {
		return fmt.Sprintf("NO (attach: %v); %s", err, proto)
	}
	l.Close()
	return "attaches; " + proto
}

func hasMembers(kernel *btf.Spec, name string, want []string) string {
	var s *btf.Struct
	if err := kernel.TypeByName(name, &s); err != nil {
		return "not in BTF"
	}
	have := map[string]bool{}
	for _, m := range s.Members {
		have[m.Name] = true
	}
	var out []string
	for _, w := range want {
		if have[w] {
			out = append(out, w+"=yes")
		} else {
			out = append(out, w+"=no")
		}
	}
	return strings.Join(out, " ")
}

// helpers: which of the kernel's helpers a fexit program may call. The
// verifier says "unknown func" (6.x: "cannot use helper") for a helper this
// program type lacks; anything else (bad arguments) means it may.
func helpers(kernel *btf.Spec) {
	var ids *btf.Enum
	if err := kernel.TypeByName("bpf_func_id", &ids); err != nil {
		fmt.Println("helpers: no enum bpf_func_id in BTF")
		return
	}
	var missing []string
	last := ""
	for _, v := range ids.Values {
		if v.Value == 0 || strings.HasPrefix(v.Name, "__") {
			continue
		}
		last = fmt.Sprintf("%s=%d", v.Name, v.Value)
		fn := asm.BuiltinFunc(v.Value)
		prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
			Type: ebpf.Tracing, AttachType: ebpf.AttachTraceFExit, AttachTo: "tcp_check_oom", License: "GPL",
			Instructions: asm.Instructions{fn.Call(), asm.Mov.Imm(asm.R0, 0), asm.Return()},
		})
		if err == nil {
			prog.Close()
			continue
		}
		if msg := fmt.Sprintf("%+v", err); strings.Contains(msg, "unknown func") || strings.Contains(msg, "cannot use helper") {
			missing = append(missing, strings.TrimPrefix(v.Name, "BPF_FUNC_"))
		}
	}
	fmt.Printf("helpers: enum bpf_func_id ends at %s; a fexit program may not call %d: %s\n", last, len(missing), strings.Join(missing, " "))
}

// cdecl renders a function prototype in C.
func cdecl(t btf.Type, name string) string {
	fp, ok := t.(*btf.FuncProto)
	if !ok {
		return ctype(t) + " " + name
	}
	var params []string
	for _, p := range fp.Params {
		params = append(params, strings.TrimSpace(ctype(p.Type)+" "+p.Name))
	}
	return fmt.Sprintf("%s %s(%s)", ctype(fp.Return), name, strings.Join(params, ", "))
}

func ctype(t btf.Type) string {
	switch t := t.(type) {
	case nil, *btf.Void:
		return "void"
	case *btf.Pointer:
		return ctype(t.Target) + " *"
	case *btf.Const:
		return "const " + ctype(t.Type)
	case *btf.Volatile:
		return "volatile " + ctype(t.Type)
	case *btf.Struct:
		return "struct " + t.Name
	case *btf.Union:
		return "union " + t.Name
	case *btf.Enum:
		return "enum " + t.Name
	case *btf.Fwd:
		return t.Kind.String() + " " + t.Name
	case *btf.FuncProto:
		return cdecl(t, "(*)")
	default:
		return t.TypeName()
	}
}
