package stream

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
)

// Counts are the counters kept for the whole trace and for each owner, as
// the kernel keeps them (struct counts): arrays indexed by the enums of
// bpf/tcpmemtrace.h. A counter added to enum counter is summed, compared,
// exported and serialised by the loops below with no further Go change.
type Counts struct {
	Events [NumCounters]uint64
	// Drops and DropBytes are memory drops by protocol and reason.
	Drops     [NumProtos][NumReasons]uint64
	DropBytes [NumProtos][NumReasons]uint64
	// Causes are the TCP PROTO_MEM drops (arriving data refused memory) by
	// cause: they sum to Drops[ProtoTCP][ReasonProtoMem] when every drop
	// had its socket.
	Causes [NumDropCauses]uint64
}

// Reasons are the tracked drop reasons in slot order (the order of the
// recording format); MemoryDropReasons are their kernel names.
var (
	Reasons           = named[Reason](reasonNames[:], int(ReasonNone))
	MemoryDropReasons = names(Reasons)
)

// Counters and DropCauses are every counter and every cause, in order.
var (
	Counters   = named[Counter](counterNames[:], -1)
	DropCauses = named[DropCause](dropCauseNames[:], -1)
)

// named lists the values that have a name, skip aside.
func named[T ~uint8](all []string, skip int) []T {
	var out []T
	for i, n := range all {
		if n != "" && i != skip {
			out = append(out, T(i))
		}
	}
	return out
}

func names[T interface {
	~uint8
	String() string
}](vs []T) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = v.String()
	}
	return out
}

func (c Counter) String() string    { return nameOf(counterNames[:], int(c), "counter") }
func (r Reason) String() string     { return nameOf(reasonNames[:], int(r), "reason") }
func (p Proto) String() string      { return nameOf(protoNames[:], int(p), "proto") }
func (dc DropCause) String() string { return nameOf(dropCauseNames[:], int(dc), "cause") }
func nameOf(all []string, i int, kind string) string {
	if i < len(all) && all[i] != "" {
		return all[i]
	}
	return kind + strconv.Itoa(i)
}

// ReasonByName is the slot of a kernel drop reason name.
func ReasonByName(name string) (Reason, bool) {
	for _, r := range Reasons {
		if r.String() == name {
			return r, true
		}
	}
	return ReasonNone, false
}

// DropCauseByName is the cause of a name.
func DropCauseByName(name string) (DropCause, bool) {
	for _, dc := range DropCauses {
		if dc.String() == name {
			return dc, true
		}
	}
	return CauseUnknown, false
}

// Add adds o into c.
func (c *Counts) Add(o *Counts) {
	for i := range c.Events {
		c.Events[i] += o.Events[i]
	}
	for p := range c.Drops {
		for r := range c.Drops[p] {
			c.Drops[p][r] += o.Drops[p][r]
			c.DropBytes[p][r] += o.DropBytes[p][r]
		}
	}
	for i := range c.Causes {
		c.Causes[i] += o.Causes[i]
	}
}

// IsZero reports whether nothing was counted: an owner with no activity.
func (c *Counts) IsZero() bool { return *c == Counts{} }

// Aborts is every memory abort, whatever its cause.
func (c *Counts) Aborts() uint64 { return c.Events[MemAborts] + c.Events[OrphanAborts] }

// Refusals is every refused allocation, either direction.
func (c *Counts) Refusals() uint64 { return c.Events[RefusalsSend] + c.Events[RefusalsRecv] }

// ProtoDrops sums one protocol's memory drops over reasons, and their bytes.
func (c *Counts) ProtoDrops(p Proto) (drops, bytes uint64) {
	for r := range c.Drops[p] {
		drops += c.Drops[p][r]
		bytes += c.DropBytes[p][r]
	}
	return drops, bytes
}

// TCPDrops sums the TCP memory drops over reasons.
func (c *Counts) TCPDrops() uint64 {
	n, _ := c.ProtoDrops(ProtoTCP)
	return n
}

// AllDrops sums the memory drops of every protocol over reasons, and
// their bytes.
func (c *Counts) AllDrops() (drops, bytes uint64) {
	for p := range Proto(NumProtos) {
		n, b := c.ProtoDrops(p)
		drops, bytes = drops+n, bytes+b
	}
	return drops, bytes
}

// ReasonDrops is a reason's drops of every protocol.
func (c *Counts) ReasonDrops(r Reason) uint64 {
	var n uint64
	for p := range c.Drops {
		n += c.Drops[p][r]
	}
	return n
}

// Totals are the exact counts kept in the kernel since the tracer started.
// They do not depend on the ringbuf: a full ring loses events, not counts.
type Totals struct {
	Counts
	PressureEpisodes uint64 `json:"pressure_episodes"`
	// LostSamples are events that found the ringbuf full.
	LostSamples uint64 `json:"lost_samples"`
	// Unsampled are drop and refusal events over the record rate: counted,
	// not sent as records.
	Unsampled uint64 `json:"unsampled"`
	// MissedRuns are hook runs the kernel skipped because a program of
	// ours was already running on that CPU (BPF recursion guard, 5.12+):
	// what they would have counted is missing. Missed says which events'
	// counts they would have been in (Hook.Event names); nil when none.
	MissedRuns uint64            `json:"missed_runs"`
	Missed     map[string]uint64 `json:"missed_runs_by_event,omitempty"`
	// Places are the memory drops by where the kernel freed the packets,
	// exact; none where the kernel gives no location (before 5.17, and
	// TCP's drops before 6.11).
	Places []Place `json:"drops_by_place,omitempty"`
}

