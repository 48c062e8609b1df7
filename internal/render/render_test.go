package render

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tcpmemtrace/tcpmemtrace/internal/aggregate"
	"github.com/tcpmemtrace/tcpmemtrace/internal/kmsg"
	"github.com/tcpmemtrace/tcpmemtrace/internal/termsafe"
	"github.com/tcpmemtrace/tcpmemtrace/stream"
)

var update = flag.Bool("update", false, "rewrite the golden files")

var t0 = time.Date(2026, 11, 25, 16, 43, 37, 637_000_000, time.UTC)

func info() stream.Info {
	return stream.Info{
		Hostname: "vm", Kernel: "6.18.44", BootID: "b00t", PageSize: 4096, Start: t0,
		TCPMem: [3]int64{287898, 383866, 575796}, TCPRmem: [3]int64{4096, 131072, 33554432},
		TCPWmem: [3]int64{4096, 16384, 4194304}, MaxOrphans: 131072, NetNS: 4026532200,
		Hooks: []stream.Hook{
			{Event: stream.EventAborts, Using: "tp_btf/tcp_send_reset reason TCP_ABORT_ON_MEMORY=13",
				Rejected: []stream.Rejected{{Hook: "fexit/tcp_check_oom", Reason: "operation not permitted"}}},
			{Event: stream.EventRefusals},
		},
		DropReasons: map[string]uint32{"PROTO_MEM": 20},
		Notes:       []string{"memory_pressure and tcp_mem are read with bpf_probe_read_kernel"},
	}
}

func events() []stream.Event {
	lim := [3]int64{1000, 2000, 3000}
	reader := stream.Socket{Cookie: 7, NetNS: 4026532200, Family: 2, Protocol: 6, State: 1,
		Src: netip.MustParseAddrPort("127.0.0.1:43137"), Dst: netip.MustParseAddrPort("127.0.0.1:43498"),
		RmemAlloc: 33573, Rcvbuf: 131072, Sndbuf: 3939840}
	writer := stream.Socket{Cookie: 8, NetNS: 4026532200, Family: 2, Protocol: 6, State: 7,
		Src: netip.MustParseAddrPort("127.0.0.1:43498"), Dst: netip.MustParseAddrPort("127.0.0.1:43137"),
		WmemQueued: 48448, Sndbuf: 87040}
	return []stream.Event{
		{Time: t0, Kind: stream.KindPressureEnter, Mem: stream.Mem{Allocated: 2029, Limits: lim}, PressureID: 4295,
			CurrentPID: 7390, Holders: []stream.Holder{{Process: stream.Process{PID: 7386, Comm: "tmt-reader"}, Sockets: 300, RecvBytes: 7 << 20,
				StalledSockets: 120, StalledBytes: 4 << 20, StalledMs: 93400},
				{Process: stream.Process{PID: 7390, Comm: "tmt-writer"}, Sockets: 300, SendBytes: 3 << 20}}},
		{Time: t0, Kind: stream.KindRefusal, Socket: reader, Owner: stream.Owner{PID: 7386, Comm: "tmt-reader"},
			Mem: stream.Mem{Allocated: 2029, Limits: lim}, CurrentPID: 7390},
		{Time: t0, Kind: stream.KindDrop, Reason: "PROTO_MEM", DropCause: "global_pressure", Bytes: 32741, Truesize: 33536, Socket: reader,
			Owner: stream.Owner{PID: 7386, Comm: "tmt-reader", CgroupID: 1}, Mem: stream.Mem{Allocated: 2029, Limits: lim},
			CurrentPID: 7390, PressureID: 4295},
		{Time: t0.Add(4 * time.Second), Kind: stream.KindAbort, Cause: stream.CauseOrphans,
			Socket: stream.Socket{Cookie: 9, NetNS: 4026532200, Family: 2, Protocol: 6, State: 4, Orphan: true,
				ClosedAt: t0.Add(2900 * time.Millisecond), WmemQueued: 9000,
				Src: netip.MustParseAddrPort("127.0.0.1:43500"), Dst: netip.MustParseAddrPort("127.0.0.1:43137")},
			Owner: stream.Owner{PID: 7390, Comm: "tmt-writer"}, Mem: stream.Mem{Allocated: 300, Limits: lim}},
		{Time: t0.Add(4 * time.Second), Kind: stream.KindAbort, Cause: stream.CauseMemory, Reason: "TCP_ABORT_ON_MEMORY",
			Socket: writer, Owner: stream.Owner{PID: 7390, Comm: "tmt-writer"}, Mem: stream.Mem{Allocated: 3068, Limits: lim},
			CurrentPID: 7390},
		{Time: t0.Add(4500 * time.Millisecond), Kind: stream.KindPressureLeave, Mem: stream.Mem{Allocated: 120, Limits: lim}, PressureID: 4295},
		{Time: t0.Add(5 * time.Second), Kind: stream.KindDrop, Reason: "SOCKET_RCVBUFF", Bytes: 1200,
			Socket: stream.Socket{NetNS: 4026531840, Protocol: 17}},
	}
}

