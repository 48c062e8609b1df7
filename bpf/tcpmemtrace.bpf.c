//go:build ignore
// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * tcpmemtrace: count every TCP socket-memory event exactly (per-CPU totals,
 * per-owner counts) and sample each one to a ringbuf with its socket and
 * the process that owns the socket.
 *
 * One handler per kernel event; thin wrappers per hook type. Userspace
 * probes the kernel, keeps the programs it will attach and drops the rest.
 * The helpers live in headers by concern: common (configuration, socket
 * and protocol fields), events (counting and records), owners, pressure,
 * causes.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "tcpmemtrace.h"
#include "common.bpf.h"
#include "events.bpf.h"
#include "owners.bpf.h"
#include "pressure.bpf.h"
#include "causes.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Keep the shared types in the object's BTF, where bpf2go (-type) and the
 * stream package's generator read them. */
const struct event *unused_event __attribute__((unused));
const struct owner_key *unused_owner_key __attribute__((unused));
const enum event_kind *unused_event_kind __attribute__((unused));
const enum abort_cause *unused_abort_cause __attribute__((unused));
const enum counter *unused_counter __attribute__((unused));
const enum drop_slot *unused_drop_slot __attribute__((unused));
const enum drop_proto *unused_drop_proto __attribute__((unused));
const enum drop_cause *unused_drop_cause __attribute__((unused));
const enum owner_filter *unused_owner_filter __attribute__((unused));

/* ---- handlers ------------------------------------------------------------- */

/* What every event on a TCP socket starts with: a pressure sample, then the
 * filters and where it is counted (NULL: not TCP, or filtered out). */
static __always_inline struct counters *socket_event(const struct sock *sk, __u32 *netns,
						     struct owner **o, struct counts **oc)
{
	if (!sk_is_tcp(sk))
		return NULL;
	sample_pressure(sk);
	*netns = sk_netns(sk);
	return counted(sk, *netns, o, oc);
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
	enum budget b;
	__u32 netns;
	bool oom;

	c = socket_event(sk, &netns, &o, &oc);
	if (!c)
		return;
	prot = sk->__sk_common.skc_prot;
	oom = sk->sk_wmem_queued > (int)CFG.sock_min_sndbuf &&
	      prot_allocated(prot) > prot_limit(prot, 2);
	if (oom)
		COUNT(c, oc, events[COUNTER_MEM_ABORTS], 1);
	else
		COUNT(c, oc, events[COUNTER_ORPHAN_ABORTS], 1);

	e = reserve(c, EV_ABORT, &b);
	if (!e)
		return;
	fill_sock(e, sk, netns, o, true);
	fill_mem(e, prot);
	e->detail = oom ? ABORT_MEMORY : ABORT_ORPHANS;
	e->reason = reason;
	submit(e, b);
}

/* A memory drop of slot (a tracked reason): counted by protocol, with its
 * socket, owner and cause when the kernel gives the socket. */
/* Exact drop counts by place (kfree_skb's location), for the summary;
 * the places are few: the drop sites of the tracked reasons. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct drop_place);
	__type(value, __u64);
} drop_places SEC(".maps");

static __always_inline void count_place(__u64 location, __u8 proto, __u8 slot)
{
	struct drop_place k = {.location = location, .proto = proto, .slot = slot};
	__u64 one = 1, *n;

	n = bpf_map_lookup_elem(&drop_places, &k);
	if (n) {
		add(n, 1);
		return;
	}
	/* Another CPU may have made it meanwhile: then add to it. */
	if (bpf_map_update_elem(&drop_places, &k, &one, BPF_NOEXIST)) {
		n = bpf_map_lookup_elem(&drop_places, &k);
		if (n)
			add(n, 1);
	}
}

static __always_inline int count_drop(const struct sk_buff *skb, __u32 reason, __u8 slot,
				      const struct sock *sk, bool trusted, __u64 location,
				      bool from_kfree)
{
	__u8 cause = DROP_CAUSE_UNKNOWN;
	struct owner *o = NULL;
	struct counters *c;
	struct counts *oc;
	struct event *e;
	enum budget b;
	__u32 netns, len;
	__u8 proto;
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
	if (from_kfree && tcp && (CFG.tcp_slots_elsewhere & (1 << slot)))
		return 0;
	if (CFG.filter_netns && netns != CFG.filter_netns)
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
	proto = tcp ? DROP_PROTO_TCP : DROP_PROTO_OTHER;
	COUNT(c, oc, drops[proto][slot], 1);
	COUNT(c, oc, drop_bytes[proto][slot], len);
	if (location)
		count_place(location, proto, slot);
	if (sk && tcp) {
		sample_pressure(sk);
		/* The drops where TCP refused memory to arriving data: their
		 * causes add up to the PROTO_MEM count. */
		if (slot == DROP_SLOT_PROTO_MEM) {
			cause = drop_cause(sk, skb);
			COUNT(c, oc, drop_causes[cause & (DROP_CAUSES - 1)], 1);
		}
	}

	e = reserve(c, EV_DROP, &b);
	if (!e)
		return 0;
	e->cause = cause;
	e->detail = slot;
	e->reason = reason;
	e->location = location;
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
	submit(e, b);
	return 0;
}

