package sockdiag

import (
	"encoding/binary"
	"net"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// A message as the kernel lays it out: parse must read every field.
func TestParse(t *testing.T) {
	b := make([]byte, sizeofMsg+4+36)
	ne, be := binary.NativeEndian, binary.BigEndian
	b[0], b[1] = unix.AF_INET, 1
	be.PutUint16(b[4:], 8080)
	be.PutUint16(b[6:], 41000)
	copy(b[8:], []byte{10, 0, 0, 1})
	copy(b[24:], []byte{10, 0, 0, 2})
	ne.PutUint32(b[56:], 7)      // rqueue
	ne.PutUint32(b[60:], 9)      // wqueue
	ne.PutUint32(b[64:], 1000)   // uid
	ne.PutUint32(b[68:], 123456) // inode
	a := b[sizeofMsg:]
	ne.PutUint16(a, 40)
	ne.PutUint16(a[2:], inetDiagSkmeminfo)
	for i := 0; i < 9; i++ {
		ne.PutUint32(a[4+4*i:], uint32(100+i))
	}
	s, err := parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if s.Src.String() != "10.0.0.1:8080" || s.Dst.String() != "10.0.0.2:41000" || s.RecvQ != 7 || s.SendQ != 9 ||
		s.UID != 1000 || s.Inode != 123456 || s.State != 1 {
		t.Errorf("%+v", s)
	}
	if s.Mem != (MemInfo{100, 101, 102, 103, 104, 105, 106, 107, 108}) || s.Mem.Queued() != 100+105 {
		t.Errorf("mem %+v", s.Mem)
	}
	if _, err := parse(b[:10]); err == nil {
		t.Error("a short message parsed")
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
