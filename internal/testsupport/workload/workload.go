// Package workload reproduces TCP memory failures for the privileged tests:
// a coordinator in a network namespace of its own runs a reader that never
// reads and a writer that fills its sockets, as two processes named
// tmt-reader and tmt-writer, and reports that namespace's MIB counters.
// Stall is the slow consumer: a reader that stopped reading beside one
// that reads slowly.
//
// A test binary opts in by calling RunRoleIfChild first in TestMain.
package workload

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpmemtrace/tcpmemtrace/internal/procfs"
)

// Scenario kinds.
const (
	// OOM fills the sockets under a lowered tcp_mem, then closes the writer
	// with data queued: "TCP: out of memory -- consider tuning tcp_mem".
	// With tcp_mem 1000 2000 3000 and 300 connections every close aborts:
	// the reader's forced charges (one skb per empty receive queue) alone
	// keep allocated above the hard limit.
	OOM = "oom"
	// Orphans fills the sockets to a zero window and closes them with
	// tcp_max_orphans at 0: "TCP: too many orphaned sockets" for each. A
	// seed connection closed first stays an orphan in FIN_WAIT2 (whose timer
	// never checks for orphans) so the kernel's cached orphan count is
	// non-zero whatever the timing; the first filled socket, closed with the
	// seed, dies later on its probe timer (the timer path), the others in
	// close(). Small buffers keep a small machine far from tcp_mem.
	Orphans = "orphans"
	// Rcvbuf fills the connections, and while the writer is still writing
	// the reader shrinks SO_RCVBUF to its minimum: the next segments find
	// the socket's own buffer full (TCPRcvQDrop and RcvPruned per socket).
	Rcvbuf = "rcvbuf"
)

// Scenario is one reproduction.
type Scenario struct {
	Kind     string
	Conns    int
	WriteFor time.Duration // OOM: how long the writer keeps writing
	// PreConnect opens the connections in Start, before any tracer runs;
	// otherwise Run opens them.
	PreConnect bool
	// ReaderCgroup is a cgroup v2 directory the reader moves into before
	// it opens a socket; ReaderMemcg a cgroup v1 memory-controller one.
	ReaderCgroup string
	ReaderMemcg  string
	// WriterSndbuf caps the writer's SO_SNDBUF (bytes; 0 leaves the default)
	// to keep the machine's TCP memory far from tcp_mem.
	WriterSndbuf int
	// Handover makes the reader hand its accepted sockets to a handler
	// process named tmt-handler, which holds them and never reads, and
	// close its own copies, as a forking server does: HandoverFork passes
	// them as inherited fds, HandoverSCM over a unix socket (SCM_RIGHTS).
	Handover string
}

// Hand-over kinds.
const (
	HandoverFork = "fork"
	HandoverSCM  = "scm"
)

const (
	roleEnv = "TCPMEMTRACE_WORKLOAD_ROLE"
	argsEnv = "TCPMEMTRACE_WORKLOAD_ARGS"
)

// Result is what the coordinator measured inside its namespace.
type Result struct {
	Before    procfs.Counters `json:"before"`
	After     procfs.Counters `json:"after"`
	ReaderPID int             `json:"reader_pid"`
	// HandlerPID holds the reader's sockets after a hand-over.
	HandlerPID int `json:"handler_pid,omitempty"`
	WriterPID  int `json:"writer_pid"`
}

// Delta is a TcpExt counter's change over the run.
func (r Result) Delta(name string) uint64 {
	return r.After.Get("TcpExt", name) - r.Before.Get("TcpExt", name)
}

// RunRoleIfChild runs the role this process was started for, if any, and exits.
func RunRoleIfChild() {
	role := os.Getenv(roleEnv)
	if role == "" {
		return
	}
	if isStallRole(role) {
		runStallRole(role)
	}
	var s Scenario
	if err := json.Unmarshal([]byte(os.Getenv(argsEnv)), &s); err != nil {
		fail(err)
	}
	var err error
	switch role {
	case "coord":
		err = coordinate(s)
	case "reader":
		err = read(s)
	case "writer":
		err = write(s)
	case "handler":
		err = handle(s)
	default:
		err = fmt.Errorf("unknown role %q", role)
	}
	if err != nil {
		fail(fmt.Errorf("%s: %w", role, err))
	}
	os.Exit(0)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "workload:", err)
	os.Exit(1)
}

