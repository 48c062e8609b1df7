package record

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/tcpmemtrace/tcpmemtrace/stream"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// The bytes a recording holds are a format: a fixed stream must write the
// very same file, release after release (docs/recording.md).
func TestWriteGolden(t *testing.T) {
	defer func(old func() time.Time) { clock = old }(clock)
	clock = func() time.Time { return t0.Add(-time.Second) }
	path := filepath.Join(t.TempDir(), "trace.tmtrec")
	write(t, path, 0, 2)
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "trace.tmtrec.golden")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("the recording's bytes changed (%d bytes, golden %d): go test ./internal/record -update to accept a format change", len(got), len(want))
	}
}

// A version 1 recording (before container names) replays as it always did.
func TestReadsVersion1(t *testing.T) {
	r, err := Open(context.Background(), "testdata/trace-v1.tmtrec")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got, err := read(t, r)
	if err != nil || r.Warning() != nil {
		t.Fatal(err, r.Warning())
	}
	want := append(events(), events()...)
	if len(got.events) != len(want) {
		t.Fatalf("%d events, want %d", len(got.events), len(want))
	}
	for i := range want {
		if !reflect.DeepEqual(normal(got.events[i]), normal(want[i])) {
			t.Errorf("event %d:\n got %+v\nwant %+v", i, got.events[i], want[i])
		}
	}
}

// Version 2 keeps what runtimes call containers, for the owner and for a
// pressure episode's holders.
func TestNamesRoundTrip(t *testing.T) {
	c := stream.Container{Runtime: "containerd", ID: "ab", Pod: "uid", Name: "web", PodName: "web-7d9f", Namespace: "shop"}
	e := stream.Event{Time: t0, Kind: stream.KindPressureEnter, Owner: stream.Owner{PID: 1, Comm: "nginx", Container: c},
		Holders: []stream.Holder{{Process: stream.Process{PID: 1, Comm: "nginx"}, Sockets: 2, CgroupPath: "/kubepods/x", Container: &c}}}
	path := filepath.Join(t.TempDir(), "trace.tmtrec")
	w, err := Create(path, info(), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(stream.Record{Event: &e})
	w.Close()
	r, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got, err := read(t, r)
	if err != nil || len(got.events) != 1 || !reflect.DeepEqual(normal(got.events[0]), normal(e)) {
		t.Errorf("%v: %+v", err, got.events)
	}
}
