// Package metrics exposes a trace to Prometheus: it is fed the same records
// as the summary and, at each scrape, turns the latest exact counts and
// global state into metrics. It never reads the kernel itself.
package metrics

import (
	"os"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tcpmemtrace/tcpmemtrace/stream"
)

const ns = "tcpmemtrace"

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(ns+"_"+name, help, labels, nil)
}

var (
	dAborts     = desc("aborts_total", "Sockets the kernel killed for memory (tcp_check_oom), by cause: memory (\"out of memory -- consider tuning tcp_mem\") or orphans (\"too many orphaned sockets\").", "cause")
	dDrops      = desc("drops_total", "Packets dropped for socket memory, by kernel drop reason and protocol (tcp; other: UDP...).", "reason", "protocol")
	dDropBytes  = desc("dropped_bytes_total", "Bytes of those packets, by kernel drop reason and protocol.", "reason", "protocol")
	dDropCause  = desc("drops_by_cause_total", "TCP PROTO_MEM drops by cause: rcvbuf, global_hard_limit, global_pressure, memcg, unknown.", "cause")
	dRefusals   = desc("allocation_refusals_total", "Socket memory allocations refused (sock_exceed_buf_limit), by direction.", "direction")
	dEpisodes   = desc("pressure_episodes_total", "TCP memory pressure episodes that began while tracing.")
	dLost       = desc("lost_samples_total", "Events not delivered because the ring buffer was full (counts stay exact).")
	dUnsampled  = desc("unsampled_events_total", "Drop and refusal events over the record rate: counted, not delivered as records.")
	dAllocated  = desc("tcp_memory_allocated_bytes", "TCP memory in use (the tcp_mem pool), in bytes.")
	dLimit      = desc("tcp_mem_bytes", "net.ipv4.tcp_mem watermarks, in bytes.", "watermark")
	dPressure   = desc("tcp_memory_pressure", "1 while TCP is under memory pressure.")
	dEpisodeAge = desc("tcp_memory_pressure_episode_age_seconds", "How long the current pressure episode has lasted (at least: counted from the exporter's start if it began before); 0 when none.")
	dOrphans    = desc("tcp_orphans", "Orphaned TCP sockets (closed by their owners, still held by the kernel).")
	dMaxOrphans = desc("tcp_max_orphans", "net.ipv4.tcp_max_orphans.")
	dTimeWait   = desc("tcp_time_wait", "TCP sockets in TIME-WAIT (the exporter's network namespace).")
	// An owner's labels: container is what the runtime calls it (its 12-hex
	// id when the runtime did not answer), pod and namespace the
	// Kubernetes pod's, so they join kube-state-metrics' own.
	ownerLabels  = []string{"comm", "cgroup", "container", "pod", "namespace"}
	dMissed      = desc("missed_runs_total", "Hook runs the kernel skipped (a program of ours already running on that CPU): the counts of that event may miss as many.", "event")
	dRecFailed   = desc("recording_failed", "1 once the recording (-w) stopped on an error, such as a full disk; tracing goes on.")
	dRecDropped  = desc("recording_dropped_events_total", "Events the recording (-w) did not keep because its disk was too slow; the counts are exact regardless.")
	dFlightFiles = desc("flight_recordings_total", "Files the flight recorder began, by what triggered them (abort, pressure, drops).", "trigger")
	dFlightFail  = desc("flight_recording_failures_total", "Flight recordings a write error (a full disk) cut short; the trace goes on.")
	dFlightDrop  = desc("flight_recording_dropped_events_total", "Events left out of flight recordings because the disk was too slow; the counts are exact regardless.")
	dOwnerAborts = desc("owner_aborts_total", "Memory aborts of sockets owned by the top owners (the rest under comm=\"other\"), by cause.", append(ownerLabels, "cause")...)
	dOwnerDrops  = desc("owner_drops_total", "TCP memory drops of sockets owned by the top owners (the rest under comm=\"other\").", ownerLabels...)
	dOwnerBytes  = desc("owner_dropped_bytes_total", "Bytes of those drops.", ownerLabels...)
	dOwnerQueued = desc("owner_queued_bytes", "TCP memory the top holders hold now in their sockets' receive and send queues (ss -tm's r + w, by owning process; the rest under comm=\"other\").", ownerLabels...)
)