func summary() aggregate.Summary {
	a := aggregate.New(t0)
	tot := stream.Totals{}
	tot.Events[stream.MemAborts], tot.PressureEpisodes, tot.Events[stream.RefusalsRecv], tot.Events[stream.SendStalls] = 62, 1, 916, 7
	tot.Causes[stream.CauseGlobalHardLimit], tot.Causes[stream.CauseGlobalPressure] = 400, 51
	tot.Drops[stream.ProtoTCP][stream.ReasonProtoMem], tot.DropBytes[stream.ProtoTCP][stream.ReasonProtoMem] = 451, 18245632
	tot.Drops[stream.ProtoOther][stream.ReasonSocketRcvbuff], tot.DropBytes[stream.ProtoOther][stream.ReasonSocketRcvbuff] = 1, 1200
	for _, e := range events() {
		a.Add(stream.Record{Event: &e})
	}
	reader := stream.OwnerCounts{Owner: stream.Owner{PID: 7386, Comm: "tmt-reader", CgroupID: 9, CgroupPath: "/system.slice/docker-" +
		"4f6d2c3b1a0e9f8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a29180706f5e4d3c2b1.scope",
		Container: stream.Container{Runtime: "docker", ID: "4f6d2c3b1a0e9f8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a29180706f5e4d3c2b1"}}, Counts: stream.Counts{}}
	reader.Drops[stream.ProtoTCP][stream.ReasonProtoMem], reader.DropBytes[stream.ProtoTCP][stream.ReasonProtoMem], reader.Events[stream.RefusalsRecv] = 451, 18245632, 916
	writer := stream.OwnerCounts{Owner: stream.Owner{PID: 7390, Comm: "tmt-writer", CgroupID: 1, CgroupPath: "/"}, Counts: stream.Counts{}}
	writer.Events[stream.MemAborts] = 62
	unknown := stream.OwnerCounts{Counts: stream.Counts{}}
	unknown.Drops[stream.ProtoOther][stream.ReasonSocketRcvbuff], unknown.DropBytes[stream.ProtoOther][stream.ReasonSocketRcvbuff] = 1, 1200
	// The final look: the reader has not read its sockets (cookie 7 among
	// them) for 113 s; the writer's queues are full, and it is no reader.
	a.Add(stream.Record{Snapshot: &stream.Snapshot{Time: t0.Add(22 * time.Second), Totals: tot, Final: true,
		Owners: []stream.OwnerCounts{unknown, reader, writer},
		Holders: []stream.Holder{{Process: stream.Process{PID: 7390, Comm: "tmt-writer"}, Sockets: 300, SendBytes: 9 << 20, CgroupPath: "/"},
			{Process: stream.Process{PID: 7386, Comm: "tmt-reader"}, Sockets: 300, RecvBytes: 7 << 20, StalledSockets: 120, StalledBytes: 4 << 20,
				StalledMs: 113400, CgroupPath: reader.CgroupPath, Container: &reader.Container}},
		Stalled: []stream.StalledSocket{{Cookie: 7, Process: stream.Process{PID: 7386, Comm: "tmt-reader"}, Bytes: 33573, StalledMs: 115000}}}})
	a.SetKernelLog(kmsg.Counts{Lines: map[string]int{"mem_aborts": 10}, Suppressed: 57})
	return a.Summary()
}