// Place is one place in the kernel that drops packets for memory.
type Place struct {
	Addr     uint64 `json:"-"`     // kfree_skb's location, as the source gives it
	Name     string `json:"place"` // function+0xoffset; "" until named
	Reason   string `json:"reason"`
	Protocol string `json:"protocol"` // tcp, other
	Drops    uint64 `json:"drops"`
}

// OwnerCounts are one owner's exact counts. An owner is a process in a
// cgroup; PID 0 collects events on sockets whose owner is not known.
type OwnerCounts struct {
	Owner
	Counts
}

// The JSON form of the counts (version 1 of docs/json.md and of the
// recording format): scalar counters by name, drops in maps by reason name
// (every tracked reason present), TCP and other protocols apart, and the
// causes in a map. The aborts, first in enum counter, come before the
// drops; the other counters after them.
const AbortCounters = 2

// MarshalJSON writes the counts as one object.
func (c Counts) MarshalJSON() ([]byte, error) {
	b := []byte{'{'}
	b, err := c.appendFields(b)
	return append(b, '}'), err
}

func (c *Counts) appendFields(b []byte) ([]byte, error) {
	field := func(name string, v any) error {
		if len(b) > 0 && b[len(b)-1] != '{' {
			b = append(b, ',')
		}
		b = strconv.AppendQuote(b, name)
		b = append(b, ':')
		j, err := json.Marshal(v)
		b = append(b, j...)
		return err
	}
	byReason := func(p Proto, m *[NumProtos][NumReasons]uint64) map[string]uint64 {
		out := make(map[string]uint64, len(Reasons))
		for _, r := range Reasons {
			out[r.String()] = m[p][r]
		}
		return out
	}
	var errs []error
	add := func(err error) { errs = append(errs, err) }
	for _, ctr := range Counters[:AbortCounters] {
		add(field(ctr.String(), c.Events[ctr]))
	}
	add(field("drops", byReason(ProtoTCP, &c.Drops)))
	add(field("drop_bytes", byReason(ProtoTCP, &c.DropBytes)))
	add(field("other_drops", byReason(ProtoOther, &c.Drops)))
	add(field("other_drop_bytes", byReason(ProtoOther, &c.DropBytes)))
	for _, ctr := range Counters[AbortCounters:] {
		add(field(ctr.String(), c.Events[ctr]))
	}
	causes := make(map[string]uint64, len(DropCauses))
	for _, dc := range DropCauses {
		causes[dc.String()] = c.Causes[dc]
	}
	add(field("drops_by_cause", causes))
	for _, err := range errs {
		if err != nil {
			return b, err
		}
	}
	return b, nil
}

// UnmarshalJSON reads what MarshalJSON writes; other keys are ignored, so
// it can read the counts out of a larger object.
func (c *Counts) UnmarshalJSON(b []byte) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	*c = Counts{}
	for _, ctr := range Counters {
		if raw, ok := m[ctr.String()]; ok {
			if err := json.Unmarshal(raw, &c.Events[ctr]); err != nil {
				return fmt.Errorf("%s: %w", ctr, err)
			}
		}
	}
	for _, f := range []struct {
		key  string
		p    Proto
		into *[NumProtos][NumReasons]uint64
	}{{"drops", ProtoTCP, &c.Drops}, {"drop_bytes", ProtoTCP, &c.DropBytes},
		{"other_drops", ProtoOther, &c.Drops}, {"other_drop_bytes", ProtoOther, &c.DropBytes}} {
		var byName map[string]uint64
		if raw, ok := m[f.key]; ok {
			if err := json.Unmarshal(raw, &byName); err != nil {
				return fmt.Errorf("%s: %w", f.key, err)
			}
		}
		for name, v := range byName {
			if r, ok := ReasonByName(name); ok {
				f.into[f.p][r] = v
			}
		}
	}
	var causes map[string]uint64
	if raw, ok := m["drops_by_cause"]; ok {
		if err := json.Unmarshal(raw, &causes); err != nil {
			return fmt.Errorf("drops_by_cause: %w", err)
		}
	}
	for name, v := range causes {
		if dc, ok := DropCauseByName(name); ok {
			c.Causes[dc] = v
		}
	}
	return nil
}

