package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/tcpmemtrace/tcpmemtrace/internal/procfs"
)

// tool is one tracer as an operator would run it.
type tool struct {
	Name string `json:"name"`
	// Does says in a few words what it does per event.
	Does string   `json:"does"`
	Argv []string `json:"argv"`
	// ready matches the line the tool prints once every hook is attached.
	ready *regexp.Regexp
	// event tells its per-event output lines; nil when it prints none.
	event func(string) bool
	// kfree tells the program on skb:kfree_skb among the tool's programs.
	kfree func(*ebpf.ProgramInfo) bool
	// jsonArgv, when set, is the run that reports exact counts at exit.
	jsonArgv []string
}

// countingArgv is the run whose exit output has the tool's exact counts.
func (t *tool) countingArgv() []string {
	if t.jsonArgv != nil {
		return t.jsonArgv
	}
	return t.Argv
}

// memReasons are the drop reasons tcpmemtrace counts (tracer.MemoryDropReasons).
var memReasons = []string{"PROTO_MEM", "SOCKET_BACKLOG", "TCP_OFO_QUEUE_PRUNE", "SOCKET_RCVBUFF"}

func btPredicate() string {
	var p []string
	for _, r := range memReasons {
		p = append(p, "args->reason == SKB_DROP_REASON_"+r)
	}
	return strings.Join(p, " || ")
}

var (
	readyLine = regexp.MustCompile("^ready$")
	clockLine = regexp.MustCompile(`^\d\d:\d\d:\d\d `)
	// tcpmemtrace's event lines, as text or as JSON.
	tmLine = regexp.MustCompile(`^(\d\d:\d\d:\d\d\.\d{3} |\{"type":"(abort|drop|refusal|pressure_enter|pressure_leave)")`)
)

func isTracepoint(i *ebpf.ProgramInfo) bool { return i.Type == ebpf.TracePoint }

func tools(tcpmemtrace, tcpdropBT string) []tool {
	return []tool{
		{
			Name: "tcpmemtrace",
			Does: "exact per-CPU and per-owner counts in the kernel; a sampled record per event (socket, owner, memory state) to a ringbuf; text line per record",
			Argv: []string{tcpmemtrace}, ready: regexp.MustCompile(`Tracing TCP memory events|^\{"type":"start"`),
			event:    tmLine.MatchString,
			kfree:    func(i *ebpf.ProgramInfo) bool { return strings.HasPrefix(i.Name, "tp_kfree_skb") },
			jsonArgv: []string{tcpmemtrace, "--json"},
		},
		{
			Name: "bpftrace count",
			Does: "count() per memory drop reason in a per-CPU map, printed at exit",
			Argv: []string{"bpftrace", "-e", `BEGIN { printf("ready\n"); } tracepoint:skb:kfree_skb /` + btPredicate() +
				`/ { @drops[(uint64)args->reason] = count(); }`},
			ready: readyLine, kfree: isTracepoint,
		},
		{
			Name: "bpftrace print",
			Does: "printf() per memory drop (pid, comm, reason) through a perf buffer",
			Argv: []string{"bpftrace", "-e", `BEGIN { printf("ready\n"); } tracepoint:skb:kfree_skb /` + btPredicate() +
				`/ { printf("drop %d %s %d\n", pid, comm, args->reason); }`},
			ready: readyLine, kfree: isTracepoint,
			event: func(l string) bool { return strings.HasPrefix(l, "drop ") },
		},
		{
			Name: "tcpdrop.bt",
			Does: "bpftrace's tool: any reason, socket from skb->sk; printf + kernel stack per drop",
			Argv: []string{"bpftrace", tcpdropBT}, ready: regexp.MustCompile("^Tracing tcp drops"), kfree: isTracepoint,
			event: clockLine.MatchString,
		},
	}
}

var lostLine = regexp.MustCompile(`Lost (\d+) events`)

// running is a started tool.
type running struct {
	t       *tool
	cmd     *exec.Cmd
	ReadyIn time.Duration // exec -> its "attached" line
	progs   []*prog
	link    link.Link // the empty program's, in this process

	mu     sync.Mutex
	events uint64   // per-event lines
	lost   uint64   // events the tool says it lost
	other  []string // every other line
	ready  chan struct{}
	outs   sync.WaitGroup
}

type prog struct {
	name  string
	kfree bool
	p     *ebpf.Program
}

// start runs argv and waits until the tool says it is attached.
func start(t *tool, argv []string) (*running, error) {
	before, err := programIDs()
	if err != nil {
		return nil, err
	}
	r := &running{t: t, ready: make(chan struct{})}
	r.cmd = exec.Command(argv[0], argv[1:]...)
	stdout, err := r.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr, err := r.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	if err := r.cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: %w", t.Name, err)
	}
	var once sync.Once
	for _, out := range []io.Reader{stdout, stderr} {
		r.outs.Add(1)
		go func() {
			defer r.outs.Done()
			sc := bufio.NewScanner(out)
			sc.Buffer(make([]byte, 64<<10), 4<<20)
			for sc.Scan() {
				r.line(sc.Text(), func() { once.Do(func() { r.ReadyIn = time.Since(t0); close(r.ready) }) })
			}
		}()
	}
	exited := make(chan struct{})
	go func() { r.outs.Wait(); close(exited) }()
	select {
	case <-r.ready:
	case <-exited:
		r.cmd.Wait()
		return nil, fmt.Errorf("%s exited before attaching: %s", t.Name, r.tail())
	case <-time.After(60 * time.Second):
		r.stop()
		return nil, fmt.Errorf("%s: not attached after 60 s: %s", t.Name, r.tail())
	}
	after, err := programIDs()
	if err != nil {
		r.stop()
		return nil, err
	}
	for _, id := range after {
		if slices.Contains(before, id) {
			continue
		}
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue // a short-lived program (a feature probe) already gone
		}
		info, err := p.Info()
		if err != nil {
			p.Close()
			continue
		}
		r.progs = append(r.progs, &prog{name: info.Name, kfree: t.kfree(info), p: p})
	}
	return r, nil
}

