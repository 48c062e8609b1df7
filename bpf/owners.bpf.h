/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Socket owners: the process that holds a socket, stamped from process
 * context (the task running when memory is refused is almost never it),
 * and the owner filters that run before anything is counted.
 */
#ifndef TCPMEMTRACE_OWNERS_BPF_H
#define TCPMEMTRACE_OWNERS_BPF_H

/* Socket address -> owner; entries go at tcp_destroy_sock. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct owner);
} owners SEC(".maps");

/* Processes that own a socket: a close() or an exit by anyone else needs
 * no further look. A hint, never removed: a stale entry costs one look. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u8);
} owner_tgids SEC(".maps");

/* Sockets whose owner gave them up while others still hold them (a forked
 * child, the receiver of the fd): settled from the open files by userspace.
 * The value is the tgid that let go, and whether it still holds them. */
struct handover {
	__u32 from;
	__u8 from_holds; /* the settling pass found the old owner holding it */
	__u8 pad[3];
	__u64 at; /* when, boot ns */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64);
	__type(value, struct handover);
} handovers SEC(".maps");

/* Owning processes that exited: their sockets, if others hold them, are
 * settled too. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u64);
} exited_owners SEC(".maps");

/* Set when an event found a TCP socket of no known owner (accepted by
 * io_uring, for one): the tracer then settles owners from the open files. */
volatile __u8 unowned_seen = 0;

/* -p/--pid: the selected tgids. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u8);
} pid_filter SEC(".maps");

/* Listening sockets' owners by namespace and port: a connection waiting
 * in the accept queue is its listener's until accept() stamps it. With
 * SO_REUSEPORT the port's last listener stands for all of them: the same
 * program, and nearly always the same cgroup. */
struct listener_key {
	__u32 netns;
	__u16 port;
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct listener_key);
	__type(value, struct owner);
} listeners SEC(".maps");

static __always_inline struct listener_key listener_key_of(const struct sock *sk)
{
	struct listener_key k = {};

	/* Read, not loaded: from a syscall's fd the socket is not a trusted
	 * pointer. */
	k.netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	k.port = BPF_CORE_READ(sk, __sk_common.skc_num);
	return k;
}

/* The socket's stamped owner, for updating it; NULL when none. */
static __always_inline struct owner *stamped_owner(const struct sock *sk)
{
	__u64 key = (__u64)sk;

	return bpf_map_lookup_elem(&owners, &key);
}

/* Who an event on the socket is counted for: its stamped owner, else (not
 * yet accepted, or its stamp was missed) its listener's. Read only: the
 * listener's record is shared. */
static __always_inline struct owner *owner_of(const struct sock *sk)
{
	struct owner *o = stamped_owner(sk);
	struct listener_key lk;

	if (o)
		return o;
	/* Settled from the open files soon after: who holds it, if anyone
	 * does (a stamp the kernel skipped, an io_uring accept). */
	unowned_seen = 1;
	lk = listener_key_of(sk);
	return bpf_map_lookup_elem(&listeners, &lk);
}

/* Owner filters run before anything is counted: filtered totals are the
 * selected owners' totals. An unknown owner matches no filter. */
static __always_inline bool owner_selected(const struct owner *o)
{
	if (!CFG.filter_owner)
		return true;
	if (!o)
		return false;
	if ((CFG.filter_owner & OWNER_FILTER_PID) && !bpf_map_lookup_elem(&pid_filter, &o->tgid))
		return false;
	if ((CFG.filter_owner & OWNER_FILTER_COMM) &&
	    (((const __u64 *)o->comm)[0] != CFG.filter_comm[0] ||
	     ((const __u64 *)o->comm)[1] != CFG.filter_comm[1]))
		return false;
	if ((CFG.filter_owner & OWNER_FILTER_CGROUP) && !o->cgroup_match)
		return false;
	return true;
}

