//go:build ignore
// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * tcpmemtrace: count every TCP socket-memory event exactly (per-CPU totals,
 * per-owner counts) and sample each one to a ringbuf with its socket and
 * the process that owns the socket.
 *
 * One handler per kernel event; thin wrappers per hook type. Userspace
 * probes the kernel, keeps the programs it will attach and drops the rest.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "tcpmemtrace.h"

#define AF_INET 2
#define AF_INET6 10
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define S_IFMT 00170000
#define S_IFSOCK 0140000

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Keeps struct event and owner_key in the object's BTF for bpf2go. */
const struct event *unused_event __attribute__((unused));
const struct owner_key *unused_owner_key __attribute__((unused));

/* Kernel drop-reason value -> counter slot; 0 = not a memory drop. Filled
 * from the running kernel's BTF by name, since the numbers move. */
const volatile __u8 drop_slot[MAX_DROP_REASONS] = {};
/* SK_RST_REASON_TCP_ABORT_ON_MEMORY on this kernel (6.12+). */
const volatile __u32 rst_abort_on_memory = 0xffffffff;
/* SOCK_MIN_SNDBUF, derived from sizeof(struct sk_buff) in userspace. */
const volatile __u32 sock_min_sndbuf = 4608;
/* Only count events of this network namespace (inode); 0 = all. */
const volatile __u32 filter_netns = 0;
/* Owner filters: FILTER_* bits, and their arguments. */
const volatile __u8 filter_owner = 0;
const volatile __u64 filter_comm[2] = {};
const volatile __u64 filter_cgroup_id = 0;
const volatile __u32 filter_cgroup_level = 0;

/* Before 6.11, fexit programs count the TCP drops of these slots with their
 * socket (bit per slot) and kfree_skb leaves them alone; reasons' values. */
const volatile __u8 tcp_slots_elsewhere = 0;
const volatile __u32 reason_proto_mem = 0;
const volatile __u32 reason_socket_backlog = 0;

/* Kernels before ~6.2 refuse direct loads through pointers to scalars
 * (proto->memory_pressure, ->sysctl_mem); userspace sets this and reloads
 * when the verifier says so. Constant after load: the other branch is dead. */
const volatile __u8 scalar_ptr_probe_read = 0;

/* Record budget: drop and refusal records a CPU may send per window;
 * beyond it they are counted (unsampled) but not sent. 0 = no limit.
 * Aborts and pressure changes are always sent. */
const volatile __u32 records_per_window = 0;
#define RECORD_WINDOW_NS 100000000ULL

/* Last value of tcp_memory_pressure seen: the jiffies at which the current
 * episode began, or 0. Updated by CAS so one CPU reports each transition. */
volatile __u64 pressure_cur = PRESSURE_UNKNOWN;

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

/* Socket address -> owner; entries go at tcp_destroy_sock. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct owner);
} owners SEC(".maps");

/* Not LRU: an evicted owner would lose counts. Userspace inserts the
 * overflow key before attaching. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, struct owner_key);
	__type(value, struct owner_stats);
} owner_totals SEC(".maps");

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

/* -p/--pid: the selected tgids. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u8);
} pid_filter SEC(".maps");

struct record_window {
	__u64 start;
	__u32 used;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct record_window);
} record_window SEC(".maps");

/* Per-CPU cache of the last socket stamped and its owner: the hot
 * send/recv hooks skip the owners lookup while they see the same pair. */
struct last_stamp {
	__u64 sk;
	__u32 tgid;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct last_stamp);
} last_stamp SEC(".maps");

static const struct owner_stats zero_stats;

static __always_inline struct counters *totals_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&totals, &zero);
}

/* Atomic even per CPU: different programs share a counter (lost_samples),
 * and a process-context program can be interrupted by a softirq one. */
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

static __always_inline __u32 sk_netns(const struct sock *sk)
{
	return sk->__sk_common.skc_net.net->ns.inum;
}

/* Request and timewait sockets are only a sock_common. */
static __always_inline bool sk_fullsock(const struct sock *sk)
{
	__u8 state = sk->__sk_common.skc_state;

	return state != TCP_TIME_WAIT && state != TCP_NEW_SYN_RECV;
}

