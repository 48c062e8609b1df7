package tracer

// Runs is how many times the attached programs have run, by where they are
// attached (tp_btf/kfree_skb), by the kernel's statistics (zero unless BPF
// statistics are on): for the tests' witnesses, which run on the same
// tracepoints over a shorter window.
func Runs(t *Tracer) map[string]uint64 {
	out := map[string]uint64{}
	for _, p := range t.progs {
		if st, err := p.prog.Stats(); err == nil {
			out[p.section] += st.RunCount
		}
	}
	return out
}
