package tracer

// Runs is how many times each event's attached programs have run, by the
// kernel's statistics (zero unless BPF statistics are on): for the tests'
// witnesses, which run on the same tracepoints over a shorter window.
func Runs(t *Tracer) map[string]uint64 {
	out := map[string]uint64{}
	for _, p := range t.progs {
		if st, err := p.prog.Stats(); err == nil {
			out[p.event] += st.RunCount
		}
	}
	return out
}
