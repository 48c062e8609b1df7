package render

import (
	"bufio"
	"encoding/json"
	"io"
	"time"

	"github.com/tcpmemtrace/tcpmemtrace/internal/aggregate"
	"github.com/tcpmemtrace/tcpmemtrace/stream"
)

// SchemaVersion changes when a field changes meaning or goes away.
const SchemaVersion = 1

// JSON writes JSON Lines: a start object, one object per event, a summary.
type JSON struct {
	w        *bufio.Writer
	enc      *json.Encoder
	pageSize int64
}

// NewJSON writes to w.
func NewJSON(w io.Writer) *JSON {
	bw := bufio.NewWriter(w)
	return &JSON{w: bw, enc: json.NewEncoder(bw), pageSize: 4096}
}

// MemTriple is a tcp_mem-like setting in pages and in bytes.
type MemTriple struct {
	Pages [3]int64 `json:"pages"`
	Bytes [3]int64 `json:"bytes"`
}

// StartObject is {"type":"start"}.
type StartObject struct {
	Type        string            `json:"type"`
	Version     int               `json:"version"`
	Time        time.Time         `json:"time"`
	Hostname    string            `json:"hostname"`
	Kernel      string            `json:"kernel"`
	BootID      string            `json:"boot_id"`
	PageSize    int               `json:"page_size"`
	TCPMem      MemTriple         `json:"tcp_mem"`
	TCPRmem     [3]int64          `json:"tcp_rmem"`
	TCPWmem     [3]int64          `json:"tcp_wmem"`
	MaxOrphans  int64             `json:"tcp_max_orphans"`
	NetNS       uint32            `json:"netns,omitempty"`
	PIDs        []uint32          `json:"pids,omitempty"`
	Comm        string            `json:"comm,omitempty"`
	Cgroup      string            `json:"cgroup,omitempty"`
	Hooks       []stream.Hook     `json:"hooks"`
	Notes       []string          `json:"notes,omitempty"`
	DropReasons map[string]uint32 `json:"drop_reasons"`
	// Trigger: a flight recording's replay says what made it be written.
	Trigger *stream.Trigger `json:"trigger,omitempty"`
}

// NoticeObject is a notice: what the tool did beside tracing.
type NoticeObject struct {
	Type string `json:"type"` // notice
	stream.Notice
}

// EventObject is every event type; fields that do not apply are omitted.
type EventObject struct {
	Type            string            `json:"type"` // abort, drop, refusal, pressure_enter, pressure_leave
	Time            time.Time         `json:"time"`
	Cause           string            `json:"cause,omitempty"`     // abort: memory | orphans
	Reason          string            `json:"reason,omitempty"`    // drop reason; abort: reset reason
	Direction       string            `json:"direction,omitempty"` // refusal: send | recv
	PID             uint32            `json:"pid"`                 // socket owner, 0 if unknown
	Comm            string            `json:"comm"`
	CgroupID        uint64            `json:"cgroup_id,omitempty"`
	Cgroup          string            `json:"cgroup,omitempty"`
	Container       *stream.Container `json:"container,omitempty"`
	CurrentPID      uint32            `json:"current_pid"` // task that ran the hook
	Socket          *SocketJSON       `json:"socket,omitempty"`
	Bytes           uint32            `json:"bytes,omitempty"`
	Truesize        uint32            `json:"truesize,omitempty"`
	Location        string            `json:"location,omitempty"` // drop: where the kernel freed it
	Mem             *MemJSON          `json:"mem,omitempty"`
	PressureEpisode uint64            `json:"pressure_episode,omitempty"`
	// Holders: pressure_enter only.
	Holders []stream.Holder `json:"holders,omitempty"`
}

// SocketJSON is an event's socket.
type SocketJSON struct {
	Cookie     uint64 `json:"cookie,omitempty"`
	NetNS      uint32 `json:"netns"`
	Protocol   string `json:"protocol"`
	Src        string `json:"src,omitempty"`
	Dst        string `json:"dst,omitempty"`
	State      string `json:"state,omitempty"`
	RmemAlloc  int32  `json:"rmem_alloc"`
	Rcvbuf     int32  `json:"rcvbuf"`
	WmemQueued int32  `json:"wmem_queued"`
	Sndbuf     int32  `json:"sndbuf"`
	Memcg      bool   `json:"memcg"`
	MemcgID    uint64 `json:"memcg_id,omitempty"`
	MemcgPath  string `json:"memcg_path,omitempty"`
	CgroupID   uint64 `json:"cgroup_id,omitempty"` // the socket's own cgroup v2
	Orphan     bool   `json:"orphan"`
	// SinceCloseMs is how long before the event the owner closed it.
	SinceCloseMs *float64 `json:"since_close_ms,omitempty"`
}

