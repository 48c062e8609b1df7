/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Types shared by the BPF programs and, through bpf2go, the Go tracer.
 * Defined once here; Go gets its mirror from the object's BTF.
 */
#ifndef TCPMEMTRACE_H
#define TCPMEMTRACE_H

#define TASK_COMM_LEN 16

/* Kernel drop-reason values below this are mapped to slots; subsystem
 * reasons (high bits set) never are memory drops. */
#define MAX_DROP_REASONS 256
/* Slot 0 means "not tracked"; userspace assigns 1..DROP_SLOTS-1 by name,
 * in the order of tracer.MemoryDropReasons. */
#define DROP_SLOTS 8
#define SLOT_PROTO_MEM 1
#define SLOT_SOCKET_BACKLOG 2

/* pressure_cur before the first sample: the state is not known yet. */
#define PRESSURE_UNKNOWN (~0ULL)

enum event_kind {
	EV_ABORT = 1,
	EV_DROP = 2,
	EV_REFUSAL = 3,
	EV_PRESSURE_ENTER = 4,
	EV_PRESSURE_LEAVE = 5,
};

enum abort_cause {
	CAUSE_MEMORY = 1, /* tcp_out_of_memory(): allocated > tcp_mem[2] */
	CAUSE_ORPHANS = 2, /* otherwise tcp_too_many_orphans() was true */
};

/* Why a memory drop happened (counters.drop_causes, event.cause). */
enum drop_cause {
	DROP_CAUSE_UNKNOWN = 0,
	DROP_CAUSE_RCVBUF = 1, /* the socket's own buffer (tcp_rmem, SO_RCVBUF) */
	DROP_CAUSE_GLOBAL_HARD = 2, /* allocated above tcp_mem[2] */
	DROP_CAUSE_GLOBAL_PRESSURE = 3,
	DROP_CAUSE_MEMCG = 4, /* the socket's memory cgroup limit */
	DROP_CAUSES = 8,
};

/* Counts kept in total and per owner. */
struct counts {
	__u64 mem_aborts;
	__u64 orphan_aborts;
	__u64 refusals_send;
	__u64 refusals_recv;
	__u64 send_stalls; /* sendmsg EAGAIN while TCP was under memory pressure */
	__u64 drop_causes[DROP_CAUSES]; /* TCP PROTO_MEM drops with a socket, by cause */
	__u64 tcp_drops[DROP_SLOTS];
	__u64 tcp_drop_bytes[DROP_SLOTS];
	__u64 other_drops[DROP_SLOTS];
	__u64 other_drop_bytes[DROP_SLOTS];
};

/* Exact in-kernel totals, one copy per CPU. */
struct counters {
	struct counts all;
	__u64 pressure_enters;
	__u64 pressure_leaves;
	__u64 lost_samples;
	__u64 unsampled; /* drop/refusal records over the record budget */
};

/* Who owns a socket, stamped from process context. */
struct owner {
	__u64 cgroup_id;
	__u64 closed_ns; /* when close()/shutdown() sent the FIN; 0 before */
	__u32 tgid;
	__u8 cgroup_match; /* inside the --cgroup filter's subtree */
	__u8 pad[3];
	char comm[TASK_COMM_LEN];
};

/* Per-owner counts: exact, like the totals. Owners that do not fit in the
 * map are counted under OVERFLOW_TGID. */
#define OVERFLOW_TGID 0xffffffff

struct owner_key {
	__u32 tgid;
	__u32 pad;
	__u64 cgroup_id;
};

struct owner_stats {
	char comm[TASK_COMM_LEN];
	struct counts c;
};

/* Owner filters in force (filter_owner bits). */
#define FILTER_PID 1
#define FILTER_COMM 2
#define FILTER_CGROUP 4

/* One sampled record in the ringbuf. */
struct event {
	__u64 ts_boot_ns;
	__u64 cookie; /* socket cookie, 0 without a socket */
	__u64 pressure_id; /* memory_pressure value: jiffies at episode start */
	__s64 allocated; /* protocol pages in use (exceed: the value decided on) */
	__s64 mem_limit[3]; /* tcp_mem in pages */
	__u64 cgroup_id; /* owner's cgroup v2 id */
	__u64 sk_cgroup_id; /* the socket's own cgroup v2 id (its creator's) */
	__u64 memcg_id; /* the socket's memory cgroup, 0 when not charged */
	__u64 closed_ns; /* the owner's close()/shutdown(), boot ns; 0 if not closed */
	__u32 tgid; /* owner; 0 when unknown */
	__u32 cur_tgid; /* task that ran the hook */
	__u32 netns; /* network namespace inode */
	__u32 len; /* skb->len of a dropped skb */
	__u32 truesize;
	__u32 reason; /* kernel drop or reset reason value */
	__s32 rmem_alloc;
	__s32 rcvbuf;
	__s32 wmem_queued;
	__s32 sndbuf;
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport; /* host byte order */
	__u16 dport;
	__u16 family;
	__u8 kind; /* enum event_kind */
	__u8 detail; /* abort cause, drop slot, exceed kind (0 send, 1 recv) */
	__u8 state; /* TCP state at the event */
	__u8 protocol;
	__u8 memcg; /* socket charged to a memory cgroup */
	__u8 orphan; /* SOCK_DEAD: closed by its owner, still alive */
	__u8 cause; /* drop: enum drop_cause */
	__u8 pad[7];
	char comm[TASK_COMM_LEN]; /* owner's */
};

#endif
