/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Exact counting and sampled records: the per-CPU totals, the per-owner
 * counts, the record budget and the ringbuf.
 */
#ifndef TCPMEMTRACE_EVENTS_BPF_H
#define TCPMEMTRACE_EVENTS_BPF_H

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct counters);
} totals SEC(".maps");

/* Sized by userspace before load. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} events SEC(".maps");

/* Not LRU: an evicted owner would lose counts. Userspace inserts the
 * overflow key before attaching. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, struct owner_key);
	__type(value, struct owner_stats);
} owner_totals SEC(".maps");

#define RECORD_WINDOW_NS 100000000ULL

static const struct owner_stats zero_stats;

static __always_inline struct counters *totals_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&totals, &zero);
}

/* Atomic even per CPU: different programs share a counter (lost_samples),
 * and a process-context program can be interrupted by a softirq one. The
 * result is unused, so this is the plain atomic add every kernel takes. */
static __always_inline void add(__u64 *p, __u64 v)
{
	__sync_fetch_and_add(p, v);
}

/* Count in the totals and, when known, in the owner's counts. */
#define COUNT(tot, own, field, v)                                                                  \
	do {                                                                                       \
		struct counts *__own = (own);                                                      \
		add(&(tot)->all.field, v);                                                         \
		if (__own)                                                                         \
			add(&__own->field, v);                                                     \
	} while (0)

/* The owner's exact counts, created on first use; the overflow entry when
 * the map is full. Sockets of no known owner have none: userspace counts
 * them as the totals less every owner's. */
static __always_inline struct counts *owner_counts(const struct owner *o)
{
	struct owner_key k = {};
	struct owner_stats *s;

	if (!o)
		return NULL;
	k.tgid = o->tgid;
	k.cgroup_id = o->cgroup_id;
	s = bpf_map_lookup_elem(&owner_totals, &k);
	if (!s) {
		bpf_map_update_elem(&owner_totals, &k, &zero_stats, BPF_NOEXIST);
		s = bpf_map_lookup_elem(&owner_totals, &k);
		if (s)
			__builtin_memcpy(s->comm, o->comm, sizeof(s->comm));
	}
	if (!s) {
		k.tgid = OVERFLOW_TGID;
		k.cgroup_id = 0;
		s = bpf_map_lookup_elem(&owner_totals, &k);
		if (!s)
			return NULL;
	}
	return &s->c;
}

/* Drop and refusal records can come in storms: they are the ones the
 * record budget and the batched wakeup apply to. */
static __always_inline bool storm_kind(__u8 kind)
{
	return kind == EV_DROP || kind == EV_REFUSAL;
}

/* How a record may be sent under the budget. */
enum budget { OVER_BUDGET, FIRST_IN_WINDOW, IN_WINDOW };

/* Within this CPU's record budget (kept beside its totals: no lookup of
 * its own)? Races between a task and a softirq on one CPU can only make
 * the budget a little loose; counts are not affected. */
static __always_inline enum budget within_budget(struct counters *c)
{
	__u64 now;

	if (!CFG.records_per_window)
		return FIRST_IN_WINDOW;
	now = bpf_ktime_get_ns();
	if (now - c->window_start >= RECORD_WINDOW_NS) {
		c->window_start = now;
		c->window_used = 0;
	}
	if (c->window_used >= CFG.records_per_window) {
		add(&c->unsampled, 1);
		return OVER_BUDGET;
	}
	return c->window_used++ ? IN_WINDOW : FIRST_IN_WINDOW;
}

/*
 * Waking the reader costs more than the record. The first drop or refusal
 * record of a CPU's window wakes it if it is idle (adaptive wakeup); the
 * rest of the window's do not, and the reader, once awake, drains every
 * 250 ms while records keep coming. Aborts and pressure changes wake it at
 * once (forced: records still unread before them would make the adaptive
 * wakeup skip it).
 */