// MemJSON is the protocol's memory at the event.
type MemJSON struct {
	AllocatedPages int64    `json:"allocated_pages"`
	TCPMemPages    [3]int64 `json:"tcp_mem_pages"`
}

// SummaryObject is {"type":"summary"}.
type SummaryObject struct {
	Type         string         `json:"type"`
	Time         time.Time      `json:"time"`
	DurationS    float64        `json:"duration_s"`
	NetNS        uint32         `json:"netns,omitempty"`
	Totals       stream.Totals  `json:"totals"`
	PeakMemPages int64          `json:"peak_mem_pages"`
	PeakMemBytes int64          `json:"peak_mem_bytes"`
	PeakTCPMem   [3]int64       `json:"peak_tcp_mem_pages"` // tcp_mem when the peak was seen
	KernelLog    *KernelLogJSON `json:"kernel_log"`
	// Exact, from the kernel's per-owner counts; most active first.
	ByProcess []ProcessJSON `json:"by_process"`
	ByCgroup  []GroupJSON   `json:"by_cgroup"`
	ByComm    []GroupJSON   `json:"by_comm"`
	// From the events: complete when totals.lost_samples is 0.
	TopSockets []SocketStatsJSON `json:"top_sockets"`
	// Pressure episodes, oldest first.
	PressureEpisodes []EpisodeJSON `json:"pressure_timeline"`
	// Stalled: who had stopped reading, as the last look that found
	// anyone stalled saw it; absent when none did.
	Stalled *StalledJSON `json:"stalled,omitempty"`
}

// StalledJSON is one look's stalled holders and sockets.
type StalledJSON struct {
	Time    time.Time              `json:"time"`
	Holders []stream.Holder        `json:"holders"` // most stalled memory first
	Sockets []stream.StalledSocket `json:"sockets"` // most memory first, at most 50
}

// EpisodeJSON is one pressure episode.
type EpisodeJSON struct {
	ID             uint64     `json:"id"`
	Start          time.Time  `json:"start"`
	End            *time.Time `json:"end"` // null: still under pressure at the end
	DurationS      float64    `json:"duration_s"`
	StartPages     int64      `json:"start_pages"`
	PeakPages      int64      `json:"peak_pages"`
	PeakTCPMemPage [3]int64   `json:"peak_tcp_mem_pages"`
	// HoldersAtStart held the most TCP memory as it began.
	HoldersAtStart []stream.Holder `json:"holders_at_start"`
}

// ProcessJSON is one owner's exact counts. pid 0 is "owner unknown";
// 4294967295 collects owners beyond the kernel map's capacity.
type ProcessJSON struct {
	PID       uint32            `json:"pid"`
	Comm      string            `json:"comm"`
	CgroupID  uint64            `json:"cgroup_id"`
	Cgroup    string            `json:"cgroup"`
	Container *stream.Container `json:"container,omitempty"`
	Counts    stream.Counts     `json:"-"` // written after the fields above
}

// MarshalJSON writes the fields, then the counts.
func (p ProcessJSON) MarshalJSON() ([]byte, error) {
	type fields ProcessJSON
	return stream.ObjectWithCounts(fields(p), &p.Counts, nil)
}

// UnmarshalJSON reads what MarshalJSON writes.
func (p *ProcessJSON) UnmarshalJSON(b []byte) error {
	type fields ProcessJSON
	return unmarshalWithCounts(b, (*fields)(p), &p.Counts)
}

// GroupJSON is owners summed by cgroup or by command.
type GroupJSON struct {
	Key       string            `json:"key"`
	CgroupID  uint64            `json:"cgroup_id,omitempty"`
	Cgroup    string            `json:"cgroup,omitempty"`
	Container *stream.Container `json:"container,omitempty"`
	Comm      string            `json:"comm,omitempty"`
	PIDs      []uint32          `json:"pids"`
	Counts    stream.Counts     `json:"-"` // written after the fields above
}

// MarshalJSON writes the fields, then the counts.
func (g GroupJSON) MarshalJSON() ([]byte, error) {
	type fields GroupJSON
	return stream.ObjectWithCounts(fields(g), &g.Counts, nil)
}

// UnmarshalJSON reads what MarshalJSON writes.
func (g *GroupJSON) UnmarshalJSON(b []byte) error {
	type fields GroupJSON
	return unmarshalWithCounts(b, (*fields)(g), &g.Counts)
}

