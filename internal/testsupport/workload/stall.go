package workload

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Stall is the slow-consumer reproduction. In a network namespace of its
// own, tmt-stalled accepts Conns connections, receives Fill bytes on each
// and never reads them; tmt-slow accepts as many and keeps reading
// ReadChunk bytes from each every ReadEvery; the coordinator, tmt-writer,
// keeps writing to both. Once its data is in, tmt-stalled shrinks its
// buffers and tmt-writer sends more: those segments, and their
// retransmissions, are dropped on the stalled sockets (PROTO_MEM, cause
// rcvbuf), so the tracer has events on them. No global sysctl is changed.
type Stall struct {
	Conns     int
	Fill      int           // bytes; 256 KiB if 0
	ReadChunk int           // bytes; 4 KiB if 0
	ReadEvery time.Duration // 50 ms if 0
}

// StallEnv is a running Stall.
type StallEnv struct {
	StalledPID int // tmt-stalled
	SlowPID    int // tmt-slow
	WriterPID  int // tmt-writer, the coordinator
	// Since is when the last data the stalled sockets hold arrived: their
	// stall ages count from there.
	Since time.Time
	coordinator
}

// Roles of the reproduction (RunRoleIfChild runs them); the readers' comms
// are tmt-ROLE.
const (
	roleStallCoord   = "stall-coord"
	roleStallStalled = "stalled"
	roleStallSlow    = "slow"
)

// isStallRole says whether role is one of the reproduction's.
func isStallRole(role string) bool {
	return role == roleStallCoord || role == roleStallStalled || role == roleStallSlow
}

func (s Stall) withDefaults() Stall {
	if s.Fill == 0 {
		s.Fill = 256 << 10
	}
	if s.ReadChunk == 0 {
		s.ReadChunk = 4 << 10
	}
	if s.ReadEvery == 0 {
		s.ReadEvery = 50 * time.Millisecond
	}
	return s
}

// StartStall creates the namespace, its coordinator and both readers,
// listening; the connections open with Run.
func StartStall(s Stall) (*StallEnv, error) {
	e := &StallEnv{}
	c, err := startCoordinator(roleStallCoord, "tmt-writer", s.withDefaults(), &e.StalledPID, &e.SlowPID)
	if err != nil {
		return nil, err
	}
	e.coordinator = *c
	e.WriterPID = c.cmd.Process.Pid
	return e, nil
}

// Run opens the connections and fills the stalled ones; it returns once
// they hold their data and the drops have begun. The slow reader reads,
// and the writer writes, until Close.
func (e *StallEnv) Run() error {
	if _, err := io.WriteString(e.in, "go\n"); err != nil {
		return err
	}
	line, err := e.out.ReadString('\n')
	if err != nil {
		return fmt.Errorf("coordinator: %w", err)
	}
	var ns int64
	if _, err := fmt.Sscanf(line, "stalled %d", &ns); err != nil {
		return fmt.Errorf("coordinator: want \"stalled NANOS\", got %q", line)
	}
	e.Since = time.Unix(0, ns)
	return nil
}

// runStallRole runs one of the reproduction's processes and exits.
func runStallRole(role string) {
	var s Stall
	if err := json.Unmarshal([]byte(os.Getenv(argsEnv)), &s); err != nil {
		fail(err)
	}
	var err error
	switch role {
	case roleStallCoord:
		err = stallCoordinate(s)
	case roleStallStalled:
		err = stallRead(s, false)
	case roleStallSlow:
		err = stallRead(s, true)
	default:
		err = fmt.Errorf("unknown role %q", role)
	}
	if err != nil {
		fail(fmt.Errorf("%s: %w", role, err))
	}
	os.Exit(0)
}

// writerSndbuf keeps the writer's send queues small: the memory that
// matters is the readers'.
const writerSndbuf = 256 << 10

