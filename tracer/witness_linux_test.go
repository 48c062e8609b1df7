package tracer_test

import (
	"fmt"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
)

// A witness is a second, minimal counter of one kernel event, for the logs
// of the tests that compare the tracer with the kernel's MIB. The tracer
// has, rarely, counted a few events fewer than the kernel with no missed
// runs; a witness tells "the tracepoint did not fire" (it agrees with the
// tracer) from "the tracer's program missed them" (it agrees with the
// kernel). Two are watched: PROTO_MEM frees (kfree_skb) and the resets of
// memory aborts (tcp_send_reset), each by its reason.
type witness struct {
	point  witnessPoint
	counts *ebpf.Map
	prog   *ebpf.Program
	link   link.Link
	// inNetns: the tracepoint passes the socket, so the witness also
	// counts the test namespace's events alone, the figure the kernel's
	// MIB delta is comparable with.
	inNetns bool
}

// witnessed is what a witness counted: every event of the host, and those
// whose socket is in the test's namespace (-1: not known); and how many
// times it ran (with BPF statistics on), which a tracer's program on the
// same tracepoint, attached before and detached after it, cannot be below.
type witnessed struct{ all, netns, runs int64 }

var unknown = witnessed{all: -1, netns: -1, runs: -1}

func (w witnessed) String() string {
	return fmt.Sprintf("%d in the namespace, %d on the host, in %d runs", w.netns, w.all, w.runs)
}

// witnessPoint is what a witness counts: the raw tracepoint's events whose
// reason argument is the enum's value, and where the socket argument is.
type witnessPoint struct {
	tracepoint string
	reasonEnum string // the reason's enum type, and the value counted
	reason     string
	reasonArg  int
	socketArg  int
	minArgs    int // the tracepoint's arguments when the socket is among them
}

var (
	protoMemFrees = witnessPoint{tracepoint: "kfree_skb", reasonEnum: "skb_drop_reason", reason: "SKB_DROP_REASON_PROTO_MEM",
		reasonArg: 2, socketArg: 3, minArgs: 4} // rx_sk: 6.11+
	memoryAbortResets = witnessPoint{tracepoint: "tcp_send_reset", reasonEnum: "sk_rst_reason", reason: "SK_RST_REASON_TCP_ABORT_ON_MEMORY",
		reasonArg: 2, socketArg: 0, minArgs: 3}
)

// Where the witness finds a socket's namespace inode: sk + skNet is the
// struct net pointer, net + netInum the inode.
type netnsPath struct{ skNet, netInum int32 }

func findNetnsPath(spec *btf.Spec) (netnsPath, error) {
	var off [4]uint32
	for i, m := range [...][2]string{{"sock", "__sk_common"}, {"sock_common", "skc_net"}, {"net", "ns"}, {"ns_common", "inum"}} {
		o, err := memberOffset(spec, m[0], m[1])
		if err != nil {
			return netnsPath{}, err
		}
		off[i] = o
	}
	// possible_net_t holds the pointer as its first (only) member.
	return netnsPath{skNet: int32(off[0] + off[1]), netInum: int32(off[2] + off[3])}, nil
}

// memberOffset is a struct member's byte offset, looking into anonymous
// unions and structs as C does.
func memberOffset(spec *btf.Spec, typ, member string) (uint32, error) {
	var s *btf.Struct
	if err := spec.TypeByName(typ, &s); err != nil {
		return 0, err
	}
	if off, ok := findMember(s.Members, member); ok {
		return off, nil
	}
	return 0, fmt.Errorf("struct %s has no %s", typ, member)
}

func findMember(ms []btf.Member, name string) (uint32, bool) {
	for _, m := range ms {
		if m.Name == name {
			return m.Offset.Bytes(), true
		}
		if m.Name != "" {
			continue
		}
		var inner []btf.Member
		switch t := btf.UnderlyingType(m.Type).(type) {
		case *btf.Struct:
			inner = t.Members
		case *btf.Union:
			inner = t.Members
		}
		if off, ok := findMember(inner, name); ok {
			return m.Offset.Bytes() + off, true
		}
	}
	return 0, false
}

// tracepointArgs is how many arguments a raw tracepoint passes (-1: not
// known).
func tracepointArgs(spec *btf.Spec, name string) int {
	var tp *btf.Typedef
	if spec.TypeByName("btf_trace_"+name, &tp) != nil {
		return -1
	}
	ptr, ok := tp.Type.(*btf.Pointer)
	if !ok {
		return -1
	}
	fn, ok := ptr.Target.(*btf.FuncProto)
	if !ok {
		return -1
	}
	return len(fn.Params) - 1 // the first parameter is the tracepoint's data pointer
}