// SocketStatsJSON is one socket's events.
type SocketStatsJSON struct {
	Cookie uint64 `json:"cookie,omitempty"`
	NetNS  uint32 `json:"netns"`
	Src    string `json:"src"`
	Dst    string `json:"dst"`
	State  string `json:"state"`
	Orphan bool   `json:"orphan"`
	PID    uint32 `json:"pid"`
	Comm   string `json:"comm"`
	Cgroup string `json:"cgroup,omitempty"`
	Events uint64 `json:"events"`
	// StalledMs: how long its owner had not read it, when summary.stalled
	// was seen; absent when it was not stalled then.
	StalledMs uint64        `json:"stalled_ms,omitempty"`
	Counts    stream.Counts `json:"-"` // written after the fields above
}

// MarshalJSON writes the fields, then the counts.
func (s SocketStatsJSON) MarshalJSON() ([]byte, error) {
	type fields SocketStatsJSON
	return stream.ObjectWithCounts(fields(s), &s.Counts, nil)
}

// UnmarshalJSON reads what MarshalJSON writes.
func (s *SocketStatsJSON) UnmarshalJSON(b []byte) error {
	type fields SocketStatsJSON
	return unmarshalWithCounts(b, (*fields)(s), &s.Counts)
}

// unmarshalWithCounts reads an object's own fields, then its counts.
func unmarshalWithCounts[T any](b []byte, fields *T, c *stream.Counts) error {
	if err := json.Unmarshal(b, fields); err != nil {
		return err
	}
	return c.UnmarshalJSON(b)
}

func container(c stream.Container) *stream.Container {
	if c == (stream.Container{}) {
		return nil
	}
	return &c
}

// KernelLogJSON is the rate limit made visible.
type KernelLogJSON struct {
	Warnings   []WarningJSON `json:"warnings"`
	Suppressed int           `json:"suppressed_lines"`
}

// WarningJSON is one kernel warning: exact events vs printed lines.
type WarningJSON struct {
	Message string `json:"message"`
	Events  uint64 `json:"events"`
	Lines   int    `json:"lines_printed"`
}

// Start writes the start object.
func (j *JSON) Start(info stream.Info) error {
	j.pageSize = int64(info.PageSize)
	o := StartObject{
		Type: "start", Version: SchemaVersion, Time: info.Start, Hostname: info.Hostname, Kernel: info.Kernel,
		BootID: info.BootID, PageSize: info.PageSize, TCPRmem: info.TCPRmem, TCPWmem: info.TCPWmem,
		MaxOrphans: info.MaxOrphans, NetNS: info.NetNS, PIDs: info.PIDs, Comm: info.Comm, Cgroup: info.Cgroup,
		Hooks: info.Hooks, Notes: info.Notes, DropReasons: info.DropReasons,
		TCPMem: MemTriple{Pages: info.TCPMem}, Trigger: info.Trigger,
	}
	for i, p := range info.TCPMem {
		o.TCPMem.Bytes[i] = p * j.pageSize
	}
	if err := j.enc.Encode(o); err != nil {
		return err
	}
	return j.w.Flush()
}

// EventJSON converts an event to its JSON object.
func EventJSON(e *stream.Event) EventObject {
	cause := e.Cause
	if e.Kind == stream.KindDrop {
		cause = e.DropCause
	}
	o := EventObject{
		Type: e.Kind.String(), Time: e.Time, Cause: cause, Reason: e.Reason,
		PID: e.Owner.PID, Comm: e.Owner.Comm, CgroupID: e.Owner.CgroupID, Cgroup: e.Owner.CgroupPath,
		Container: container(e.Owner.Container), CurrentPID: e.CurrentPID,
		Bytes: e.Bytes, Truesize: e.Truesize, Location: e.Location, PressureEpisode: e.PressureID, Holders: e.Holders,
	}
	if e.Kind == stream.KindRefusal {
		o.Direction = "recv"
		if e.Send {
			o.Direction = "send"
		}
	}
	if s := e.Socket; s.NetNS != 0 || s.Family != 0 {
		sj := &SocketJSON{Cookie: s.Cookie, NetNS: s.NetNS, Protocol: protoName(s.Protocol), State: s.State.String(),
			RmemAlloc: s.RmemAlloc, Rcvbuf: s.Rcvbuf, WmemQueued: s.WmemQueued, Sndbuf: s.Sndbuf, Memcg: s.Memcg,
			MemcgID: s.MemcgID, MemcgPath: s.MemcgPath, CgroupID: s.CgroupID, Orphan: s.Orphan}
		if d, ok := e.SinceClose(); ok {
			ms := float64(d.Microseconds()) / 1000
			sj.SinceCloseMs = &ms
		}
		if s.Src.IsValid() {
			sj.Src, sj.Dst = s.Src.String(), s.Dst.String()
		}
		o.Socket = sj
	}
	if e.Mem.Limits != [3]int64{} {
		o.Mem = &MemJSON{AllocatedPages: e.Mem.Allocated, TCPMemPages: e.Mem.Limits}
	}
	return o
}

