// Package sockdiag lists TCP sockets with their memory and how long ago
// data last reached them, as `ss -tmi` does: an inet_diag dump over
// NETLINK_SOCK_DIAG asking for SK_MEMINFO and tcp_info, in any network
// namespace. It says which sockets wait for a reader that does not read
// (StallAge), and which processes hold the memory (Holders).
package sockdiag

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/tcpmemtrace/tcpmemtrace/internal/netns"
)

// Socket is one TCP socket and the memory charged to it.
type Socket struct {
	NetNS  uint32 // its network namespace's inode, when the caller knows it
	Family uint8
	State  uint8
	Src    netip.AddrPort
	Dst    netip.AddrPort
	Inode  uint32 // 0 for sockets no file holds (orphans, time-wait)
	UID    uint32
	RecvQ  uint32 // bytes not yet read (established) / accept backlog (listen)
	SendQ  uint32 // bytes not yet acknowledged
	Mem    MemInfo
	// Cookie is the kernel's socket cookie: the value bpf_get_socket_cookie
	// gives, so a socket joins the tracer's events on it.
	Cookie uint64
	// LastDataRecv is how long before the dump data last arrived
	// (tcp_info's last_data_recv); 0 when the kernel gave no tcp_info
	// (time-wait and request sockets).
	LastDataRecv time.Duration
}

// MemInfo is SK_MEMINFO, in bytes.
type MemInfo struct {
	RmemAlloc  uint32 `json:"rmem_alloc"` // receive queue, as charged (truesize)
	Rcvbuf     uint32 `json:"rcvbuf"`
	WmemAlloc  uint32 `json:"wmem_alloc"`
	Sndbuf     uint32 `json:"sndbuf"`
	FwdAlloc   uint32 `json:"fwd_alloc"`
	WmemQueued uint32 `json:"wmem_queued"` // send queue, as charged
	Optmem     uint32 `json:"optmem"`
	Backlog    uint32 `json:"backlog"`
	Drops      uint32 `json:"drops"`
}

// Queued is the memory a socket's queues hold: what it takes from tcp_mem.
func (m MemInfo) Queued() uint64 { return uint64(m.RmemAlloc) + uint64(m.WmemQueued) }

const (
	sizeofReq         = 56 // struct inet_diag_req_v2
	sizeofMsg         = 72 // struct inet_diag_msg
	inetDiagInfo      = 2  // INET_DIAG_INFO: struct tcp_info
	inetDiagSkmeminfo = 7  // INET_DIAG_SKMEMINFO
	allStates         = 0xfff
)

// Dump lists the TCP sockets (IPv4 and IPv6) of the caller's namespace.
func Dump() ([]Socket, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("sock_diag socket: %w", err)
	}
	defer unix.Close(fd)
	return dump(fd)
}

// DumpNetns lists the TCP sockets of the namespace at path (/proc/PID/ns/net).
// A netlink socket answers for the namespace it was created in: the thread
// enters the namespace only to create it.
func DumpNetns(path string) ([]Socket, error) {
	fd, err := socketIn(path)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	return dump(fd)
}

func socketIn(path string) (int, error) {
	fd := -1
	err := netns.Do(path, func() error {
		var err error
		fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
		return err
	})
	if err != nil {
		if fd >= 0 {
			unix.Close(fd)
		}
		return -1, fmt.Errorf("sock_diag socket in %s: %w", path, err)
	}
	return fd, nil
}

func dump(fd int) ([]Socket, error) {
	var out []Socket
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		if err := request(fd, family); err != nil {
			return nil, err
		}
		socks, err := receive(fd)
		if err != nil {
			return nil, err
		}
		out = append(out, socks...)
	}
	return out, nil
}

func request(fd int, family uint8) error {
	b := make([]byte, unix.NLMSG_HDRLEN+sizeofReq)
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], uint32(len(b)))
	ne.PutUint16(b[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(b[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	r := b[unix.NLMSG_HDRLEN:]
	// tcp_info comes in the same messages, as for `ss -i`: no second pass,
	// no syscall per socket.
	r[0], r[1], r[2] = family, unix.IPPROTO_TCP, 1<<(inetDiagSkmeminfo-1)|1<<(inetDiagInfo-1)
	ne.PutUint32(r[4:], allStates)
	return unix.Sendto(fd, b, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
}

func receive(fd int) ([]Socket, error) {
	var out []Socket
	buf := make([]byte, 64<<10)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return nil, fmt.Errorf("sock_diag: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return nil, fmt.Errorf("sock_diag: %w", err)
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return out, nil
			case unix.NLMSG_ERROR:
				if len(m.Data) >= 4 {
					if code := int32(binary.NativeEndian.Uint32(m.Data)); code != 0 {
						return nil, fmt.Errorf("sock_diag: %w", unix.Errno(-code))
					}
				}
				return out, nil
			}
			s, err := parse(m.Data)
			if err != nil {
				return nil, err
			}
			out = append(out, s)
		}
	}
}

// parse reads one inet_diag_msg and its attributes.
func parse(b []byte) (Socket, error) {
	if len(b) < sizeofMsg {
		return Socket{}, fmt.Errorf("sock_diag: short message (%d bytes)", len(b))
	}
	ne, be := binary.NativeEndian, binary.BigEndian
	s := Socket{Family: b[0], State: b[1]}
	id := b[4:52] // inet_diag_sockid: ports are big endian, addresses raw
	sport, dport := be.Uint16(id[0:]), be.Uint16(id[2:])
	if s.Family == unix.AF_INET {
		s.Src = netip.AddrPortFrom(netip.AddrFrom4([4]byte(id[4:8])), sport)
		s.Dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte(id[20:24])), dport)
	} else {
		s.Src = netip.AddrPortFrom(netip.AddrFrom16([16]byte(id[4:20])), sport)
		s.Dst = netip.AddrPortFrom(netip.AddrFrom16([16]byte(id[20:36])), dport)
	}
	// idiag_cookie: two u32 halves, low first (sock_diag_save_cookie).
	s.Cookie = uint64(ne.Uint32(id[40:])) | uint64(ne.Uint32(id[44:]))<<32
	s.RecvQ, s.SendQ = ne.Uint32(b[56:]), ne.Uint32(b[60:])
	s.UID, s.Inode = ne.Uint32(b[64:]), ne.Uint32(b[68:])
	// rtattrs follow: {u16 len, u16 type, value}, each 4-byte aligned.
	for rest := b[sizeofMsg:]; len(rest) >= 4; {
		l, typ := int(ne.Uint16(rest)), ne.Uint16(rest[2:])
		if l < 4 || l > len(rest) {
			break
		}
		switch v := rest[4:l]; {
		case typ == inetDiagSkmeminfo && len(v) >= 9*4:
			u := func(i int) uint32 { return ne.Uint32(v[4*i:]) }
			s.Mem = MemInfo{u(0), u(1), u(2), u(3), u(4), u(5), u(6), u(7), u(8)}
		case typ == inetDiagInfo:
			ti := tcpInfo(v)
			s.LastDataRecv = time.Duration(ti.Last_data_recv) * time.Millisecond
		}
		rest = rest[min((l+3)&^3, len(rest)):]
	}
	return s, nil
}

// tcpInfo reads struct tcp_info as the kernel sent it. The struct only
// grows: an older kernel sends a prefix (the fields it lacks stay zero), a
// newer one more than x/sys knows (ignored). x/sys's type has the C
// layout, so the bytes are copied in place.
func tcpInfo(v []byte) unix.TCPInfo {
	var ti unix.TCPInfo
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&ti)), unsafe.Sizeof(ti)), v)
	return ti
}
