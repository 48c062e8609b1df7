package stream

import (
	"encoding/json"
	"reflect"
	"testing"
)

func sample() Counts {
	var c Counts
	c.Events[MemAborts], c.Events[SendStalls] = 3, 7
	c.Drops[ProtoTCP][ReasonProtoMem], c.DropBytes[ProtoTCP][ReasonProtoMem] = 10, 1000
	c.Drops[ProtoOther][ReasonSocketRcvbuff] = 2
	c.Causes[CauseMemcg] = 10
	return c
}

// The JSON of schema version 1: the aborts, the drop maps with every
// tracked reason, the other counters, the causes; and back again.
func TestCountsJSON(t *testing.T) {
	c := sample()
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"mem_aborts":3,"orphan_aborts":0,` +
		`"drops":{"PROTO_MEM":10,"SOCKET_BACKLOG":0,"SOCKET_RCVBUFF":0,"TCP_OFO_QUEUE_PRUNE":0},` +
		`"drop_bytes":{"PROTO_MEM":1000,"SOCKET_BACKLOG":0,"SOCKET_RCVBUFF":0,"TCP_OFO_QUEUE_PRUNE":0},` +
		`"other_drops":{"PROTO_MEM":0,"SOCKET_BACKLOG":0,"SOCKET_RCVBUFF":2,"TCP_OFO_QUEUE_PRUNE":0},` +
		`"other_drop_bytes":{"PROTO_MEM":0,"SOCKET_BACKLOG":0,"SOCKET_RCVBUFF":0,"TCP_OFO_QUEUE_PRUNE":0},` +
		`"refusals_send":0,"refusals_recv":0,"send_stalls":7,` +
		`"drops_by_cause":{"global_hard_limit":0,"global_pressure":0,"memcg":10,"rcvbuf":0,"unknown":0}}`
	if string(b) != want {
		t.Errorf("got  %s\nwant %s", b, want)
	}
	var back Counts
	if err := json.Unmarshal(b, &back); err != nil || back != c {
		t.Errorf("round trip: %v\n%+v\n%+v", err, back, c)
	}
}

func TestTotalsAndOwnersJSON(t *testing.T) {
	tot := Totals{Counts: sample(), PressureEpisodes: 1, LostSamples: 2, Unsampled: 3, MissedRuns: 4}
	o := OwnerCounts{Owner: Owner{PID: 42, Comm: "nginx", CgroupPath: "/x", Container: Container{Runtime: "docker", ID: "abc"}}, Counts: sample()}
	for _, v := range []any{&tot, &o} {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		back := reflect.New(reflect.TypeOf(v).Elem())
		if err := json.Unmarshal(b, back.Interface()); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(back.Interface(), v) {
			t.Errorf("%T round trip:\n%s\n%+v", v, b, back.Interface())
		}
	}
	b, _ := json.Marshal(tot)
	if s := string(b); s[len(s)-len(`"missed_runs":4}`):] != `"missed_runs":4}` || s[:14] != `{"mem_aborts":` {
		t.Errorf("totals: counts first, then their own fields: %s", s)
	}
}

func TestCountsArithmetic(t *testing.T) {
	var c Counts
	if !c.IsZero() {
		t.Error("zero counts are not zero")
	}
	s := sample()
	c.Add(&s)
	c.Add(&s)
	if c.Aborts() != 6 || c.TCPDrops() != 20 || c.ReasonDrops(ReasonSocketRcvbuff) != 4 || c.IsZero() {
		t.Errorf("%+v", c)
	}
	if n, b := c.AllDrops(); n != 24 || b != 2000 {
		t.Errorf("all drops %d, %d bytes", n, b)
	}
}

// Names are the C enums' and reach every consumer.
func TestNames(t *testing.T) {
	if len(Reasons) != 4 || Reasons[0] != ReasonProtoMem || MemoryDropReasons[3] != "SOCKET_RCVBUFF" {
		t.Errorf("reasons %v %v", Reasons, MemoryDropReasons)
	}
	if r, ok := ReasonByName("SOCKET_BACKLOG"); !ok || r != ReasonSocketBacklog {
		t.Errorf("by name: %v %v", r, ok)
	}
	if _, ok := ReasonByName("NONE"); ok {
		t.Error("NONE is a reason")
	}
	if KindPressureEnter.String() != "pressure_enter" || CauseOrphans != "orphans" || Kind(99).String() != "kind(99)" {
		t.Error("kind or cause names")
	}
	for _, c := range Counters {
		if c.Doc().Label == "" || c.Doc().Help == "" {
			t.Errorf("counter %s undescribed", c)
		}
	}
}
