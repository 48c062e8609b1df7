package tracer

import (
	"fmt"
	"net/netip"
	"time"
	"unsafe"

	"github.com/tcpmemtrace/tcpmemtrace/stream"
)

// decoder turns ringbuf records into Events without reflection. It gives
// ids only: naming cgroups, containers and memory cgroups is the enrich
// stage's work, off the drain loop.
type decoder struct {
	rstValue  uint32
	bootToNow int64 // wall clock ns - CLOCK_BOOTTIME ns
	comms     map[[16]int8]string
}

var eventSize = int(unsafe.Sizeof(bpfEvent{}))

func newDecoder(bootToWall int64, rstValue uint32) *decoder {
	return &decoder{rstValue: rstValue, bootToNow: bootToWall, comms: map[[16]int8]string{}}
}

func (d *decoder) decode(raw []byte, ev *stream.Event) error {
	if len(raw) < eventSize {
		return fmt.Errorf("short event: %d bytes, want %d", len(raw), eventSize)
	}
	r := (*bpfEvent)(unsafe.Pointer(&raw[0]))
	*ev = stream.Event{
		Time:       d.wall(r.TsBootNs),
		Kind:       stream.Kind(r.Kind),
		CurrentPID: r.CurTgid,
		Bytes:      r.Len,
		Truesize:   r.Truesize,
		Mem:        stream.Mem{Allocated: r.Allocated, Limits: r.MemLimit},
		PressureID: r.PressureId,
		Owner:      stream.Owner{PID: r.Tgid, CgroupID: r.CgroupId, Comm: d.comm(r.Comm)},
	}
	s := &ev.Socket
	s.Cookie, s.NetNS, s.Family, s.Protocol = r.Cookie, r.Netns, r.Family, r.Protocol
	s.State = stream.State(r.State)
	s.RmemAlloc, s.Rcvbuf, s.WmemQueued, s.Sndbuf = r.RmemAlloc, r.Rcvbuf, r.WmemQueued, r.Sndbuf
	s.Memcg, s.MemcgID, s.CgroupID, s.Orphan = r.Memcg != 0, r.MemcgId, r.SkCgroupId, r.Orphan != 0
	if r.ClosedNs != 0 {
		s.ClosedAt = d.wall(r.ClosedNs)
	}
	switch r.Family {
	case afInet:
		s.Src = netip.AddrPortFrom(netip.AddrFrom4([4]byte(r.Saddr[:4])), r.Sport)
		s.Dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte(r.Daddr[:4])), r.Dport)
	case afInet6:
		s.Src = netip.AddrPortFrom(netip.AddrFrom16(r.Saddr), r.Sport)
		s.Dst = netip.AddrPortFrom(netip.AddrFrom16(r.Daddr), r.Dport)
	}
	switch ev.Kind {
	case stream.KindAbort:
		ev.Cause = stream.AbortCause(r.Detail).String()
		if r.Reason == d.rstValue && r.Reason != 0 {
			ev.Reason = stream.AbortResetReason
		}
	case stream.KindDrop:
		slot := stream.Reason(r.Detail % stream.NumReasons)
		if slot != stream.ReasonNone {
			ev.Reason = slot.String()
		}
		if slot == stream.ReasonProtoMem && s.IsTCP() && r.Cause < stream.NumDropCauses {
			ev.DropCause = stream.DropCause(r.Cause).String()
		}
		ev.LocationAddr = r.Location
	case stream.KindRefusal:
		ev.Send = r.Detail == 0
	}
	return nil
}

func (d *decoder) wall(bootNs uint64) time.Time { return time.Unix(0, d.bootToNow+int64(bootNs)) }

// comm interns command names: a storm repeats a few, so no allocation per event.
func (d *decoder) comm(c [16]int8) string {
	if c[0] == 0 {
		return ""
	}
	if s, ok := d.comms[c]; ok {
		return s
	}
	s := cString(c[:])
	if len(d.comms) < 4096 {
		d.comms[c] = s
	}
	return s
}

func cString(b []int8) string {
	n := 0
	for n < len(b) && b[n] != 0 {
		n++
	}
	s := make([]byte, n)
	for i := range s {
		s[i] = byte(b[i])
	}
	return string(s)
}

const (
	afInet  = 2
	afInet6 = 10
)