static __always_inline void submit(struct event *e, enum budget b)
{
	__u64 flags = BPF_RB_FORCE_WAKEUP;

	if (storm_kind(e->kind))
		flags = b == FIRST_IN_WINDOW ? 0 : BPF_RB_NO_WAKEUP;
	bpf_ringbuf_submit(e, flags);
}

static __always_inline struct event *reserve(struct counters *c, __u8 kind, enum budget *b)
{
	struct event *e;

	*b = FIRST_IN_WINDOW;
	if (storm_kind(kind) && (*b = within_budget(c)) == OVER_BUDGET)
		return NULL;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		add(&c->lost_samples, 1);
		return NULL;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->ts_boot_ns = bpf_ktime_get_boot_ns();
	e->cur_tgid = bpf_get_current_pid_tgid() >> 32;
	e->kind = kind;
	return e;
}

static __always_inline void fill_mem(struct event *e, const struct proto *prot)
{
	e->allocated = prot_allocated(prot);
	e->mem_limit[0] = prot_limit(prot, 0);
	e->mem_limit[1] = prot_limit(prot, 1);
	e->mem_limit[2] = prot_limit(prot, 2);
	e->pressure_id = pressure_now();
}

/*
 * Socket identity, queues, cgroups and owner; sk must be a full TCP socket.
 * The cookie helper takes only trusted pointers (hook arguments), and
 * tracing programs have it since 5.12; otherwise the cookie is there only
 * if one was made already.
 */
static __always_inline void fill_sock(struct event *e, const struct sock *sk, __u32 netns,
				      const struct owner *o, bool trusted)
{
	struct mem_cgroup *memcg;

	if (trusted && CFG.socket_cookie_helper)
		e->cookie = bpf_get_socket_cookie((void *)sk);
	else
		e->cookie = sk->__sk_common.skc_cookie.counter;
	e->netns = netns;
	e->family = sk->__sk_common.skc_family;
	e->state = sk->__sk_common.skc_state;
	e->protocol = IPPROTO_TCP;
	e->sport = sk->__sk_common.skc_num;
	/* Unhashing at TCP_CLOSE zeroes skc_num (the abort path closes before
	 * it resets); inet_sport keeps the port. */
	if (!e->sport)
		e->sport = bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
	e->dport = bpf_ntohs(sk->__sk_common.skc_dport);
	if (e->family == AF_INET) {
		*(__u32 *)e->saddr = sk->__sk_common.skc_rcv_saddr;
		*(__u32 *)e->daddr = sk->__sk_common.skc_daddr;
	} else {
		for (int i = 0; i < 4; i++) {
			((__u32 *)e->saddr)[i] =
				sk->__sk_common.skc_v6_rcv_saddr.in6_u.u6_addr32[i];
			((__u32 *)e->daddr)[i] = sk->__sk_common.skc_v6_daddr.in6_u.u6_addr32[i];
		}
	}
	e->rmem_alloc = sk->sk_backlog.rmem_alloc.counter;
	e->rcvbuf = sk->sk_rcvbuf;
	e->wmem_queued = sk->sk_wmem_queued;
	e->sndbuf = sk->sk_sndbuf;
	e->orphan = !!(sk->__sk_common.skc_flags &
		       (1UL << bpf_core_enum_value(enum sock_flags, SOCK_DEAD)));
	memcg = sk->sk_memcg;
	if (memcg) {
		e->memcg = 1;
		e->memcg_id = memcg->css.cgroup->kn->id;
	}
	if (bpf_core_field_exists(sk->sk_cgrp_data.cgroup))
		e->sk_cgroup_id = BPF_CORE_READ(sk, sk_cgrp_data.cgroup, kn, id);

	if (o) {
		e->tgid = o->tgid;
		e->cgroup_id = o->cgroup_id;
		e->closed_ns = o->closed_ns;
		__builtin_memcpy(e->comm, o->comm, sizeof(e->comm));
	}
}

#endif