// counterMetric is how a counter of enum counter is exported.
type counterMetric struct {
	desc   *prometheus.Desc
	labels []string
}

// counterMetrics: the aborts share a metric by cause, the refusals by
// direction; any other counter is a metric of its own, named after it.
var counterMetrics = func() (m [stream.NumCounters]counterMetric) {
	for _, c := range stream.Counters {
		m[c] = counterMetric{desc: desc(c.String()+"_total", c.Doc().Help)}
	}
	m[stream.MemAborts] = counterMetric{dAborts, []string{stream.CauseMemory}}
	m[stream.OrphanAborts] = counterMetric{dAborts, []string{stream.CauseOrphans}}
	m[stream.RefusalsSend] = counterMetric{dRefusals, []string{"send"}}
	m[stream.RefusalsRecv] = counterMetric{dRefusals, []string{"recv"}}
	return m
}()

// ownerKey groups processes the way the labels do. It holds the
// container's id, not its names: a name the runtime gives later relabels
// the owner's series rather than starting another owner.
type ownerKey struct{ comm, cgroup, container string }

func keyOf(pid uint32, comm, cgroup string, c stream.Container) ownerKey {
	switch pid {
	case 0:
		return ownerKey{comm: "unknown"}
	case stream.OverflowPID:
		return ownerKey{comm: "other"}
	}
	return ownerKey{comm, cgroup, c.Runtime + ":" + c.ID}
}

// labels are an owner's label values, named by its container's latest names.
func (k ownerKey) labels(c stream.Container) []string {
	name := c.Name
	if name == "" {
		name = c.Short()
	}
	return []string{k.comm, k.cgroup, name, c.PodName, c.Namespace}
}

var otherLabels = []string{"other", "", "", "", ""}

// ownerVals are the per-owner counter values exported.
type ownerVals struct{ mem, orph, drops, bytes float64 }

func (a ownerVals) plus(b ownerVals) ownerVals {
	return ownerVals{a.mem + b.mem, a.orph + b.orph, a.drops + b.drops, a.bytes + b.bytes}
}

func (a ownerVals) minus(b ownerVals) ownerVals {
	return ownerVals{a.mem - b.mem, a.orph - b.orph, a.drops - b.drops, a.bytes - b.bytes}
}

// tracked is an owner with a series of its own.
type tracked struct {
	base     ownerVals // what "other" had already counted for it when promoted
	lastSeen time.Time
}

// Collector is a prometheus.Collector over a record stream.
type Collector struct {
	top      int
	ttl      time.Duration
	pageSize float64

	mu      sync.Mutex
	snap    *stream.Snapshot
	snapAt  time.Time // when the last snapshot came
	created time.Time
	episode time.Time // start of the episode in force; zero when none
	tracked map[ownerKey]*tracked
	// names is each owner's container as last seen, names and all.
	names map[ownerKey]stream.Container
	// holders are the latest poll's (a snapshot carries them every few
	// seconds only); nil before the first.
	holders []stream.Holder
	// exposed is what the last scrape counted in "other" for each owner.
	exposed map[ownerKey]ownerVals
	alive   func(pids []uint32) bool
	// recording says how the -w recording fares; nil without one.
	recording func() (failed bool, dropped uint64)
	// flight says what the flight recorder wrote; nil without one.
	flight func() FlightStatus
	now    func() time.Time
}

// New makes a collector exporting the top owners with their own series
// (the rest sum up under comm="other"); an owner's series goes away when
// none of its processes has been alive for ttl.
func New(pageSize, top int, ttl time.Duration) *Collector {
	return &Collector{top: top, ttl: ttl, pageSize: float64(pageSize), tracked: map[ownerKey]*tracked{},
		names: map[ownerKey]stream.Container{}, exposed: map[ownerKey]ownerVals{}, alive: pidsAlive, now: time.Now, created: time.Now()}
}

func pidsAlive(pids []uint32) bool {
	for _, p := range pids {
		if p == 0 || p == stream.OverflowPID {
			continue
		}
		if _, err := os.Stat("/proc/" + strconv.FormatUint(uint64(p), 10)); err == nil {
			return true
		}
	}
	return false
}

