// Command tcpmemtrace counts and attributes TCP socket-memory events: the
// aborts behind "TCP: out of memory -- consider tuning tcp_mem" and "TCP: too
// many orphaned sockets", pressure episodes, and the data dropped for memory.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/tcpmemtrace/tcpmemtrace/internal/aggregate"
	"github.com/tcpmemtrace/tcpmemtrace/internal/ctrnames"
	"github.com/tcpmemtrace/tcpmemtrace/internal/enrich"
	"github.com/tcpmemtrace/tcpmemtrace/internal/flight"
	"github.com/tcpmemtrace/tcpmemtrace/internal/kmsg"
	"github.com/tcpmemtrace/tcpmemtrace/internal/metrics"
	"github.com/tcpmemtrace/tcpmemtrace/internal/record"
	"github.com/tcpmemtrace/tcpmemtrace/internal/render"
	"github.com/tcpmemtrace/tcpmemtrace/internal/termsafe"
	"github.com/tcpmemtrace/tcpmemtrace/stream"
	"github.com/tcpmemtrace/tcpmemtrace/tracer"
)

type options struct {
	json       bool
	duration   time.Duration
	listProbes bool
	netns      string
	pids       []int
	comm       string
	cgroup     string
	by         string
	hooks      string
	ringbufKiB int
	recordRate int
	version    bool
	write      string
	writeMiB   int
	writeFiles int
	read       string
	quiet      bool
	metrics    string
	metricsTop int
	lines      bool
	interval   time.Duration
	realtime   bool
	criSockets []string
	hostRoot   string
	flight     flightOptions
}

// flightOptions are the flight recorder's flags.
type flightOptions struct {
	window   time.Duration
	maxMiB   int
	after    time.Duration
	holdOff  time.Duration
	dir      string
	triggers []string
	dropRate float64
}

// usageError is bad input: exit code 2.
type usageError struct{ error }

func main() {
	os.Exit(mainExit(os.Args[1:], os.Stdout, os.Stderr))
}

func mainExit(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "diagnose" {
		return diagnoseExit(args[1:], stdout, stderr)
	}
	o, fs, err := parseFlags(args)
	if errors.Is(err, pflag.ErrHelp) {
		usage(stdout, fs)
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "tcpmemtrace: %v\n", err)
		usage(stderr, fs)
		return 2
	}
	if o.version {
		fmt.Fprintln(stdout, "tcpmemtrace", version())
		return 0
	}
	// SIGHUP too: a closed terminal or an ended ssh session gets the summary
	// and a recording's last second, and the terminal back.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stdout = watchPipe(stdout, cancel)
	if err := run(ctx, o, stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "tcpmemtrace: %v\n", err)
		if errors.As(err, new(usageError)) {
			return 2
		}
		return 1
	}
	return 0
}

