package main

import (
	"strings"
	"testing"
)

// The targets table judges tcpmemtrace's own cost above the empty program,
// and says "not met" where a figure misses its goal.
func TestTargets(t *testing.T) {
	r := &Results{
		Cost: []Cost{
			{Tool: emptyName, Phase: "unrelated", KfreeNsPerCall: 70},
			{Tool: emptyName, Phase: "counted", KfreeNsPerCall: 70},
			{Tool: tm, Phase: "unrelated", KfreeNsPerCall: 100}, // 30 above: met
			{Tool: tm, Phase: "counted", KfreeNsPerCall: 400},   // 330 above: not met
		},
		Startup:    []Startup{{Tool: tm, MedianMs: 149}},
		PeakRSS:    []RSS{{Tool: tm, Bytes: 41e6}},
		Throughput: []Throughput{{Tool: "none", Gbps: []float64{10, 10, 10, 10}}, {Tool: tm, Ratio: 0.995, Gbps: []float64{9.95, 9.95, 9.99, 10}}},
	}
	got := map[string]string{}
	for _, row := range r.targets() {
		got[row[0]] = row[3]
	}
	want := map[string]string{
		"kfree_skb, unrelated drop": "met", "kfree_skb, counted drop": "**not met**",
		"exec → attached": "met", "peak RSS": "**not met**", "loopback throughput": "met",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %q, want %q", k, got[k], v)
		}
	}
	if md := r.Markdown(); !strings.Contains(md, "| tcpmemtrace | counted | 0 | 400 | 330 |") {
		t.Errorf("cost table lacks the net figure:\n%s", md)
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
