package workload

import (
	"fmt"
	"runtime"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/tcpmemtrace/tcpmemtrace/internal/procfs"
)

// Netns is a network namespace of the caller's own, held by one locked OS
// thread: sockets made on that thread live in it, whoever uses them later.
type Netns struct {
	tid   int
	Inode uint64 // the namespace's inode number
	calls chan func()
	sinks []int // closed as the namespace's thread ends; touched only there
}

// NewNetns makes the namespace; Close ends its thread, and the namespace
// with it once the senders' sockets are closed too.
func NewNetns() (*Netns, error) {
	n := &Netns{calls: make(chan func())}
	errc := make(chan error)
	go n.serve(errc)
	return n, <-errc
}

// serve moves its thread into a new namespace and runs calls there until
// Close. Never the main thread: /proc/self/net follows it, and a goroutine
// that ends locked to it leaves it where it is.
func (n *Netns) serve(ready chan<- error) {
	runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
	if unix.Gettid() == unix.Getpid() {
		inner := make(chan error)
		go n.serve(inner) // on another thread: this one is held
		err := <-inner
		runtime.UnlockOSThread()
		ready <- err
		return
	}
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		ready <- fmt.Errorf("unshare(CLONE_NEWNET): %w", err)
		return
	}
	if err := LoopbackUp(); err != nil {
		ready <- fmt.Errorf("bringing up lo: %w", err)
		return
	}
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		ready <- err
		return
	}
	n.tid, n.Inode = unix.Gettid(), st.Ino
	ready <- nil
	for f := range n.calls {
		f()
	}
	for _, fd := range n.sinks {
		unix.Close(fd)
	}
}

func (n *Netns) do(f func()) {
	done := make(chan struct{})
	n.calls <- func() { f(); close(done) }
	<-done
}

// Close ends the namespace's thread, which closes its sinks.
func (n *Netns) Close() { close(n.calls) }

// MIB reads the namespace's SNMP and netstat counters: the oracle.
func (n *Netns) MIB() (procfs.Counters, error) {
	return procfs.MIB(fmt.Sprintf("self/task/%d", n.tid))
}

// Sink opens a UDP socket on 127.0.0.1 that is never read: with the
// smallest receive buffer every datagram after the first few is dropped
// with SOCKET_RCVBUFF (Udp RcvbufErrors). Returns its port.
func (n *Netns) Sink() (port int, err error) {
	n.do(func() {
		var fd int
		if fd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0); err != nil {
			return
		}
		n.sinks = append(n.sinks, fd)
		if err = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 0); err != nil {
			return
		}
		if err = unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
			return
		}
		var sa unix.Sockaddr
		if sa, err = unix.Getsockname(fd); err == nil {
			port = sa.(*unix.SockaddrInet4).Port
		}
	})
	return port, err
}

// mmsghdr is struct mmsghdr (amd64/arm64 layout).
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
	_   [4]byte
}

// Sender sends small UDP datagrams to one port of 127.0.0.1 in batches
// (sendmmsg): to a sink, each is a counted drop; to a closed port, an
// unrelated kfree_skb (NO_SOCKET) that every tool's hook still runs for.
type Sender struct {
	fd   int
	addr unix.RawSockaddrInet4
	buf  [64]byte
	iov  unix.Iovec
	msgs []mmsghdr
}

const batch = 256 // datagrams per sendmmsg

// Sender opens an unconnected UDP socket in the namespace for port.
func (n *Netns) Sender(port int) (*Sender, error) {
	s := &Sender{msgs: make([]mmsghdr, batch)}
	var err error
	n.do(func() { s.fd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0) })
	if err != nil {
		return nil, err
	}
	s.addr = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: [4]byte{127, 0, 0, 1}}
	s.addr.Port = uint16(port>>8) | uint16(port&0xff)<<8 // network order
	s.iov.Base = &s.buf[0]
	s.iov.SetLen(len(s.buf))
	for i := range s.msgs {
		h := &s.msgs[i].hdr
		h.Name = (*byte)(unsafe.Pointer(&s.addr))
		h.Namelen = unix.SizeofSockaddrInet4
		h.Iov = &s.iov
		h.SetIovlen(1)
	}
	return s, nil
}

// Close closes the socket.
func (s *Sender) Close() { unix.Close(s.fd) }

// send sends k datagrams (k <= batch) and returns how many left.
func (s *Sender) send(k int) uint64 {
	r, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(s.fd), uintptr(unsafe.Pointer(&s.msgs[0])), uintptr(k), 0, 0, 0)
	if errno != 0 {
		return 0
	}
	return uint64(r)
}

// Run sends for d at rate datagrams/s (0: as fast as possible) and returns
// how many were sent. Paced sends catch up every millisecond, so the
// average rate holds however long each sleep really was.
func (s *Sender) Run(rate int, d time.Duration) uint64 {
	var sent uint64
	start := time.Now()
	deadline := start.Add(d)
	for {
		now := time.Now()
		if !now.Before(deadline) {
			return sent
		}
		if rate == 0 {
			sent += s.send(batch)
			continue
		}
		want := uint64(now.Sub(start).Seconds() * float64(rate))
		for sent < want {
			sent += s.send(int(min(want-sent, batch)))
		}
		time.Sleep(time.Millisecond)
	}
}

// Count sends exactly k datagrams as fast as possible.
func (s *Sender) Count(k uint64) error {
	stuck := 0
	for sent := uint64(0); sent < k; {
		n := s.send(int(min(k-sent, batch)))
		if n == 0 {
			if stuck++; stuck > 1000 {
				return fmt.Errorf("sendmmsg: no progress after %d of %d datagrams", sent, k)
			}
			time.Sleep(time.Millisecond)
		}
		sent += n
	}
	return nil
}
