// Package stream defines the record stream: what every source of a trace
// produces (the live kernel, a recording) and every consumer reads (the
// summary, the line and JSON outputs, the live view, the metrics, the
// recorder). Events are sampled records; counts are the kernel's exact
// totals, read into snapshots. It depends on nothing heavy: replaying and
// rendering never link the BPF library.
package stream

import (
	"context"
	"time"
)

// Record is one item of the stream: Event, Snapshot or Notice. They point
// into memory the source reuses; they are valid until the callback returns.
type Record struct {
	Event    *Event
	Snapshot *Snapshot
	// Notice is something the tool itself did that whoever reads the
	// stream should know (a flight recording written). Not recorded.
	Notice *Notice
}

// Notice is something the tool did beside tracing.
type Notice struct {
	Time time.Time `json:"time"`
	Kind string    `json:"kind"` // NoticeFlightStarted, NoticeFlightWritten, NoticeFlightFailed
	Text string    `json:"text"` // a sentence for people
	File string    `json:"file,omitempty"`
	// Trigger is the flight recording's trigger kind.
	Trigger string `json:"trigger,omitempty"`
}

// Notice kinds.
const (
	NoticeFlightStarted = "flight_recording_started"
	NoticeFlightWritten = "flight_recording_written"
	NoticeFlightFailed  = "flight_recording_failed"
)

// Trigger says why a flight recording was written: the incident that
// began it, and from when its counts run.
type Trigger struct {
	Kind   string    `json:"kind"` // TriggerAbort, TriggerPressure, TriggerDrops
	Time   time.Time `json:"time"`
	Detail string    `json:"detail"`
	// From is the start of the window the file holds: its counts are what
	// the kernel counted from then on.
	From time.Time `json:"from"`
}

// Flight recorder triggers.
const (
	TriggerAbort    = "abort"    // a memory or orphan abort
	TriggerPressure = "pressure" // a pressure episode began
	TriggerDrops    = "drops"    // memory drops above a rate
)

// Source is a stream of records: the live kernel, or a recording.
type Source interface {
	Info() Info
	// Run calls fn for each record until ctx ends or the source is
	// exhausted; the last record is a final Snapshot.
	Run(ctx context.Context, fn func(Record) error) error
}

// Snapshot is a reading of the exact counts and of the global state.
type Snapshot struct {
	Time   time.Time
	Totals Totals
	// Owners are the exact per-owner counts (their sum is Totals' counts).
	Owners []OwnerCounts
	Global Global
	Final  bool // the last one, taken after the hooks were detached
	// Holders hold the most TCP memory in their sockets' queues now (as ss
	// -tmp sees it), most first; nil when not looked at this time.
	Holders []Holder `json:",omitempty"`
	// Stalled are the stalled sockets that look found, the 50 holding the
	// most memory first.
	Stalled []StalledSocket `json:",omitempty"`
}

// Global is the protocol-wide state, sampled from /proc.
type Global struct {
	MemPages   int64    `json:"mem_pages"` // TCP memory in use (pages)
	Pressure   bool     `json:"pressure"`
	TCPMem     [3]int64 `json:"tcp_mem"`
	Orphans    int64    `json:"orphans"`     // global
	MaxOrphans int64    `json:"max_orphans"` // -1: unknown
	TimeWait   int64    `json:"time_wait"`   // in the tracer's network namespace
}

// Info describes a trace: the machine, the settings in force, the hooks.
type Info struct {
	Hostname   string    `json:"hostname"`
	Kernel     string    `json:"kernel"`
	BootID     string    `json:"boot_id"`
	PageSize   int       `json:"page_size"`
	Start      time.Time `json:"start"`
	TCPMem     [3]int64  `json:"tcp_mem"`  // pages
	TCPRmem    [3]int64  `json:"tcp_rmem"` // bytes
	TCPWmem    [3]int64  `json:"tcp_wmem"` // bytes
	MaxOrphans int64     `json:"tcp_max_orphans"`
	NetNS      uint32    `json:"netns,omitempty"`
	// RecordRate is the most drop and refusal records per second (0: all).
	RecordRate int `json:"record_rate,omitempty"`
	// Filters in force, as given.
	PIDs   []uint32 `json:"pids,omitempty"`
	Comm   string   `json:"comm,omitempty"`
	Cgroup string   `json:"cgroup,omitempty"`
	Hooks  []Hook   `json:"hooks"`
	// Notes are facts about this kernel that change how events are read.
	Notes []string `json:"notes,omitempty"`
	// DropReasons are the tracked drop reasons' values on the traced kernel.
	DropReasons map[string]uint32 `json:"drop_reasons"`
	// Trigger is set on a flight recording: what made it be written.
	Trigger *Trigger `json:"trigger,omitempty"`
}

// Event groups: one Hook each.
const (
	EventAborts   = "memory aborts"
	EventPressure = "pressure episodes"
	EventDrops    = "memory drops"
	EventRefusals = "allocation refusals"
	EventOwners   = "socket owners"
)

// Hook says how one kind of event is observed, and why better hooks were not used.
type Hook struct {
	Event    string     `json:"event"`
	Using    string     `json:"using"` // empty when unavailable
	Rejected []Rejected `json:"rejected,omitempty"`
	Notes    []string   `json:"notes,omitempty"`
}

// Rejected is a variant that was not used.
type Rejected struct {
	Hook   string `json:"hook"`
	Reason string `json:"reason"`
}

// Available reports whether the event is observed at all.
func (h Hook) Available() bool { return h.Using != "" }
