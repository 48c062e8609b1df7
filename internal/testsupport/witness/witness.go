// Package witness counts one kernel event twice, independently of the
// tracer, for the tests that hold the tracer to the kernel's MIB: a minimal
// hand-assembled BPF program, and ftrace (package tracefs). A BPF program
// does not run for every hit: the development VM's kernel runs none for a
// hit in interrupt context while a thread of its agent (PID 1) is current,
// though ftrace records it, and counts no recursion miss. The tracer, like
// every BPF tool (bpftrace too), cannot count those; a witness's two counts
// say how many there were (Counts.Hidden), and Countable takes them off the
// kernel's count. Two events are watched: PROTO_MEM frees (kfree_skb) and
// the resets of memory aborts (tcp_send_reset), each by its reason.
package witness

import (
	"errors"
	"fmt"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"

	"github.com/tcpmemtrace/tcpmemtrace/internal/testsupport/tracefs"
	"github.com/tcpmemtrace/tcpmemtrace/internal/testsupport/workload"
)

// Witness is one event counted twice; Stop detaches it.
type Witness struct {
	counts *ebpf.Map
	prog   *ebpf.Program
	link   link.Link
	// inNetns: the tracepoint passes the socket, so the witness also
	// counts the test namespace's events alone, the figure the kernel's
	// MIB delta is comparable with.
	inNetns bool
	ftrace  *tracefs.Counter // nil where tracefs or the event's reason is missing
}

// Counts is what a witness counted: every event of the host, and those
// whose socket is in the test's namespace (-1: not known); how many times
// its program ran (-1 without BPF statistics), which a tracer's program on
// the same tracepoint, attached before and detached after it, cannot be
// below, and how many hits its recursion guard turned away; and what
// ftrace recorded of the host's events (Fired -1: not known, Note says
// why), by the task that was current.
type Counts struct {
	All, Netns, Runs, Misses, Fired int64
	ByTask                          map[string]int64
	Note                            string
}

// Unknown is what a witness that did not run counted.
var Unknown = Counts{All: -1, Netns: -1, Runs: -1, Fired: -1}

// Hidden is how many of the host's events no BPF program ran for: those
// ftrace recorded and the witness's program did not, when it turned none
// away itself (0 when not known).
func (c Counts) Hidden() uint64 {
	if c.Fired < 0 || c.All < 0 || c.Misses != 0 || c.Fired <= c.All {
		return 0
	}
	return uint64(c.Fired - c.All)
}

func (c Counts) String() string {
	s := fmt.Sprintf("%d in the namespace, %d on the host, in %d runs (%d turned away)", c.Netns, c.All, c.Runs, c.Misses)
	if c.Fired >= 0 {
		s += fmt.Sprintf("; ftrace %d on the host, by task %v", c.Fired, c.ByTask)
	}
	if c.Note != "" {
		s += "; " + c.Note
	}
	return s
}

// Countable is a kernel count of the witnessed event less the events no
// BPF program ran for: what the tracer, or any BPF tool, can count. It
// takes them off only where every event the witness saw was the test
// namespace's (ftrace counts the host's), and logs what it did.
func Countable(t testing.TB, kernel uint64, c Counts) uint64 {
	t.Helper()
	hidden := c.Hidden()
	switch {
	case hidden == 0:
		return kernel
	case c.Netns < 0 || c.Netns != c.All || hidden > kernel:
		t.Logf("%d of the host's events fired where no BPF program ran (witness %v), not taken off the namespace's %d: some may be another namespace's",
			hidden, c, kernel)
		return kernel
	}
	t.Logf("%d of the kernel's %d fired where no BPF program ran (the witness's program %d, ftrace %d, by task %v): counting %d",
		hidden, kernel, c.All, c.Fired, c.ByTask, kernel-hidden)
	return kernel - hidden
}

// Pair is the two witnesses a test of the tracer runs beside it, in the
// test's namespace: PROTO_MEM frees and memory-abort resets.
type Pair struct{ frees, resets *Witness }

// StartPair starts both (see StartT).
func StartPair(t testing.TB, netns uint32) Pair {
	t.Helper()
	return Pair{StartT(t, ProtoMemFrees, netns), StartT(t, MemoryAbortResets, netns)}
}

// Stop stops both and returns what they counted.
func (p Pair) Stop() Seen { return Seen{Frees: p.frees.Stop(), Resets: p.resets.Stop()} }

// Seen is what a pair counted.
type Seen struct{ Frees, Resets Counts }

