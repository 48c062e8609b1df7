package flight

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/tcpmemtrace/tcpmemtrace/internal/record"
	"github.com/tcpmemtrace/tcpmemtrace/stream"
)

var t0 = time.Date(2026, 11, 30, 13, 0, 0, 0, time.UTC)

// trace is a synthetic stream: a snapshot a second with cumulative counts,
// and an abort event (counted at once) at each second listed in aborts.
type trace struct {
	aborts  uint64
	records []stream.Record
}

func (tr *trace) second(s int, abort bool) {
	at := t0.Add(time.Duration(s) * time.Second)
	if abort {
		tr.aborts++
		tr.records = append(tr.records, stream.Record{Event: &stream.Event{Time: at.Add(-500 * time.Millisecond), Kind: stream.KindAbort,
			Owner: stream.Owner{PID: 42, Comm: "nginx"}}})
	}
	snap := &stream.Snapshot{Time: at}
	snap.Totals.Events[stream.MemAborts] = tr.aborts
	o := stream.OwnerCounts{Owner: stream.Owner{PID: 42, Comm: "nginx", CgroupID: 7}}
	o.Events[stream.MemAborts] = tr.aborts
	snap.Owners = []stream.OwnerCounts{o}
	tr.records = append(tr.records, stream.Record{Snapshot: snap})
}

func options(dir string) Options {
	return Options{Dir: dir, Window: 20 * time.Second, MaxBytes: 64 << 20, After: 5 * time.Second, HoldOff: 30 * time.Second,
		Triggers: []string{stream.TriggerAbort, stream.TriggerPressure, stream.TriggerDrops}, DropRate: 100}
}

func files(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "tcpmem-*.tmtrec"))
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(m)
	return m
}

// replay reads a file back: its header's trigger, events and final totals.
func replay(t *testing.T, path string) (*stream.Trigger, []stream.Event, stream.Totals) {
	t.Helper()
	r, err := record.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var evs []stream.Event
	var final stream.Totals
	err = r.Run(context.Background(), func(rec stream.Record) error {
		if rec.Event != nil {
			evs = append(evs, *rec.Event)
		}
		if rec.Snapshot != nil && rec.Snapshot.Final {
			final = rec.Snapshot.Totals
		}
		return nil
	})
	if err != nil || r.Warning() != nil {
		t.Fatalf("replay %s: %v, warning %v", path, err, r.Warning())
	}
	return r.Info().Trigger, evs, final
}

// One incident gives one file: the window before it (counts from the
// window's start), its post-trigger part, the trigger in the header; a
// second burst inside the hold-off gives none, a third after it one more.
func TestOneFilePerIncident(t *testing.T) {
	dir := t.TempDir()
	r, err := New(stream.Info{Start: t0, Hostname: "h"}, options(dir))
	if err != nil {
		t.Fatal(err)
	}
	tr := &trace{}
	for s := 1; s <= 120; s++ {
		// Aborts at 8 (a file, and outside the next one's window), 50-52
		// (the incident), 70 (inside its hold-off) and 100 (after it).
		tr.second(s, s == 8 || (s >= 50 && s <= 52) || s == 70 || s == 100)
	}
	var notices []stream.Notice
	for _, rec := range tr.records {
		r.Add(rec)
	drain:
		for {
			select {
			case n := <-r.Notices():
				notices = append(notices, n)
			default:
				break drain
			}
		}
	}
	r.Close()
	for n := range r.Notices() {
		notices = append(notices, n)
	}

	got := files(t, dir)
	if len(got) != 3 {
		t.Fatalf("files %v, want 3 (the hold-off swallows the burst at 70)", got)
	}
	got = got[1:] // the incident's, and the one after the hold-off
	if base := filepath.Base(got[0]); base != "tcpmem-20261130T130049Z-abort.tmtrec" {
		t.Errorf("the incident's file %s: the name says the trigger's time and kind", base)
	}
	trig, evs, tot := replay(t, got[0])
	if trig == nil || trig.Kind != stream.TriggerAbort || !trig.Time.Equal(t0.Add(49500*time.Millisecond)) || !trig.From.Equal(t0.Add(29*time.Second)) {
		t.Fatalf("trigger %+v: want the abort at 49.5s, the window from the snapshot at 29s", trig)
	}
	if len(evs) != 3 || !evs[0].Time.Before(trig.Time.Add(time.Millisecond)) {
		t.Errorf("%d events, want the 3 aborts of the incident", len(evs))
	}
	// The file covers 29s..55s: the aborts at 50, 51 and 52, not the one at 8.
	if tot.Events[stream.MemAborts] != 3 {
		t.Errorf("the file's totals: %d aborts, want 3 (the window's, not the trace's %d)", tot.Events[stream.MemAborts], tr.aborts)
	}
	if trig2, _, tot2 := replay(t, got[1]); trig2.Kind != stream.TriggerAbort || !trig2.Time.Equal(t0.Add(99500*time.Millisecond)) || tot2.Events[stream.MemAborts] != 1 {
		t.Errorf("second file: %+v with %d aborts", trig2, tot2.Events[stream.MemAborts])
	}
	st := r.Stats()
	if st.Files[stream.TriggerAbort] != 3 || st.Failed != 0 || st.Dropped != 0 {
		t.Errorf("stats %+v", st)
	}
	var kinds []string
	for _, n := range notices {
		kinds = append(kinds, n.Kind)
		if n.File == "" || !strings.Contains(n.Text, n.File) {
			t.Errorf("notice %+v does not say where", n)
		}
	}
	sort.Strings(kinds) // a file is written on a goroutine of its own
	if strings.Join(kinds, " ") != "flight_recording_started flight_recording_started flight_recording_started "+
		"flight_recording_written flight_recording_written flight_recording_written" {
		t.Errorf("notices %v", kinds)
	}
	if fi, err := os.Stat(got[0]); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode())
	}
}

