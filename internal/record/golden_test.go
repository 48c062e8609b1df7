package record

import (
	"bytes"
	"context"
	"flag"
	"fmt"
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

// Recordings of earlier versions replay as they always did: version 1
// (before container names), version 2 (before holders' stalled sockets),
// version 3 (before drops' locations).
func TestReadsEarlierVersions(t *testing.T) {
	for _, v := range []int{1, 2, 3} {
		r, err := Open(context.Background(), fmt.Sprintf("testdata/trace-v%d.tmtrec", v))
		if err != nil {
			t.Fatal(err)
		}
		got, err := read(t, r)
		r.Close()
		if err != nil || r.Warning() != nil {
			t.Fatal(err, r.Warning())
		}
		want := append(beforeLocations(events()), beforeLocations(events())...)
		if v < stalledSince {
			want = beforeStalls(want)
		}
		if len(got.events) != len(want) {
			t.Fatalf("version %d: %d events, want %d", v, len(got.events), len(want))
		}
		for i := range want {
			if !reflect.DeepEqual(normal(got.events[i]), normal(want[i])) {
				t.Errorf("version %d, event %d:\n got %+v\nwant %+v", v, i, got.events[i], want[i])
			}
		}
	}
}

// beforeLocations is what a recording older than version 4 holds of
// events: no drop locations.
func beforeLocations(evs []stream.Event) []stream.Event {
	for i := range evs {
		evs[i].Location = ""
	}
	return evs
}

// beforeStalls is what a recording older than version 3 holds of events:
// no stalled sockets.
func beforeStalls(evs []stream.Event) []stream.Event {
	for i := range evs {
		if evs[i].Holders == nil {
			continue
		}
		hs := append([]stream.Holder(nil), evs[i].Holders...)
		for j := range hs {
			hs[j].StalledSockets, hs[j].StalledBytes, hs[j].StalledMs = 0, 0, 0
		}
		evs[i].Holders = hs
	}
	return evs
}

// Version 3 keeps each holder's stalled sockets, and snapshots (JSON)
// the stalled sockets a look found.
func TestStalledRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "trace.tmtrec")
	write(t, path, 0, 1)
	r, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got, err := read(t, r)
	if err != nil {
		t.Fatal(err)
	}
	if h := got.events[0].Holders[0]; h.StalledSockets != 2 || h.StalledBytes != 66 || h.StalledMs != 93000 {
		t.Errorf("holder %+v", h)
	}
	last := got.snaps[len(got.snaps)-1]
	if want := snapshot(1, true); !reflect.DeepEqual(last.Stalled, want.Stalled) || !reflect.DeepEqual(last.Holders, want.Holders) {
		t.Errorf("final snapshot: stalled %+v holders %+v", last.Stalled, last.Holders)
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