// stallCoordinate runs in the new namespace as tmt-writer.
func stallCoordinate(s Stall) error {
	if err := LoopbackUp(); err != nil {
		return err
	}
	var readers [2]*peer
	var ports [2]int
	for i, role := range []string{roleStallStalled, roleStallSlow} {
		p, err := startPeer(role, s)
		if err != nil {
			return err
		}
		defer p.cmd.Process.Kill()
		line, err := p.out.ReadString('\n')
		if err != nil {
			return fmt.Errorf("%s: %w", role, err)
		}
		if _, err := fmt.Sscanf(line, "port %d", &ports[i]); err != nil {
			return fmt.Errorf("%s: want \"port N\", got %q", role, line)
		}
		readers[i] = p
	}
	stalled, slow := readers[0], readers[1]
	fmt.Printf("ready %d %d\n", stalled.cmd.Process.Pid, slow.cmd.Process.Pid)
	in := bufio.NewReader(os.Stdin)
	if err := expect(in, "go"); err != nil {
		return err
	}

	var conns [2][]int
	for i := range readers {
		for range s.Conns {
			fd, err := dialLoopback(ports[i])
			if err != nil {
				return err
			}
			conns[i] = append(conns[i], fd)
		}
		if err := expect(readers[i].out, "accepted"); err != nil {
			return err
		}
	}
	// The stalled reader's data: written whole, then acknowledged, so it
	// sits in the reader's queue.
	chunk := make([]byte, s.Fill)
	for _, fd := range conns[0] {
		if err := writeAll(fd, chunk); err != nil {
			return err
		}
	}
	if err := waitAcked(conns[0], 10*time.Second); err != nil {
		return err
	}
	since := time.Now()
	if err := stalled.say("shrink"); err != nil {
		return err
	}
	if err := expect(stalled.out, "shrunk"); err != nil {
		return err
	}
	// Into windows the reader advertised before it shrank: dropped.
	for _, fd := range conns[0] {
		if err := unix.SetNonblock(fd, true); err != nil {
			return err
		}
		unix.Write(fd, chunk) // partial or EAGAIN: whatever the window took is dropped
	}
	// The slow reader's peer never stops.
	for _, fd := range conns[1] {
		go func(fd int) {
			buf := make([]byte, 64<<10)
			for writeAll(fd, buf) == nil {
			}
		}(fd)
	}
	fmt.Printf("stalled %d\n", since.UnixNano())
	io.Copy(io.Discard, in) // until the test closes stdin
	stalled.in.Close()
	slow.in.Close()
	return nil
}

func dialLoopback(port int) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, writerSndbuf); err != nil {
		return -1, err
	}
	if err := unix.Connect(fd, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		return -1, fmt.Errorf("connect: %w", err)
	}
	return fd, nil
}

func writeAll(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// waitAcked waits until the peers have acknowledged everything written
// (SIOCOUTQ: unacknowledged and unsent bytes).
func waitAcked(fds []int, within time.Duration) error {
	deadline := time.Now().Add(within)
	for _, fd := range fds {
		for {
			n, err := unix.IoctlGetInt(fd, unix.SIOCOUTQ)
			if err != nil {
				return err
			}
			if n == 0 {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%d bytes still unacknowledged after %v", n, within)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return nil
}

// stallBuf is the stalled reader's SO_RCVBUF while it fills (the kernel
// doubles it): room for Fill and more, so that what follows it is sent.
const stallBuf = 1 << 20

// stallRead accepts the connections; the slow reader then reads a little
// from each, again and again, the stalled one never reads, and shrinks its
// buffers when told. Both hold their sockets until stdin closes.
func stallRead(s Stall, slow bool) error {
	ln, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	if !slow { // FORCE: past net.core.rmem_max, which this must not change
		if err := unix.SetsockoptInt(ln, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, stallBuf); err != nil {
			return err
		}
	}
	if err := unix.Bind(ln, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		return err
	}
	if err := listenAndAnnounce(ln, s.Conns+16); err != nil {
		return err
	}
	var fds []int
	for len(fds) < s.Conns {
		fd, _, err := unix.Accept4(ln, unix.SOCK_CLOEXEC)
		if err != nil {
			return err
		}
		fds = append(fds, fd)
	}
	fmt.Println("accepted")
	if slow {
		for _, fd := range fds {
			go func(fd int) {
				buf := make([]byte, s.ReadChunk)
				for {
					if n, err := unix.Read(fd, buf); n <= 0 && err != unix.EINTR {
						return
					}
					time.Sleep(s.ReadEvery)
				}
			}(fd)
		}
	}
	in := bufio.NewReader(os.Stdin)
	for {
		line, err := in.ReadString('\n')
		if err != nil {
			return nil // the coordinator is done: exit, sockets and all
		}
		if strings.TrimSpace(line) == "shrink" && !slow {
			for _, fd := range fds { // the kernel raises 1 to its minimum (2304)
				if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 1); err != nil {
					return err
				}
			}
			fmt.Println("shrunk")
		}
	}
}
