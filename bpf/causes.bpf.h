/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Why a TCP socket lost data to memory, decided as the drop happens, in
 * the kernel's own order of checks.
 */
#ifndef TCPMEMTRACE_CAUSES_BPF_H
#define TCPMEMTRACE_CAUSES_BPF_H

/* The last receive refusal on each CPU: the exact allocated value the
 * kernel decided on, for the drop that follows it on the same socket. */
struct last_refusal {
	__u64 sk;
	__u64 ts;
	__s64 allocated;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct last_refusal);
} last_refusal SEC(".maps");

static __always_inline void remember_refusal(const struct sock *sk, long allocated)
{
	struct last_refusal *lr;
	__u32 zero = 0;

	lr = bpf_map_lookup_elem(&last_refusal, &zero);
	if (lr) {
		lr->sk = (__u64)sk;
		lr->ts = bpf_ktime_get_ns();
		lr->allocated = allocated;
	}
}

/* The socket's memory cgroup refuses memory: v1 tcp accounting at its
 * limit or under pressure, v2 socket pressure, or the cgroup at memory.max. */
static __always_inline bool memcg_limited(const struct sock *sk)
{
	struct mem_cgroup *m = sk->sk_memcg;

	if (!m)
		return false;
	if (bpf_core_field_exists(m->tcpmem_pressure) && m->tcpmem_active &&
	    (m->tcpmem_pressure || m->tcpmem.usage.counter >= (long)m->tcpmem.max))
		return true;
	if (bpf_core_field_exists(m->socket_pressure) && m->socket_pressure &&
	    bpf_jiffies64() < m->socket_pressure)
		return true;
	return m->memory.usage.counter >= (long)m->memory.max;
}

/*
 * The cause names what an operator has to change, so a limit above the
 * socket wins over the socket's own buffer when both are reached: the
 * global hard limit (with the exact value the kernel decided on when a
 * refusal on this socket and CPU just preceded the drop), then the
 * socket's memory cgroup (under its pressure the buffer stops growing, and
 * raising tcp_rmem would change nothing), then its own buffer (tcp_rmem,
 * SO_RCVBUF), then global pressure and its fairness rule.
 */
static __always_inline __u8 drop_cause(const struct sock *sk, const struct sk_buff *skb)
{
	const struct proto *prot = sk->__sk_common.skc_prot;
	struct last_refusal *lr;
	__u32 zero = 0;
	__s64 alloc;

	alloc = prot_allocated(prot);
	lr = bpf_map_lookup_elem(&last_refusal, &zero);
	if (lr && lr->sk == (__u64)sk && bpf_ktime_get_ns() - lr->ts < 1000000)
		alloc = lr->allocated;
	if (alloc > prot_limit(prot, 2))
		return DROP_CAUSE_GLOBAL_HARD_LIMIT;
	if (memcg_limited(sk))
		return DROP_CAUSE_MEMCG;
	if (sk->sk_backlog.rmem_alloc.counter + (int)skb->truesize > sk->sk_rcvbuf)
		return DROP_CAUSE_RCVBUF;
	if (pressure_now() || alloc > prot_limit(prot, 1))
		return DROP_CAUSE_GLOBAL_PRESSURE;
	return DROP_CAUSE_UNKNOWN;
}

#endif