func render(t *testing.T, s Sink, buf *bytes.Buffer) {
	t.Helper()
	if err := s.Start(info()); err != nil {
		t.Fatal(err)
	}
	for _, e := range events() {
		if err := s.Event(&e); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Summary(info(), summary()); err != nil {
		t.Fatal(err)
	}
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	p := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(p, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (go test ./internal/render -update to accept):\n%s", name, got)
	}
}

func TestTextGolden(t *testing.T) {
	var buf bytes.Buffer
	render(t, NewText(&buf, ByPID), &buf)
	golden(t, "trace.txt", buf.Bytes())
}

// Each grouping's table; the rest of the output is the same as above.
func TestTextGroupings(t *testing.T) {
	for _, by := range Groupings {
		var buf bytes.Buffer
		tx := NewText(&buf, by)
		tx.pageSize = 4096
		if err := tx.Summary(info(), summary()); err != nil {
			t.Fatal(err)
		}
		golden(t, "summary-by-"+by+".txt", buf.Bytes())
	}
}

func TestJSONGolden(t *testing.T) {
	var buf bytes.Buffer
	render(t, NewJSON(&buf), &buf)
	golden(t, "trace.jsonl", buf.Bytes())
}

// The schema promises: every line an object with a type; start first,
// summary last with the documented totals keys.
func TestJSONSchema(t *testing.T) {
	var buf bytes.Buffer
	render(t, NewJSON(&buf), &buf)
	lines := bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n"))
	var objs []map[string]any
	for _, l := range lines {
		var o map[string]any
		if err := json.Unmarshal(l, &o); err != nil {
			t.Fatalf("%s: %v", l, err)
		}
		if _, ok := o["type"].(string); !ok {
			t.Errorf("no type: %s", l)
		}
		objs = append(objs, o)
	}
	if objs[0]["type"] != "start" || objs[len(objs)-1]["type"] != "summary" {
		t.Fatalf("first %v, last %v", objs[0]["type"], objs[len(objs)-1]["type"])
	}
	tcpMem := objs[0]["tcp_mem"].(map[string]any)
	if tcpMem["pages"].([]any)[2].(float64) != 575796 || tcpMem["bytes"].([]any)[2].(float64) != 575796*4096 {
		t.Errorf("tcp_mem %v", tcpMem)
	}
	totals := objs[len(objs)-1]["totals"].(map[string]any)
	for _, k := range []string{"mem_aborts", "orphan_aborts", "pressure_episodes", "drops", "drop_bytes", "lost_samples"} {
		if _, ok := totals[k]; !ok {
			t.Errorf("totals lack %q", k)
		}
	}
	if totals["drops"].(map[string]any)["PROTO_MEM"].(float64) != 451 {
		t.Errorf("drops %v", totals["drops"])
	}
	sum := objs[len(objs)-1]
	if c := totals["drops_by_cause"].(map[string]any); c["global_hard_limit"].(float64) != 400 || len(c) != 5 {
		t.Errorf("drops_by_cause %v", c)
	}
	tl := sum["pressure_timeline"].([]any)
	if len(tl) != 1 || tl[0].(map[string]any)["duration_s"].(float64) != 4.5 || tl[0].(map[string]any)["end"] == nil {
		t.Errorf("pressure_timeline %v", tl)
	}
	for _, o := range objs {
		if o["type"] == "drop" && o["reason"] == "PROTO_MEM" && o["cause"] != "global_pressure" {
			t.Errorf("drop without its cause: %v", o)
		}
	}
	for _, k := range []string{"by_process", "by_cgroup", "by_comm", "top_sockets"} {
		if _, ok := sum[k].([]any); !ok {
			t.Errorf("summary lacks the list %q", k)
		}
	}
	// by_process: the most active owner first, with the same counters as totals.
	p := sum["by_process"].([]any)[0].(map[string]any)
	if p["pid"].(float64) != 7390 || p["comm"] != "tmt-writer" || p["mem_aborts"].(float64) != 62 || p["cgroup"] != "/" {
		t.Errorf("by_process[0] %v", p)
	}
	for _, k := range []string{"mem_aborts", "orphan_aborts", "drops", "drop_bytes", "refusals_send", "refusals_recv"} {
		if _, ok := p[k]; !ok {
			t.Errorf("by_process entries lack %q", k)
		}
	}
	c := sum["by_cgroup"].([]any)[1].(map[string]any)
	if c["container"].(map[string]any)["runtime"] != "docker" || c["drops"].(map[string]any)["PROTO_MEM"].(float64) != 451 {
		t.Errorf("by_cgroup[1] %v", c)
	}
	for _, o := range objs[1 : len(objs)-1] {
		if o["type"] == "abort" && o["pid"].(float64) != 7390 {
			t.Errorf("abort %v", o)
		}
		if o["type"] == "abort" && o["cause"] == "orphans" {
			if so := o["socket"].(map[string]any); so["orphan"] != true || so["since_close_ms"].(float64) != 1100 {
				t.Errorf("orphan abort %v", so)
			}
		}
	}
}

// A process names itself: a comm or cgroup path with escape sequences is
// shown escaped in text, and exactly in JSON (where the encoder escapes).
func TestHostileNames(t *testing.T) {
	hostile := "\x1b]0;owned\a\x1b[2J"
	cg := "/evil\x1b]52;c;aGk=\a.scope"
	e := events()[2]
	e.Owner.Comm, e.Owner.CgroupPath = hostile, cg
	o := stream.OwnerCounts{Owner: e.Owner}
	o.Drops[stream.ProtoTCP][stream.ReasonProtoMem] = 1
	sum := aggregate.Summary{Start: t0, End: t0, Owners: []stream.OwnerCounts{o}}

	for _, by := range Groupings {
		var buf bytes.Buffer
		tx := NewText(&buf, by)
		if err := tx.Start(info()); err != nil {
			t.Fatal(err)
		}
		tx.Event(&e)
		tx.Summary(info(), sum)
		if bytes.ContainsAny(buf.Bytes(), "\x1b\a") {
			t.Errorf("--by %s: text output holds raw control bytes:\n%q", by, buf.String())
		}
		if by == ByPID && !bytes.Contains(buf.Bytes(), []byte(`\x1b]0;owned\a`)) {
			t.Errorf("the escaped comm is missing:\n%s", buf.String())
		}
	}
	var buf bytes.Buffer
	j := NewJSON(&buf)
	j.Event(&e)
	j.Summary(info(), sum)
	j.Flush()
	var ev EventObject
	if err := json.Unmarshal(bytes.SplitN(buf.Bytes(), []byte("\n"), 2)[0], &ev); err != nil || ev.Comm != hostile || ev.Cgroup != cg {
		t.Errorf("JSON keeps the exact bytes: %v %q %q", err, ev.Comm, ev.Cgroup)
	}
	if bytes.ContainsAny(buf.Bytes(), "\x1b\a") {
		t.Error("JSON holds raw control bytes")
	}
}

// When the kernel skipped runs of a hook, the counts that hook keeps say
// they may miss as many, where they stand; JSON has them by event.
func TestMissedRunsShownAtTheirCounts(t *testing.T) {
	sum := summary()
	sum.Totals.MissedRuns = 3
	sum.Totals.Missed = map[string]uint64{stream.EventDrops: 2, stream.EventAborts: 1}
	var buf bytes.Buffer
	tx := NewText(&buf, ByPID)
	tx.pageSize = 4096
	tx.Summary(info(), sum)
	lines := strings.Split(buf.String(), "\n")
	for _, want := range []struct{ row, note string }{
		{"memory drops PROTO_MEM", "may miss up to 2"},
		{"memory aborts: out of memory", "may miss up to 1"},
		{"hook runs skipped by the kernel", "3"},
	} {
		found := false
		for _, l := range lines {
			if strings.Contains(l, want.row) {
				found = true
				if !strings.Contains(l, want.note) {
					t.Errorf("%q lacks %q", l, want.note)
				}
			}
		}
		if !found {
			t.Errorf("no %q row", want.row)
		}
	}
	for _, l := range lines {
		if strings.Contains(l, "pressure episodes") && strings.Contains(l, "may miss") {
			t.Errorf("%q: pressure's hook missed nothing", l)
		}
	}
	buf.Reset()
	j := NewJSON(&buf)
	j.Summary(info(), sum)
	var o SummaryObject
	if err := json.Unmarshal(buf.Bytes(), &o); err != nil || o.Totals.Missed[stream.EventDrops] != 2 {
		t.Errorf("%v %+v", err, o.Totals.Missed)
	}
}

// The runtime's names stand for the container wherever an owner is shown:
// the text tables and the JSON; escaped like any name in text.
func TestContainerNames(t *testing.T) {
	pod := stream.Container{Runtime: "containerd", ID: strings.Repeat("a1", 32), Pod: "0d6f7c1e-2b3a-4c5d-8e9f-0a1b2c3d4e5f",
		Name: "nginx", PodName: "web-7d9f", Namespace: "shop"}
	named := stream.Container{Runtime: "podman", ID: strings.Repeat("b2", 32), Name: "db\x1b[2J"}
	o1 := stream.OwnerCounts{Owner: stream.Owner{PID: 10, Comm: "nginx", CgroupPath: "/kubepods/pod/cri-containerd-x.scope", Container: pod}}
	o1.Drops[stream.ProtoTCP][stream.ReasonProtoMem] = 3
	o2 := stream.OwnerCounts{Owner: stream.Owner{PID: 11, Comm: "postgres", CgroupPath: "/machine.slice/libpod-y.scope", Container: named}}
	o2.Events[stream.MemAborts] = 1
	sum := aggregate.Summary{Start: t0, End: t0, Owners: []stream.OwnerCounts{o1, o2}}
	for _, by := range []string{ByPID, ByCgroup} {
		var buf bytes.Buffer
		if err := NewText(&buf, by).Summary(info(), sum); err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"shop/web-7d9f/nginx", `db\x1b[2J`} {
			if !strings.Contains(buf.String(), want) {
				t.Errorf("--by %s: %q missing:\n%s", by, want, buf.String())
			}
		}
	}
	var buf bytes.Buffer
	j := NewJSON(&buf)
	if err := j.Summary(info(), sum); err != nil {
		t.Fatal(err)
	}
	j.Flush()
	var s SummaryObject
	if err := json.Unmarshal(bytes.TrimSpace(buf.Bytes()), &s); err != nil {
		t.Fatal(err)
	}
	var got []stream.Container
	for _, p := range s.ByProcess {
		got = append(got, *p.Container)
	}
	for _, g := range s.ByCgroup {
		got = append(got, *g.Container)
	}
	if len(got) != 4 || !slices.Contains(got, pod) || !slices.Contains(got, named) {
		t.Errorf("JSON containers %+v, want the runtime's names of both", got)
	}
}

