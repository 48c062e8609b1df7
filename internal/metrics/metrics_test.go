package metrics

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/tcpmemtrace/tcpmemtrace/stream"
)

func owner(pid uint32, comm string, mem, drops uint64) stream.OwnerCounts {
	o := stream.OwnerCounts{Owner: stream.Owner{PID: pid, Comm: comm, CgroupPath: "/" + comm}, Counts: stream.Counts{}}
	o.Events[stream.MemAborts], o.Drops[stream.ProtoTCP][stream.ReasonProtoMem] = mem, drops
	return o
}

func snapshot(owners ...stream.OwnerCounts) *stream.Snapshot {
	tot := stream.Totals{}
	for _, o := range owners {
		tot.Counts.Add(&o.Counts)
	}
	tot.PressureEpisodes, tot.LostSamples = 1, 3
	tot.Causes[stream.CauseGlobalHardLimit] = 5
	return &stream.Snapshot{Time: time.Unix(100, 0), Totals: tot, Owners: owners,
		Global: stream.Global{MemPages: 3100, Pressure: true, TCPMem: [3]int64{1000, 2000, 3000}, Orphans: 7, MaxOrphans: 100, TimeWait: 2}}
}

// series gathers name{labels} -> value.
func series(t *testing.T, c *Collector) map[string]float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range fams {
		for _, m := range f.Metric {
			var l []string
			for _, p := range m.Label {
				l = append(l, p.GetName()+"="+p.GetValue())
			}
			v := m.GetCounter().GetValue()
			if f.GetType() == dto.MetricType_GAUGE {
				v = m.GetGauge().GetValue()
			}
			out[f.GetName()+"{"+strings.Join(l, ",")+"}"] = v
		}
	}
	return out
}

func TestExposition(t *testing.T) {
	c := New(4096, 10, time.Minute)
	c.alive = func([]uint32) bool { return true }
	c.now = func() time.Time { return time.Unix(130, 0) }
	c.Add(stream.Record{Event: &stream.Event{Kind: stream.KindPressureEnter, Time: time.Unix(100, 0)}})
	c.Add(stream.Record{Snapshot: snapshot(owner(7, "reader", 0, 900), owner(8, "writer", 300, 0))})
	s := series(t, c)
	for name, want := range map[string]float64{
		"tcpmemtrace_aborts_total{cause=memory}":                                                             300,
		"tcpmemtrace_drops_total{protocol=tcp,reason=PROTO_MEM}":                                             900,
		"tcpmemtrace_drops_total{protocol=other,reason=PROTO_MEM}":                                           0,
		"tcpmemtrace_drops_by_cause_total{cause=global_hard_limit}":                                          5,
		"tcpmemtrace_pressure_episodes_total{}":                                                              1,
		"tcpmemtrace_lost_samples_total{}":                                                                   3,
		"tcpmemtrace_tcp_memory_allocated_bytes{}":                                                           3100 * 4096,
		"tcpmemtrace_tcp_mem_bytes{watermark=high}":                                                          3000 * 4096,
		"tcpmemtrace_tcp_memory_pressure{}":                                                                  1,
		"tcpmemtrace_tcp_memory_pressure_episode_age_seconds{}":                                              30,
		"tcpmemtrace_tcp_orphans{}":                                                                          7,
		"tcpmemtrace_tcp_max_orphans{}":                                                                      100,
		"tcpmemtrace_owner_drops_total{cgroup=/reader,comm=reader,container=,namespace=,pod=}":               900,
		"tcpmemtrace_owner_aborts_total{cause=memory,cgroup=/writer,comm=writer,container=,namespace=,pod=}": 300,
		"tcpmemtrace_owner_drops_total{cgroup=,comm=other,container=,namespace=,pod=}":                       0,
	} {
		if got, ok := s[name]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", name, got, ok, want)
		}
	}
	// The registry checks names and help; promlint the conventions.
	problems, err := testutil.CollectAndLint(c)
	if err != nil || len(problems) != 0 {
		t.Errorf("lint: %v %+v", err, problems)
	}
}

// Outside the host's network namespace the limits are unreadable: no
// series, so that ratios to them are absent rather than infinite. A
// tcp_max_orphans of 0 is a real setting, though.
func TestUnknownLimitsAreAbsent(t *testing.T) {
	c := New(4096, 10, time.Minute)
	snap := snapshot()
	snap.Global.TCPMem, snap.Global.MaxOrphans = [3]int64{}, -1
	c.Add(stream.Record{Snapshot: snap})
	s := series(t, c)
	for name := range s {
		if strings.HasPrefix(name, "tcpmemtrace_tcp_mem_bytes") || strings.HasPrefix(name, "tcpmemtrace_tcp_max_orphans") {
			t.Errorf("%s exported for an unknown limit", name)
		}
	}
	snap.Global.MaxOrphans = 0
	c.Add(stream.Record{Snapshot: snap})
	if v, ok := series(t, c)["tcpmemtrace_tcp_max_orphans{}"]; !ok || v != 0 {
		t.Errorf("tcp_max_orphans 0: %v %v", v, ok)
	}
}

