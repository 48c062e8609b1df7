// Package record writes a trace to a file and reads it back as a
// stream.Source, so a replay goes through the very code that showed it live.
// The format is in docs/recording.md.
package record

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net/netip"
	"time"

	"github.com/tcpmemtrace/tcpmemtrace/stream"
)

// Magic opens every recording: "TMTREC", a zero byte, the format version.
// Version 2 added the names runtimes give containers and pods, and the
// cgroups and containers of a pressure episode's holders; version 3 each
// holder's stalled sockets; version 4 where a drop was freed (kfree_skb's
// location). This reader reads every version from 1.
const (
	magic         = "TMTREC\x00"
	version       = 4
	minVersion    = 1
	namesSince    = 2 // the version that carries container names
	stalledSince  = 3 // the version that carries holders' stalled sockets
	locationSince = 4 // the version that carries drops' locations
)

// Record types.
const (
	recHeader   = 1 // JSON Header
	recString   = 2 // uvarint id, then the string's bytes
	recEvent    = 3 // binary event, strings by id
	recSnapshot = 4 // JSON stream.Snapshot
)

// maxPayload bounds one record: larger lengths are corruption.
const maxPayload = 64 << 20

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Header describes the trace a file holds.
type Header struct {
	Format  string      `json:"format"` // "tcpmemtrace recording"
	Version int         `json:"version"`
	Part    int         `json:"part"` // 0 for the first file, +1 per rotation
	Created time.Time   `json:"created"`
	Info    stream.Info `json:"info"`
	// DropReasons are the tracked reasons in slot order, and ResetReason
	// the abort's reset reason, by name: replays never look numbers up.
	DropReasons []string `json:"drop_reasons"`
	ResetReason string   `json:"reset_reason"`
}

// Errors a reader returns. A cut file is not one of them: it reads up to
// its last whole record, with a warning.
var (
	ErrEmpty   = errors.New("empty file")
	ErrForeign = errors.New("not a tcpmemtrace recording")
)

// CorruptError is a record whose checksum or contents are wrong.
type CorruptError struct {
	Offset int64
	Reason string
	joined bool // another recording's magic where a record should be
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("corrupt recording at byte %d: %s", e.Offset, e.Reason)
}

// frame appends one framed record: type, length, payload, CRC32C of the three.
func frame(dst []byte, typ byte, payload []byte) []byte {
	start := len(dst)
	dst = append(dst, typ)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(payload)))
	dst = append(dst, payload...)
	return binary.LittleEndian.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli))
}

// readFrame reads one record. io.EOF: the file ended between records;
// io.ErrUnexpectedEOF: it ended inside one (a cut file).
func readFrame(r io.Reader, buf []byte, offset int64) (typ byte, payload []byte, n int, err error) {
	var head [5]byte
	if k, err := io.ReadFull(r, head[:]); err != nil {
		if k == 0 && err == io.EOF {
			return 0, nil, 0, io.EOF
		}
		return 0, nil, k, io.ErrUnexpectedEOF
	}
	typ = head[0]
	l := binary.LittleEndian.Uint32(head[1:])
	if string(head[:]) == magic[:len(head)] {
		return 0, nil, 5, &CorruptError{Offset: offset, Reason: "another recording's start", joined: true}
	}
	if l > maxPayload {
		return 0, nil, 5, &CorruptError{Offset: offset, Reason: fmt.Sprintf("record of %d bytes", l)}
	}
	// Grow with what the file really holds: a corrupt length must not
	// cost its claimed size in memory.
	need := int(l) + 4
	buf = buf[:0]
	for len(buf) < need {
		chunk := min(need-len(buf), 1<<20)
		if cap(buf)-len(buf) < chunk {
			buf = append(buf[:len(buf):len(buf)], make([]byte, chunk)...)[:len(buf)]
		}
		k, err := io.ReadFull(r, buf[len(buf):len(buf)+chunk])
		buf = buf[:len(buf)+k]
		if err != nil {
			return 0, nil, 5 + len(buf), io.ErrUnexpectedEOF
		}
	}
	crc := crc32.Checksum(head[:], castagnoli)
	crc = crc32.Update(crc, castagnoli, buf[:l])
	if crc != binary.LittleEndian.Uint32(buf[l:]) {
		return 0, nil, 5 + need, &CorruptError{Offset: offset, Reason: "checksum mismatch"}
	}
	return typ, buf[:l], 5 + need, nil
}