// A flight recording's replay says why it was written; notices say where
// files went, escaped in text, whole in JSON.
func TestFlightTriggerAndNotices(t *testing.T) {
	in := info()
	in.Trigger = &stream.Trigger{Kind: stream.TriggerAbort, Time: t0, Detail: "TCP: out of memory\x1b[2J", From: t0.Add(-10 * time.Minute)}
	n := &stream.Notice{Time: t0, Kind: stream.NoticeFlightWritten, Text: "flight recorder: wrote /var/tmp/tcpmem-x.tmtrec", File: "/var/tmp/tcpmem-x.tmtrec", Trigger: "abort"}
	var txt bytes.Buffer
	tx := NewText(&txt, ByPID)
	if err := tx.Start(in); err != nil {
		t.Fatal(err)
	}
	tx.Notice(n)
	tx.Flush()
	for _, want := range []string{"flight recording: triggered by abort at", `TCP: out of memory\x1b[2J`, "its counts run from", "wrote /var/tmp/tcpmem-x.tmtrec"} {
		if !strings.Contains(txt.String(), want) {
			t.Errorf("text lacks %q:\n%s", want, txt.String())
		}
	}
	var js bytes.Buffer
	j := NewJSON(&js)
	j.Start(in)
	j.Notice(n)
	j.Flush()
	lines := strings.Split(strings.TrimSpace(js.String()), "\n")
	var start StartObject
	var notice map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &start); err != nil || start.Trigger == nil || start.Trigger.Kind != "abort" || !start.Trigger.From.Equal(in.Trigger.From) {
		t.Errorf("start %v: %+v", err, start.Trigger)
	}
	if err := json.Unmarshal([]byte(lines[1]), &notice); err != nil || notice["type"] != "notice" || notice["file"] != n.File || notice["kind"] != n.Kind {
		t.Errorf("notice %v: %v", err, notice)
	}
}

