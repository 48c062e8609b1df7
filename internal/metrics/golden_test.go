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
	c.Add(stream.Record{Snapshot: snapshot(owner(7, "reader", 0, 900), owner(8, "writer", 300, 0))})
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
