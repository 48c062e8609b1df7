package tracer_test

import (
	"fmt"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
)

// witness is a second, minimal counter of the kernel's PROTO_MEM frees, for
// the PROTO_MEM tests' logs. The tracer has twice counted a few drops fewer
// than the kernel's MIB in CI, with no missed runs; this tells "the
// tracepoint did not fire" (the witness agrees with the tracer) from "the
// tracer's program missed them" (the witness agrees with the kernel).
type witness struct {
	counts *ebpf.Map
	prog   *ebpf.Program
	link   link.Link
	// inNetns: the tracepoint passes the socket (rx_sk, 6.11+), so the
	// witness also counts the frees of the test's namespace alone, the
	// figure the kernel's MIB delta is comparable with.
	inNetns bool
}

// witnessed is what the witness counted: every PROTO_MEM free of the host,
// and those whose socket is in the test's namespace (-1: not known).
type witnessed struct{ all, netns int64 }

func (w witnessed) String() string {
	return fmt.Sprintf("%d in the namespace, %d on the host", w.netns, w.all)
}

// Where the witness finds a socket's namespace inode: sk + skNet is the
// struct net pointer, net + netInum the inode.
type netnsPath struct{ skNet, netInum uint32 }

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
	return netnsPath{skNet: off[0] + off[1], netInum: off[2] + off[3]}, nil
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

// kfreeSkbHasSocket reports whether the kfree_skb tracepoint passes rx_sk
// (its fourth argument, 6.11+).
func kfreeSkbHasSocket(spec *btf.Spec) bool {
	var tp *btf.Typedef
	if spec.TypeByName("btf_trace_kfree_skb", &tp) != nil {
		return false
	}
	ptr, ok := tp.Type.(*btf.Pointer)
	if !ok {
		return false
	}
	fn, ok := ptr.Target.(*btf.FuncProto)
	// The first parameter is the tracepoint's data pointer.
	return ok && len(fn.Params) >= 5
}

// startWitness attaches the witness to the raw kfree_skb tracepoint; nil
// where the kernel's drops carry no reason (before 5.17) or it cannot load.
func startWitness(t *testing.T, netns uint32) *witness {
	t.Helper()
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return nil
	}
	var reasons *btf.Enum
	if spec.TypeByName("skb_drop_reason", &reasons) != nil {
		return nil
	}
	protoMem := int64(-1)
	for _, v := range reasons.Values {
		if v.Name == "SKB_DROP_REASON_PROTO_MEM" {
			protoMem = int64(v.Value)
		}
	}
	if protoMem < 0 {
		return nil
	}
	w := &witness{}
	if w.counts, err = ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 2}); err != nil {
		t.Logf("witness: %v", err)
		return nil
	}
	path, perr := findNetnsPath(spec)
	w.inNetns = kfreeSkbHasSocket(spec) && perr == nil
	// r6 = ctx; if (args[2] != PROTO_MEM) return; counts[0]++;
	// then, with rx_sk: if (rx_sk->net->ns.inum == netns) counts[1]++.
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R2, asm.R6, 16, asm.DWord),
		asm.JNE.Imm(asm.R2, int32(protoMem), "out"),
	}
	insns = append(insns, increment(w.counts, 0)...)
	if w.inNetns {
		insns = append(insns,
			asm.LoadMem(asm.R3, asm.R6, 24, asm.DWord),
			asm.JEq.Imm(asm.R3, 0, "out"),
			asm.Add.Imm(asm.R3, int32(path.skNet)),
			asm.Mov.Reg(asm.R1, asm.RFP),
			asm.Add.Imm(asm.R1, -16),
			asm.Mov.Imm(asm.R2, 8),
			asm.FnProbeReadKernel.Call(),
			asm.LoadMem(asm.R3, asm.RFP, -16, asm.DWord),
			asm.JEq.Imm(asm.R3, 0, "out"),
			asm.Add.Imm(asm.R3, int32(path.netInum)),
			asm.Mov.Reg(asm.R1, asm.RFP),
			asm.Add.Imm(asm.R1, -16),
			asm.Mov.Imm(asm.R2, 4),
			asm.FnProbeReadKernel.Call(),
			asm.LoadMem(asm.R2, asm.RFP, -16, asm.Word),
			asm.JNE.Imm32(asm.R2, int32(netns), "out"), // inodes pass 2^31: compare 32 bits
		)
		insns = append(insns, increment(w.counts, 1)...)
	}
	insns = append(insns, asm.Mov.Imm(asm.R0, 0).WithSymbol("out"), asm.Return())
	w.prog, err = ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.RawTracepoint, Instructions: insns, License: "GPL"})
	if err == nil {
		w.link, err = link.AttachRawTracepoint(link.RawTracepointOptions{Name: "kfree_skb", Program: w.prog})
	}
	if err != nil {
		t.Logf("witness: %v", err)
		w.close()
		return nil
	}
	return w
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

// stop detaches the witness and returns what it counted.
func (w *witness) stop() witnessed {
	out := witnessed{all: -1, netns: -1}
	w.link.Close()
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