// encoder builds one event record; strings become ids (new ones are
// emitted first through intern).
type encoder struct {
	b      []byte
	intern func(string) uint64
}

func (e *encoder) u(v uint64)  { e.b = binary.AppendUvarint(e.b, v) }
func (e *encoder) i(v int64)   { e.b = binary.AppendVarint(e.b, v) }
func (e *encoder) s(v string)  { e.u(e.intern(v)) }
func (e *encoder) bool(v bool) { e.b = append(e.b, boolByte(v)) }
func (e *encoder) addr(a netip.AddrPort) {
	if !a.IsValid() {
		e.b = append(e.b, 0)
		return
	}
	ip := a.Addr().AsSlice()
	e.b = append(e.b, byte(len(ip)))
	e.b = append(e.b, ip...)
	e.u(uint64(a.Port()))
}

func boolByte(v bool) byte {
	if v {
		return 1
	}
	return 0
}

func timeNanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// event encodes one event in the current version's field order.
func (e *encoder) event(ev *stream.Event) {
	e.i(timeNanos(ev.Time))
	e.u(uint64(ev.Kind))
	e.s(ev.Cause)
	e.s(ev.Reason)
	e.s(ev.DropCause)
	e.bool(ev.Send)
	s := &ev.Socket
	e.u(s.Cookie)
	e.u(uint64(s.NetNS))
	e.u(uint64(s.Family))
	e.u(uint64(s.Protocol))
	e.u(uint64(s.State))
	e.addr(s.Src)
	e.addr(s.Dst)
	e.i(int64(s.RmemAlloc))
	e.i(int64(s.Rcvbuf))
	e.i(int64(s.WmemQueued))
	e.i(int64(s.Sndbuf))
	e.bool(s.Memcg)
	e.u(s.MemcgID)
	e.s(s.MemcgPath)
	e.u(s.CgroupID)
	e.bool(s.Orphan)
	e.i(timeNanos(s.ClosedAt))
	o := &ev.Owner
	e.u(uint64(o.PID))
	e.s(o.Comm)
	e.u(o.CgroupID)
	e.s(o.CgroupPath)
	e.s(o.Container.Runtime)
	e.s(o.Container.ID)
	e.s(o.Container.Pod)
	e.u(uint64(ev.CurrentPID))
	e.u(uint64(ev.Bytes))
	e.u(uint64(ev.Truesize))
	e.i(ev.Mem.Allocated)
	for _, l := range ev.Mem.Limits {
		e.i(l)
	}
	e.u(ev.PressureID)
	e.u(uint64(len(ev.Holders)))
	for _, h := range ev.Holders {
		e.u(uint64(h.PID))
		e.s(h.Comm)
		e.u(uint64(h.Sockets))
		e.u(h.RecvBytes)
		e.u(h.SendBytes)
		e.s(h.CgroupPath) // version 2 on
		var c stream.Container
		if h.Container != nil {
			c = *h.Container
		}
		e.container(c)
		e.u(uint64(h.StalledSockets)) // version 3 on
		e.u(h.StalledBytes)
		e.u(h.StalledMs)
	}
	e.s(o.Container.Name) // version 2 on
	e.s(o.Container.PodName)
	e.s(o.Container.Namespace)
	e.s(ev.Location) // version 4 on
}

// container writes a holder's container whole (version 2 on).
func (e *encoder) container(c stream.Container) {
	for _, v := range []string{c.Runtime, c.ID, c.Pod, c.Name, c.PodName, c.Namespace} {
		e.s(v)
	}
}

// decoder reads an event; the first error sticks and zeroes what follows.
type decoder struct {
	b       []byte
	err     error
	strings map[uint64]string
	version byte // the file's format version
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = errors.New(what)
	}
}

func (d *decoder) u() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad unsigned field")
		d.b = nil
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) i() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("bad signed field")
		d.b = nil
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) s() string {
	id := d.u()
	if d.err != nil {
		return ""
	}
	v, ok := d.strings[id]
	if !ok {
		d.fail(fmt.Sprintf("string %d used before it is defined", id))
	}
	return v
}

