package tracer

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"

	"github.com/tcpmemtrace/tcpmemtrace/stream"
)

// fakeKernel builds kernel BTF with the given drop reasons, reset reasons,
// tracepoint argument counts and functions.
func fakeKernel(t *testing.T, drops, rsts map[string]uint32, tps map[string]int, funcs ...string) *kernelFacts {
	t.Helper()
	u64 := &btf.Int{Name: "u64", Size: 8}
	var types []btf.Type
	enum := func(name, prefix string, vals map[string]uint32) {
		e := &btf.Enum{Name: name, Size: 4}
		for n, v := range vals {
			e.Values = append(e.Values, btf.EnumValue{Name: prefix + n, Value: uint64(v)})
		}
		types = append(types, e)
	}
	if drops != nil {
		enum("skb_drop_reason", "SKB_DROP_REASON_", drops)
	}
	if rsts != nil {
		enum("sk_rst_reason", "SK_RST_REASON_", rsts)
	}
	types = append(types, &btf.Struct{Name: "sk_buff", Size: 232})
	for name, n := range tps {
		params := []btf.FuncParam{{Name: "__data", Type: &btf.Pointer{Target: &btf.Void{}}}}
		for i := 0; i < n; i++ {
			params = append(params, btf.FuncParam{Type: u64})
		}
		types = append(types, &btf.Typedef{Name: "btf_trace_" + name,
			Type: &btf.Pointer{Target: &btf.FuncProto{Return: &btf.Void{}, Params: params}}})
	}
	for _, fn := range funcs { // "name" or "name/params"
		name, n := fn, 1
		if i := strings.IndexByte(fn, '/'); i > 0 {
			name, n = fn[:i], int(fn[i+1]-'0')
		}
		params := make([]btf.FuncParam, n)
		for i := range params {
			params[i] = btf.FuncParam{Name: fmt.Sprint("a", i), Type: u64}
		}
		types = append(types, &btf.Func{Name: name, Linkage: btf.GlobalFunc,
			Type: &btf.FuncProto{Return: u64, Params: params}})
	}
	b, err := btf.NewBuilder(types, nil)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := b.Spec()
	if err != nil {
		t.Fatal(err)
	}
	k, err := factsFromSpec(spec)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// The numbering of drop reasons moves between kernels; slots must follow names.
func TestDropSlotsFollowNames(t *testing.T) {
	for _, tc := range []struct {
		kernel string
		drops  map[string]uint32
	}{
		// Values read from the BTF of Debian's 6.1.0-50 and 6.12.101 kernels.
		{"6.1", map[string]uint32{"NOT_SPECIFIED": 2, "SOCKET_RCVBUFF": 15, "PROTO_MEM": 16, "SOCKET_BACKLOG": 20, "TCP_OFO_QUEUE_PRUNE": 35}},
		{"6.12", map[string]uint32{"SOCKET_RCVBUFF": 6, "PROTO_MEM": 19, "SOCKET_BACKLOG": 28, "TCP_OFO_QUEUE_PRUNE": 46}},
		{"6.18", map[string]uint32{"SOCKET_RCVBUFF": 6, "PROTO_MEM": 20, "SOCKET_BACKLOG": 29, "TCP_OFO_QUEUE_PRUNE": 52}},
	} {
		k := fakeKernel(t, tc.drops, nil, nil)
		table, found := k.dropSlots()
		for _, r := range stream.Reasons {
			name := r.String()
			v := tc.drops[name]
			if got := table[v]; got != uint8(r) {
				t.Errorf("%s: slot of %s (%d) = %d, want %d", tc.kernel, name, v, got, r)
			}
			if found[name] != v {
				t.Errorf("%s: found[%s] = %d, want %d", tc.kernel, name, found[name], v)
			}
		}
		var used int
		for _, s := range table {
			if s != 0 {
				used++
			}
		}
		if used != len(stream.Reasons) {
			t.Errorf("%s: %d slots set, want %d (NOT_SPECIFIED must not be counted)", tc.kernel, used, len(stream.Reasons))
		}
	}
}

func TestMissingReasonIsReported(t *testing.T) {
	k := fakeKernel(t, map[string]uint32{"PROTO_MEM": 16}, nil, map[string]int{"kfree_skb": 3})
	_, found := k.dropSlots()
	if len(found) != 1 {
		t.Fatalf("found %v, want only PROTO_MEM", found)
	}
	h := selectHooks(k, HooksAuto, func(string, ebpf.AttachType) error { return nil })[2]
	if !strings.Contains(strings.Join(h.Notes, "\n"), "SOCKET_BACKLOG is not a drop reason") {
		t.Errorf("notes %q do not name the missing reason", h.Notes)
	}
}

func TestSockMinSndbuf(t *testing.T) {
	k := fakeKernel(t, nil, nil, nil)
	if got := k.sockMinSndbuf(); got != 4608 { // measured value for sizeof(sk_buff) = 232
		t.Errorf("SOCK_MIN_SNDBUF = %d, want 4608", got)
	}
}

func TestSelectHooks(t *testing.T) {
	eperm := func(string, ebpf.AttachType) error { return unix.EPERM }
	allow := func(string, ebpf.AttachType) error { return nil }
	modern := map[string]int{"kfree_skb": 4, "tcp_send_reset": 3, "sock_exceed_buf_limit": 4,
		"sock_send_length": 3, "sock_recv_length": 3, "inet_sock_set_state": 3, "tcp_destroy_sock": 1}
	drops := map[string]uint32{"PROTO_MEM": 20, "SOCKET_BACKLOG": 29, "TCP_OFO_QUEUE_PRUNE": 52, "SOCKET_RCVBUFF": 6}
	rst := map[string]uint32{"TCP_ABORT_ON_MEMORY": 13}
	fns := []string{"tcp_check_oom", "tcp_enter_memory_pressure", "tcp_leave_memory_pressure", "bpf_prog_test_run_raw_tp"}

	using := func(hooks []hook) map[string]string {
		m := map[string]string{}
		for _, h := range hooks {
			m[h.Event] = h.Using
		}
		return m
	}

	// This machine: fentry refused, tracepoints everywhere.
	hooks := selectHooks(fakeKernel(t, drops, rst, modern, fns...), HooksAuto, eperm)
	u := using(hooks)
	if u[stream.EventAborts] != "tp_btf/tcp_send_reset reason TCP_ABORT_ON_MEMORY=13" {
		t.Errorf("aborts: %q", u[stream.EventAborts])
	}
	if got := hooks[0].Rejected; len(got) != 1 || got[0].Hook != "fexit/tcp_check_oom" || got[0].Reason != "operation not permitted" {
		t.Errorf("aborts rejected: %+v", got)
	}
	if u[stream.EventPressure] != variantSampled+"; send stalls: tp_btf/sock_send_length while under pressure" || !hooks[1].sampler {
		t.Errorf("pressure: %q", u[stream.EventPressure])
	}
	if !strings.HasPrefix(u[stream.EventDrops], "tp_btf/kfree_skb (rx_sk) reasons PROTO_MEM=20 SOCKET_BACKLOG=29") {
		t.Errorf("drops: %q", u[stream.EventDrops])
	}

	// A kernel that allows fexit.
	hooks = selectHooks(fakeKernel(t, drops, rst, modern, fns...), HooksAuto, allow)
	u = using(hooks)
	if u[stream.EventAborts] != "fexit/tcp_check_oom" || !strings.HasPrefix(u[stream.EventPressure], "fexit/tcp_enter_memory_pressure") {
		t.Errorf("fexit kernel: %v", u)
	}
	if !reflect.DeepEqual(hooks[0].programs, []string{bpfProgFexitTcpCheckOom}) {
		t.Errorf("programs %v", hooks[0].programs)
	}
	// ... unless told not to.
	hooks = selectHooks(fakeKernel(t, drops, rst, modern, fns...), HooksTracepoints, allow)
	if using(hooks)[stream.EventAborts] != "tp_btf/tcp_send_reset reason TCP_ABORT_ON_MEMORY=13" {
		t.Errorf("--hooks=tracepoints still chose %q", using(hooks)[stream.EventAborts])
	}

	// 6.1-like: no reset reasons, kfree_skb without rx_sk, no fexit: aborts unavailable, said why.
	old := map[string]int{"kfree_skb": 3, "tcp_send_reset": 2, "sock_exceed_buf_limit": 4, "inet_sock_set_state": 3, "tcp_destroy_sock": 1}
	hooks = selectHooks(fakeKernel(t, drops, nil, old, fns...), HooksAuto, eperm)
	u = using(hooks)
	if hooks[0].Available() {
		t.Errorf("aborts available on a kernel with no way to see them: %q", u[stream.EventAborts])
	}
	if r := hooks[0].Rejected; len(r) != 2 || !strings.Contains(r[1].Reason, "6.10") {
		t.Errorf("aborts rejected: %+v", r)
	}
	if !strings.HasPrefix(u[stream.EventDrops], "tp_btf/kfree_skb (skb->sk)") || hooks[2].tcpSlotsElsewhere != 0 {
		t.Errorf("drops on 6.1 without fexit: %q", u[stream.EventDrops])
	}
	if n := strings.Join(hooks[2].Notes, " "); !strings.Contains(n, "no owner") {
		t.Errorf("drops notes on 6.1 without fexit: %q", n)
	}
	if n := hooks[1].Using; !strings.Contains(n, "no send stalls (needs sock_send_length, 6.3)") {
		t.Errorf("pressure notes on a pre-6.3 kernel: %q", n)
	}
	// 6.1 where fexit works: TCP receive drops are counted at the failed
	// check, with their socket, and kfree_skb leaves them alone.
	hooks = selectHooks(fakeKernel(t, drops, nil, old, append(fns, "tcp_try_rmem_schedule/3", "tcp_add_backlog/3")...), HooksAuto, allow)
	if d := hooks[2]; !strings.HasPrefix(d.Using, "fexit/tcp_add_backlog (TCP SOCKET_BACKLOG), fexit/tcp_try_rmem_schedule (TCP PROTO_MEM), tp_btf/kfree_skb (skb->sk)") ||
		d.tcpSlotsElsewhere != 1<<stream.ReasonProtoMem|1<<stream.ReasonSocketBacklog || len(d.programs) != 3 {
		t.Errorf("drops on 6.1 with fexit: %q, slots %b, programs %v", d.Using, d.tcpSlotsElsewhere, d.programs)
	}
}

// The pre-5.17 family (5.10, 5.15, RHEL 9's 5.14): no drop reasons, no
// reset reason, a two-argument tcp_add_backlog. TCP's memory drops come
// from fexit where TCP decides them, with their socket.
func TestSelectHooksBefore517(t *testing.T) {
	eperm := func(string, ebpf.AttachType) error { return unix.EPERM }
	allow := func(string, ebpf.AttachType) error { return nil }
	tps := map[string]int{"kfree_skb": 2, "tcp_send_reset": 2, "sock_exceed_buf_limit": 4, "inet_sock_set_state": 3, "tcp_destroy_sock": 1}
	fns := []string{"tcp_check_oom", "tcp_enter_memory_pressure", "tcp_leave_memory_pressure", "tcp_try_rmem_schedule/3", "tcp_add_backlog/2"}
	hooks := selectHooks(fakeKernel(t, nil, nil, tps, fns...), HooksAuto, allow)
	d := hooks[2]
	if d.Using != "fexit/tcp_try_rmem_schedule (TCP PROTO_MEM), fexit/tcp_add_backlog (TCP SOCKET_BACKLOG)" ||
		!reflect.DeepEqual(d.programs, []string{bpfProgFexitTcpTryRmemSchedule, bpfProgFexitTcpAddBacklogNoreason}) {
		t.Errorf("drops on 5.10: %q %v", d.Using, d.programs)
	}
	if len(d.Rejected) != 4 || d.Rejected[0].Reason != "no drop reasons (needs 5.17)" {
		t.Errorf("drops rejected: %+v", d.Rejected)
	}
	if n := strings.Join(d.Notes, " "); !strings.Contains(n, "no drop reasons before 5.17") {
		t.Errorf("notes %q", n)
	}
	for _, h := range hooks[:2] {
		if !strings.HasPrefix(h.Using, "fexit/") {
			t.Errorf("%s on 5.10 with fexit: %q", h.Event, h.Using)
		}
	}
	// Where fexit is refused (lockdown), nothing sees aborts or drops: said so.
	hooks = selectHooks(fakeKernel(t, nil, nil, tps, fns...), HooksAuto, eperm)
	if hooks[0].Available() || hooks[2].Available() || !hooks[1].Available() {
		t.Errorf("5.10 without fexit: aborts %q, pressure %q, drops %q", hooks[0].Using, hooks[1].Using, hooks[2].Using)
	}
}

func TestShortReason(t *testing.T) {
	if got := shortReason(errors.Join(errors.New("load program"), unix.EPERM)); got != "operation not permitted" {
		t.Errorf("EPERM -> %q", got)
	}
}

// The running kernel's names resolve (BTF is world-readable: no root needed).
func TestRunningKernelReasons(t *testing.T) {
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		t.Skip("no kernel BTF")
	}
	k, err := loadKernelFacts(btf.NewCache())
	if err != nil {
		t.Fatal(err)
	}
	_, found := k.dropSlots()
	if _, ok := found["PROTO_MEM"]; !ok {
		t.Errorf("PROTO_MEM not resolved on this kernel: %v", found)
	}
	if k.sockMinSndbuf() < 4096 {
		t.Errorf("SOCK_MIN_SNDBUF %d", k.sockMinSndbuf())
	}
}