// Who stopped reading: the sentence in the summary and in the pressure
// timeline, the stall age of the socket the events name (by cookie) and
// none for the others; names escaped in text, exact in JSON.
func TestStalledShown(t *testing.T) {
	sum := summary()
	hostile := "\x1b]0;owned\a"
	sum.Stalled.Holders[0].Comm = hostile
	var buf bytes.Buffer
	tx := NewText(&buf, BySocket)
	if err := tx.Summary(info(), sum); err != nil {
		t.Fatal(err)
	}
	text := buf.String()
	for _, want := range []string{
		"held by: pid 7386 (tmt-reader) has not read for 93 s with 4.0 MiB queued on 120 sockets; 7390 tmt-writer 3.0 MiB in 300 sockets",
		"NOT READING (at 16:43:59: unread data, nothing new for 5 s or more)\n" +
			`  pid 7386 (\x1b]0;owned\a) in docker:4f6d2c3b1a0e has not read for 113 s with 4.0 MiB queued on 120 sockets`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("text lacks %q:\n%s", want, text)
		}
	}
	if strings.ContainsAny(text, "\x1b\a") {
		t.Errorf("raw control bytes:\n%q", text)
	}
	rows := map[string]string{}
	for _, l := range strings.Split(text, "\n") {
		if f := strings.Fields(l); len(f) > 6 && strings.HasPrefix(f[0], "127.0.0.1:") {
			rows[f[0]] = f[5] + " " + f[6]
		}
	}
	if rows["127.0.0.1:43137"] != "115 s" || !strings.HasPrefix(rows["127.0.0.1:43498"], "- ") || len(rows) != 3 {
		t.Errorf("NOT READ column: %q", rows)
	}

	buf.Reset()
	j := NewJSON(&buf)
	if err := j.Summary(info(), sum); err != nil {
		t.Fatal(err)
	}
	var o SummaryObject
	if err := json.Unmarshal(buf.Bytes(), &o); err != nil {
		t.Fatal(err)
	}
	if st := o.Stalled; st == nil || !st.Time.Equal(t0.Add(22*time.Second)) || len(st.Holders) != 1 || st.Holders[0].Comm != hostile ||
		st.Holders[0].StalledMs != 113400 || len(st.Sockets) != 1 || st.Sockets[0].Cookie != 7 {
		t.Errorf("stalled %+v", o.Stalled)
	}
	for _, so := range o.TopSockets {
		if want := map[uint64]uint64{7: 115000}[so.Cookie]; so.StalledMs != want {
			t.Errorf("top socket %d: stalled_ms %d, want %d", so.Cookie, so.StalledMs, want)
		}
	}
	if h := o.PressureEpisodes[0].HoldersAtStart; h[0].StalledSockets != 120 || h[1].StalledSockets != 0 {
		t.Errorf("holders at start %+v", h)
	}
	// Nobody stalled: no section, no key.
	sum.Stalled = nil
	buf.Reset()
	NewText(&buf, ByPID).Summary(info(), sum)
	if strings.Contains(buf.String(), "NOT READING") {
		t.Errorf("a NOT READING section with nobody stalled:\n%s", buf.String())
	}
	buf.Reset()
	j = NewJSON(&buf)
	j.Summary(info(), sum)
	if bytes.Contains(buf.Bytes(), []byte(`"stalled"`)) {
		t.Errorf("a stalled key with nobody stalled")
	}
}