// The window is bounded in bytes too: past MaxBytes the oldest records go
// and the counts run from the newest snapshot let go.
func TestWindowBoundedInBytes(t *testing.T) {
	dir := t.TempDir()
	o := options(dir)
	o.Window = time.Hour
	o.MaxBytes = 10 * size(stream.Record{Snapshot: &stream.Snapshot{Owners: make([]stream.OwnerCounts, 1)}})
	r, err := New(stream.Info{Start: t0}, o)
	if err != nil {
		t.Fatal(err)
	}
	tr := &trace{}
	for s := 1; s <= 40; s++ {
		tr.second(s, s == 5 || s == 35)
	}
	// The abort at 5 triggers a file; let it end and the hold-off pass.
	o.HoldOff = 0
	for _, rec := range tr.records {
		r.Add(rec)
	}
	r.Close()
	got := files(t, dir)
	if len(got) != 1 {
		t.Fatalf("files %v", got)
	}
	trig, _, _ := replay(t, got[0])
	if span := trig.Time.Sub(trig.From); span > 11*time.Second {
		t.Errorf("the window spans %v before the trigger: more than 10 records' bytes", span)
	}
}

// Aborts the snapshots count but whose events were lost trigger a file too.
func TestAbortsWithoutEvents(t *testing.T) {
	dir := t.TempDir()
	r, err := New(stream.Info{Start: t0}, options(dir))
	if err != nil {
		t.Fatal(err)
	}
	tr := &trace{}
	for s := 1; s <= 10; s++ {
		tr.second(s, s == 4)
	}
	for _, rec := range tr.records {
		if rec.Event == nil { // the ring buffer was full
			r.Add(rec)
		}
	}
	r.Close()
	if got := files(t, dir); len(got) != 1 || !strings.HasSuffix(got[0], "T130004Z-abort.tmtrec") {
		t.Errorf("files %v, want one at the snapshot that counted the abort", got)
	}
}

// An incident that goes on keeps its file going: a trigger while a file is
// written extends it by After.
func TestIncidentExtendsItsFile(t *testing.T) {
	dir := t.TempDir()
	r, err := New(stream.Info{Start: t0}, options(dir)) // After 5s
	if err != nil {
		t.Fatal(err)
	}
	tr := &trace{}
	for s := 1; s <= 40; s++ {
		tr.second(s, s == 10 || s == 14 || s == 18) // each within 5s of the last
	}
	for _, rec := range tr.records {
		r.Add(rec)
	}
	r.Close()
	got := files(t, dir)
	if len(got) != 1 {
		t.Fatalf("files %v, want one for the whole incident", got)
	}
	if _, evs, tot := replay(t, got[0]); len(evs) != 3 || tot.Events[stream.MemAborts] != 3 {
		t.Errorf("%d events, %d aborts: want all three of the incident", len(evs), tot.Events[stream.MemAborts])
	}
}

// Drops above the rate, between two snapshots, trigger a file.
func TestDropRateTrigger(t *testing.T) {
	dir := t.TempDir()
	r, err := New(stream.Info{Start: t0}, options(dir))
	if err != nil {
		t.Fatal(err)
	}
	var drops uint64
	for s := 1; s <= 20; s++ {
		if s == 10 {
			drops += 500 // 500/s against a trigger at 100/s
		} else {
			drops += 50
		}
		snap := &stream.Snapshot{Time: t0.Add(time.Duration(s) * time.Second)}
		snap.Totals.Drops[stream.ProtoTCP][stream.ReasonProtoMem] = drops
		r.Add(stream.Record{Snapshot: snap})
	}
	r.Close()
	got := files(t, dir)
	if len(got) != 1 || !strings.HasSuffix(got[0], "T130010Z-drops.tmtrec") {
		t.Fatalf("files %v, want one drops file at 13:00:10", got)
	}
	if trig, _, _ := replay(t, got[0]); !strings.Contains(trig.Detail, "500 memory drops/s") {
		t.Errorf("trigger detail %q", trig.Detail)
	}
}

// Bad options fail at start, not at the first incident.
func TestBadOptions(t *testing.T) {
	o := options(filepath.Join(t.TempDir(), "missing"))
	if _, err := New(stream.Info{}, o); err == nil {
		t.Error("a missing directory was accepted")
	}
	o = options(t.TempDir())
	o.Triggers = []string{"aborts"}
	if _, err := New(stream.Info{}, o); err == nil || !strings.Contains(err.Error(), `"aborts"`) {
		t.Errorf("an unknown trigger: %v", err)
	}
}