/* The filters a socket's event must pass (namespace, owner), then where it
 * is counted: the totals (returned; NULL when filtered out) and, through oc,
 * its owner's counts. */
static __always_inline struct counters *counted(const struct sock *sk, __u32 netns,
						struct owner **o, struct counts **oc)
{
	struct counters *c;

	if (CFG.filter_netns && netns != CFG.filter_netns)
		return NULL;
	*o = owner_of(sk);
	if (!owner_selected(*o))
		return NULL;
	c = totals_get();
	if (c)
		*oc = owner_counts(*o);
	return c;
}

/* Cgroup v2 ancestor of a task at a level (cgroup->ancestors[], 6.2+ as
 * struct pointers; before, ancestor_ids[] held the ids). */
struct cgroup___old {
	u64 ancestor_ids[0];
} __attribute__((preserve_access_index));

static __always_inline __u64 task_ancestor_cgroup(struct cgroup *cg, __u32 level)
{
	struct cgroup *anc = NULL;
	__u64 id = 0;

	if (level > BPF_CORE_READ(cg, level))
		return 0;
	if (bpf_core_field_exists(cg->ancestors)) {
		bpf_probe_read_kernel(&anc, sizeof(anc), &cg->ancestors[level]);
		return anc ? BPF_CORE_READ(anc, kn, id) : 0;
	}
	bpf_probe_read_kernel(&id, sizeof(id), &((struct cgroup___old *)cg)->ancestor_ids[level]);
	return id;
}

/* The current task in the --cgroup filter's subtree? (The helper for this,
 * bpf_get_current_ancestor_cgroup_id, came to tracing programs in 5.12.) */
static __always_inline bool current_in_filtered_cgroup(void)
{
	struct task_struct *task = (void *)bpf_get_current_task();

	return task_ancestor_cgroup(BPF_CORE_READ(task, cgroups, dfl_cgrp),
				    CFG.filter_cgroup_level) == CFG.filter_cgroup_id;
}

static __always_inline void note_owner_tgid(__u32 tgid)
{
	__u8 one = 1;

	if (!bpf_map_lookup_elem(&owner_tgids, &tgid))
		bpf_map_update_elem(&owner_tgids, &tgid, &one, BPF_ANY);
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
	n.stamped_ns = bpf_ktime_get_boot_ns();
	n.cgroup_id = bpf_get_current_cgroup_id();
	if (CFG.filter_owner & OWNER_FILTER_CGROUP)
		n.cgroup_match = current_in_filtered_cgroup();
	bpf_get_current_comm(n.comm, sizeof(n.comm));
	bpf_map_update_elem(&owners, &key, &n, BPF_ANY);
	note_owner_tgid(tgid);
}

/* A listening socket's owner also stands for the connections waiting in
 * its accept queue. */
static __always_inline void stamp_listener(const struct sock *sk)
{
	struct listener_key lk = listener_key_of(sk);
	struct owner *o = stamped_owner(sk);

	if (o)
		bpf_map_update_elem(&listeners, &lk, o, BPF_ANY);
}

/* The socket is gone: so is its owner, and any hand-over of it. */
static __always_inline void forget_owner(const struct sock *sk)
{
	__u64 key = (__u64)sk;

	bpf_map_delete_elem(&owners, &key);
	bpf_map_delete_elem(&handovers, &key);
}

/* fd -> file of the current task (classic tracepoints get no BTF
 * pointers, so this walks with CO-RE reads). */
static __always_inline struct file *fd_file(long fd)
{
	struct task_struct *task = (void *)bpf_get_current_task();
	struct file **fds, *f = NULL;
	struct fdtable *fdt;

	if (fd < 0)
		return NULL;
	fdt = BPF_CORE_READ(task, files, fdt);
	if (!fdt || fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	fds = BPF_CORE_READ(fdt, fd);
	bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]);
	return f;
}

