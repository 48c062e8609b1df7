package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tcpmemtrace/tcpmemtrace/internal/testsupport/workload"
)

const roleEnv = "TCPMEMTRACE_BENCH_ROLE"

// runRoleIfChild runs the iperf3 pair inside the fresh network namespace
// this process was started in, prints the client's JSON and exits.
func runRoleIfChild() {
	if os.Getenv(roleEnv) == "conns" {
		n, err := strconv.Atoi(os.Getenv("TCPMEMTRACE_BENCH_CONNS"))
		if err == nil {
			err = holdConnections(n)
		}
		fmt.Fprintln(os.Stderr, "holding connections:", err)
		os.Exit(1)
	}
	if os.Getenv(roleEnv) != "iperf" {
		return
	}
	if err := iperfPair(os.Getenv("TCPMEMTRACE_BENCH_SECONDS")); err != nil {
		fmt.Fprintln(os.Stderr, "iperf:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func iperfPair(seconds string) error {
	if err := workload.LoopbackUp(); err != nil {
		return err
	}
	srv := exec.Command("iperf3", "-s", "-1", "-B", "127.0.0.1", "-p", "5201")
	if err := srv.Start(); err != nil {
		return err
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	// Listening when /proc/net/tcp has 127.0.0.1:5201 (0100007F:1451) in
	// state LISTEN (0A).
	for i := 0; ; i++ {
		b, err := os.ReadFile("/proc/self/net/tcp")
		if err != nil {
			return err
		}
		if strings.Contains(string(b), "0100007F:1451 00000000:0000 0A") {
			break
		}
		if i == 250 {
			return errors.New("iperf3 server not listening after 5 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cl := exec.Command("iperf3", "-c", "127.0.0.1", "-p", "5201", "-t", seconds, "-J")
	cl.Stdout, cl.Stderr = os.Stdout, os.Stderr
	return cl.Run()
}

// iperf runs one loopback iperf3 test in a new network namespace and
// returns the receiver's throughput in bits/s.
func iperf(seconds time.Duration) (float64, error) {
	exe, err := os.Executable()
	if err != nil {
		return 0, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), roleEnv+"=iperf", fmt.Sprintf("TCPMEMTRACE_BENCH_SECONDS=%d", int(seconds.Seconds())))
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	cmd.Stderr = os.Stderr
	b, err := cmd.Output()
	if err != nil {
		return 0, fmt.Errorf("iperf3: %w", err)
	}
	var res struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(b, &res); err != nil {
		return 0, fmt.Errorf("iperf3 output: %w", err)
	}
	return res.End.SumReceived.BitsPerSecond, nil
}