func (d *decoder) bool() bool {
	if len(d.b) == 0 {
		d.fail("short event")
		return false
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v != 0
}

func (d *decoder) addr() netip.AddrPort {
	if len(d.b) == 0 {
		d.fail("short event")
		return netip.AddrPort{}
	}
	n := int(d.b[0])
	d.b = d.b[1:]
	if n == 0 {
		return netip.AddrPort{}
	}
	if (n != 4 && n != 16) || len(d.b) < n {
		d.fail("bad address")
		d.b = nil
		return netip.AddrPort{}
	}
	ip, _ := netip.AddrFromSlice(d.b[:n])
	d.b = d.b[n:]
	return netip.AddrPortFrom(ip, uint16(d.u()))
}

func (d *decoder) container() stream.Container {
	return stream.Container{Runtime: d.s(), ID: d.s(), Pod: d.s(), Name: d.s(), PodName: d.s(), Namespace: d.s()}
}

func nanosTime(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

func (d *decoder) event(ev *stream.Event) error {
	*ev = stream.Event{}
	ev.Time = nanosTime(d.i())
	ev.Kind = stream.Kind(d.u())
	ev.Cause, ev.Reason, ev.DropCause = d.s(), d.s(), d.s()
	ev.Send = d.bool()
	s := &ev.Socket
	s.Cookie = d.u()
	s.NetNS = uint32(d.u())
	s.Family = uint16(d.u())
	s.Protocol = uint8(d.u())
	s.State = stream.State(d.u())
	s.Src, s.Dst = d.addr(), d.addr()
	s.RmemAlloc, s.Rcvbuf, s.WmemQueued, s.Sndbuf = int32(d.i()), int32(d.i()), int32(d.i()), int32(d.i())
	s.Memcg = d.bool()
	s.MemcgID = d.u()
	s.MemcgPath = d.s()
	s.CgroupID = d.u()
	s.Orphan = d.bool()
	s.ClosedAt = nanosTime(d.i())
	o := &ev.Owner
	o.PID = uint32(d.u())
	o.Comm = d.s()
	o.CgroupID = d.u()
	o.CgroupPath = d.s()
	o.Container.Runtime, o.Container.ID, o.Container.Pod = d.s(), d.s(), d.s()
	ev.CurrentPID = uint32(d.u())
	ev.Bytes = uint32(d.u())
	ev.Truesize = uint32(d.u())
	ev.Mem.Allocated = d.i()
	for i := range ev.Mem.Limits {
		ev.Mem.Limits[i] = d.i()
	}
	ev.PressureID = d.u()
	n := d.u()
	if n > 1024 {
		d.fail("too many holders")
	}
	for k := uint64(0); k < n && d.err == nil; k++ {
		var h stream.Holder
		h.PID = int(d.u())
		h.Comm = d.s()
		h.Sockets = int(d.u())
		h.RecvBytes, h.SendBytes = d.u(), d.u()
		if d.version >= namesSince {
			h.CgroupPath = d.s()
			if c := d.container(); c != (stream.Container{}) {
				h.Container = &c
			}
		}
		if d.version >= stalledSince {
			h.StalledSockets, h.StalledBytes, h.StalledMs = int(d.u()), d.u(), d.u()
		}
		ev.Holders = append(ev.Holders, h)
	}
	if d.version >= namesSince {
		o.Container.Name, o.Container.PodName, o.Container.Namespace = d.s(), d.s(), d.s()
	}
	if d.version >= locationSince {
		ev.Location = d.s()
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("trailing bytes")
	}
	return d.err
}

// snapshotRecord is a snapshot as a file holds it: the stream's Snapshot,
// and Rotated when the file ends there because the trace goes on in the
// next part. A reader that does not know the field replays it as one more
// snapshot, with the same counts.
type snapshotRecord struct {
	stream.Snapshot
	Rotated bool `json:"Rotated,omitempty"`
}

// rotatedSnapshot is the last snapshot again, marked as the end of a part.
func rotatedSnapshot(last []byte) []byte {
	var s snapshotRecord
	if err := json.Unmarshal(last, &s); err != nil {
		return last
	}
	s.Rotated = true
	b, err := json.Marshal(s)
	if err != nil {
		return last
	}
	return b
}
