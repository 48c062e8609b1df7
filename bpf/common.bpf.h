/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * What every program reads: the load-time configuration, the pressure
 * state, and the socket and protocol fields behind them.
 */
#ifndef TCPMEMTRACE_COMMON_BPF_H
#define TCPMEMTRACE_COMMON_BPF_H

#define AF_INET 2
#define AF_INET6 10
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define S_IFMT 00170000
#define S_IFSOCK 0140000
#define EAGAIN 11 /* include/uapi/asm-generic/errno-base.h */

const volatile struct config CFG = {};

/* Last value of tcp_memory_pressure seen: the jiffies at which the current
 * episode began, or 0. */
volatile __u64 pressure_cur = PRESSURE_UNKNOWN;

/* TCP's struct proto, learnt from the first TCP socket the startup snapshot
 * sees (the tracer holds one open): the sampler reads its pressure word. */
volatile __u64 tcp_prot = 0;

static __always_inline __u64 pressure_now(void)
{
	__u64 v = pressure_cur;

	return v == PRESSURE_UNKNOWN ? 0 : v;
}

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

/* The kernel clamps the per-CPU-batched counter at 0 (proto_memory_allocated). */
static __always_inline __s64 prot_allocated(const struct proto *prot)
{
	__s64 a = prot->memory_allocated->counter;

	return a < 0 ? 0 : a;
}

static __always_inline long read_long(const long *p)
{
	long v = 0;

	if (CFG.scalar_ptr_probe_read)
		bpf_probe_read_kernel(&v, sizeof(v), p);
	else
		v = *p;
	return v;
}

/* tcp_mem[i], in pages. */
static __always_inline __s64 prot_limit(const struct proto *prot, int i)
{
	return read_long(prot->sysctl_mem + i);
}

#endif