// An episode already on when the trace starts has no enter event: its age
// counts from the first snapshot that shows it, and ends with it.
func TestEpisodeBegunBeforeTheTrace(t *testing.T) {
	c := New(4096, 10, time.Minute)
	c.now = func() time.Time { return time.Unix(145, 0) }
	snap := snapshot() // in pressure at t=100
	c.Add(stream.Record{Snapshot: snap})
	if age := series(t, c)["tcpmemtrace_tcp_memory_pressure_episode_age_seconds{}"]; age != 45 {
		t.Errorf("age %v, want 45", age)
	}
	later := *snap
	later.Time, later.Global.Pressure = time.Unix(140, 0), false
	c.Add(stream.Record{Snapshot: &later})
	if age := series(t, c)["tcpmemtrace_tcp_memory_pressure_episode_age_seconds{}"]; age != 0 {
		t.Errorf("age %v after the episode, want 0", age)
	}
}

// With one place, a second owner goes to "other"; when the first one's
// processes are gone it expires, the second is promoted, and no counter of
// any series ever goes down.
func TestOwnersBoundedAndMonotonic(t *testing.T) {
	now := time.Unix(0, 0)
	dead := map[uint32]bool{}
	c := New(4096, 1, time.Minute)
	c.alive = func(p []uint32) bool { return !dead[p[0]] }
	c.now = func() time.Time { return now }
	prev := map[string]float64{}
	step := func(owners ...stream.OwnerCounts) map[string]float64 {
		c.Add(stream.Record{Snapshot: snapshot(owners...)})
		s := series(t, c)
		for k, v := range prev {
			if cur, ok := s[k]; ok && cur < v && strings.Contains(k, "_total") {
				t.Errorf("%s went down: %v -> %v", k, v, cur)
			}
		}
		prev = s
		return s
	}
	a, b := "tcpmemtrace_owner_drops_total{cgroup=/a,comm=a,container=,namespace=,pod=}", "tcpmemtrace_owner_drops_total{cgroup=/b,comm=b,container=,namespace=,pod=}"
	other := "tcpmemtrace_owner_drops_total{cgroup=,comm=other,container=,namespace=,pod=}"
	s := step(owner(1, "a", 0, 10), owner(2, "b", 0, 5))
	if s[a] != 10 || s[other] != 5 {
		t.Errorf("first scrape: a=%v other=%v (a new owner's series has all of its counts)", s[a], s[other])
	}
	s = step(owner(1, "a", 0, 30), owner(2, "b", 0, 8))
	if s[a] != 30 || s[other] != 8 {
		t.Errorf("a=%v other=%v", s[a], s[other])
	}
	if _, ok := s[b]; ok {
		t.Error("b has a series past the limit of 1")
	}
	dead[1] = true
	now = now.Add(2 * time.Minute)
	s = step(owner(1, "a", 0, 30), owner(2, "b", 0, 9))
	if _, ok := s[a]; ok {
		t.Error("a's series outlived its processes")
	}
	// b was promoted past what "other" had shown for it (8): its series
	// has the 1 since; "other" now has a's 30 and b's 8.
	if s[b] != 1 || s[other] != 38 {
		t.Errorf("after a expired: b=%v other=%v", s[b], s[other])
	}
	if n := strings.Count(strings.Join(keys(s), " "), "owner_drops_total"); n != 2 {
		t.Errorf("%d owner_drops series, want 2 (one owner + other)", n)
	}
}

// Names the runtime gives later relabel an owner's series and keep its
// counts: the owner is its process, cgroup and container id.
func TestNamesRelabel(t *testing.T) {
	c := New(4096, 10, time.Minute)
	c.alive = func([]uint32) bool { return true }
	o := owner(7, "nginx", 0, 40)
	o.Container = stream.Container{Runtime: "containerd", ID: strings.Repeat("ab", 32), Pod: "uid-1"}
	c.Add(stream.Record{Snapshot: snapshot(o)})
	if v := series(t, c)["tcpmemtrace_owner_drops_total{cgroup=/nginx,comm=nginx,container=abababababab,namespace=,pod=}"]; v != 40 {
		t.Errorf("unnamed: %v, want 40", v)
	}
	o.Drops[stream.ProtoTCP][stream.ReasonProtoMem] = 50
	o.Container.Name, o.Container.PodName, o.Container.Namespace = "web", "web-7d9f", "shop"
	c.Add(stream.Record{Snapshot: snapshot(o)})
	s := series(t, c)
	if v := s["tcpmemtrace_owner_drops_total{cgroup=/nginx,comm=nginx,container=web,namespace=shop,pod=web-7d9f}"]; v != 50 {
		t.Errorf("named: %v, want 50; %v", v, keys(s))
	}
	if v := s["tcpmemtrace_owner_drops_total{cgroup=,comm=other,container=,namespace=,pod=}"]; v != 0 {
		t.Errorf("other %v: the owner's counts moved", v)
	}
	// A runtime that stops answering does not take the names away.
	o.Container.Name, o.Container.PodName, o.Container.Namespace = "", "", ""
	c.Add(stream.Record{Snapshot: snapshot(o)})
	if _, ok := series(t, c)["tcpmemtrace_owner_drops_total{cgroup=/nginx,comm=nginx,container=web,namespace=shop,pod=web-7d9f}"]; !ok {
		t.Error("names lost when a later snapshot lacks them")
	}
}