// Event writes one event object.
func (j *JSON) Event(e *stream.Event) error { return j.enc.Encode(EventJSON(e)) }

// Notice writes a notice object.
func (j *JSON) Notice(n *stream.Notice) error {
	return j.enc.Encode(NoticeObject{Type: "notice", Notice: *n})
}

// Summary writes the summary object.
func (j *JSON) Summary(info stream.Info, s aggregate.Summary) error {
	o := SummaryObject{
		Type: "summary", Time: s.End, DurationS: s.End.Sub(s.Start).Seconds(), NetNS: info.NetNS,
		Totals: s.Totals, PeakMemPages: s.PeakMemPages, PeakMemBytes: s.PeakMemPages * j.pageSize,
		PeakTCPMem: s.PeakLimits,
	}
	o.ByProcess, o.ByCgroup, o.ByComm, o.TopSockets = []ProcessJSON{}, []GroupJSON{}, []GroupJSON{}, []SocketStatsJSON{}
	for _, p := range s.Owners {
		o.ByProcess = append(o.ByProcess, ProcessJSON{PID: p.PID, Comm: p.Comm, CgroupID: p.CgroupID,
			Cgroup: p.CgroupPath, Container: container(p.Container), Counts: p.Counts})
	}
	for _, g := range aggregate.ByCgroup(s.Owners) {
		o.ByCgroup = append(o.ByCgroup, GroupJSON{Key: g.Key, CgroupID: g.CgroupID, Cgroup: g.CgroupPath,
			Container: container(g.Container), PIDs: g.PIDs, Counts: g.Counts})
	}
	for _, g := range aggregate.ByComm(s.Owners) {
		o.ByComm = append(o.ByComm, GroupJSON{Key: g.Key, Comm: g.Comm, PIDs: g.PIDs, Counts: g.Counts})
	}
	for i, so := range s.Sockets {
		if i == TopN {
			break
		}
		o.TopSockets = append(o.TopSockets, SocketStatsJSON{Cookie: so.Cookie, NetNS: so.NetNS, Src: so.Src.String(),
			Dst: so.Dst.String(), State: so.State.String(), Orphan: so.Orphan, PID: so.Owner.PID, Comm: so.Owner.Comm,
			Cgroup: so.Owner.CgroupPath, Events: so.Events, StalledMs: so.StalledMs, Counts: so.Counts})
	}
	o.PressureEpisodes = []EpisodeJSON{}
	for _, ep := range s.Episodes {
		ej := EpisodeJSON{ID: ep.ID, Start: ep.Start, DurationS: ep.Duration(s.End).Seconds(),
			StartPages: ep.StartPages, PeakPages: ep.PeakPages, PeakTCPMemPage: ep.PeakLimits,
			HoldersAtStart: ep.Holders}
		if ej.HoldersAtStart == nil {
			ej.HoldersAtStart = []stream.Holder{}
		}
		if !ep.End.IsZero() {
			end := ep.End
			ej.End = &end
		}
		o.PressureEpisodes = append(o.PressureEpisodes, ej)
	}
	if st := s.Stalled; st != nil {
		o.Stalled = &StalledJSON{Time: st.Time, Holders: st.Holders, Sockets: st.Sockets}
		if o.Stalled.Holders == nil {
			o.Stalled.Holders = []stream.Holder{}
		}
		if o.Stalled.Sockets == nil {
			o.Stalled.Sockets = []stream.StalledSocket{}
		}
	}
	if kl := s.KernelLog; kl != nil {
		o.KernelLog = &KernelLogJSON{Suppressed: kl.Suppressed, Warnings: []WarningJSON{}}
		for _, w := range kl.Warnings {
			o.KernelLog.Warnings = append(o.KernelLog.Warnings, WarningJSON(w))
		}
	}
	if err := j.enc.Encode(o); err != nil {
		return err
	}
	return j.w.Flush()
}

// Flush writes out buffered lines.
func (j *JSON) Flush() error { return j.w.Flush() }