func parseFlags(args []string) (options, *pflag.FlagSet, error) {
	var o options
	fs := pflag.NewFlagSet("tcpmemtrace", pflag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported once, by mainExit
	fs.BoolVar(&o.json, "json", false, "write JSON Lines (schema: docs/json.md)")
	fs.DurationVarP(&o.duration, "duration", "d", 0, "stop after this long (e.g. 30s); default: until Ctrl-C")
	fs.BoolVar(&o.listProbes, "list-probes", false, "show which hook observes each event on this kernel, and exit")
	fs.StringVar(&o.netns, "netns", "", "only events of this network namespace: inode, /proc/PID/ns/net, or a name in /run/netns")
	fs.IntSliceVarP(&o.pids, "pid", "p", nil, "only sockets owned by this process (repeatable)")
	fs.StringVar(&o.comm, "comm", "", "only sockets owned by processes with this command name")
	fs.StringVar(&o.cgroup, "cgroup", "", "only sockets owned by processes in this cgroup v2 (path or id) or below it")
	fs.StringVar(&o.by, "by", render.ByPID, "group the summary by "+strings.Join(render.Groupings, ", "))
	fs.StringVar(&o.hooks, "hooks", "auto", "auto: fentry/fexit where allowed, else tracepoints; tracepoints: never fentry/fexit")
	fs.IntVar(&o.ringbufKiB, "ringbuf-kib", 4096, "event ring buffer size in KiB (a power of two)")
	fs.IntVar(&o.recordRate, "record-rate", 1000, "drop and refusal events shown or recorded per second at most, the rest only counted (0: all)")
	fs.StringVarP(&o.write, "write", "w", "", "also record the trace to this file (mode 0600; docs/recording.md)")
	fs.IntVar(&o.writeMiB, "write-max-mib", 256, "rotate the recording past this size (MiB; 0: never)")
	fs.IntVar(&o.writeFiles, "write-max-files", 5, "rotated recordings to keep (FILE.1 ... FILE.N)")
	fs.StringVarP(&o.read, "read", "r", "", "replay a recording instead of tracing (no privileges needed)")
	fs.BoolVarP(&o.quiet, "quiet", "q", false, "no terminal output (with --write or --metrics-addr)")
	fs.StringVar(&o.metrics, "metrics-addr", "", "serve Prometheus metrics on [HOST]:PORT/metrics (no host: 127.0.0.1)")
	fs.IntVar(&o.metricsTop, "metrics-top-owners", 10, "owners with their own metric series; the rest are \"other\"")
	fs.BoolVar(&o.lines, "lines", false, "a line per event even on a terminal (the full-screen view is the default there)")
	fs.DurationVar(&o.interval, "interval", time.Second, "the full-screen view's refresh interval")
	fs.BoolVar(&o.realtime, "realtime", false, "with -r on a terminal: play the recording at its recorded pace (default: as fast as it reads)")
	fs.StringSliceVar(&o.criSockets, "cri-socket", nil, "ask this CRI runtime socket for pod and container names (repeatable; default: containerd's, CRI-O's and cri-dockerd's where they exist)")
	fs.StringVar(&o.hostRoot, "host-root", "/", "where the host's / is mounted (a DaemonSet's hostPath): runtime sockets and files are found under it")
	fs.DurationVar(&o.flight.window, "flight-recorder", 0, "keep this much of the trace in memory (e.g. 10m) and write it to a file when an incident begins (docs/recording.md)")
	fs.IntVar(&o.flight.maxMiB, "flight-max-mib", 64, "the most memory the flight recorder's window takes (MiB); the oldest records go first")
	fs.DurationVar(&o.flight.after, "flight-after", time.Minute, "how long a flight recording goes on after its trigger")
	fs.DurationVar(&o.flight.holdOff, "flight-holdoff", 10*time.Minute, "after a flight recording ends, ignore triggers this long: one file per incident")
	fs.StringVar(&o.flight.dir, "flight-dir", ".", "where flight recordings go (tcpmem-<UTC time>-<trigger>.tmtrec)")
	fs.StringSliceVar(&o.flight.triggers, "flight-triggers", []string{stream.TriggerAbort, stream.TriggerPressure, stream.TriggerDrops},
		"what starts a flight recording: abort (memory or orphan), pressure (an episode begins), drops (over --flight-drop-rate)")
	fs.Float64Var(&o.flight.dropRate, "flight-drop-rate", 100, "memory drops per second that start a flight recording")
	fs.BoolVar(&o.version, "version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return o, fs, err
	}
	return o, fs, check(o, fs)
}

// liveOnly are the flags that shape a live trace: a replay shows what was
// recorded, so they do not go with --read.
var liveOnly = []string{"write", "write-max-mib", "write-max-files", "netns", "list-probes", "metrics-addr",
	"metrics-top-owners", "hooks", "ringbuf-kib", "record-rate", "cri-socket", "host-root",
	"flight-recorder", "flight-max-mib", "flight-after", "flight-holdoff", "flight-dir", "flight-triggers", "flight-drop-rate"}

// check says what is wrong with the flags, the first thing found.
func check(o options, fs *pflag.FlagSet) error {
	reading := fs.Changed("read")
	for _, c := range []struct {
		bad bool
		err func() error
	}{
		{fs.NArg() > 0, func() error { return fmt.Errorf("unexpected argument %q", fs.Arg(0)) }},
		{reading && o.read == "", func() error { return errors.New("--read: an empty file name") }},
		{o.hooks != "auto" && o.hooks != "tracepoints", func() error { return fmt.Errorf("--hooks: %q is not auto or tracepoints", o.hooks) }},
		{!slices.Contains(render.Groupings, o.by), func() error {
			return fmt.Errorf("--by: %q is not one of %s", o.by, strings.Join(render.Groupings, ", "))
		}},
		{o.interval < 100*time.Millisecond, func() error { return fmt.Errorf("--interval: %v is shorter than 100ms", o.interval) }},
		{o.realtime && !reading, func() error { return errors.New("--realtime is for replaying a recording (-r)") }},
		{o.duration < 0, func() error { return fmt.Errorf("--duration: %v is negative", o.duration) }},
		{o.writeMiB < 0 || o.writeFiles < 0 || o.metricsTop < 0 || o.recordRate < 0, func() error {
			return errors.New("--write-max-mib, --write-max-files, --metrics-top-owners and --record-rate cannot be negative")
		}},
		{o.quiet && o.write == "" && o.metrics == "" && o.flight.window == 0, func() error {
			return errors.New("--quiet needs --write, --metrics-addr or --flight-recorder: it would output nothing")
		}},
		{o.flight.window < 0 || o.flight.after < 0 || o.flight.holdOff < 0 || o.flight.maxMiB <= 0 || o.flight.dropRate <= 0, func() error {
			return errors.New("--flight-recorder, --flight-after and --flight-holdoff cannot be negative; --flight-max-mib and --flight-drop-rate must be positive")
		}},
		{o.ringbufKiB < 4 || o.ringbufKiB&(o.ringbufKiB-1) != 0, func() error {
			return fmt.Errorf("--ringbuf-kib: %d is not a power of two of at least 4", o.ringbufKiB)
		}},
	} {
		if c.bad {
			return c.err()
		}
	}
	if reading {
		for _, name := range liveOnly {
			if fs.Changed(name) {
				return fmt.Errorf("--%s does not go with --read: it shapes a live trace, and a recording shows what was traced", name)
			}
		}
	}
	if o.metrics != "" {
		if _, _, err := net.SplitHostPort(o.metrics); err != nil {
			return fmt.Errorf("--metrics-addr: %v", err)
		}
	}
	if o.flight.window > 0 {
		if st, err := os.Stat(o.flight.dir); err != nil || !st.IsDir() {
			return fmt.Errorf("--flight-dir: %q is not a directory", o.flight.dir)
		}
		for _, t := range o.flight.triggers {
			if t != stream.TriggerAbort && t != stream.TriggerPressure && t != stream.TriggerDrops {
				return fmt.Errorf("--flight-triggers: %q is not abort, pressure or drops", t)
			}
		}
	}
	return nil
}

func usage(w io.Writer, fs *pflag.FlagSet) {
	fmt.Fprintf(w, `Usage: sudo tcpmemtrace [flags]
       tcpmemtrace -r FILE [--json] [--by ...] [-p PID] [--comm NAME] [--cgroup PATH]
       tcpmemtrace diagnose [--json] [--top N]

Counts every TCP socket-memory event exactly and shows each with its socket
and owning process: memory aborts ("TCP: out of memory -- consider tuning
tcp_mem", "TCP: too many orphaned sockets"), pressure episodes, data dropped
for memory, and refused allocations. Ctrl-C prints a summary.

diagnose does the manual procedure read-only and without BPF: socket memory
against tcp_mem, orphans, TIME-WAIT, counters since boot, the sockets and
processes holding the memory, a verdict and the remedies that fit.

Flags:
%s`, fs.FlagUsages())
}

func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}

