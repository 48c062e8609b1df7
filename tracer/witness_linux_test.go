package tracer_test

import (
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
}

// startWitness attaches the witness to the raw kfree_skb tracepoint; nil
// where the kernel's drops carry no reason (before 5.17) or it cannot load.
func startWitness(t *testing.T) *witness {
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
	if w.counts, err = ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1}); err != nil {
		t.Logf("witness: %v", err)
		return nil
	}
	// if (ctx->args[2] == PROTO_MEM) atomic add 1 to counts[0]
	insns := asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, 16, asm.DWord),
		asm.JNE.Imm(asm.R2, int32(protoMem), "out"),
		asm.StoreImm(asm.RFP, -4, 0, asm.Word),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.LoadMapPtr(asm.R1, w.counts.FD()),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.Mov.Imm(asm.R1, 1),
		asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
		asm.Return(),
	}
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

// stop detaches the witness and returns what it counted.
func (w *witness) stop() uint64 {
	var n uint64
	w.link.Close()
	_ = w.counts.Lookup(uint32(0), &n)
	w.close()
	return n
}

func (w *witness) close() {
	if w.prog != nil {
		w.prog.Close()
	}
	w.counts.Close()
}
