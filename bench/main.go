// Command bench measures tcpmemtrace side by side with bpftrace on one
// generated workload (`make bench`): the cost of each BPF program per call,
// exactness under a drop storm, time to attach, userspace CPU and memory at
// fixed event rates, and loopback throughput with each tracer attached. It
// writes the raw figures as JSON and renders them into BENCHMARKS.md.
//
// All traffic stays in network namespaces the harness creates; the only
// global setting it changes is net.ipv4.tcp_mem, for a few seconds, behind
// the tests' sysctl lock and timed restorer.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/tcpmemtrace/tcpmemtrace/internal/testsupport/workload"
)

func main() {
	workload.RunRoleIfChild()
	runRoleIfChild()
	var (
		bin     = flag.String("tcpmemtrace", "./tcpmemtrace", "the tcpmemtrace binary to measure")
		tcpdrop = flag.String("tcpdrop", "/usr/sbin/tcpdrop.bt", "bpftrace's tcpdrop.bt")
		out     = flag.String("out", "BENCHMARKS.md", "the report to write")
		raw     = flag.String("results", "bench/results.json", "the raw results to write")
		render  = flag.Bool("render", false, "only render -results into -out")
		secs    = flag.Duration("phase", 5*time.Second, "length of each timed phase")
		rounds  = flag.Int("rounds", 12, "throughput rounds (each tool once per round)")
		iperfT  = flag.Duration("iperf", 2*time.Second, "length of each iperf3 run")
		starts  = flag.Int("starts", 5, "startups timed per tool")
		idle    = flag.Duration("idle", time.Minute, "how long each tool's idle CPU is measured")
		only    = flag.String("only", "", "run only these steps (comma-separated: attach,connections,idle,cost,storm,cpu,tcp,throughput)")
	)
	flag.Parse()
	if *render {
		var r Results
		b, err := os.ReadFile(*raw)
		if err == nil {
			err = json.Unmarshal(b, &r)
		}
		if err == nil {
			err = os.WriteFile(*out, []byte(r.Markdown()), 0o644)
		}
		exit(err)
	}
	if err := preflight(*bin, *tcpdrop); err != nil {
		exit(err)
	}
	r, err := measure(config{bin: *bin, tcpdrop: *tcpdrop, phase: *secs, iperfTime: *iperfT, rounds: *rounds, starts: *starts, idleTime: *idle, only: splitList(*only)})
	if err != nil {
		exit(err)
	}
	b, _ := json.MarshalIndent(r, "", "  ")
	if err := os.WriteFile(*raw, append(b, '\n'), 0o644); err != nil {
		exit(err)
	}
	exit(os.WriteFile(*out, []byte(r.Markdown()), 0o644))
}

func exit(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// preflight says plainly what is missing, rather than failing half-way.
func preflight(bin, tcpdrop string) error {
	var errs []error
	if os.Geteuid() != 0 {
		errs = append(errs, errors.New("needs root (BPF, network namespaces, tcp_mem): sudo make bench"))
	}
	for _, c := range []string{"bpftrace", "iperf3"} {
		if _, err := exec.LookPath(c); err != nil {
			errs = append(errs, fmt.Errorf("%s not found: apt-get install bpftrace iperf3 (make bench-deps does it)", c))
		}
	}
	for _, f := range []string{bin, tcpdrop} {
		if _, err := os.Stat(f); err != nil {
			errs = append(errs, err)
		}
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		errs = append(errs, errors.New("no kernel BTF (/sys/kernel/btf/vmlinux)"))
	}
	return errors.Join(errs...)
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

func firstLine(name string, args ...string) string {
	b, _ := exec.Command(name, args...).CombinedOutput()
	l, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	return l
}

func splitList(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}