// enumValue is a kernel enum's value by name (-1: none).
func enumValue(spec *btf.Spec, enum, name string) int64 {
	var e *btf.Enum
	if spec.TypeByName(enum, &e) != nil {
		return -1
	}
	for _, v := range e.Values {
		if v.Name == name {
			return int64(v.Value)
		}
	}
	return -1
}

// startWitness attaches a witness to its raw tracepoint; nil where the
// kernel's events carry no such reason or it cannot load.
func startWitness(t *testing.T, p witnessPoint, netns uint32) *witness {
	t.Helper()
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return nil
	}
	reason := enumValue(spec, p.reasonEnum, p.reason)
	args := tracepointArgs(spec, p.tracepoint)
	if reason < 0 || args <= p.reasonArg {
		return nil
	}
	w := &witness{point: p}
	if w.counts, err = ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 2}); err != nil {
		t.Logf("witness %s: %v", p.tracepoint, err)
		return nil
	}
	path, perr := findNetnsPath(spec)
	w.inNetns = args >= p.minArgs && perr == nil
	// r6 = ctx; if (args[reason] != value) return; counts[0]++;
	// then, with the socket: if (sk->net->ns.inum == netns) counts[1]++.
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R2, asm.R6, int16(8*p.reasonArg), asm.DWord),
		asm.JNE.Imm(asm.R2, int32(reason), "out"),
	}
	insns = append(insns, increment(w.counts, 0)...)
	if w.inNetns {
		insns = append(insns, asm.LoadMem(asm.R3, asm.R6, int16(8*p.socketArg), asm.DWord))
		insns = append(insns, readKernel(path.skNet, asm.DWord)...)
		insns = append(insns, readKernel(path.netInum, asm.Word)...)
		insns = append(insns, asm.JNE.Imm32(asm.R3, int32(netns), "out")) // inodes pass 2^31: compare 32 bits
		insns = append(insns, increment(w.counts, 1)...)
	}
	insns = append(insns, asm.Mov.Imm(asm.R0, 0).WithSymbol("out"), asm.Return())
	w.prog, err = ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.RawTracepoint, Instructions: insns, License: "GPL"})
	if err == nil {
		w.link, err = link.AttachRawTracepoint(link.RawTracepointOptions{Name: p.tracepoint, Program: w.prog})
	}
	if err != nil {
		t.Logf("witness %s: %v", p.tracepoint, err)
		w.close()
		return nil
	}
	t.Cleanup(func() { w.stop() }) // detached even if the test ends early
	return w
}

// readKernel replaces the pointer in r3 (NULL: to "out") with the kernel
// value of the given size at r3+off, read through the stack; it clobbers
// r0-r5.
func readKernel(off int32, size asm.Size) asm.Instructions {
	return asm.Instructions{
		asm.JEq.Imm(asm.R3, 0, "out"),
		asm.Add.Imm(asm.R3, off),
		asm.Mov.Reg(asm.R1, asm.RFP),
		asm.Add.Imm(asm.R1, -16),
		asm.Mov.Imm(asm.R2, int32(size.Sizeof())),
		asm.FnProbeReadKernel.Call(),
		asm.LoadMem(asm.R3, asm.RFP, -16, size),
	}
}

// increment adds one to counts[key] atomically; it clobbers r0-r5.
func increment(counts *ebpf.Map, key int32) asm.Instructions {
	skip := fmt.Sprintf("skip%d", key)
	return asm.Instructions{
		asm.StoreImm(asm.RFP, -4, int64(key), asm.Word),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.LoadMapPtr(asm.R1, counts.FD()),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, skip),
		asm.Mov.Imm(asm.R1, 1),
		asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),
		asm.Mov.Imm(asm.R0, 0).WithSymbol(skip),
	}
}

// stop detaches the witness and returns what it counted; a nil or
// stopped witness knows nothing.
func (w *witness) stop() witnessed {
	out := unknown
	if w == nil || w.link == nil {
		return out
	}
	w.link.Close()
	w.link = nil
	if st, err := w.prog.Stats(); err == nil {
		out.runs = int64(st.RunCount)
	}
	var n uint64
	if w.counts.Lookup(uint32(0), &n) == nil {
		out.all = int64(n)
	}
	if w.inNetns && w.counts.Lookup(uint32(1), &n) == nil {
		out.netns = int64(n)
	}
	w.close()
	return out
}

func (w *witness) close() {
	if w.prog != nil {
		w.prog.Close()
	}
	w.counts.Close()
}