// The Go mirror of the C types must match the object's BTF exactly.
func TestGoTypesMatchC(t *testing.T) {
	spec, err := loadBpf()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		goT  reflect.Type
	}{
		{"event", reflect.TypeOf(bpfEvent{})},
		{"counters", reflect.TypeOf(bpfCounters{})},
		{"owner", reflect.TypeOf(bpfOwner{})},
		{"owner_key", reflect.TypeOf(bpfOwnerKey{})},
		{"owner_stats", reflect.TypeOf(bpfOwnerStats{})},
		{"counts", reflect.TypeOf(bpfCounts{})},
	} {
		var st *btf.Struct
		if err := spec.Types.TypeByName(tc.name, &st); err != nil {
			t.Fatal(err)
		}
		if int(st.Size) != int(tc.goT.Size()) {
			t.Errorf("struct %s: C size %d, Go size %d", tc.name, st.Size, tc.goT.Size())
		}
		var goFields []reflect.StructField
		for i := 0; i < tc.goT.NumField(); i++ {
			if f := tc.goT.Field(i); f.Name != "_" {
				goFields = append(goFields, f)
			}
		}
		if len(goFields) != len(st.Members) {
			t.Fatalf("struct %s: %d C members, %d Go fields", tc.name, len(st.Members), len(goFields))
		}
		for i, m := range st.Members {
			if off := goFields[i].Offset; uint32(off*8) != uint32(m.Offset) {
				t.Errorf("%s.%s: C offset %d bits, Go %s at %d bytes", tc.name, m.Name, m.Offset, goFields[i].Name, off)
			}
		}
	}
	var cfg bpfConfig
	if sz := spec.Variables[bpfVarCFG].Size(); int(sz) != int(unsafe.Sizeof(cfg)) {
		t.Errorf("CFG: %d bytes in the object, bpfConfig %d", sz, unsafe.Sizeof(cfg))
	}
}

