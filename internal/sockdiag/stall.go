package sockdiag

import (
	"fmt"
	"sort"
	"time"

	"github.com/tcpmemtrace/tcpmemtrace/internal/units"
	"github.com/tcpmemtrace/tcpmemtrace/stream"
)

// StallAfter is how long unread data must have waited, with nothing new
// arriving behind it, for a socket to count as stalled. Not 1 s: on
// loopback (64 KiB segments) a receiver advertises room only once about
// 120 KiB are free, so a reader taking 4 KiB every 50 ms (80 KiB/s) sees
// data arrive only every 1.5 s, and it is reading. At 5 s, loopback
// readers faster than about 24 KiB/s (Ethernet ones, 1448-byte segments:
// about 600 B/s) are never called stalled; the stalls that exhaust
// tcp_mem last minutes.
const StallAfter = 5 * time.Second

// TCP states (include/net/tcp_states.h) in which a process can still read
// what waits in the receive queue.
const (
	stateEstablished = 1
	stateFinWait1    = 4
	stateFinWait2    = 5
	stateCloseWait   = 8
)

// StallAge says whether the socket's owner has stopped making room, and
// for how long: its receive queue holds unread data and nothing has
// arrived for StallAfter or more. The age is tcp_info's last_data_recv.
//
// Why that means "has not made room": a reader that frees room gets new
// data at once while its peer has more to send, because reading opens the
// window and the kernel advertises it as soon as a segment fits, so
// last_data_recv starts again from zero. When the peer has nothing more to
// send, a reader that reads has emptied the queue. Either way, data that
// has waited StallAfter with nothing behind it has not been read (at least
// not enough for one more segment) for that long. It costs nothing on the
// kernel's paths: the kernel keeps the time of the last arrival anyway,
// and the dump that reads the queues reads it too.
func (s *Socket) StallAge() (time.Duration, bool) {
	switch s.State {
	case stateEstablished, stateFinWait1, stateFinWait2, stateCloseWait:
	default:
		return 0, false // a listener's Recv-Q is its accept backlog
	}
	if s.RecvQ == 0 || s.LastDataRecv < StallAfter {
		return 0, false
	}
	return s.LastDataRecv, true
}

// MaxStalled bounds the stalled sockets a look lists.
const MaxStalled = 50

// StalledSockets lists the stalled sockets a process holds, the n holding
// the most memory first.
func StalledSockets(socks []Socket, owners map[uint32]stream.Process, n int) []stream.StalledSocket {
	var out []stream.StalledSocket
	for i := range socks {
		s := &socks[i]
		p, ok := owners[s.Inode]
		if !ok || s.Inode == 0 {
			continue
		}
		if age, stalled := s.StallAge(); stalled {
			out = append(out, stream.StalledSocket{Cookie: s.Cookie, NetNS: s.NetNS, Src: s.Src, Dst: s.Dst, Process: p,
				Bytes: uint64(s.Mem.RmemAlloc), StalledMs: uint64(age.Milliseconds())})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Bytes != out[j].Bytes {
			return out[i].Bytes > out[j].Bytes
		}
		return out[i].Cookie < out[j].Cookie
	})
	return out[:min(n, len(out))]
}

// NotReading says what a holder's stalled sockets prove, as people read
// it: "pid 4242 (nginx) has not read for 93 s with 4.0 MiB queued on 120
// sockets", with " in PLACE" after the command when place is not "";
// "" when none is stalled. Names are the machine's own: text outputs
// escape the sentence.
func NotReading(h stream.Holder, place string) string {
	if h.StalledSockets == 0 {
		return ""
	}
	if place != "" {
		place = " in " + place
	}
	plural := "s"
	if h.StalledSockets == 1 {
		plural = ""
	}
	return fmt.Sprintf("pid %d (%s)%s has not read for %s with %s queued on %d socket%s", h.PID, h.Comm, place,
		units.Age(h.StallAge()), units.IEC(int64(h.StalledBytes)), h.StalledSockets, plural)
}