/* The TCP socket a file is, or NULL. */
static __always_inline struct sock *file_tcp_sock(struct file *f)
{
	struct socket *sock;
	struct sock *sk;

	if (!f || (BPF_CORE_READ(f, f_inode, i_mode) & S_IFMT) != S_IFSOCK)
		return NULL;
	sock = BPF_CORE_READ(f, private_data);
	sk = BPF_CORE_READ(sock, sk);
	if (!sk || BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return NULL;
	return sk;
}

/* Until 6.13 a file's references were f_count (1: one); since, f_ref
 * (file_ref_t, 0: one, negative: being released). */
struct file___old {
	atomic_long_t f_count;
} __attribute__((preserve_access_index));

/* Is the file held by more than the reference being closed? */
static __always_inline bool file_shared(struct file *f)
{
	if (bpf_core_field_exists(f->f_ref))
		return (__s64)BPF_CORE_READ(f, f_ref.refcnt.counter) > 0;
	return BPF_CORE_READ((struct file___old *)f, f_count.counter) > 1;
}

/* A task's owner record: its process, command and cgroup. */
static __always_inline void owner_from_task(struct owner *n, struct task_struct *task)
{
	struct cgroup *cg;

	n->tgid = BPF_CORE_READ(task, tgid);
	bpf_probe_read_kernel_str(n->comm, sizeof(n->comm), task->comm);
	cg = BPF_CORE_READ(task, cgroups, dfl_cgrp);
	n->cgroup_id = BPF_CORE_READ(cg, kn, id);
	if (CFG.filter_owner & OWNER_FILTER_CGROUP)
		n->cgroup_match =
			task_ancestor_cgroup(cg, CFG.filter_cgroup_level) == CFG.filter_cgroup_id;
}

#define MAX_CHILDREN 32

/* The youngest child the current task started since the socket was
 * stamped: after accept, fork and close (a postmaster, sshd, inetd), the
 * handler that now holds the socket. NULL when there is none. */
static __always_inline struct task_struct *youngest_child(__u64 since)
{
	struct task_struct *task = (void *)bpf_get_current_task(), *best = NULL, *child;
	__u64 off = bpf_core_field_offset(struct task_struct, sibling);
	struct list_head *head = &task->children, *pos;
	__u64 best_start = since, start;

	pos = BPF_CORE_READ(task, children.next);
	for (int i = 0; i < MAX_CHILDREN && pos && pos != head; i++) {
		child = (void *)pos - off;
		start = BPF_CORE_READ(child, start_boottime);
		if (start >= best_start) {
			best = child;
			best_start = start;
		}
		pos = BPF_CORE_READ(pos, next);
	}
	return best;
}

/* The current task closes a TCP socket it owns while others still hold it:
 * its owner is now one of them. If the task started a child since it got
 * the socket, the child has it now (a forking server); userspace settles it
 * from the open files in any case (fd passing, or to confirm). Returns
 * whether it marked one. */
static __always_inline bool note_handover(long fd)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct task_struct *child;
	struct handover h = {};
	struct file *f;
	struct owner *o;
	struct sock *sk;
	__u64 key;

	if (!bpf_map_lookup_elem(&owner_tgids, &tgid))
		return false; /* owns no socket: the usual close */
	f = fd_file(fd);
	sk = file_tcp_sock(f);
	if (!sk || !file_shared(f))
		return false;
	key = (__u64)sk;
	o = bpf_map_lookup_elem(&owners, &key);
	if (!o || o->tgid != tgid)
		return false;
	h.from = tgid;
	h.at = bpf_ktime_get_boot_ns();
	bpf_map_update_elem(&handovers, &key, &h, BPF_ANY);
	child = youngest_child(o->stamped_ns);
	if (child) {
		struct owner n = {};

		owner_from_task(&n, child);
		n.stamped_ns = h.at;
		bpf_map_update_elem(&owners, &key, &n, BPF_ANY);
		note_owner_tgid(n.tgid);
	}
	return true;
}

#endif