// The stream package's constants are generated from this object's enums
// (make generate): a stale enums_gen.go would name counters wrongly.
func TestStreamEnumsMatchObject(t *testing.T) {
	spec, err := loadBpf()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		enum, prefix, count string
		name                func(v uint64) string
		lower               bool
	}{
		{"counter", "COUNTER_", "COUNTERS", func(v uint64) string { return stream.Counter(v).String() }, true},
		{"drop_slot", "DROP_SLOT_", "DROP_SLOTS", func(v uint64) string { return stream.Reason(v).String() }, false},
		{"drop_cause", "DROP_CAUSE_", "DROP_CAUSES", func(v uint64) string { return stream.DropCause(v).String() }, true},
		{"event_kind", "EV_", "", func(v uint64) string { return stream.Kind(v).String() }, true},
		{"abort_cause", "ABORT_", "", func(v uint64) string { return stream.AbortCause(v).String() }, true},
	} {
		var e *btf.Enum
		if err := spec.Types.TypeByName(tc.enum, &e); err != nil {
			t.Fatal(err)
		}
		for _, v := range e.Values {
			want := strings.TrimPrefix(v.Name, tc.prefix)
			if tc.lower {
				want = strings.ToLower(want)
			}
			if v.Name == tc.count {
				continue
			}
			if got := tc.name(v.Value); got != want {
				t.Errorf("enum %s: %s = %d is %q in the stream package, want %q (run make generate)", tc.enum, v.Name, v.Value, got, want)
			}
		}
	}
}
