package sockdiag

import (
	"encoding/binary"
	"net"
	"os"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// message lays out an inet_diag_msg as the kernel does, with SK_MEMINFO
// and, when info is not nil, INET_DIAG_INFO holding those bytes.
func message(info []byte) []byte {
	b := make([]byte, sizeofMsg+4+36)
	ne, be := binary.NativeEndian, binary.BigEndian
	b[0], b[1] = unix.AF_INET, 1
	be.PutUint16(b[4:], 8080)
	be.PutUint16(b[6:], 41000)
	copy(b[8:], []byte{10, 0, 0, 1})
	copy(b[24:], []byte{10, 0, 0, 2})
	ne.PutUint32(b[44:], 0x89abcdef) // cookie, low half
	ne.PutUint32(b[48:], 0x01234567) // cookie, high half
	ne.PutUint32(b[56:], 7)          // rqueue
	ne.PutUint32(b[60:], 9)          // wqueue
	ne.PutUint32(b[64:], 1000)       // uid
	ne.PutUint32(b[68:], 123456)     // inode
	a := b[sizeofMsg:]
	ne.PutUint16(a, 40)
	ne.PutUint16(a[2:], inetDiagSkmeminfo)
	for i := 0; i < 9; i++ {
		ne.PutUint32(a[4+4*i:], uint32(100+i))
	}
	if info != nil {
		attr := make([]byte, 4, 4+len(info)+3)
		ne.PutUint16(attr, uint16(4+len(info)))
		ne.PutUint16(attr[2:], inetDiagInfo)
		attr = append(attr, info...)
		for len(attr)%4 != 0 {
			attr = append(attr, 0)
		}
		b = append(b, attr...)
	}
	return b
}

// A message as the kernel lays it out: parse must read every field.
func TestParse(t *testing.T) {
	s, err := parse(message(nil))
	if err != nil {
		t.Fatal(err)
	}
	if s.Src.String() != "10.0.0.1:8080" || s.Dst.String() != "10.0.0.2:41000" || s.RecvQ != 7 || s.SendQ != 9 ||
		s.UID != 1000 || s.Inode != 123456 || s.State != 1 || s.Cookie != 0x0123456789abcdef || s.LastDataRecv != 0 {
		t.Errorf("%+v", s)
	}
	if s.Mem != (MemInfo{100, 101, 102, 103, 104, 105, 106, 107, 108}) || s.Mem.Queued() != 100+105 {
		t.Errorf("mem %+v", s.Mem)
	}
	if _, err := parse(message(nil)[:10]); err == nil {
		t.Error("a short message parsed")
	}
}

// tcp_info as x/sys lays it out, whole, cut to what an older kernel sends
// (up to last_data_recv and a little beyond: 6.x adds fields at the end,
// 4.x sent 104 bytes), and longer than x/sys knows.
func TestParseTCPInfo(t *testing.T) {
	full := make([]byte, unix.SizeofTCPInfo)
	off := int(unsafe.Offsetof(unix.TCPInfo{}.Last_data_recv))
	binary.NativeEndian.PutUint32(full[off:], 93421)
	for _, n := range []int{off + 4, 104, unix.SizeofTCPInfo, unix.SizeofTCPInfo + 64} {
		info := make([]byte, n)
		copy(info, full)
		s, err := parse(message(info))
		if err != nil {
			t.Fatal(err)
		}
		if s.LastDataRecv != 93421*time.Millisecond || s.Mem.RmemAlloc != 100 {
			t.Errorf("%d bytes of tcp_info: last data %v, mem %+v", n, s.LastDataRecv, s.Mem)
		}
	}
	// Too short to reach the field: zero, not garbage.
	if s, err := parse(message(full[:off])); err != nil || s.LastDataRecv != 0 {
		t.Errorf("cut before last_data_recv: %v %v", s.LastDataRecv, err)
	}
}

// Live: a listener of ours shows up with its inode (needs no privilege in
// one's own namespace).
func TestDumpOwnSocket(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Skip(err)
	}
	defer ln.Close()
	socks, err := Dump()
	if err != nil {
		t.Skipf("sock_diag unavailable: %v", err)
	}
	want := ln.Addr().(*net.TCPAddr).AddrPort()
	for _, s := range socks {
		if s.Src.Port() == want.Port() && s.State == 10 /* LISTEN */ {
			if s.Inode == 0 || s.Mem.Rcvbuf == 0 {
				t.Errorf("listener %+v: no inode or memory info", s)
			}
			if os.Geteuid() == 0 {
				ns, err := DumpNetns("/proc/self/ns/net")
				if err != nil || len(ns) < len(socks)-5 {
					t.Errorf("DumpNetns(self): %d sockets, %v", len(ns), err)
				}
			}
			return
		}
	}
	t.Errorf("listener on %v not in %d sockets", want, len(socks))
}