// Drops is a run's TCP memory drops by the kernel (ΔTCPRcvQDrop and
// ΔTCPOFODrop) less the PROTO_MEM frees no BPF program ran for.
func (s Seen) Drops(t testing.TB, res workload.Result) uint64 {
	t.Helper()
	return Countable(t, res.Delta("TCPRcvQDrop")+res.Delta("TCPOFODrop"), s.Frees)
}

// Aborts is a run's ΔTCPAbortOnMemory less the memory-abort resets no BPF
// program ran for.
func (s Seen) Aborts(t testing.TB, res workload.Result) uint64 {
	t.Helper()
	return Countable(t, res.Delta("TCPAbortOnMemory"), s.Resets)
}

// Point is what a witness counts: the raw tracepoint's events whose
// reason argument is the enum's value, and where the socket argument is.
type Point struct {
	tracepoint string
	event      string // ftrace's name for it
	reasonEnum string // the reason's enum type, and the value counted
	reason     string
	reasonArg  int
	socketArg  int
	minArgs    int // the tracepoint's arguments when the socket is among them
}

// The events witnessed.
var (
	ProtoMemFrees = Point{tracepoint: "kfree_skb", event: "skb/kfree_skb", reasonEnum: "skb_drop_reason", reason: "SKB_DROP_REASON_PROTO_MEM",
		reasonArg: 2, socketArg: 3, minArgs: 4} // rx_sk: 6.11+
	MemoryAbortResets = Point{tracepoint: "tcp_send_reset", event: "tcp/tcp_send_reset", reasonEnum: "sk_rst_reason", reason: "SK_RST_REASON_TCP_ABORT_ON_MEMORY",
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

// Tracepoint is the raw tracepoint a point's events come from.
func (p Point) Tracepoint() string { return p.tracepoint }

// ErrNoReason: the kernel's events carry no such reason (before 6.10 for
// resets, 5.17 for frees); nothing is witnessed.
var ErrNoReason = errors.New("witness: the tracepoint carries no such reason")

// Start attaches a witness to its raw tracepoint, where the socket is in
// the namespace whose inode is netns, and starts ftrace on the same event
// (without it, Counts.Fired is -1 and the note says why).
func Start(p Point, netns uint32) (w *Witness, note error) {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return nil, err
	}
	reason := enumValue(spec, p.reasonEnum, p.reason)
	args := tracepointArgs(spec, p.tracepoint)
	if reason < 0 || args <= p.reasonArg {
		return nil, fmt.Errorf("%s: %w", p.tracepoint, ErrNoReason)
	}
	w = &Witness{}
	if w.counts, err = ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 2}); err != nil {
		return nil, fmt.Errorf("witness %s: %w", p.tracepoint, err)
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
		w.close()
		return nil, fmt.Errorf("witness %s: %w", p.tracepoint, err)
	}
	// ftrace records inside the program's window, so that no hit it
	// records can have come before or after the program was attached.
	if w.ftrace, err = tracefs.Start(p.event, fmt.Sprintf("reason == %d", reason)); err != nil {
		return w, fmt.Errorf("witness %s without ftrace: %w", p.tracepoint, err)
	}
	return w, nil
}

// StartT starts a witness that stops when the test ends, if not before,
// and logs why it runs without ftrace or not at all (nil).
func StartT(t testing.TB, p Point, netns uint32) *Witness {
	t.Helper()
	w, note := Start(p, netns)
	if note != nil {
		t.Log(note)
	}
	t.Cleanup(func() { w.Stop() })
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

// Stop detaches the witness and returns what it counted; a nil or
// stopped witness knows nothing.
func (w *Witness) Stop() Counts {
	out := Unknown
	if w == nil || w.link == nil {
		return out
	}
	if w.ftrace != nil {
		if h, err := w.ftrace.Stop(); err != nil {
			out.Note = err.Error()
		} else {
			out.Fired, out.ByTask = h.Total, h.ByTask
		}
		w.ftrace = nil
	}
	w.link.Close()
	w.link = nil
	if st, err := w.prog.Stats(); err == nil {
		if st.RunCount != 0 || st.Runtime != 0 { // zero without BPF statistics
			out.Runs = int64(st.RunCount)
		}
		out.Misses = int64(st.RecursionMisses)
	}
	var n uint64
	if w.counts.Lookup(uint32(0), &n) == nil {
		out.All = int64(n)
	}
	if w.inNetns && w.counts.Lookup(uint32(1), &n) == nil {
		out.Netns = int64(n)
	}
	w.close()
	return out
}

func (w *Witness) close() {
	if w.prog != nil {
		w.prog.Close()
	}
	w.counts.Close()
}