// Env is a coordinator waiting in its own network namespace, with its
// reader listening and its writer ready.
type Env struct {
	ReaderPID int
	WriterPID int
	coordinator
}

// coordinator is a reproduction's coordinating process, in a network
// namespace of its own, spoken to a line at a time.
type coordinator struct {
	NetNS uint32 // inode of the namespace
	cmd   *exec.Cmd
	in    io.WriteCloser
	out   *bufio.Reader
}

// startCoordinator runs role in a new network namespace and waits for its
// "ready PID PID" line, whose PIDs go to first and second.
func startCoordinator(role, name string, args any, first, second *int) (*coordinator, error) {
	cmd, err := child(role, name, args)
	if err != nil {
		return nil, err
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	c := &coordinator{cmd: cmd}
	if c.in, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	c.out = bufio.NewReader(stdout)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the coordinator in a new network namespace: %w", err)
	}
	line, err := c.out.ReadString('\n')
	if _, serr := fmt.Sscanf(line, "ready %d %d", first, second); err != nil || serr != nil {
		c.Close()
		return nil, fmt.Errorf("coordinator: want \"ready PID PID\", got %q (%v)", line, err)
	}
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid), &st); err != nil {
		c.Close()
		return nil, err
	}
	c.NetNS = uint32(st.Ino)
	return c, nil
}

// Close ends the coordinator and what it started.
func (c *coordinator) Close() {
	c.in.Close()
	if c.cmd.ProcessState == nil {
		c.cmd.Process.Kill()
		c.cmd.Wait()
	}
}

// Start creates the namespace and its coordinator; traffic starts with Run.
func Start(s Scenario) (*Env, error) {
	e := &Env{}
	c, err := startCoordinator("coord", "", s, &e.ReaderPID, &e.WriterPID)
	if err != nil {
		return nil, err
	}
	e.coordinator = *c
	return e, nil
}

// Run starts the traffic and waits for the result.
func (e *Env) Run() (Result, error) {
	var r Result
	if _, err := io.WriteString(e.in, "go\n"); err != nil {
		return r, err
	}
	line, err := e.out.ReadString('\n')
	if err != nil {
		return r, fmt.Errorf("coordinator: %w", err)
	}
	if err := json.Unmarshal([]byte(line), &r); err != nil {
		return r, fmt.Errorf("coordinator result %q: %w", line, err)
	}
	return r, e.cmd.Wait()
}

// child prepares this binary to run a role with its arguments (a Scenario,
// a Stall), exec'd through a symlink named name so that every thread of
// the process has that comm.
func child(role, name string, s any) (*exec.Cmd, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	if name != "" {
		dir, err := os.MkdirTemp("", "tmt-bin")
		if err != nil {
			return nil, err
		}
		link := filepath.Join(dir, name)
		if err := os.Symlink(exe, link); err != nil {
			return nil, err
		}
		exe = link
	}
	args, _ := json.Marshal(s)
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), roleEnv+"="+role, argsEnv+"="+string(args))
	return cmd, nil
}

func expect(r *bufio.Reader, want string) error {
	line, err := r.ReadString('\n')
	if err != nil {
		return fmt.Errorf("waiting for %q: %w", want, err)
	}
	if got := strings.TrimSpace(line); !strings.HasPrefix(got, want) {
		return fmt.Errorf("want %q, got %q", want, got)
	}
	return nil
}

// peer is a reader or writer child driven line by line.
type peer struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