// The queued gauge: the top holders by owner (processes of one owner
// summed), the rest under "other"; kept between the snapshots that carry
// holders, absent before the first.
func TestQueuedGauge(t *testing.T) {
	c := New(4096, 2, time.Minute)
	c.Add(stream.Record{Snapshot: snapshot()})
	for k := range series(t, c) {
		if strings.HasPrefix(k, "tcpmemtrace_owner_queued_bytes") {
			t.Fatalf("%s before any holders were polled", k)
		}
	}
	ctr := &stream.Container{Runtime: "podman", ID: strings.Repeat("cd", 32), Name: "db"}
	holder := func(pid int, comm string, recv, send uint64, c *stream.Container) stream.Holder {
		return stream.Holder{Process: stream.Process{PID: pid, Comm: comm}, RecvBytes: recv, SendBytes: send, CgroupPath: "/" + comm, Container: c}
	}
	snap := snapshot()
	snap.Holders = []stream.Holder{
		holder(1, "postgres", 1000, 24, ctr), holder(2, "postgres", 3000, 0, ctr), // one owner
		holder(3, "nginx", 500, 500, nil), holder(4, "curl", 10, 0, nil), holder(5, "sshd", 5, 5, nil),
	}
	c.Add(stream.Record{Snapshot: snap})
	c.Add(stream.Record{Snapshot: snapshot()}) // no poll this time: the last one stands
	s := series(t, c)
	for name, want := range map[string]float64{
		"tcpmemtrace_owner_queued_bytes{cgroup=/postgres,comm=postgres,container=db,namespace=,pod=}": 4024,
		"tcpmemtrace_owner_queued_bytes{cgroup=/nginx,comm=nginx,container=,namespace=,pod=}":         1000,
		"tcpmemtrace_owner_queued_bytes{cgroup=,comm=other,container=,namespace=,pod=}":               20,
	} {
		if got, ok := s[name]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", name, got, ok, want)
		}
	}
	if n := strings.Count(strings.Join(keys(s), " "), "owner_queued_bytes"); n != 3 {
		t.Errorf("%d queued series, want 3 (two owners + other)", n)
	}
	snap = snapshot()
	snap.Holders = []stream.Holder{} // polled: nobody holds anything
	c.Add(stream.Record{Snapshot: snap})
	if v, ok := series(t, c)["tcpmemtrace_owner_queued_bytes{cgroup=,comm=other,container=,namespace=,pod=}"]; !ok || v != 0 {
		t.Errorf("after an empty poll: other %v %v, want 0", v, ok)
	}
}

func keys(m map[string]float64) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestListenDefaultsToLoopback(t *testing.T) {
	ln, err := Listen(":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if !strings.HasPrefix(ln.Addr().String(), "127.0.0.1:") {
		t.Errorf("listening on %s", ln.Addr())
	}
	if _, err := Listen("127.0.0.1:99999"); err == nil {
		t.Error("port 99999 accepted")
	}
}

// Clients that scrape once and keep their connection open cost at most
// MaxConns connections: the longest idle ones are closed as new ones
// come, and a fresh scrape is answered at once.
func TestIdleClientsAreBounded(t *testing.T) {
	ln, err := Listen(":0")
	if err != nil {
		t.Fatal(err)
	}
	c := New(4096, 1, time.Minute)
	c.Add(stream.Record{Snapshot: snapshot()})
	srv := Serve(ln, c)
	defer srv.Close()
	addr := ln.Addr().String()
	get := func(conn net.Conn) error {
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := fmt.Fprintf(conn, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			return err
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return err
	}
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for range 4 * MaxConns {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, conn)
		if err := get(conn); err != nil {
			t.Fatalf("scrape %d: %v", len(held), err)
		}
	}
	start := time.Now()
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + addr + "/metrics")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("a fresh scrape with %d idle clients: %v", len(held), err)
	}
	resp.Body.Close()
	if d := time.Since(start); d > time.Second {
		t.Errorf("a fresh scrape took %v", d)
	}
	// The oldest clients were closed by the server.
	closed := 0
	for _, conn := range held {
		conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		if _, err := conn.Read(make([]byte, 1)); err == io.EOF {
			closed++
		}
	}
	if open := len(held) - closed; open > MaxConns {
		t.Errorf("%d of %d idle clients still connected, want at most %d", open, len(held), MaxConns)
	}
	resp, err = http.Get("http://" + addr + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Errorf("healthz: %v %v", err, resp)
	}
}

func TestMissedRunsByEvent(t *testing.T) {
	c := New(4096, 10, time.Minute)
	snap := snapshot()
	snap.Totals.MissedRuns, snap.Totals.Missed = 2, map[string]uint64{stream.EventDrops: 2}
	c.Add(stream.Record{Snapshot: snap})
	if v := series(t, c)["tcpmemtrace_missed_runs_total{event=memory drops}"]; v != 2 {
		t.Errorf("missed runs %v", v)
	}
}