// Where the kernel freed a drop: on its line, and the places in the
// summary; nothing where the kernel gave none.
func TestDropPlaces(t *testing.T) {
	e := events()[2]
	e.Location = "tcp_rcv_established+0x2fe"
	sum := summary()
	sum.Totals.Places = []stream.Place{{Name: "tcp_rcv_established+0x2fe", Reason: "PROTO_MEM", Protocol: "tcp", Drops: 451}}
	var buf bytes.Buffer
	tx := NewText(&buf, ByPID)
	tx.Event(&e)
	tx.Summary(info(), sum)
	for _, want := range []string{"at tcp_rcv_established+0x2fe", "    at tcp_rcv_established+0x2fe              451  PROTO_MEM tcp"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("text lacks %q:\n%s", want, buf.String())
		}
	}
	buf.Reset()
	j := NewJSON(&buf)
	j.Event(&e)
	j.Summary(info(), sum)
	j.Flush()
	for _, want := range []string{`"location":"tcp_rcv_established+0x2fe"`, `"drops_by_place":[{"place":"tcp_rcv_established+0x2fe","reason":"PROTO_MEM","protocol":"tcp","drops":451}]`} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("JSON lacks %s:\n%s", want, buf.String())
		}
	}
	buf.Reset()
	NewText(&buf, ByPID).Summary(info(), summary())
	if strings.Contains(buf.String(), "  at ") {
		t.Errorf("places shown where the kernel gave none:\n%s", buf.String())
	}
}

