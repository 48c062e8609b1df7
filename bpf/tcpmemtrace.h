/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Types shared by the BPF programs and Go. Defined once here: bpf2go emits
 * the tracer's mirror of each (-type), and the stream package's constants
 * are generated from the same enums in the object's BTF, so a counter, a
 * kind or a cause is named in C and nowhere else by number.
 */
#ifndef TCPMEMTRACE_H
#define TCPMEMTRACE_H

#define TASK_COMM_LEN 16

/* Kernel drop-reason values below this are mapped to slots; subsystem
 * reasons (high bits set) never are memory drops. */
#define MAX_DROP_REASONS 256

/* pressure_cur before the first sample: the state is not known yet. */
#define PRESSURE_UNKNOWN (~0ULL)

/* Owners that do not fit in the per-owner map are counted under this tgid. */
#define OVERFLOW_TGID 0xffffffff

/* What a ringbuf record is. */
enum event_kind {
	EV_ABORT = 1,
	EV_DROP = 2,
	EV_REFUSAL = 3,
	EV_PRESSURE_ENTER = 4,
	EV_PRESSURE_LEAVE = 5,
	/* Internal to the tracer: a socket's owner gave it up to another
	 * process (or exited), so its owner must be settled from the open
	 * files. Never shown. */
	EV_HANDOVER = 6,
};

/* Which half of tcp_check_oom() killed a socket (event.detail of an abort). */
enum abort_cause {
	ABORT_MEMORY = 1, /* tcp_out_of_memory(): allocated > tcp_mem[2] */
	ABORT_ORPHANS = 2, /* otherwise tcp_too_many_orphans() was true */
};

/* The counters kept per owner and in total (struct counts.events). */
enum counter {
	COUNTER_MEM_ABORTS,
	COUNTER_ORPHAN_ABORTS,
	COUNTER_REFUSALS_SEND,
	COUNTER_REFUSALS_RECV,
	COUNTER_SEND_STALLS, /* sendmsg EAGAIN while TCP was under memory pressure */
	COUNTERS,
};

/*
 * Tracked drop reasons, as counter slots. Userspace maps each kernel
 * reason value to its slot by the name after DROP_SLOT_ (the values move
 * between kernels). The order is part of the recording format.
 */
enum drop_slot {
	DROP_SLOT_NONE, /* not a memory drop */
	DROP_SLOT_PROTO_MEM, /* tcp_data_queue{,_ofo}: TCPRcvQDrop + TCPOFODrop */
	DROP_SLOT_SOCKET_BACKLOG, /* tcp_add_backlog: TCPBacklogDrop */
	DROP_SLOT_TCP_OFO_QUEUE_PRUNE, /* tcp_prune_ofo_queue: one per pruned skb */
	DROP_SLOT_SOCKET_RCVBUFF, /* sock_queue_rcv_skb/UDP: receive buffer full */
	DROP_SLOTS = 8,
};

/* Drops are counted apart for TCP and for every other protocol. */
enum drop_proto {
	DROP_PROTO_TCP,
	DROP_PROTO_OTHER,
	DROP_PROTOS,
};

/* Why a TCP PROTO_MEM drop happened (counts.drop_causes, event.cause). */
enum drop_cause {
	DROP_CAUSE_UNKNOWN,
	DROP_CAUSE_RCVBUF, /* the socket's own buffer (tcp_rmem, SO_RCVBUF) */
	DROP_CAUSE_GLOBAL_HARD_LIMIT, /* allocated above tcp_mem[2] */
	DROP_CAUSE_GLOBAL_PRESSURE, /* under pressure, refused by the fairness rule */
	DROP_CAUSE_MEMCG, /* the socket's memory cgroup limit */
	DROP_CAUSES = 8,
};

/* Owner filters in force (config.filter_owner bits). */
enum owner_filter {
	OWNER_FILTER_PID = 1,
	OWNER_FILTER_COMM = 2,
	OWNER_FILTER_CGROUP = 4,
};

