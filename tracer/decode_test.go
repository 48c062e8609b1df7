package tracer

import (
	"net/netip"
	"testing"
	"time"
	"unsafe"

	"github.com/tcpmemtrace/tcpmemtrace/stream"
)

func raw(r *bpfEvent) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(r)), unsafe.Sizeof(*r))
}

func comm(s string) (c [16]int8) {
	for i := range s {
		c[i] = int8(s[i])
	}
	return c
}

func TestDecodeAbortV4(t *testing.T) {
	d := newDecoder(1_000_000_000, 13)
	r := bpfEvent{
		TsBootNs: 500, Kind: uint8(stream.KindAbort), Detail: 1, Reason: 13, Family: afInet, Protocol: 6,
		Sport: 41000, Dport: 80, State: 7, Tgid: 4242, CurTgid: 7, Comm: comm("nginx"),
		Allocated: 3100, MemLimit: [3]int64{1000, 2000, 3000}, WmemQueued: 48448, Cookie: 99, Netns: 4026531840,
	}
	copy(r.Saddr[:], []byte{127, 0, 0, 1})
	copy(r.Daddr[:], []byte{10, 0, 0, 2})
	var e stream.Event
	if err := d.decode(raw(&r), &e); err != nil {
		t.Fatal(err)
	}
	if e.Kind != stream.KindAbort || e.Cause != stream.CauseMemory || e.Reason != stream.AbortResetReason {
		t.Errorf("kind %v cause %q reason %q", e.Kind, e.Cause, e.Reason)
	}
	if e.Socket.Src != netip.MustParseAddrPort("127.0.0.1:41000") || e.Socket.Dst != netip.MustParseAddrPort("10.0.0.2:80") {
		t.Errorf("addresses %v -> %v", e.Socket.Src, e.Socket.Dst)
	}
	if e.Owner != (stream.Owner{PID: 4242, Comm: "nginx"}) || e.CurrentPID != 7 {
		t.Errorf("owner %+v current %d", e.Owner, e.CurrentPID)
	}
	if e.Socket.State.String() != "CLOSE" || e.Socket.WmemQueued != 48448 || e.Socket.Cookie != 99 {
		t.Errorf("socket %+v", e.Socket)
	}
	if e.Mem != (stream.Mem{Allocated: 3100, Limits: [3]int64{1000, 2000, 3000}}) {
		t.Errorf("mem %+v", e.Mem)
	}
	if want := time.Unix(1, 500); !e.Time.Equal(want) {
		t.Errorf("time %v, want %v", e.Time, want)
	}
}

func TestDecodeDropV6AndOrphans(t *testing.T) {
	d := newDecoder(0, 13)
	r := bpfEvent{Kind: uint8(stream.KindDrop), Detail: 1, Family: afInet6, Sport: 443, Dport: 5555, Len: 65483}
	r.Saddr[15], r.Daddr[15] = 1, 1
	var e stream.Event
	if err := d.decode(raw(&r), &e); err != nil {
		t.Fatal(err)
	}
	if e.Reason != "PROTO_MEM" || e.Bytes != 65483 {
		t.Errorf("reason %q bytes %d", e.Reason, e.Bytes)
	}
	if e.Socket.Src.String() != "[::1]:443" {
		t.Errorf("src %v", e.Socket.Src)
	}
	if e.Owner.PID != 0 || e.Owner.Comm != "" {
		t.Errorf("unknown owner decoded as %+v", e.Owner)
	}

	r = bpfEvent{Kind: uint8(stream.KindAbort), Detail: 2}
	if err := d.decode(raw(&r), &e); err != nil {
		t.Fatal(err)
	}
	if e.Cause != stream.CauseOrphans || e.Reason != "" || e.Socket.Src.IsValid() {
		t.Errorf("orphan abort from fexit: cause %q reason %q src %v", e.Cause, e.Reason, e.Socket.Src)
	}

	r = bpfEvent{Kind: uint8(stream.KindRefusal), Detail: 0}
	if d.decode(raw(&r), &e); !e.Send {
		t.Error("refusal detail 0 is the send side")
	}
}

func TestDecodeShort(t *testing.T) {
	var e stream.Event
	if err := newDecoder(0, 0).decode(make([]byte, eventSize-1), &e); err == nil {
		t.Error("a short record decoded")
	}
}

func TestDecodeDoesNotAllocate(t *testing.T) {
	d := newDecoder(0, 13)
	r := bpfEvent{Kind: uint8(stream.KindDrop), Detail: 1, Family: afInet, Comm: comm("tmt-reader")}
	b := raw(&r)
	var e stream.Event
	d.decode(b, &e) // interns the comm
	if n := testing.AllocsPerRun(100, func() { d.decode(b, &e) }); n != 0 {
		t.Errorf("%v allocations per decoded event", n)
	}
}

func TestSumCounters(t *testing.T) {
	cpus := make([]bpfCounters, 2)
	cpus[0].All.Events[stream.MemAborts], cpus[1].All.Events[stream.MemAborts] = 2, 3
	cpus[0].All.Drops[stream.ProtoTCP][stream.ReasonProtoMem], cpus[1].All.Drops[stream.ProtoTCP][stream.ReasonProtoMem] = 10, 5
	cpus[1].All.DropBytes[stream.ProtoTCP][stream.ReasonProtoMem] = 700
	cpus[0].All.Drops[stream.ProtoOther][stream.ReasonSocketRcvbuff] = 1
	cpus[0].LostSamples, cpus[1].PressureEnters = 4, 1
	tot := sumCounters(cpus)
	if tot.Events[stream.MemAborts] != 5 || tot.Drops[stream.ProtoTCP][stream.ReasonProtoMem] != 15 ||
		tot.DropBytes[stream.ProtoTCP][stream.ReasonProtoMem] != 700 ||
		tot.Drops[stream.ProtoOther][stream.ReasonSocketRcvbuff] != 1 || tot.LostSamples != 4 || tot.PressureEpisodes != 1 {
		t.Errorf("%+v", tot)
	}
}