// The event line is appended by hand for speed; its columns must stay
// what lineFormat (the header's format) says, wide or multi-byte values
// included.
func TestLineMatchesFormat(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 16, 43, 37, 637000000, time.UTC)
	sock := stream.Socket{Family: 10, Protocol: 6, State: 1,
		Src: netip.MustParseAddrPort("[fd00::1234:5678:9abc]:43137"), Dst: netip.MustParseAddrPort("[fd00::1]:443")}
	for _, e := range []stream.Event{
		{Time: t0, Kind: stream.KindDrop, Reason: "PROTO_MEM", Bytes: 1, Socket: sock, Owner: stream.Owner{PID: 4294967294, Comm: "ünïcödé-wörkér"}},
		{Time: t0, Kind: stream.KindAbort, Cause: stream.CauseMemory, Socket: sock, Owner: stream.Owner{PID: 7, Comm: "a-very-long-command-name"}},
		{Time: t0, Kind: stream.KindPressureEnter, Mem: stream.Mem{Allocated: 5, Limits: [3]int64{1, 2, 3}}},
		{Time: t0, Kind: stream.KindRefusal, Send: true, Socket: sock, Owner: stream.Owner{PID: 1, Comm: "\x1b[2J"}},
	} {
		detail, event := eventDetail(nil, &e)
		pid, comm := "-", "-"
		if e.Owner.PID != 0 {
			pid, comm = fmt.Sprint(e.Owner.PID), termsafe.Name(e.Owner.Comm)
		}
		laddr, raddr, state := "-", "-", "-"
		if e.Socket.Src.IsValid() {
			laddr, raddr, state = e.Socket.Src.String(), e.Socket.Dst.String(), e.Socket.State.String()
		}
		want := fmt.Sprintf(lineFormat, e.Time.Format("15:04:05.000"), pid, comm, laddr, raddr, state, event, detail)
		if got := string(appendLine(nil, &e, event, detail)); got != want {
			t.Errorf("line\n got %q\nwant %q", got, want)
		}
	}
}
