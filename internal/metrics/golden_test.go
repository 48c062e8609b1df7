package metrics

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/tcpmemtrace/tcpmemtrace/stream"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// Metric names, labels and help texts are what dashboards and alert rules
// are written against: the exposition of a fixed stream is pinned.
func TestExpositionGolden(t *testing.T) {
	c := New(4096, 1, time.Minute)
	c.alive = func([]uint32) bool { return true }
	c.now = func() time.Time { return time.Unix(130, 0) }
	c.Add(stream.Record{Event: &stream.Event{Kind: stream.KindPressureEnter, Time: time.Unix(100, 0)}})
	reader := owner(7, "reader", 0, 900)
	reader.Container = stream.Container{Runtime: "containerd", ID: "0123456789abcdef", Pod: "uid-1", Name: "app", PodName: "app-5c7f", Namespace: "shop"}
	snap := snapshot(reader, owner(8, "writer", 300, 0))
	snap.Holders = []stream.Holder{{Process: stream.Process{PID: 7, Comm: "reader"}, RecvBytes: 8000, CgroupPath: "/reader", Container: &reader.Container},
		{Process: stream.Process{PID: 9, Comm: "idle"}, SendBytes: 10}}
	c.Add(stream.Record{Snapshot: snap})
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	for _, f := range fams {
		if _, err := expfmt.MetricFamilyToText(&buf, f); err != nil {
			t.Fatal(err)
		}
	}
	got := buf.Bytes()
	p := filepath.Join("testdata", "exposition.golden")
	if *update {
		os.MkdirAll("testdata", 0o755)
		if err := os.WriteFile(p, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("exposition changed (go test ./internal/metrics -update to accept):\n%s", got)
	}
}
