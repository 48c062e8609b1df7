/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Pressure episodes: transitions of the protocol's memory_pressure word,
 * which is 0 or the jiffies at which the episode began.
 */
#ifndef TCPMEMTRACE_PRESSURE_BPF_H
#define TCPMEMTRACE_PRESSURE_BPF_H

static __always_inline void emit_pressure(const struct proto *prot, __u8 kind, __u64 id)
{
	struct counters *c = totals_get();
	struct event *e;

	if (!c)
		return;
	add(kind == EV_PRESSURE_ENTER ? &c->pressure_enters : &c->pressure_leaves, 1);
	e = reserve(c, kind);
	if (!e)
		return;
	fill_mem(e, prot);
	e->pressure_id = id;
	submit(e);
}

/*
 * A change of the word's value is an episode boundary. Global, not per
 * netns or owner: reported whatever the filters. The first sample only
 * learns the state, so an episode older than the tracer is not counted.
 */
static __always_inline void sample_pressure(const struct sock *sk)
{
	const struct proto *prot = sk->__sk_common.skc_prot;
	__u64 v = read_long((const long *)prot->memory_pressure);
	__u64 old = pressure_cur;

	if (v == old)
		return;
	if (__sync_val_compare_and_swap(&pressure_cur, old, v) != old)
		return;
	if (old == PRESSURE_UNKNOWN)
		return;
	if (v)
		emit_pressure(prot, EV_PRESSURE_ENTER, v);
	else
		emit_pressure(prot, EV_PRESSURE_LEAVE, old);
}

#endif