static __always_inline bool sk_is_tcp(const struct sock *sk)
{
	__u16 family = sk->__sk_common.skc_family;

	return sk->sk_protocol == IPPROTO_TCP && (family == AF_INET || family == AF_INET6);
}

/* The kernel clamps the per-CPU-batched counter at 0 (proto_memory_allocated). */
static __always_inline __s64 prot_allocated(const struct proto *prot)
{
	__s64 a = prot->memory_allocated->counter;

	return a < 0 ? 0 : a;
}

static __always_inline long read_long(const long *p)
{
	long v = 0;

	if (scalar_ptr_probe_read)
		bpf_probe_read_kernel(&v, sizeof(v), p);
	else
		v = *p;
	return v;
}

static __always_inline __s64 prot_limit(const struct proto *prot, int i)
{
	return read_long(prot->sysctl_mem + i);
}

static __always_inline __u64 pressure_now(void)
{
	__u64 v = pressure_cur;

	return v == PRESSURE_UNKNOWN ? 0 : v;
}

static __always_inline struct owner *owner_of(const struct sock *sk)
{
	__u64 key = (__u64)sk;

	return bpf_map_lookup_elem(&owners, &key);
}

/* Owner filters run before anything is counted: filtered totals are the
 * selected owners' totals. An unknown owner matches no filter. */
static __always_inline bool owner_selected(const struct owner *o)
{
	if (!filter_owner)
		return true;
	if (!o)
		return false;
	if ((filter_owner & FILTER_PID) && !bpf_map_lookup_elem(&pid_filter, &o->tgid))
		return false;
	if ((filter_owner & FILTER_COMM) && (((const __u64 *)o->comm)[0] != filter_comm[0] ||
					     ((const __u64 *)o->comm)[1] != filter_comm[1]))
		return false;
	if ((filter_owner & FILTER_CGROUP) && !o->cgroup_match)
		return false;
	return true;
}

/* The owner's exact counts, created on first use; the overflow entry when
 * the map is full. */
static __always_inline struct counts *owner_counts(const struct owner *o)
{
	struct owner_key k = {};
	struct owner_stats *s;

	if (o) {
		k.tgid = o->tgid;
		k.cgroup_id = o->cgroup_id;
	}
	s = bpf_map_lookup_elem(&owner_totals, &k);
	if (!s) {
		bpf_map_update_elem(&owner_totals, &k, &zero_stats, BPF_NOEXIST);
		s = bpf_map_lookup_elem(&owner_totals, &k);
		if (s && o)
			__builtin_memcpy(s->comm, o->comm, sizeof(s->comm));
	}
	if (!s) {
		k.tgid = OVERFLOW_TGID;
		k.cgroup_id = 0;
		s = bpf_map_lookup_elem(&owner_totals, &k);
	}
	return s ? &s->c : NULL;
}

/* The filters a socket's event must pass (namespace, owner), then where it
 * is counted: the totals (returned; NULL when filtered out) and, through oc,
 * its owner's counts. */
static __always_inline struct counters *counted(const struct sock *sk, __u32 netns,
						struct owner **o, struct counts **oc)
{
	struct counters *c;

	if (filter_netns && netns != filter_netns)
		return NULL;
	*o = owner_of(sk);
	if (!owner_selected(*o))
		return NULL;
	c = totals_get();
	if (c)
		*oc = owner_counts(*o);
	return c;
}

/* Drop and refusal records can come in storms: they are the ones the
 * record budget and the batched wakeup apply to. */
static __always_inline bool storm_kind(__u8 kind)
{
	return kind == EV_DROP || kind == EV_REFUSAL;
}

/* Within this CPU's record budget? Races between a task and a softirq on
 * one CPU can only make the budget a little loose; counts are not
 * affected. */
static __always_inline bool within_budget(struct counters *c)
{
	struct record_window *w;
	__u32 zero = 0;
	__u64 now;

	if (!records_per_window)
		return true;
	w = bpf_map_lookup_elem(&record_window, &zero);
	if (!w)
		return true;
	now = bpf_ktime_get_ns();
	if (now - w->start >= RECORD_WINDOW_NS) {
		w->start = now;
		w->used = 0;
	}
	if (w->used >= records_per_window) {
		add(&c->unsampled, 1);
		return false;
	}
	w->used++;
	return true;
}