func run(ctx context.Context, o options, stdout, stderr io.Writer) error {
	if o.read != "" {
		return replay(ctx, o, stdout, stderr)
	}
	if err := checkPrivileges(); err != nil {
		return err
	}
	policy := tracer.HooksAuto
	if o.hooks == "tracepoints" {
		policy = tracer.HooksTracepoints
	}
	if o.listProbes {
		hooks, err := tracer.Probe(policy)
		if err != nil {
			return err
		}
		render.WriteHooks(stdout, hooks)
		return nil
	}
	cfg := tracer.Config{Hooks: policy, RingBufSize: o.ringbufKiB << 10, RecordRate: o.recordRate}
	if err := resolveFilters(o, &cfg); err != nil {
		return usageError{err}
	}
	// Before anything is loaded: a port taken or a host that is not ours
	// is bad input, and leaves nothing behind.
	var ln net.Listener
	if o.metrics != "" {
		var err error
		if ln, err = metrics.Listen(o.metrics); err != nil {
			return usageError{fmt.Errorf("--metrics-addr: %w", err)}
		}
		defer ln.Close()
	}
	unmount := ensureTracefs(stderr)
	defer unmount()
	tr, err := tracer.New(cfg)
	if err != nil {
		return err
	}
	defer tr.Close()
	oneProcessor()
	names := ctrnames.New(ctrnames.Options{CRIEndpoints: o.criSockets, Root: o.hostRoot})
	defer names.Close()
	p := pipeline{src: enrich.Wrap(tr, enrich.Options{Names: names, HoldersEvery: holdersEvery(o, stdout, stderr)})}
	return trace(ctx, p, o, ln, stdout, stderr)
}

