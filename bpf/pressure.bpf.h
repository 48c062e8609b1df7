/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Pressure episodes: transitions of the protocol's memory_pressure word,
 * which is 0 or the jiffies at which the episode began.
 */
#ifndef TCPMEMTRACE_PRESSURE_BPF_H
#define TCPMEMTRACE_PRESSURE_BPF_H

/* The protocol's memory in pages, and tcp_mem, read through a typed
 * pointer (hook arguments) or, from the sampler, with probe reads. */
static __always_inline void fill_mem_probed(struct event *e, const struct proto *prot)
{
	atomic_long_t *allocated = BPF_CORE_READ(prot, memory_allocated);
	long *limits = BPF_CORE_READ(prot, sysctl_mem);
	long a = 0;

	bpf_probe_read_kernel(&a, sizeof(a), &allocated->counter);
	e->allocated = a < 0 ? 0 : a;
	bpf_probe_read_kernel(&e->mem_limit, sizeof(e->mem_limit), limits);
}

static __always_inline void emit_pressure(const struct proto *prot, bool probed, __u8 kind,
					  __u64 id)
{
	struct counters *c = totals_get();
	struct event *e;
	enum budget b;

	if (!c)
		return;
	add(kind == EV_PRESSURE_ENTER ? &c->pressure_enters : &c->pressure_leaves, 1);
	e = reserve(c, kind, &b);
	if (!e)
		return;
	if (probed)
		fill_mem_probed(e, prot);
	else
		fill_mem(e, prot);
	e->pressure_id = id;
	submit(e, b);
}

/* Transitions already reported, by key: an episode's id (the jiffies at
 * its start) for its start, the id with LEAVE_KEY for its end. */
#define LEAVE_KEY (1ULL << 63)

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 64);
	__type(key, __u64);
	__type(value, __u8);
} transitions SEC(".maps");

/*
 * Several CPUs can see the same transition at once: the one whose insert
 * succeeds reports it. (A compare-and-swap on pressure_cur would decide
 * too, but kernels before 5.12 refuse atomics that return a value in any
 * program.) Reporting a start forgets the episode's end and the reverse,
 * so an episode that ends and starts again within one jiffy is reported.
 */
static __always_inline bool first_to_report(__u64 key, __u64 opposite)
{
	__u8 one = 1;

	if (bpf_map_update_elem(&transitions, &key, &one, BPF_NOEXIST))
		return false;
	bpf_map_delete_elem(&transitions, &opposite);
	return true;
}

/*
 * A change of the word's value is an episode boundary. Global, not per
 * netns or owner: reported whatever the filters. The first sample only
 * learns the state, so an episode older than the tracer is not counted.
 */
static __always_inline void note_pressure(const struct proto *prot, bool probed, __u64 v)
{
	__u64 old = pressure_cur;

	if (v == old)
		return;
	pressure_cur = v;
	if (old == PRESSURE_UNKNOWN) {
		if (v) /* under way at start: its start is not ours to report */
			first_to_report(v, v | LEAVE_KEY);
		return;
	}
	if (v) {
		if (first_to_report(v, v | LEAVE_KEY))
			emit_pressure(prot, probed, EV_PRESSURE_ENTER, v);
	} else if (first_to_report(old | LEAVE_KEY, old)) {
		emit_pressure(prot, probed, EV_PRESSURE_LEAVE, old);
	}
}

/* A sample from a hook on a socket. */
static __always_inline void sample_pressure(const struct sock *sk)
{
	const struct proto *prot = sk->__sk_common.skc_prot;

	note_pressure(prot, false, read_long((const long *)prot->memory_pressure));
}

#endif