// Add feeds one record of the stream.
func (c *Collector) Add(r stream.Record) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := r.Event; e != nil {
		switch e.Kind {
		case stream.KindPressureEnter:
			c.episode = e.Time
		case stream.KindPressureLeave:
			c.episode = time.Time{}
		}
	}
	if s := r.Snapshot; s != nil {
		cp := *s
		c.snap, c.snapAt = &cp, c.now()
		if s.Holders != nil {
			c.holders = s.Holders
		}
		switch {
		case !s.Global.Pressure && !c.episode.IsZero() && s.Time.Sub(c.episode) > time.Second:
			c.episode = time.Time{} // a leave the stream did not carry
		case s.Global.Pressure && c.episode.IsZero():
			c.episode = s.Time // begun before the trace (or unseen): at least this old
		}
	}
}

// WatchRecording exports the health of a recording.
func (c *Collector) WatchRecording(status func() (failed bool, dropped uint64)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.recording = status
}

// FlightStatus is what the flight recorder has written.
type FlightStatus struct {
	Files   map[string]uint64 // by trigger
	Failed  uint64
	Dropped uint64
}

// WatchFlight exports the flight recorder's files.
func (c *Collector) WatchFlight(status func() FlightStatus) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.flight = status
}

// sinceSnapshot is how old the counts are.
func (c *Collector) sinceSnapshot() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.snapAt.IsZero() {
		return c.now().Sub(c.created) // none yet: as old as the collector
	}
	return c.now().Sub(c.snapAt)
}

// Describe sends no descriptors: the collector is unchecked, its label sets
// depend on the owners of the moment.
func (c *Collector) Describe(chan<- *prometheus.Desc) {}

// Collect turns the latest snapshot into metrics.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.snap == nil {
		return
	}
	t, g := c.snap.Totals, c.snap.Global
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, ctr := range stream.Counters {
		m := counterMetrics[ctr]
		counter(m.desc, float64(t.Events[ctr]), m.labels...)
	}
	for _, r := range stream.Reasons {
		for p := range stream.Proto(stream.NumProtos) {
			counter(dDrops, float64(t.Drops[p][r]), r.String(), p.String())
			counter(dDropBytes, float64(t.DropBytes[p][r]), r.String(), p.String())
		}
	}
	for _, cause := range stream.DropCauses {
		counter(dDropCause, float64(t.Causes[cause]), cause.String())
	}
	counter(dEpisodes, float64(t.PressureEpisodes))
	for event, n := range t.Missed {
		counter(dMissed, float64(n), event)
	}
	counter(dLost, float64(t.LostSamples))
	counter(dUnsampled, float64(t.Unsampled))

	gauge(dAllocated, float64(g.MemPages)*c.pageSize)
	// The limits are unreadable outside the host's network namespace: no
	// series rather than a zero limit.
	if g.TCPMem[2] > 0 {
		for i, w := range []string{"low", "pressure", "high"} {
			gauge(dLimit, float64(g.TCPMem[i])*c.pageSize, w)
		}
	}
	var p, age float64
	if g.Pressure {
		p = 1
		if !c.episode.IsZero() {
			age = c.now().Sub(c.episode).Seconds()
		}
	}
	gauge(dPressure, p)
	gauge(dEpisodeAge, age)
	gauge(dOrphans, float64(g.Orphans))
	if g.MaxOrphans >= 0 {
		gauge(dMaxOrphans, float64(g.MaxOrphans))
	}
	gauge(dTimeWait, float64(g.TimeWait))
	if c.recording != nil {
		failed, dropped := c.recording()
		gauge(dRecFailed, map[bool]float64{false: 0, true: 1}[failed])
		counter(dRecDropped, float64(dropped))
	}
	if c.flight != nil {
		st := c.flight()
		for _, t := range []string{stream.TriggerAbort, stream.TriggerPressure, stream.TriggerDrops} {
			counter(dFlightFiles, float64(st.Files[t]), t)
		}
		counter(dFlightFail, float64(st.Failed))
		counter(dFlightDrop, float64(st.Dropped))
	}

	c.owners(ch)
	c.queued(ch)
}