/* Runs on every freed skb of the host: leave before any map lookup unless
 * the reason is one we count. With has_rx_sk (6.11+) the socket is rx_sk,
 * a trusted argument, or none: every memory drop with a socket passes it,
 * and one instance of count_drop halves the verifier's work at load. */
static __always_inline int handle_drop(const struct sk_buff *skb, void *location, __u32 reason,
				       const struct sock *rx_sk, bool has_rx_sk)
{
	__u8 slot;

	/* Keep the bounds check and the index in one register for the verifier. */
	barrier_var(reason);
	if (reason >= MAX_DROP_REASONS)
		return 0;
	/* Userspace never stores a slot >= DROP_SLOTS; the mask proves it. */
	slot = CFG.drop_slot[reason] & (DROP_SLOTS - 1);
	if (!slot)
		return 0;
	if (has_rx_sk)
		return count_drop(skb, reason, slot, rx_sk, true, (__u64)location, true);
	return count_drop(skb, reason, slot, skb->sk, false, (__u64)location, true);
}

/* An allocation refused by the global limits or the memory cgroup. */
static __always_inline void handle_refusal(struct sock *sk, struct proto *prot, long allocated,
					   int kind)
{
	struct counts *oc = NULL;
	struct owner *o = NULL;
	struct counters *c;
	struct event *e;
	enum budget b;
	__u32 netns;

	c = socket_event(sk, &netns, &o, &oc);
	if (!c)
		return;
	if (kind) {
		COUNT(c, oc, events[COUNTER_REFUSALS_RECV], 1);
		remember_refusal(sk, allocated);
	} else {
		COUNT(c, oc, events[COUNTER_REFUSALS_SEND], 1);
	}

	e = reserve(c, EV_REFUSAL, &b);
	if (!e)
		return;
	fill_sock(e, sk, netns, o, true);
	fill_mem(e, prot);
	e->allocated = allocated;
	e->detail = kind ? 1 : 0;
	submit(e, b);
}

/* A writer told EAGAIN while TCP is under memory pressure: its write was
 * cut short by the memory limits (blocking writers wait unseen instead). */
static __always_inline int handle_send(const struct sock *sk, int ret)
{
	struct counts *oc = NULL;
	struct owner *o = NULL;
	struct counters *c;

	if (ret != -EAGAIN || !sk || sk->sk_protocol != IPPROTO_TCP || !pressure_now())
		return 0;
	c = counted(sk, sk_netns(sk), &o, &oc);
	if (c)
		COUNT(c, oc, events[COUNTER_SEND_STALLS], 1);
	return 0;
}

/* A reader that never reads is seen only at accept(). */
static __always_inline int stamp_fd(long fd)
{
	struct sock *sk = file_tcp_sock(fd_file(fd));

	if (sk)
		stamp_owner(sk);
	return 0;
}

/* Tell the tracer an owner must be settled (a forced wakeup). */
static __always_inline void request_settle(void)
{
	struct counters *c = totals_get();
	struct event *e;
	enum budget b;

	if (!c)
		return;
	e = reserve(c, EV_HANDOVER, &b);
	if (e)
		submit(e, b);
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
	if (sk && (__u32)reason == CFG.rst_abort_on_memory)
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
	return handle_drop(skb, location, reason, rx_sk, true);
}

/* 5.17-6.10: no rx_sk; skb->sk or the IP header tell the socket/protocol. */
SEC("tp_btf/kfree_skb")
int BPF_PROG(tp_kfree_skb_norxsk, struct sk_buff *skb, void *location, enum skb_drop_reason reason)
{
	return handle_drop(skb, location, reason, NULL, false);
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
	count_drop(skb, CFG.reason_proto_mem, DROP_SLOT_PROTO_MEM, sk, true, 0, false);
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
	if (r == CFG.reason_socket_backlog)
		count_drop(skb, r, DROP_SLOT_SOCKET_BACKLOG, sk, true, 0, false);
	return 0;
}

