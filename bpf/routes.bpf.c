/* routes: IPv4 route lookups that failed, counted in the kernel by namespace,
 * table, result and destination /24: no route in the table (what `ip route
 * get` answers "Network is unreachable" to), and routes of type unreachable,
 * prohibit and blackhole. The hook runs on every lookup: a connect, an
 * unconnected datagram, a forwarded packet, and each received packet early
 * demux does not route (under loopback churn about one per packet: 693k/s
 * in bench/RESULTS.md, 34 ns each, its floor); the program returns at once
 * on a success, the common case.
 *
 * fib_table_lookup(tb_id, flp, nhc, err) has no namespace argument. A
 * lookup for output (flowi4_iif == LOOPBACK_IFINDEX, the local stack
 * sending) is counted in the namespace of the task doing it; one for input
 * (a packet received: routed or delivered) comes from softirq on behalf of
 * no task, and is counted with namespace 0 and its input device's ifindex.
 *
 * Hooks: HOOK_RAW_TP fib_table_lookup (raw or tp_btf); HOOK_TP
 *        fib:fib_table_lookup (the tracepoint's copy of the flow). */
#include <uapi/linux/ptrace.h>
#include "pyprobe.h"
#include "pyprobe_bpf.h"

#define LOOPBACK_IFINDEX 1
#define RT_TABLE_LOCAL 255
#define E_AGAIN 11

struct route_key {
	u32 netns;
	u32 table;
	s32 err;	/* -errno: -EAGAIN no route in this table, -EHOSTUNREACH... */
	u32 iif;	/* 0: output (the local stack); else the input device */
	u32 dst24;	/* the destination's /24, network byte order */
};
BPF_TABLE("percpu_hash", struct route_key, u64, failed, MAX_failed);

static __always_inline u32 current_netns(void)
{
#if defined(OFF_TASK_NSPROXY) && defined(OFF_NSPROXY_NET) && defined(HAVE_NET_ID)
	const void *task = (const void *)bpf_get_current_task();
	const void *nsproxy = 0, *net = 0;
	READ_FAR(nsproxy, task, OFF_TASK_NSPROXY);
	if (!nsproxy)
		return 0;
	READ_FAR(net, nsproxy, OFF_NSPROXY_NET);
	if (!net)
		return 0;
	/* net_id()'s read, through the helper: a pointer from the task is not
	 * one of the tracepoint's typed arguments (no direct load under tp_btf) */
#if defined(OFF_NET_COOKIE) && defined(NET_ID_COOKIE)
	u64 cookie = 0;
	READ_FAR(cookie, net, OFF_NET_COOKIE);
	return (u32)cookie;
#else
	u32 inum = 0;
	READ_FAR(inum, net, OFF_NET_INUM);
	return inum;
#endif
#else
	return 0;
#endif
}

static __always_inline int lookup(u32 table, int err, u32 iif, u32 daddr)
{
	if (err >= 0)
		return 0;
	/* inet_addr_type() and friends look up the local table alone to ask
	 * "is this address mine?": a miss there is the answer no, not a failure. */
	if (err == -E_AGAIN && table == RT_TABLE_LOCAL)
		return 0;
	struct route_key k = {.table = table, .err = err, .dst24 = daddr & bpf_htonl(0xffffff00)};
	if (iif == LOOPBACK_IFINDEX)
		k.netns = current_netns();
	else
		k.iif = iif;
	u64 zero = 0, *c = failed.lookup_or_try_init(&k, &zero);
	if (c)
		(*c)++;
	else
		map_full(MAP_ID_failed);
	return 0;
}

#ifdef HOOK_RAW_TP
int on_raw_tp(struct bpf_raw_tracepoint_args *ctx)
{
	int err = (int)ctx->args[3];
	if (err >= 0)
		return 0; /* the common case: one comparison */
	const void *flp = (const void *)ctx->args[1];
	u32 iif = 0, daddr = 0;
	READ_AT(iif, flp, OFF_FLOWI4_IIF);
	READ_AT(daddr, flp, OFF_FLOWI4_DADDR);
	return lookup((u32)ctx->args[0], err, iif, daddr);
}
#endif

#ifdef HOOK_TP
int on_tp(struct tracepoint__fib__fib_table_lookup *args)
{
	if (args->err >= 0)
		return 0;
	u32 daddr = 0;
	__builtin_memcpy(&daddr, args->dst, 4);
	return lookup(args->tb_id, args->err, args->iif, daddr);
}
#endif