// owners exports the top owners' counters and one "other" series. A
// counter must never go down, so "other" keeps what it has exposed: it is
// all of every untracked owner, plus, for each tracked one, what "other"
// had exposed for it when it got its own series (its base; zero for an
// owner new at that scrape). An owner that expires (its processes gone)
// returns to "other" whole.
func (c *Collector) owners(ch chan<- prometheus.Metric) {
	vals := map[ownerKey]ownerVals{}
	pids := map[ownerKey][]uint32{}
	for _, o := range c.snap.Owners {
		k := keyOf(o.PID, o.Comm, o.CgroupPath, o.Container)
		c.remember(k, o.Container)
		drops, bytes := o.ProtoDrops(stream.ProtoTCP)
		vals[k] = vals[k].plus(ownerVals{float64(o.Events[stream.MemAborts]), float64(o.Events[stream.OrphanAborts]), float64(drops), float64(bytes)})
		pids[k] = append(pids[k], o.PID)
	}
	now := c.now()
	// Expire owners whose processes are gone.
	for k, tr := range c.tracked {
		if c.alive(pids[k]) {
			tr.lastSeen = now
		} else if now.Sub(tr.lastSeen) > c.ttl {
			delete(c.tracked, k)
		}
	}
	// Promote the most active owners into free places.
	keys := make([]ownerKey, 0, len(vals))
	for k := range vals {
		if _, ok := c.tracked[k]; !ok && k.comm != "other" {
			keys = append(keys, k)
		}
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := vals[keys[i]], vals[keys[j]]
		if x, y := a.mem+a.orph, b.mem+b.orph; x != y {
			return x > y
		}
		if a.drops != b.drops {
			return a.drops > b.drops
		}
		return keys[i].comm < keys[j].comm
	})
	for _, k := range keys {
		if len(c.tracked) >= c.top {
			break
		}
		if v := vals[k]; v.mem+v.orph+v.drops > 0 && c.alive(pids[k]) {
			c.tracked[k] = &tracked{base: c.exposed[k], lastSeen: now}
		}
	}
	var other ownerVals
	for k, v := range vals {
		if tr, ok := c.tracked[k]; ok {
			other = other.plus(tr.base)
			c.emitOwner(ch, k.labels(c.names[k]), v.minus(tr.base))
			continue
		}
		other = other.plus(v)
		c.exposed[k] = v
	}
	c.emitOwner(ch, otherLabels, other)
}

// remember keeps an owner's container names; a name once given stays when
// a later record lacks it (a runtime that stopped answering).
func (c *Collector) remember(k ownerKey, ctr stream.Container) {
	if ctr.Named() || c.names[k].ID == "" {
		c.names[k] = ctr
	}
}

// queued exports the memory the top holders hold now. A gauge may go
// down, so the top are simply the largest of the moment, the rest summed
// under "other"; a holder polled but holding nothing is not a series.
func (c *Collector) queued(ch chan<- prometheus.Metric) {
	if c.holders == nil {
		return
	}
	bytes := map[ownerKey]float64{}
	for _, h := range c.holders {
		k := keyOf(uint32(h.PID), h.Comm, h.CgroupPath, derefContainer(h.Container))
		c.remember(k, derefContainer(h.Container))
		bytes[k] += float64(h.Queued())
	}
	keys := make([]ownerKey, 0, len(bytes))
	for k := range bytes {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if a, b := bytes[keys[i]], bytes[keys[j]]; a != b {
			return a > b
		}
		return keys[i].comm < keys[j].comm
	})
	var other float64
	for i, k := range keys {
		if i >= c.top || k.comm == "other" {
			other += bytes[k]
			continue
		}
		ch <- prometheus.MustNewConstMetric(dOwnerQueued, prometheus.GaugeValue, bytes[k], k.labels(c.names[k])...)
	}
	ch <- prometheus.MustNewConstMetric(dOwnerQueued, prometheus.GaugeValue, other, otherLabels...)
}

func derefContainer(c *stream.Container) stream.Container {
	if c == nil {
		return stream.Container{}
	}
	return *c
}

func (c *Collector) emitOwner(ch chan<- prometheus.Metric, labels []string, v ownerVals) {
	ch <- prometheus.MustNewConstMetric(dOwnerAborts, prometheus.CounterValue, v.mem, append(labels, stream.CauseMemory)...)
	ch <- prometheus.MustNewConstMetric(dOwnerAborts, prometheus.CounterValue, v.orph, append(labels, stream.CauseOrphans)...)
	ch <- prometheus.MustNewConstMetric(dOwnerDrops, prometheus.CounterValue, v.drops, labels...)
	ch <- prometheus.MustNewConstMetric(dOwnerBytes, prometheus.CounterValue, v.bytes, labels...)
}