/* Counts kept in total and per owner. */
struct counts {
	__u64 events[COUNTERS];
	__u64 drops[DROP_PROTOS][DROP_SLOTS];
	__u64 drop_bytes[DROP_PROTOS][DROP_SLOTS];
	__u64 drop_causes[DROP_CAUSES]; /* TCP PROTO_MEM drops with a socket, by cause */
};

/* Exact in-kernel totals, one copy per CPU. */
struct counters {
	struct counts all;
	__u64 pressure_enters;
	__u64 pressure_leaves;
	__u64 lost_samples;
	__u64 unsampled; /* drop/refusal records over the record budget */
	/* This CPU's record budget: when its window began, records sent in it. */
	__u64 window_start;
	__u64 window_used;
};

/* Who owns a socket, stamped from process context. */
struct owner {
	__u64 cgroup_id;
	__u64 closed_ns; /* when close()/shutdown() sent the FIN; 0 before */
	__u64 stamped_ns; /* when this owner was stamped, boot ns; 0: at start */
	__u32 tgid;
	__u8 cgroup_match; /* inside the --cgroup filter's subtree */
	__u8 pad[3];
	char comm[TASK_COMM_LEN];
};

struct owner_key {
	__u32 tgid;
	__u32 pad;
	__u64 cgroup_id;
};

/* Per-owner counts: exact, like the totals. */
struct owner_stats {
	char comm[TASK_COMM_LEN];
	struct counts c;
};

/* Load-time settings, set by userspace before the programs are verified:
 * the verifier sees them as constants and drops the branches they rule out. */
struct config {
	/* Kernel drop-reason value -> enum drop_slot; 0: not a memory drop.
	 * Filled from the running kernel's BTF by name. */
	__u8 drop_slot[MAX_DROP_REASONS];
	/* SK_RST_REASON_TCP_ABORT_ON_MEMORY on this kernel (6.12+). */
	__u32 rst_abort_on_memory;
	/* SOCK_MIN_SNDBUF, derived from sizeof(struct sk_buff). */
	__u32 sock_min_sndbuf;
	/* Only count events of this network namespace (inode); 0: all. */
	__u32 filter_netns;
	/* The --cgroup filter: ancestor at this level must have this id. */
	__u32 filter_cgroup_level;
	__u64 filter_cgroup_id;
	/* The --comm filter, as the 16 bytes of a task's comm. */
	__u64 filter_comm[2];
	/* Kernel values of the PROTO_MEM and SOCKET_BACKLOG reasons, which the
	 * fexit variants report for the drops they count. */
	__u32 reason_proto_mem;
	__u32 reason_socket_backlog;
	/* Drop and refusal records a CPU may send per RECORD_WINDOW_NS; beyond
	 * them events are counted (unsampled) but not sent. 0: no limit. */
	__u32 records_per_window;
	/* enum owner_filter: which owner filters are on. */
	__u8 filter_owner;
	/* Bit per drop slot: fexit programs count the TCP drops of these
	 * slots with their socket, and kfree_skb leaves them alone. */
	__u8 tcp_slots_elsewhere;
	/* The verifier refuses direct loads through pointers to scalars
	 * (6.12 and older do): read those words with bpf_probe_read_kernel. */
	__u8 scalar_ptr_probe_read;
	/* Tracing programs may call bpf_get_socket_cookie (5.12+); else the
	 * cookie is read as it is, 0 when none was made yet. */
	__u8 socket_cookie_helper;
};

/* Memory drops counted by where the kernel freed the packet. */
struct drop_place {
	__u64 location; /* kfree_skb's location */
	__u8 proto; /* enum drop_proto */
	__u8 slot; /* enum drop_slot */
	__u8 pad[6];
};

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
	__u64 location; /* drop: the kernel code that freed the skb (kfree_skb's location), 0 if not
			   given */
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
	__u8 detail; /* abort: enum abort_cause; drop: enum drop_slot; refusal: 0 send, 1 recv */
	__u8 state; /* TCP state at the event */
	__u8 protocol;
	__u8 memcg; /* socket charged to a memory cgroup */
	__u8 orphan; /* SOCK_DEAD: closed by its owner, still alive */
	__u8 cause; /* drop: enum drop_cause */
	__u8 pad[7];
	char comm[TASK_COMM_LEN]; /* owner's */
};

#endif