/* Drop and refusal records do not wake the reader, which drains the ring
 * every 100 ms: one wakeup per batch instead of one per record under a
 * storm. Aborts and pressure changes wake it at once (forced: records
 * still unread before them would make the adaptive wakeup skip it). */
static __always_inline void submit(struct event *e)
{
	bpf_ringbuf_submit(e, storm_kind(e->kind) ? BPF_RB_NO_WAKEUP : BPF_RB_FORCE_WAKEUP);
}

static __always_inline struct event *reserve(struct counters *c, __u8 kind)
{
	struct event *e;

	if (storm_kind(kind) && !within_budget(c))
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
 * The cookie helper takes only trusted pointers (hook arguments); a socket
 * reached through skb->sk gives its cookie only if one was made already.
 */
static __always_inline void fill_sock(struct event *e, const struct sock *sk, __u32 netns,
				      const struct owner *o, bool trusted)
{
	struct mem_cgroup *memcg;

	if (trusted)
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
 * The protocol's memory_pressure word is 0 or the jiffies at which the
 * episode began, so a change of value is an episode boundary. Global, not
 * per netns or owner: reported whatever the filters. The first sample only
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

/* Owner from the current task; sk is only a key here. */
static __always_inline void stamp_owner(const struct sock *sk)
{
	__u64 key = (__u64)sk;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct owner *o, n = {};

	if (!tgid)
		return;
	o = bpf_map_lookup_elem(&owners, &key);
	if (o && o->tgid == tgid)
		return;
	n.tgid = tgid;
	n.cgroup_id = bpf_get_current_cgroup_id();
	if (filter_owner & FILTER_CGROUP)
		n.cgroup_match =
			bpf_get_current_ancestor_cgroup_id(filter_cgroup_level) == filter_cgroup_id;
	bpf_get_current_comm(n.comm, sizeof(n.comm));
	bpf_map_update_elem(&owners, &key, &n, BPF_ANY);
}

/*
 * tcp_check_oom() was true: the kernel kills the socket. Which half of the
 * check fired is re-evaluated as tcp_out_of_memory() does; the orphan half
 * cannot be read from BPF, so "not out of memory" means "too many orphans".
 */
static __always_inline void handle_abort(const struct sock *sk, __u32 reason)
{
	struct counts *oc = NULL;
	struct owner *o = NULL;
	const struct proto *prot;
	struct counters *c;
	struct event *e;
	__u32 netns;
	bool oom;

	if (!sk_is_tcp(sk))
		return;
	sample_pressure(sk);
	netns = sk_netns(sk);
	c = counted(sk, netns, &o, &oc);
	if (!c)
		return;
	prot = sk->__sk_common.skc_prot;
	oom = sk->sk_wmem_queued > (int)sock_min_sndbuf &&
	      prot_allocated(prot) > prot_limit(prot, 2);
	if (oom)
		COUNT(c, oc, mem_aborts, 1);
	else
		COUNT(c, oc, orphan_aborts, 1);

	e = reserve(c, EV_ABORT);
	if (!e)
		return;
	fill_sock(e, sk, netns, o, true);
	fill_mem(e, prot);
	e->detail = oom ? CAUSE_MEMORY : CAUSE_ORPHANS;
	e->reason = reason;
	submit(e);
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
 * Why this TCP socket lost data to memory, in the kernel's order of checks:
 * its own buffer; the global hard limit (with the exact value the kernel
 * decided on when a refusal on this socket and CPU just preceded the drop);
 * its memory cgroup; global pressure and its fairness rule.
 */
static __always_inline __u8 drop_cause(const struct sock *sk, const struct sk_buff *skb)
{
	const struct proto *prot = sk->__sk_common.skc_prot;
	struct last_refusal *lr;
	__u32 zero = 0;
	__s64 alloc;

	if (sk->sk_backlog.rmem_alloc.counter + (int)skb->truesize > sk->sk_rcvbuf)
		return DROP_CAUSE_RCVBUF;
	alloc = prot_allocated(prot);
	lr = bpf_map_lookup_elem(&last_refusal, &zero);
	if (lr && lr->sk == (__u64)sk && bpf_ktime_get_ns() - lr->ts < 1000000)
		alloc = lr->allocated;
	if (alloc > prot_limit(prot, 2))
		return DROP_CAUSE_GLOBAL_HARD;
	if (memcg_limited(sk))
		return DROP_CAUSE_MEMCG;
	if (pressure_now() || alloc > prot_limit(prot, 1))
		return DROP_CAUSE_GLOBAL_PRESSURE;
	return DROP_CAUSE_UNKNOWN;
}

/* Without a socket, tell TCP from the IP header the skb still carries. */
static __always_inline bool skb_is_tcp(const struct sk_buff *skb)
{
	unsigned char *nh = skb->head + skb->network_header;
	__u8 proto = 0;

	if (skb->protocol == bpf_htons(ETH_P_IP))
		bpf_probe_read_kernel(&proto, 1, nh + offsetof(struct iphdr, protocol));
	else if (skb->protocol == bpf_htons(ETH_P_IPV6))
		bpf_probe_read_kernel(&proto, 1, nh + offsetof(struct ipv6hdr, nexthdr));
	return proto == IPPROTO_TCP;
}

static __always_inline int count_drop(const struct sk_buff *skb, __u32 reason, __u8 slot,
				      const struct sock *sk, bool trusted, bool from_kfree)
{
	__u8 cause = DROP_CAUSE_UNKNOWN;
	struct owner *o = NULL;
	struct counters *c;
	struct counts *oc;
	struct event *e;
	__u32 netns, len;
	bool tcp;

	if (sk && !sk_fullsock(sk))
		sk = NULL;
	if (sk) {
		tcp = sk_is_tcp(sk);
		netns = sk_netns(sk);
	} else {
		tcp = skb_is_tcp(skb);
		netns = skb->dev ? skb->dev->nd_net.net->ns.inum : 0;
	}
	if (from_kfree && tcp && (tcp_slots_elsewhere & (1 << slot)))
		return 0;
	if (filter_netns && netns != filter_netns)
		return 0;
	if (sk && tcp)
		o = owner_of(sk);
	if (!owner_selected(o))
		return 0;
	c = totals_get();
	if (!c)
		return 0;
	oc = owner_counts(o);
	len = skb->len;
	if (tcp) {
		COUNT(c, oc, tcp_drops[slot], 1);
		COUNT(c, oc, tcp_drop_bytes[slot], len);
	} else {
		COUNT(c, oc, other_drops[slot], 1);
		COUNT(c, oc, other_drop_bytes[slot], len);
	}
	if (sk && tcp) {
		sample_pressure(sk);
		/* The drops where TCP refused memory to arriving data: their
		 * causes add up to the PROTO_MEM count. */
		if (slot == SLOT_PROTO_MEM) {
			cause = drop_cause(sk, skb);
			COUNT(c, oc, drop_causes[cause & (DROP_CAUSES - 1)], 1);
		}
	}

	e = reserve(c, EV_DROP);
	if (!e)
		return 0;
	e->cause = cause;
	e->detail = slot;
	e->reason = reason;
	e->len = len;
	e->truesize = skb->truesize;
	if (sk && tcp) {
		fill_sock(e, sk, netns, o, trusted);
		fill_mem(e, sk->__sk_common.skc_prot);
	} else {
		e->netns = netns;
		e->protocol = sk ? sk->sk_protocol : (tcp ? IPPROTO_TCP : 0);
		e->family = sk ? sk->__sk_common.skc_family : 0;
	}
	submit(e);
	return 0;
}

/* Runs on every freed skb of the host: leave before any map lookup unless
 * the reason is one we count. With has_rx_sk (6.11+) the socket is rx_sk,
 * a trusted argument, or none: every memory drop with a socket passes it,
 * and one instance of count_drop halves the verifier's work at load. */
static __always_inline int handle_drop(const struct sk_buff *skb, __u32 reason,
				       const struct sock *rx_sk, bool has_rx_sk)
{
	__u8 slot;

	/* Keep the bounds check and the index in one register for the verifier. */
	barrier_var(reason);
	if (reason >= MAX_DROP_REASONS)
		return 0;
	/* Userspace never stores a slot >= DROP_SLOTS; the mask proves it. */
	slot = drop_slot[reason] & (DROP_SLOTS - 1);
	if (!slot)
		return 0;
	if (has_rx_sk)
		return count_drop(skb, reason, slot, rx_sk, true, true);
	return count_drop(skb, reason, slot, skb->sk, false, true);
}

/* ---- memory aborts ---------------------------------------------------- */

SEC("fexit/tcp_check_oom")
int BPF_PROG(fexit_tcp_check_oom, struct sock *sk, int shift, bool ret)
{
	if (ret)
		handle_abort(sk, 0);
	return 0;
}

/* Fallback (6.12+): both abort paths send this reset reason. */
SEC("tp_btf/tcp_send_reset")
int BPF_PROG(tp_tcp_send_reset, const struct sock *sk, const struct sk_buff *skb, int reason)
{
	if (sk && (__u32)reason == rst_abort_on_memory)
		handle_abort(sk, reason);
	return 0;
}

/* ---- pressure episodes -------------------------------------------------- */

SEC("fexit/tcp_enter_memory_pressure")
int BPF_PROG(fexit_tcp_enter_memory_pressure, struct sock *sk)
{
	sample_pressure(sk);
	return 0;
}

SEC("fexit/tcp_leave_memory_pressure")
int BPF_PROG(fexit_tcp_leave_memory_pressure, struct sock *sk)
{
	sample_pressure(sk);
	return 0;
}

/* ---- drops --------------------------------------------------------------- */

/* 6.11+: the receiving socket is an argument (rx_sk). */
SEC("tp_btf/kfree_skb")
int BPF_PROG(tp_kfree_skb, struct sk_buff *skb, void *location, enum skb_drop_reason reason,
	     struct sock *rx_sk)
{
	return handle_drop(skb, reason, rx_sk, true);
}

/* 5.17-6.10: no rx_sk; skb->sk or the IP header tell the socket/protocol. */
SEC("tp_btf/kfree_skb")
int BPF_PROG(tp_kfree_skb_norxsk, struct sk_buff *skb, void *location, enum skb_drop_reason reason)
{
	return handle_drop(skb, reason, NULL, false);
}

/*
 * Before 6.11: the receive-memory check whose failure is a TCP PROTO_MEM
 * drop, with its socket. Out of order (seq after rcv_nxt) a failure is a
 * drop (TCPOFODrop); in order it is one (TCPRcvQDrop) only when the receive
 * queue holds data, since an empty queue is force-charged instead.
 */
SEC("fexit/tcp_try_rmem_schedule")
int BPF_PROG(fexit_tcp_try_rmem_schedule, struct sock *sk, struct sk_buff *skb, unsigned int size,
	     int ret)
{
	struct tcp_sock *tp;
	__u32 seq = 0;

	if (!ret)
		return 0;
	tp = bpf_skc_to_tcp_sock(sk);
	if (!tp)
		return 0;
	bpf_probe_read_kernel(&seq, sizeof(seq), skb->cb); /* TCP_SKB_CB(skb)->seq */
	if ((__s32)(seq - tp->rcv_nxt) <= 0 && !sk->sk_receive_queue.qlen)
		return 0;
	count_drop(skb, reason_proto_mem, SLOT_PROTO_MEM, sk, true, false);
	return 0;
}

/* Before 6.11: true with *reason SOCKET_BACKLOG is a backlog drop
 * (TCPBacklogDrop); true is also a checksum drop, which is not ours. Older
 * verifiers refuse typed access to a pointer-to-enum argument: read it raw. */
SEC("fexit/tcp_add_backlog")
int BPF_PROG(fexit_tcp_add_backlog, struct sock *sk, struct sk_buff *skb, void *unused, bool ret)
{
	__u64 reason_ptr = 0;
	__u32 r = 0;

	if (!ret || bpf_get_func_arg(ctx, 2, &reason_ptr))
		return 0;
	bpf_probe_read_kernel(&r, sizeof(r), (void *)reason_ptr);
	if (r == reason_socket_backlog)
		count_drop(skb, r, SLOT_SOCKET_BACKLOG, sk, true, false);
	return 0;
}

/* ---- allocation refusals ------------------------------------------------ */

SEC("tp_btf/sock_exceed_buf_limit")
int BPF_PROG(tp_sock_exceed_buf_limit, struct sock *sk, struct proto *prot, long allocated,
	     int kind)
{
	struct counts *oc = NULL;
	struct owner *o = NULL;
	struct counters *c;
	struct event *e;
	__u32 netns;

	if (!sk_is_tcp(sk))
		return 0;
	sample_pressure(sk);
	netns = sk_netns(sk);
	c = counted(sk, netns, &o, &oc);
	if (!c)
		return 0;
	if (kind) {
		struct last_refusal *lr;
		__u32 zero = 0;

		COUNT(c, oc, refusals_recv, 1);
		lr = bpf_map_lookup_elem(&last_refusal, &zero);
		if (lr) {
			lr->sk = (__u64)sk;
			lr->ts = bpf_ktime_get_ns();
			lr->allocated = allocated;
		}
	} else {
		COUNT(c, oc, refusals_send, 1);
	}

	e = reserve(c, EV_REFUSAL);
	if (!e)
		return 0;
	fill_sock(e, sk, netns, o, true);
	fill_mem(e, prot);
	e->allocated = allocated;
	e->detail = kind ? 1 : 0;
	submit(e);
	return 0;
}

/* ---- owners and pressure samples from process context -------------------- */

/* A writer told EAGAIN while TCP is under memory pressure: its write was
 * cut short by the memory limits (blocking writers wait unseen instead). */
static __always_inline void count_send_stall(const struct sock *sk)
{
	struct counts *oc = NULL;
	struct owner *o = NULL;
	struct counters *c = counted(sk, sk_netns(sk), &o, &oc);

	if (c)
		COUNT(c, oc, send_stalls, 1);
}

/* stamp_owner behind the per-CPU cache. The cache may keep a socket that
 * was since freed; a new socket at that address is stamped by connect,
 * listen or accept, which bypass the cache, so at worst an owner change by
 * the same task on the same CPU goes unseen. */
static __always_inline void stamp_owner_cached(const struct sock *sk)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct last_stamp *ls;
	__u32 zero = 0;

	ls = bpf_map_lookup_elem(&last_stamp, &zero);
	if (ls && ls->sk == (__u64)sk && ls->tgid == tgid)
		return;
	stamp_owner(sk);
	if (ls) {
		ls->sk = (__u64)sk;
		ls->tgid = tgid;
	}
}

static __always_inline int on_sock_io(const struct sock *sk, int ret, bool send)
{
	if (!sk || sk->sk_protocol != IPPROTO_TCP)
		return 0;
	sample_pressure(sk);
	stamp_owner_cached(sk);
	if (send && ret == -11 /* EAGAIN */ && pressure_now())
		count_send_stall(sk);
	return 0;
}

/* 6.3+. Hot (every sendmsg/recvmsg), so both paths end early when nothing
 * changed. Also the pressure sampler's trigger: userspace sends on an
 * unconnected TCP socket to make a sample happen. */
SEC("tp_btf/sock_send_length")
int BPF_PROG(tp_sock_send_length, struct sock *sk, int ret, int flags)
{
	return on_sock_io(sk, ret, true);
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(tp_sock_recv_length, struct sock *sk, int ret, int flags)
{
	return on_sock_io(sk, ret, false);
}

/* connect() and listen() run in the owner's context; the passive side's
 * SYN_RECV -> ESTABLISHED does not (accept exit covers it). FIN_WAIT1 and
 * LAST_ACK are entered only by close()/shutdown(): the close time an
 * orphan keeps. */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(tp_inet_sock_set_state, const struct sock *sk, int oldstate, int newstate)
{
	struct owner *o;

	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	if (newstate == TCP_SYN_SENT || newstate == TCP_LISTEN) {
		stamp_owner(sk);
	} else if (newstate == TCP_FIN_WAIT1 || newstate == TCP_LAST_ACK) {
		o = owner_of(sk);
		if (o && !o->closed_ns)
			o->closed_ns = bpf_ktime_get_boot_ns();
	}
	return 0;
}

SEC("tp_btf/tcp_destroy_sock")
int BPF_PROG(tp_tcp_destroy_sock, struct sock *sk)
{
	__u64 key = (__u64)sk;
	struct last_stamp *ls;
	__u32 zero = 0;

	bpf_map_delete_elem(&owners, &key);
	ls = bpf_map_lookup_elem(&last_stamp, &zero);
	if (ls && ls->sk == key)
		ls->sk = 0;
	return 0;
}

/* fd -> socket -> sk of the current task (classic tracepoints get no BTF
 * pointers, so this walks with CO-RE reads). */
static __always_inline struct sock *fd_sock(long fd)
{
	struct task_struct *task = (void *)bpf_get_current_task();
	struct file **fds, *f = NULL;
	struct fdtable *fdt;
	struct socket *sock;

	if (fd < 0)
		return NULL;
	fdt = BPF_CORE_READ(task, files, fdt);
	if (!fdt || fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	fds = BPF_CORE_READ(fdt, fd);
	bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]);
	if (!f)
		return NULL;
	sock = BPF_CORE_READ(f, private_data);
	return BPF_CORE_READ(sock, sk);
}

/* A reader that never reads is seen only here. */
static __always_inline int stamp_fd(long fd)
{
	struct sock *sk = fd_sock(fd);

	if (sk && BPF_CORE_READ(sk, sk_protocol) == IPPROTO_TCP)
		stamp_owner(sk);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int tp_sys_exit_accept4(struct trace_event_raw_sys_exit *ctx)
{
	return stamp_fd(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_accept")
int tp_sys_exit_accept(struct trace_event_raw_sys_exit *ctx)
{
	return stamp_fd(ctx->ret);
}

/* ---- startup snapshot ------------------------------------------------------ */

/* Cgroup v2 ancestor of a task at a level (cgroup->ancestors[], 6.2+ as
 * struct pointers; before, ancestor_ids[] held the ids). */
struct cgroup___old {
	u64 ancestor_ids[0];
} __attribute__((preserve_access_index));

static __always_inline __u64 task_ancestor_cgroup(struct cgroup *cg, __u32 level)
{
	struct cgroup *anc = NULL;

	if (level > BPF_CORE_READ(cg, level))
		return 0;
	if (bpf_core_field_exists(cg->ancestors)) {
		bpf_probe_read_kernel(&anc, sizeof(anc), &cg->ancestors[level]);
		return anc ? BPF_CORE_READ(anc, kn, id) : 0;
	}
	__u64 id = 0;
	bpf_probe_read_kernel(&id, sizeof(id), &((struct cgroup___old *)cg)->ancestor_ids[level]);
	return id;
}

/* Every TCP socket open when the tracer starts gets the owner of an fd that
 * holds it; hooks that stamped it already win (BPF_NOEXIST). */
SEC("iter/task_file")
int snapshot_owners(struct bpf_iter__task_file *ctx)
{
	struct task_struct *task = ctx->task;
	struct file *file = ctx->file;
	struct owner n = {};
	struct socket *sock;
	struct cgroup *cg;
	struct sock *sk;
	__u64 key;

	if (!task || !file)
		return 0;
	if ((BPF_CORE_READ(file, f_inode, i_mode) & S_IFMT) != S_IFSOCK)
		return 0;
	sock = BPF_CORE_READ(file, private_data);
	sk = BPF_CORE_READ(sock, sk);
	if (!sk || BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	n.tgid = BPF_CORE_READ(task, tgid);
	bpf_probe_read_kernel_str(n.comm, sizeof(n.comm), task->comm);
	cg = BPF_CORE_READ(task, cgroups, dfl_cgrp);
	n.cgroup_id = BPF_CORE_READ(cg, kn, id);
	if (filter_owner & FILTER_CGROUP)
		n.cgroup_match = task_ancestor_cgroup(cg, filter_cgroup_level) == filter_cgroup_id;
	key = (__u64)sk;
	bpf_map_update_elem(&owners, &key, &n, BPF_NOEXIST);
	return 0;
}