// oneProcessor runs the rest of the trace on one Go processor, unless
// GOMAXPROCS says otherwise. The load used every CPU (the kernel verifies
// programs in parallel); the trace is one stream of records, where a second
// processor buys nothing but a thread woken for each record handed from the
// ringbuf reader to the consumers: measured side by side at 10,000 drops a
// second, 0.8% of a core on one processor against 1.2-1.3% on two. Slow
// work (runtimes, disks, namespaces) waits in system calls, which give the
// processor up.
func oneProcessor() {
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
}

// metricsHoldersEvery is how often the exporter asks sock_diag who holds
// TCP memory: scrapes come every 15 to 60 s, and each poll costs a few ms
// per thousand sockets.
const metricsHoldersEvery = 10 * time.Second

// holdersEvery is how often the stage polls who holds TCP memory now:
// for the view's QUEUED column at its refresh, for the metrics' gauge, and
// never for a trace that shows neither.
func holdersEvery(o options, stdout, stderr io.Writer) time.Duration {
	switch {
	case outputOf(o, stdout, stderr).view:
		return o.interval
	case o.metrics != "":
		return metricsHoldersEvery
	}
	return 0
}

// trace runs a live source with what the flags ask for beside the output:
// metrics (served on ln), a recording, the kernel log comparison.
func trace(ctx context.Context, p pipeline, o options, ln net.Listener, stdout, stderr io.Writer) error {
	info := p.src.Info()
	if info.TCPMem[2] == 0 {
		// tcp_mem is global but only the host's network namespace shows it.
		fmt.Fprintln(stderr, "tcpmemtrace: warning: cannot read net.ipv4.tcp_mem (not in the host network namespace?): "+
			"the limits are unknown; run in the host's (Kubernetes: hostNetwork: true)")
	}
	if o.quiet { // a daemon's log says what it watches
		render.WriteHooks(stderr, info.Hooks)
	}
	var col *metrics.Collector
	if ln != nil {
		col = metrics.New(info.PageSize, o.metricsTop, 5*time.Minute)
		srv := metrics.Serve(ln, col)
		defer srv.Close()
		fmt.Fprintf(stderr, "tcpmemtrace: metrics on http://%s/metrics\n", ln.Addr())
		p.keep = append(p.keep, func(r stream.Record) error { col.Add(r); return nil })
	}
	if o.write != "" {
		rec, err := startRecording(o, info, col, stderr)
		if err != nil {
			return err
		}
		defer rec.Close()
		p.keep = append(p.keep, func(r stream.Record) error { rec.Write(r); return nil })
	}
	if o.flight.window > 0 {
		fr, err := startFlightRecorder(o, info, col)
		if err != nil {
			return err
		}
		p.flight = fr
		p.keep = append(p.keep, func(r stream.Record) error { fr.Add(r); return nil })
	}
	if !o.quiet { // the kernel log is only compared in the summary
		var err error
		if p.kernelLog, err = kmsg.Start(); err != nil {
			fmt.Fprintf(stderr, "tcpmemtrace: kernel log not readable (%v): no rate-limit comparison\n", err)
		}
	}
	if o.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.duration)
		defer cancel()
	}
	return present(ctx, p, outputOf(o, stdout, stderr))
}