func startPeer(role string, s any, extraEnv ...string) (*peer, error) {
	cmd, err := child(role, "tmt-"+role, s)
	if err != nil {
		return nil, err
	}
	cmd.Env = append(cmd.Env, extraEnv...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p := &peer{cmd: cmd}
	if p.in, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	p.out = bufio.NewReader(out)
	cmd.Stderr = os.Stderr
	err = cmd.Start()
	os.RemoveAll(filepath.Dir(cmd.Path)) // the symlink has been exec'd
	return p, err
}

func (p *peer) say(s string) error { _, err := io.WriteString(p.in, s+"\n"); return err }

func (p *peer) finish() error {
	p.in.Close()
	return p.cmd.Wait()
}

// coordinate runs in the new namespace.
func coordinate(s Scenario) error {
	if err := LoopbackUp(); err != nil {
		return err
	}
	reader, err := startPeer("reader", s)
	if err != nil {
		return err
	}
	defer reader.cmd.Process.Kill()
	line, err := reader.out.ReadString('\n')
	if err != nil {
		return fmt.Errorf("reader: %w", err)
	}
	port := strings.TrimSpace(strings.TrimPrefix(line, "port "))
	writer, err := startPeer("writer", s, "TMT_PORT="+port)
	if err != nil {
		return err
	}
	defer writer.cmd.Process.Kill()
	var handler int
	connect := func() error {
		if err := writer.say("connect"); err != nil {
			return err
		}
		if err := expect(writer.out, "connected"); err != nil {
			return err
		}
		return expectHandler(reader.out, &handler)
	}
	if s.PreConnect {
		if err := connect(); err != nil {
			return err
		}
	}
	in := bufio.NewReader(os.Stdin)
	fmt.Printf("ready %d %d\n", reader.cmd.Process.Pid, writer.cmd.Process.Pid)
	if err := expect(in, "go"); err != nil {
		return err
	}
	before, err := procfs.MIB("self")
	if err != nil {
		return err
	}
	if !s.PreConnect {
		if err := connect(); err != nil {
			return err
		}
	}
	if err := writer.say("fill"); err != nil {
		return err
	}
	if err := expect(writer.out, "filled"); err != nil {
		return err
	}
	if s.Kind == Rcvbuf { // shrink with the windows still open, then send into them
		if err := reader.say("shrink"); err != nil {
			return err
		}
		if err := expect(reader.out, "shrunk"); err != nil {
			return err
		}
		if err := writer.say("more"); err != nil {
			return err
		}
		if err := expect(writer.out, "wrote"); err != nil {
			return err
		}
	}
	if err := writer.say("close"); err != nil {
		return err
	}
	if err := expect(writer.out, "closed"); err != nil {
		return err
	}

	// Aborts on the close path are done; the orphan scenario's first socket
	// is aborted by its probe timer: wait until the namespace has them all.
	wait := time.Now().Add(10 * time.Second)
	var after procfs.Counters
	for s.Kind == Orphans {
		if after, err = procfs.MIB("self"); err != nil {
			return err
		}
		got := after.Get("TcpExt", "TCPAbortOnMemory") - before.Get("TcpExt", "TCPAbortOnMemory")
		if got >= uint64(s.Conns) || time.Now().After(wait) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Retransmissions go on dropping until the reader's sockets are gone:
	// the final reading waits for both peers to exit, so the tracer (which
	// runs on) and the counters cover the same drops.
	if err := writer.finish(); err != nil {
		return fmt.Errorf("writer: %w", err)
	}
	if err := reader.finish(); err != nil {
		return fmt.Errorf("reader: %w", err)
	}
	time.Sleep(100 * time.Millisecond)
	if after, err = procfs.MIB("self"); err != nil {
		return err
	}
	res := Result{Before: before, After: after, ReaderPID: reader.cmd.Process.Pid, WriterPID: writer.cmd.Process.Pid, HandlerPID: handler}
	// The kernel leaves pressure only when some socket next charges memory
	// below tcp_mem[0]; on a quiet machine that can be much later. (Not
	// with tcp_max_orphans at 0: the nudge's own close would be an abort.)
	if s.Kind != Orphans {
		if err := nudge(); err != nil {
			return err
		}
	}
	b, _ := json.Marshal(res)
	fmt.Println(string(b))
	return nil
}

// nudge makes one small loopback connection: a charge and an uncharge of
// TCP memory in this namespace.
func nudge() error {
	ln, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(ln)
	if err := unix.Bind(ln, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		return err
	}
	if err := unix.Listen(ln, 1); err != nil {
		return err
	}
	sa, err := unix.Getsockname(ln)
	if err != nil {
		return err
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.Connect(fd, sa); err != nil {
		return fmt.Errorf("nudge: %w", err)
	}
	_, err = unix.Write(fd, []byte{0})
	return err
}

// orphanBuf is SO_SNDBUF/SO_RCVBUF in the orphan scenario (the kernel doubles it).
const orphanBuf = 32 << 10

// seeds is the number of extra connections a scenario opens.
func seeds(s Scenario) int {
	if s.Kind == Orphans {
		return 1
	}
	return 0
}

// LoopbackUp brings up lo in the caller's (thread's) network namespace.
func LoopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

// read accepts every connection and never reads from it.
func read(s Scenario) error {
	for _, cg := range []string{s.ReaderCgroup, s.ReaderMemcg} {
		if cg == "" {
			continue
		}
		if err := os.WriteFile(filepath.Join(cg, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())+"\n"), 0); err != nil {
			return fmt.Errorf("joining cgroup %s: %w", cg, err)
		}
	}
	ln, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	if err := unix.Bind(ln, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		return err
	}
	if s.Kind == Orphans {
		if err := unix.SetsockoptInt(ln, unix.SOL_SOCKET, unix.SO_RCVBUF, orphanBuf); err != nil {
			return err
		}
	}
	if err := listenAndAnnounce(ln, s.Conns+16); err != nil {
		return err
	}
	fds := make([]int, 0, s.Conns+1)
	for len(fds) < s.Conns+seeds(s) {
		fd, _, err := unix.Accept4(ln, unix.SOCK_CLOEXEC)
		if err != nil {
			return err
		}
		fds = append(fds, fd)
	}
	handler := 0
	if s.Handover != "" {
		if handler, err = handOver(s, fds); err != nil {
			return fmt.Errorf("handing over: %w", err)
		}
		fds = nil // the handler's now
	}
	fmt.Println("accepted", handler)
	in := bufio.NewReader(os.Stdin)
	for { // hold the sockets until stdin closes
		line, err := in.ReadString('\n')
		if err != nil {
			return nil
		}
		if strings.TrimSpace(line) == "shrink" {
			for _, fd := range fds { // the kernel raises 1 to its minimum (2304)
				if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 1); err != nil {
					return err
				}
			}
			fmt.Println("shrunk")
		}
	}
}

// expectHandler reads the reader's "accepted PID" (0: no handler).
func expectHandler(r *bufio.Reader, handler *int) error {
	line, err := r.ReadString('\n')
	if err != nil {
		return fmt.Errorf("waiting for \"accepted\": %w", err)
	}
	if _, err := fmt.Sscanf(line, "accepted %d", handler); err != nil {
		return fmt.Errorf("want \"accepted PID\", got %q", line)
	}
	return nil
}

// handOver starts tmt-handler with the sockets, waits until it holds them,
// then closes the reader's copies. The handler lives as long as the reader
// (its stdin is the reader's pipe).
func handOver(s Scenario, fds []int) (int, error) {
	cmd, err := child("handler", "tmt-handler", s)
	if err != nil {
		return 0, err
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return 0, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	var pair [2]int
	files := make([]*os.File, len(fds)) // closed through these, once, when handed over
	for i, fd := range fds {
		files[i] = os.NewFile(uintptr(fd), "conn")
	}
	switch s.Handover {
	case HandoverFork: // inherited, as a forked child's
		cmd.ExtraFiles = files
	case HandoverSCM:
		if pair, err = unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0); err != nil {
			return 0, err
		}
		cmd.ExtraFiles = []*os.File{os.NewFile(uintptr(pair[1]), "scm")}
	default:
		return 0, fmt.Errorf("unknown hand-over %q", s.Handover)
	}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	os.RemoveAll(filepath.Dir(cmd.Path))
	if s.Handover == HandoverSCM {
		unix.Close(pair[1])
		for i := 0; i < len(fds); i += 32 { // at most SCM_MAX_FD (253) a message
			if err := unix.Sendmsg(pair[0], []byte{0}, unix.UnixRights(fds[i:min(i+32, len(fds))]...), nil, 0); err != nil {
				return 0, fmt.Errorf("sending fds: %w", err)
			}
		}
		unix.Close(pair[0])
	}
	if err := expect(bufio.NewReader(out), "holding"); err != nil {
		return 0, err
	}
	for _, f := range files {
		f.Close()
	}
	// A tracer settles a hand-over from the open files some milliseconds
	// after the close (drops in between are the sender's, by design): the
	// data comes after that, so that the test is about the holder.
	time.Sleep(500 * time.Millisecond)
	handlerStdin = in // the handler ends when the reader does, and this pipe with it
	return cmd.Process.Pid, nil
}

var handlerStdin io.WriteCloser

// handle holds the sockets handed over and never reads them.
func handle(s Scenario) error {
	n := s.Conns + seeds(s)
	held := 0
	switch s.Handover {
	case HandoverFork:
		held = n // fds 3...: inherited
	case HandoverSCM:
		buf, oob := make([]byte, 1), make([]byte, unix.CmsgSpace(32*4))
		for held < n {
			_, oobn, _, _, err := unix.Recvmsg(3, buf, oob, 0)
			if err != nil {
				return err
			}
			msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
			if err != nil {
				return err
			}
			for _, m := range msgs {
				fds, err := unix.ParseUnixRights(&m)
				if err != nil {
					return err
				}
				held += len(fds)
			}
		}
	}
	fmt.Println("holding", held)
	io.Copy(io.Discard, os.Stdin)
	return nil
}

// write connects, fills and closes, each step on request.
func write(s Scenario) error {
	port, err := strconv.Atoi(os.Getenv("TMT_PORT"))
	if err != nil {
		return err
	}
	in := bufio.NewReader(os.Stdin)
	if err := expect(in, "connect"); err != nil {
		return err
	}
	fds := make([]int, 0, s.Conns+1)
	for range s.Conns + seeds(s) {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		sndbuf := s.WriterSndbuf
		if s.Kind == Orphans {
			sndbuf = orphanBuf
		}
		if sndbuf > 0 {
			if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, sndbuf); err != nil {
				return err
			}
		}
		if err := unix.Connect(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: port}); err != nil {
			return err
		}
		if err := unix.SetNonblock(fd, true); err != nil {
			return err
		}
		fds = append(fds, fd)
	}
	fmt.Println("connected")
	var seed int
	if s.Kind == Orphans {
		// FIN_WAIT2 orphans live TCP_LINGER2 - 60s on the keepalive timer.
		seed, fds = fds[0], fds[1:]
		if err := unix.SetsockoptInt(seed, unix.IPPROTO_TCP, unix.TCP_LINGER2, 120); err != nil {
			return err
		}
	}
	if err := expect(in, "fill"); err != nil {
		return err
	}
	chunk := make([]byte, 64<<10)
	writeFor := func(d time.Duration) error {
		for end := time.Now().Add(d); time.Now().Before(end); {
			for _, fd := range fds {
				if _, err := unix.Write(fd, chunk); err != nil && !errors.Is(err, unix.EAGAIN) {
					return err
				}
			}
		}
		return nil
	}
	switch s.Kind {
	case OOM:
		if err := writeFor(s.WriteFor); err != nil {
			return err
		}
	case Rcvbuf:
		// A little, well inside the windows the reader advertises.
		for _, fd := range fds {
			if _, err := unix.Write(fd, chunk[:8<<10]); err != nil {
				return err
			}
		}
		fmt.Println("filled")
		if err := expect(in, "more"); err != nil {
			return err
		}
		if err := writeFor(s.WriteFor); err != nil {
			return err
		}
		fmt.Println("wrote")
	case Orphans:
		// Until the peer's window is shut and the send queue is full.
		for _, fd := range fds {
			for again := 0; again < 3; {
				if _, err := unix.Write(fd, chunk); err != nil {
					if !errors.Is(err, unix.EAGAIN) {
						return err
					}
					again++
					time.Sleep(5 * time.Millisecond)
				}
			}
		}
	default:
		return fmt.Errorf("unknown scenario %q", s.Kind)
	}
	if s.Kind != Rcvbuf {
		fmt.Println("filled")
	}
	if err := expect(in, "close"); err != nil {
		return err
	}
	if s.Kind == Orphans {
		// The orphan count the check reads is refreshed every 100ms: two
		// orphans first, then every later close finds too many.
		unix.Close(seed)
		unix.Close(fds[0])
		time.Sleep(300 * time.Millisecond)
		fds = fds[1:]
	}
	for _, fd := range fds {
		unix.Close(fd)
	}
	fmt.Println("closed")
	io.Copy(io.Discard, in)
	return nil
}

// listenAndAnnounce starts listening on a bound loopback socket and tells
// the coordinator its port ("port N" on standard output).
func listenAndAnnounce(ln, backlog int) error {
	if err := unix.Listen(ln, backlog); err != nil {
		return err
	}
	sa, err := unix.Getsockname(ln)
	if err != nil {
		return err
	}
	fmt.Printf("port %d\n", sa.(*unix.SockaddrInet4).Port)
	return nil
}
