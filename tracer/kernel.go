package tracer

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/cilium/ebpf/btf"

	"github.com/tcpmemtrace/tcpmemtrace/stream"
)

// ErrNoBTF means the kernel exposes no BTF; CO-RE programs cannot load.
var ErrNoBTF = errors.New("kernel BTF not found at /sys/kernel/btf/vmlinux: " +
	"tcpmemtrace needs a kernel built with CONFIG_DEBUG_INFO_BTF=y (Linux 5.8 or later; Debian, Ubuntu, RHEL and Fedora build theirs so)")

// kernelFacts is what the running kernel's BTF says about the hooks and
// enums the tracer depends on. Values are looked up by name: they differ
// between kernel versions (PROTO_MEM is 16 on 6.1, 19 on 6.12, 20 on 6.18).
type kernelFacts struct {
	spec        *btf.Spec
	dropReasons map[string]uint32
	rstReasons  map[string]uint32
	skbSize     uint32
}

// loadKernelFacts reads the facts from the kernel's BTF, parsed once into
// cache and shared with the probes and the program loads (~35 ms a parse).
func loadKernelFacts(cache *btf.Cache) (*kernelFacts, error) {
	spec, err := cache.Kernel()
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, btf.ErrNotSupported) {
			return nil, ErrNoBTF
		}
		// A parse error's text is for BTF's authors: say what it means.
		return nil, fmt.Errorf("the kernel's BTF (/sys/kernel/btf/vmlinux) is unreadable (%s): "+
			"tcpmemtrace needs it intact to adapt its programs to this kernel", firstLine(err))
	}
	return factsFromSpec(spec)
}

func factsFromSpec(spec *btf.Spec) (*kernelFacts, error) {
	k := &kernelFacts{spec: spec}
	var err error
	if k.dropReasons, err = enumValues(spec, "skb_drop_reason", "SKB_DROP_REASON_"); err != nil {
		k.dropReasons = map[string]uint32{} // before 5.17: no reasons at all
	}
	if k.rstReasons, err = enumValues(spec, "sk_rst_reason", "SK_RST_REASON_"); err != nil {
		k.rstReasons = map[string]uint32{} // before 6.10
	}
	var skb *btf.Struct
	if err := spec.TypeByName("sk_buff", &skb); err != nil {
		return nil, fmt.Errorf("kernel BTF has no struct sk_buff: %w", err)
	}
	k.skbSize = skb.Size
	return k, nil
}

// enumValues returns an enum's values by name, prefix removed.
func enumValues(spec *btf.Spec, name, prefix string) (map[string]uint32, error) {
	var e *btf.Enum
	if err := spec.TypeByName(name, &e); err != nil {
		return nil, err
	}
	return enumMap(e, prefix), nil
}

func enumMap(e *btf.Enum, prefix string) map[string]uint32 {
	m := make(map[string]uint32, len(e.Values))
	for _, v := range e.Values {
		m[strings.TrimPrefix(v.Name, prefix)] = uint32(v.Value)
	}
	return m
}

// tracepointArgs is the number of arguments a tracepoint passes to tp_btf
// programs, from its btf_trace_<name> typedef; ok is false if it is absent.
func (k *kernelFacts) tracepointArgs(name string) (n int, ok bool) {
	var td *btf.Typedef
	if err := k.spec.TypeByName("btf_trace_"+name, &td); err != nil {
		return 0, false
	}
	ptr, isPtr := td.Type.(*btf.Pointer)
	if !isPtr {
		return 0, false
	}
	proto, isProto := ptr.Target.(*btf.FuncProto)
	if !isProto || len(proto.Params) == 0 {
		return 0, false
	}
	return len(proto.Params) - 1, true // the first is the tracepoint's data pointer
}

// funcParams is the number of parameters of a kernel function, -1 if absent.
func (k *kernelFacts) funcParams(name string) int {
	var fn *btf.Func
	if err := k.spec.TypeByName(name, &fn); err != nil {
		return -1
	}
	if proto, ok := fn.Type.(*btf.FuncProto); ok {
		return len(proto.Params)
	}
	return -1
}

func (k *kernelFacts) hasFunc(name string) bool {
	var fn *btf.Func
	return k.spec.TypeByName(name, &fn) == nil
}

// sockMinSndbuf is the kernel's SOCK_MIN_SNDBUF: 2 * (2048 +
// SKB_DATA_ALIGN(sizeof(struct sk_buff))), the wmem_queued floor of
// tcp_out_of_memory(). Cache lines are 64 bytes on the architectures built.
func (k *kernelFacts) sockMinSndbuf() uint32 {
	const cacheLine = 64
	aligned := (k.skbSize + cacheLine - 1) &^ (cacheLine - 1)
	return 2 * (2048 + aligned)
}

// maxDropReasons is MAX_DROP_REASONS: the size of config.drop_slot.
const maxDropReasons = len(bpfConfig{}.DropSlot)

// dropSlots maps each tracked reason present on this kernel to its slot.
func (k *kernelFacts) dropSlots() (table [maxDropReasons]uint8, found map[string]uint32) {
	found = map[string]uint32{}
	for _, r := range stream.Reasons {
		v, ok := k.dropReasons[r.String()]
		if !ok || int(v) >= maxDropReasons {
			continue
		}
		table[v] = uint8(r)
		found[r.String()] = v
	}
	return table, found
}

// firstLine is an error's first line, cut to a readable length.
func firstLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	if len(s) > 120 {
		s = s[:120] + "..."
	}
	return s
}