// ObjectWithCounts writes one JSON object: the fields of before, the
// counts' fields, then the fields of after (before and after marshal to
// objects, or are nil). Wire types that carry counts beside fields of
// their own marshal through it, as they cannot embed Counts.
func ObjectWithCounts(before any, c *Counts, after any) ([]byte, error) {
	b := []byte{'{'}
	inner := func(v any) error {
		if v == nil {
			return nil
		}
		j, err := json.Marshal(v)
		if err != nil {
			return err
		}
		j = bytes.TrimSpace(j)
		if len(j) < 2 || j[0] != '{' {
			return fmt.Errorf("%T does not marshal to an object", v)
		}
		if j = j[1 : len(j)-1]; len(j) > 0 {
			if b[len(b)-1] != '{' {
				b = append(b, ',')
			}
			b = append(b, j...)
		}
		return nil
	}
	if err := inner(before); err != nil {
		return nil, err
	}
	var err error
	if b, err = c.appendFields(b); err != nil {
		return nil, err
	}
	if err := inner(after); err != nil {
		return nil, err
	}
	return append(b, '}'), nil
}

// totalsTail is what Totals adds to its counts in JSON.
type totalsTail struct {
	PressureEpisodes uint64            `json:"pressure_episodes"`
	LostSamples      uint64            `json:"lost_samples"`
	Unsampled        uint64            `json:"unsampled"`
	MissedRuns       uint64            `json:"missed_runs"`
	Missed           map[string]uint64 `json:"missed_runs_by_event,omitempty"`
	Places           []Place           `json:"drops_by_place,omitempty"`
}

// MarshalJSON writes the counts, then the totals' own fields.
func (t Totals) MarshalJSON() ([]byte, error) {
	return ObjectWithCounts(nil, &t.Counts, totalsTail{t.PressureEpisodes, t.LostSamples, t.Unsampled, t.MissedRuns, t.Missed, t.Places})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (t *Totals) UnmarshalJSON(b []byte) error {
	var tail totalsTail
	if err := json.Unmarshal(b, &tail); err != nil {
		return err
	}
	if err := t.Counts.UnmarshalJSON(b); err != nil {
		return err
	}
	t.PressureEpisodes, t.LostSamples, t.Unsampled, t.MissedRuns, t.Missed = tail.PressureEpisodes, tail.LostSamples, tail.Unsampled, tail.MissedRuns, tail.Missed
	t.Places = tail.Places
	return nil
}

// MarshalJSON writes the owner's fields, then its counts.
func (o OwnerCounts) MarshalJSON() ([]byte, error) { return ObjectWithCounts(o.Owner, &o.Counts, nil) }

// UnmarshalJSON reads what MarshalJSON writes.
func (o *OwnerCounts) UnmarshalJSON(b []byte) error {
	if err := json.Unmarshal(b, &o.Owner); err != nil {
		return err
	}
	return o.Counts.UnmarshalJSON(b)
}

// Sub takes o from c: what c counted that o did not (c must hold o).
func (c *Counts) Sub(o *Counts) {
	for i := range c.Events {
		c.Events[i] -= o.Events[i]
	}
	for p := range c.Drops {
		for r := range c.Drops[p] {
			c.Drops[p][r] -= o.Drops[p][r]
			c.DropBytes[p][r] -= o.DropBytes[p][r]
		}
	}
	for i := range c.Causes {
		c.Causes[i] -= o.Causes[i]
	}
}

// Since is what the snapshot counted after base, an earlier snapshot of
// the same trace: its totals and each owner's counts less base's (owners
// with nothing since are left out). Global state and holders are s's.
func (s *Snapshot) Since(base *Snapshot) Snapshot {
	out := *s
	if base == nil {
		return out
	}
	out.Totals.Counts.Sub(&base.Totals.Counts)
	out.Totals.PressureEpisodes -= base.Totals.PressureEpisodes
	out.Totals.LostSamples -= base.Totals.LostSamples
	out.Totals.Unsampled -= base.Totals.Unsampled
	out.Totals.MissedRuns -= base.Totals.MissedRuns
	if s.Totals.Missed != nil {
		out.Totals.Missed = map[string]uint64{}
		for k, v := range s.Totals.Missed {
			if d := v - base.Totals.Missed[k]; d > 0 {
				out.Totals.Missed[k] = d
			}
		}
	}
	if s.Totals.Places != nil {
		type key struct{ name, reason, proto string }
		was := map[key]uint64{}
		for _, p := range base.Totals.Places {
			was[key{p.Name, p.Reason, p.Protocol}] += p.Drops
		}
		out.Totals.Places = nil
		for _, p := range s.Totals.Places {
			if p.Drops -= was[key{p.Name, p.Reason, p.Protocol}]; p.Drops > 0 {
				out.Totals.Places = append(out.Totals.Places, p)
			}
		}
	}
	// An owner is its process in its cgroup: names may have come later.
	type key struct {
		pid    uint32
		cgroup uint64
		comm   string
	}
	before := make(map[key]*Counts, len(base.Owners))
	for i := range base.Owners {
		o := &base.Owners[i]
		before[key{o.PID, o.CgroupID, o.Comm}] = &o.Counts
	}
	out.Owners = make([]OwnerCounts, 0, len(s.Owners))
	for _, o := range s.Owners {
		if b := before[key{o.PID, o.CgroupID, o.Comm}]; b != nil {
			o.Counts.Sub(b)
		}
		if !o.Counts.IsZero() {
			out.Owners = append(out.Owners, o)
		}
	}
	return out
}
