package stream

// CounterDoc describes a counter for people: its line in the summary and
// the help of its metric. A counter without one is shown by its name.
type CounterDoc struct {
	Label string // "memory aborts: out of memory"
	Note  string // after the figure in the summary, e.g. a unit
	Help  string // the metric's help text
	Event string // the hook event whose programs count it (Totals.Missed)
}

var counterDocs = map[Counter]CounterDoc{
	MemAborts: {Label: "memory aborts: out of memory", Event: EventAborts,
		Help: `Sockets killed by tcp_check_oom for "out of memory -- consider tuning tcp_mem".`},
	OrphanAborts: {Label: "memory aborts: too many orphans", Event: EventAborts,
		Help: `Sockets killed by tcp_check_oom for "too many orphaned sockets".`},
	RefusalsSend: {Label: "allocation refusals: send", Event: EventRefusals,
		Help: "Send-side socket memory allocations refused (sock_exceed_buf_limit)."},
	RefusalsRecv: {Label: "allocation refusals: receive", Event: EventRefusals,
		Help: "Receive-side socket memory allocations refused (sock_exceed_buf_limit)."},
	SendStalls: {Label: "writes stalled under pressure", Note: "EAGAIN", Event: EventPressure,
		Help: "Writes told EAGAIN while TCP was under memory pressure."},
}

// Doc describes the counter.
func (c Counter) Doc() CounterDoc {
	if d, ok := counterDocs[c]; ok {
		return d
	}
	return CounterDoc{Label: c.String(), Help: "The kernel's " + c.String() + " count."}
}