// startFlightRecorder keeps the last --flight-recorder of the stream for
// the file an incident writes; the metrics count the files.
func startFlightRecorder(o options, info stream.Info, col *metrics.Collector) (*flight.Recorder, error) {
	fr, err := flight.New(info, flight.Options{Dir: o.flight.dir, Window: o.flight.window, MaxBytes: int64(o.flight.maxMiB) << 20,
		After: o.flight.after, HoldOff: o.flight.holdOff, Triggers: o.flight.triggers, DropRate: o.flight.dropRate,
		MaxSize: int64(o.writeMiB) << 20, MaxFiles: o.writeFiles})
	if err != nil {
		return nil, err
	}
	if col != nil {
		col.WatchFlight(func() metrics.FlightStatus {
			st := fr.Stats()
			return metrics.FlightStatus{Files: st.Files, Failed: st.Failed, Dropped: st.Dropped}
		})
	}
	return fr, nil
}

// startRecording writes the trace to -w's file beside everything else: a
// disk that is slow or full costs the recording (reported once, counted
// in the metrics), never the trace, its counts or the metrics.
func startRecording(o options, info stream.Info, col *metrics.Collector, stderr io.Writer) (*record.Async, error) {
	w, err := record.Create(o.write, info, int64(o.writeMiB)<<20, o.writeFiles)
	if err != nil {
		return nil, err
	}
	rec := record.NewAsync(w, 1<<16, func(err error) {
		fmt.Fprintf(stderr, "tcpmemtrace: the recording %s stopped: %v (tracing goes on)\n", o.write, err)
	})
	if col != nil {
		col.WatchRecording(rec.Status)
	}
	return rec, nil
}

// replay shows a recording through the same path as a live trace.
func replay(ctx context.Context, o options, stdout, stderr io.Writer) error {
	r, err := record.Open(ctx, o.read)
	if err != nil {
		return err
	}
	defer r.Close()
	var src stream.Source = r
	f := record.Filter{Comm: o.comm, Cgroup: o.cgroup}
	for _, p := range o.pids {
		f.PIDs = append(f.PIDs, uint32(p))
	}
	if !f.Empty() {
		src = record.Filtered(r, f)
	}
	err = present(ctx, pipeline{src: src}, outputOf(o, stdout, stderr))
	if w := r.Warning(); w != nil {
		fmt.Fprintf(stderr, "tcpmemtrace: warning: %v\n", w)
	}
	return err
}

// output is how the trace is shown.
type output struct {
	w        io.Writer
	log      io.Writer // where notices go when the output is quiet
	by       string    // the summary's grouping
	json     bool
	quiet    bool
	view     bool // the full-screen view
	interval time.Duration
	realtime bool // a replay at its recorded pace
	replay   bool
}

func outputOf(o options, stdout, stderr io.Writer) output {
	return output{w: stdout, log: stderr, by: o.by, json: o.json, quiet: o.quiet, interval: o.interval, realtime: o.realtime,
		replay: o.read != "", view: isTerminal(stdout) && !o.json && !o.lines && !o.quiet}
}

// present shows the stream: the full-screen view on a terminal, otherwise
// a header, a line per event and the summary (nothing with --quiet).
func present(ctx context.Context, p pipeline, out output) error {
	if out.view {
		return view(ctx, p, out)
	}
	var sink render.Sink = render.NewText(out.w, out.by)
	if out.json {
		sink = render.NewJSON(out.w)
	}
	if out.quiet {
		sink = render.Discard{}
	}
	info := p.src.Info()
	if err := sink.Start(info); err != nil {
		return err
	}
	live := isTerminal(out.w)
	agg := aggregate.New(info.Start)
	show := func(r stream.Record) error {
		if n := r.Notice; n != nil {
			if out.quiet { // a daemon's log says where files went
				fmt.Fprintf(out.log, "tcpmemtrace: %s\n", termsafe.Name(n.Text))
			}
			if err := sink.Notice(n); err != nil {
				return err
			}
			return sink.Flush()
		}
		agg.Add(r)
		if r.Event != nil {
			if err := sink.Event(r.Event); err != nil {
				return err
			}
			if !live {
				return nil
			}
		}
		return sink.Flush()
	}
	err := p.run(ctx, show)
	if eerr := p.end(show); err == nil {
		err = eerr
	}
	if kl, ok := p.stopKernelLog(); ok {
		agg.SetKernelLog(kl)
	}
	if err != nil {
		return err
	}
	return sink.Summary(info, agg.Summary())
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