#define CHECKSUM_COMPLETE 2 /* include/linux/skbuff.h */

/* Before 5.19 tcp_add_backlog has no reason argument, and true is a
 * backlog drop (TCPBacklogDrop) or a checksum drop. The checksum check
 * leaves its verdict in the skb: checked in software and not valid is the
 * latter. */
SEC("fexit/tcp_add_backlog")
int BPF_PROG(fexit_tcp_add_backlog_noreason, struct sock *sk, struct sk_buff *skb, bool ret)
{
	if (!ret)
		return 0;
	if (BPF_CORE_READ_BITFIELD(skb, ip_summed) == CHECKSUM_COMPLETE &&
	    BPF_CORE_READ_BITFIELD(skb, csum_complete_sw) &&
	    !BPF_CORE_READ_BITFIELD(skb, csum_valid))
		return 0;
	count_drop(skb, 0, DROP_SLOT_SOCKET_BACKLOG, sk, true, 0, false);
	return 0;
}

/* ---- allocation refusals ------------------------------------------------ */

SEC("tp_btf/sock_exceed_buf_limit")
int BPF_PROG(tp_sock_exceed_buf_limit, struct sock *sk, struct proto *prot, long allocated,
	     int kind)
{
	handle_refusal(sk, prot, allocated, kind);
	return 0;
}

/* ---- send stalls, while under pressure ------------------------------------ */

/* 6.3+. Every send on the machine runs it, so the tracer attaches it only
 * while TCP is under memory pressure: stalls are counted from within a few
 * milliseconds of an episode's start. */
SEC("tp_btf/sock_send_length")
int BPF_PROG(tp_sock_send_length, struct sock *sk, int ret, int flags)
{
	return handle_send(sk, ret);
}

/* ---- pressure samples ------------------------------------------------------ */

/* Without fexit on tcp_{enter,leave}_memory_pressure no hook fires as an
 * episode ends (or as one begins with no memory event): the tracer runs
 * this (BPF_PROG_TEST_RUN). It returns the pace it needs: 1 (every 100 ms)
 * while TCP is under pressure, or not known to be out of it, or holds half
 * the pressure threshold or more; 0 (every second) below that, where an
 * episode needs the other half allocated first and the socket hooks sample
 * on the way. An idle machine then wakes the tracer once a second. */
SEC("raw_tp/sample_pressure")
int sample_pressure_tick(void *ctx)
{
	const struct proto *prot = (const struct proto *)tcp_prot;
	atomic_long_t *allocated;
	unsigned long *word;
	long a = 0, threshold = 0;
	long *limits;
	__u64 v = 0;

	if (!prot)
		return 1;
	word = BPF_CORE_READ(prot, memory_pressure);
	bpf_probe_read_kernel(&v, sizeof(v), word);
	note_pressure(prot, true, v);
	if (pressure_cur != 0)
		return 1;
	allocated = BPF_CORE_READ(prot, memory_allocated);
	limits = BPF_CORE_READ(prot, sysctl_mem);
	bpf_probe_read_kernel(&a, sizeof(a), &allocated->counter);
	bpf_probe_read_kernel(&threshold, sizeof(threshold), limits + 1);
	return 2 * a >= threshold;
}

/* ---- owners, stamped from process context ------------------------------- */

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
	if (newstate == TCP_SYN_SENT) {
		stamp_owner(sk);
	} else if (newstate == TCP_LISTEN) {
		stamp_owner(sk);
		stamp_listener(sk);
	} else if (oldstate == TCP_LISTEN && newstate == TCP_CLOSE) {
		/* The listener closes. (Its children start from a copy of its
		 * state: their LISTEN -> SYN_RECV is no close.) */
		struct listener_key lk = listener_key_of(sk);

		bpf_map_delete_elem(&listeners, &lk);
	} else if (newstate == TCP_FIN_WAIT1 || newstate == TCP_LAST_ACK) {
		o = stamped_owner(sk);
		if (o && !o->closed_ns)
			o->closed_ns = bpf_ktime_get_boot_ns();
	}
	return 0;
}

