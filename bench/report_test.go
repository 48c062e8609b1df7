package main

import (
	"strings"
	"testing"
)

// The targets table judges tcpmemtrace against bpftrace's count() in the
// same run, and says "not met", and why, where a figure misses its goal.
func TestTargets(t *testing.T) {
	r := &Results{
		Cost: []Cost{
			{Tool: emptyName, Phase: "unrelated", Datagrams: 10, KfreeNsPerCall: 70, TotalNsPerDatagram: 70},
			{Tool: emptyName, Phase: "counted", Datagrams: 10, KfreeNsPerCall: 70, TotalNsPerDatagram: 70},
			{Tool: tm, Phase: "unrelated", Datagrams: 10, KfreeNsPerCall: 80, TotalNsPerDatagram: 90}, // 1.125×: met
			{Tool: tm, Phase: "counted", Datagrams: 10, KfreeNsPerCall: 400, TotalNsPerDatagram: 410}, // 1.28×: not met
			{Tool: "bpftrace count", Phase: "unrelated", Datagrams: 10, KfreeNsPerCall: 80, TotalNsPerDatagram: 80},
			{Tool: "bpftrace count", Phase: "counted", Datagrams: 10, KfreeNsPerCall: 320, TotalNsPerDatagram: 320},
		},
		Storm:       Storm{Runs: []StormRun{{Tool: tm, Rate: 960, Kernel: 5, Tally: Tally{Counted: 5}}, {Tool: "bpftrace count", Rate: 1000}}},
		Idle:        []IdleRun{{Tool: tm, Seconds: 60, CPUPercent: 0.1}, {Tool: tmDaemon, Seconds: 60, CPUPercent: 0.3}},
		CPU:         []CPURun{{Tool: tm, Rate: 10000, CPUPercent: 0.5}, {Tool: tm, Rate: 100000, CPUPercent: 1.5}},
		Startup:     []Startup{{Tool: tm, MedianMs: 119}},
		StartupWith: []StartupWith{{Connections: 0, MedianMs: 119}, {Connections: 20000, MedianMs: 260}},
		PeakRSS:     []RSS{{Tool: tm, Bytes: 41e6}},
		Throughput:  []Throughput{{Tool: "none", Gbps: []float64{10, 10, 10, 10}}, {Tool: tm, Ratio: 0.995, Gbps: []float64{9.95, 9.95, 9.99, 10}}},
	}
	got := map[string]string{}
	for _, row := range r.targets() {
		got[row[0]] = row[3]
	}
	for k, v := range map[string]string{
		"all programs, per unrelated datagram": "met", "all programs, per counted drop": "**not met**",
		"drop storm: drop rate": "met", "drop storm: counts": "met",
		"idle, 60 s: `tcpmemtrace`": "met", "idle, 60 s: `" + tmDaemon + "`": "**not met**",
		"userspace CPU at 10k events/s": "met", "userspace CPU at 100k events/s": "**not met**",
		"exec → attached, idle machine": "met", "exec → attached, 20000 connections open": "**not met**",
		"peak RSS": "**not met**", "loopback throughput": "met",
	} {
		if g := got[k]; g != v && !strings.HasPrefix(g, v+": ") {
			t.Errorf("%s: %q, want %q", k, g, v)
		}
	}
	if w := got["all programs, per counted drop"]; !strings.Contains(w, "90 ns more per datagram") {
		t.Errorf("a miss without its why: %q", w)
	}
	if md := r.Markdown(); !strings.Contains(md, "| tcpmemtrace | counted | 0 | 400 | 330 |") || !strings.Contains(md, "| 20000 | 40000 | 260 |") {
		t.Errorf("tables lack figures:\n%s", md)
	}
}

func TestMedian(t *testing.T) {
	if m := median([]float64{3, 1, 2}); m != 2 {
		t.Errorf("median odd = %v", m)
	}
	if m := median([]float64{4, 1, 3, 2}); m != 2.5 {
		t.Errorf("median even = %v", m)
	}
}
