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

/* -p/--pid: the selected tgids. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u8);
} pid_filter SEC(".maps");

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

static __always_inline struct owner *owner_of(const struct sock *sk)
{
	__u64 key = (__u64)sk;

	return bpf_map_lookup_elem(&owners, &key);
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
	if (CFG.filter_owner & OWNER_FILTER_CGROUP)
		n.cgroup_match = current_in_filtered_cgroup();
	bpf_get_current_comm(n.comm, sizeof(n.comm));
	bpf_map_update_elem(&owners, &key, &n, BPF_ANY);
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

/* The socket is gone: its owner goes, and so does the cache's memory of it. */
static __always_inline void forget_owner(const struct sock *sk)
{
	__u64 key = (__u64)sk;
	struct last_stamp *ls;
	__u32 zero = 0;

	bpf_map_delete_elem(&owners, &key);
	ls = bpf_map_lookup_elem(&last_stamp, &zero);
	if (ls && ls->sk == key)
		ls->sk = 0;
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

#endif