SEC("tp_btf/tcp_destroy_sock")
int BPF_PROG(tp_tcp_destroy_sock, struct sock *sk)
{
	forget_owner(sk);
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

/* listen() does not pass through inet_sock_set_state (its state is stored
 * directly): its caller owns the socket, and the connections that will
 * wait in its accept queue. The port is bound by then (bind(), or autobind
 * for a listen without one: then the port is 0 here and only the socket is
 * stamped). */
SEC("tracepoint/syscalls/sys_enter_listen")
int tp_sys_enter_listen(struct trace_event_raw_sys_enter *ctx)
{
	struct sock *sk = file_tcp_sock(fd_file(ctx->args[0]));

	if (sk) {
		stamp_owner(sk);
		stamp_listener(sk);
	}
	return 0;
}

/* A forking server (postmaster, sshd, inetd) accepts, forks a handler and
 * closes its copy; a process passes the fd on (SCM_RIGHTS) and closes its
 * copy. The socket is then the other holder's. */
SEC("tracepoint/syscalls/sys_enter_close")
int tp_sys_enter_close(struct trace_event_raw_sys_enter *ctx)
{
	if (note_handover(ctx->args[0]))
		request_settle();
	return 0;
}

/* An owning process ends: sockets others still hold are theirs. */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(tp_sched_process_exit, struct task_struct *task)
{
	__u32 tgid = task->tgid;
	__u64 now;

	if (task->pid != tgid || !bpf_map_lookup_elem(&owner_tgids, &tgid))
		return 0;
	now = bpf_ktime_get_boot_ns();
	bpf_map_update_elem(&exited_owners, &tgid, &now, BPF_ANY);
	bpf_map_delete_elem(&owner_tgids, &tgid);
	request_settle();
	return 0;
}

/* ---- owners from the open files ---------------------------------------------- */

/* Every TCP socket open when the tracer starts gets the owner of an fd that
 * holds it; hooks that stamped it already win (BPF_NOEXIST). */
SEC("iter/task_file")
int snapshot_owners(struct bpf_iter__task_file *ctx)
{
	struct task_struct *task = ctx->task;
	struct file *file = ctx->file;
	struct owner n = {};
	struct sock *sk;
	__u64 key;

	if (!task || !file)
		return 0;
	sk = file_tcp_sock(file);
	if (!sk)
		return 0;
	if (!tcp_prot)
		tcp_prot = (__u64)BPF_CORE_READ(sk, __sk_common.skc_prot);
	owner_from_task(&n, task);
	key = (__u64)sk;
	if (!bpf_map_update_elem(&owners, &key, &n, BPF_NOEXIST))
		note_owner_tgid(n.tgid);
	return 0;
}

/*
 * Settle owners from the open files: a socket handed over goes to a holder
 * other than the one that let it go; one whose owner exited, or that has
 * none, to any holder. Run by the tracer after a hand-over, an owner's
 * exit, or an event on a socket of no known owner.
 */
SEC("iter/task_file")
int settle_owners(struct bpf_iter__task_file *ctx)
{
	struct task_struct *task = ctx->task;
	struct file *file = ctx->file;
	struct handover *h;
	struct owner n = {};
	struct owner *o;
	struct sock *sk;
	__u32 tgid;
	__u64 key;

	if (!task || !file)
		return 0;
	sk = file_tcp_sock(file);
	if (!sk)
		return 0;
	key = (__u64)sk;
	tgid = task->tgid;
	h = bpf_map_lookup_elem(&handovers, &key);
	o = bpf_map_lookup_elem(&owners, &key);
	if (h) {
		if (h->from == tgid) {
			h->from_holds = 1;
			return 0;
		}
	} else if (o && !bpf_map_lookup_elem(&exited_owners, &o->tgid)) {
		return 0; /* settled */
	}
	owner_from_task(&n, task);
	n.closed_ns = o ? o->closed_ns : 0;
	n.stamped_ns = bpf_ktime_get_boot_ns();
	bpf_map_update_elem(&owners, &key, &n, BPF_ANY);
	note_owner_tgid(tgid);
	if (h)
		bpf_map_delete_elem(&handovers, &key);
	return 0;
}

/* ---- feature probes: loaded alone at start, never attached -------------- */

/* Does the verifier take a load through a pointer to a scalar? 6.12 and
 * older refuse it ("invalid mem access 'scalar'"): the tracer then sets
 * CFG.scalar_ptr_probe_read. */
SEC("tp_btf/sock_exceed_buf_limit")
int BPF_PROG(probe_scalar_ptr_load, struct sock *sk, struct proto *prot)
{
	return *prot->memory_pressure != 0;
}

/* May tracing programs ask for a socket's cookie (5.12+)? If not, the
 * tracer clears CFG.socket_cookie_helper. */
SEC("tp_btf/sock_exceed_buf_limit")
int BPF_PROG(probe_socket_cookie, struct sock *sk)
{
	return bpf_get_socket_cookie(sk) != 0;
}