func (r *running) line(l string, ready func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.t.ready.MatchString(l):
		ready()
	case r.t.event != nil && r.t.event(l):
		r.events++
	case lostLine.MatchString(l):
		n, _ := strconv.ParseUint(lostLine.FindStringSubmatch(l)[1], 10, 64)
		r.lost += n
	default:
		if len(r.other) < 100000 {
			r.other = append(r.other, l)
		}
	}
}

func (r *running) tail() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var last []string
	for _, l := range r.other[max(0, len(r.other)-5):] {
		if !strings.Contains(l, "RLIMIT_MEMLOCK") { // bpftrace's harmless warning
			last = append(last, l)
		}
	}
	return strings.Join(last, " | ")
}

func (r *running) pid() int { return r.cmd.Process.Pid }

// emptyProgram attaches a program that returns at once to kfree_skb, in
// this process: what any hook there costs before it does anything.
func emptyProgram() (*running, error) {
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "empty", Type: ebpf.Tracing, AttachType: ebpf.AttachTraceRawTp, AttachTo: "kfree_skb",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()}, License: "GPL",
	})
	if err != nil {
		return nil, err
	}
	l, err := link.AttachTracing(link.TracingOptions{Program: p})
	if err != nil {
		p.Close()
		return nil, err
	}
	return &running{t: &tool{Name: emptyName}, progs: []*prog{{name: "empty", kfree: true, p: p}}, link: l}, nil
}

const emptyName = "empty program"

// stop interrupts the tool (it prints its summary or maps) and waits.
func (r *running) stop() error {
	for _, p := range r.progs {
		p.p.Close()
	}
	if r.link != nil {
		return r.link.Close()
	}
	done := make(chan error, 1)
	go func() { r.outs.Wait(); done <- r.cmd.Wait() }()
	// SIGINT makes each tool print its summary or maps. bpftrace has been
	// seen to miss one sent right after BEGIN: ask again before killing.
	for _, sig := range []os.Signal{syscall.SIGINT, syscall.SIGINT, syscall.SIGKILL} {
		r.cmd.Process.Signal(sig)
		select {
		case err := <-done:
			var ee *exec.ExitError
			if errors.As(err, &ee) && ee.ExitCode() == 0 {
				err = nil
			}
			if sig == syscall.SIGKILL {
				err = fmt.Errorf("%s did not stop after SIGINT twice", r.t.Name)
			}
			return err
		case <-time.After(15 * time.Second):
		}
	}
	return fmt.Errorf("%s did not exit after SIGKILL", r.t.Name)
}

func (r *running) counts() (events, lost uint64, other []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.events, r.lost, slices.Clone(r.other)
}

func programIDs() ([]ebpf.ProgramID, error) {
	var ids []ebpf.ProgramID
	id := ebpf.ProgramID(0)
	for {
		next, err := ebpf.ProgramGetNextID(id)
		if errors.Is(err, os.ErrNotExist) {
			return ids, nil
		}
		if err != nil {
			return nil, fmt.Errorf("listing BPF programs: %w", err)
		}
		ids = append(ids, next)
		id = next
	}
}

// progStats is one program's counters at a moment.
type progStats struct {
	runs uint64
	ns   uint64
}

func (r *running) stats() (map[*prog]progStats, error) {
	out := map[*prog]progStats{}
	for _, p := range r.progs {
		s, err := p.p.Stats()
		if err != nil {
			return nil, err
		}
		out[p] = progStats{runs: s.RunCount, ns: uint64(s.Runtime)}
	}
	return out, nil
}

// cpuTime is the time every thread of pid has run (schedstat, ns).
func cpuTime(pid int) (time.Duration, error) {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	if err != nil || len(tasks) == 0 {
		return 0, fmt.Errorf("no threads of %d: %v", pid, err)
	}
	var sum int64
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // a thread that just exited
		}
		ns, err := strconv.ParseInt(strings.Fields(string(b))[0], 10, 64)
		if err != nil {
			return 0, err
		}
		sum += ns
	}
	return time.Duration(sum), nil
}

// peakRSS is VmHWM: the most resident memory pid has had.
func peakRSS(pid int) (RSS, error) {
	f, err := procfs.Fields(fmt.Sprintf("/proc/%d/status", pid), ":")
	if err != nil {
		return RSS{}, err
	}
	kb, ok := f["VmHWM"]
	if !ok {
		return RSS{}, errors.New("no VmHWM")
	}
	return RSS{Bytes: kb << 10, AnonBytes: f["RssAnon"] << 10, FileBytes: f["RssFile"] << 10}, nil
}
