/* drops: every freed-as-dropped packet (skb:kfree_skb; consume_skb is the
 * normal path and is not hooked), counted in the kernel by reason, location,
 * protocol, device and namespace. With -DSTREAM, each drop that is not on the
 * benign list goes to a ring buffer with its 5-tuple and owner.
 *
 * Owner attribution: drops mostly happen in softirq, on behalf of whatever
 * task the CPU interrupted. A per-CPU "in softirq" flag (softirq_entry/exit)
 * tells us when the current task is not the owner; then we use the socket's
 * owner remembered in process context (its connect/listen/close, or an
 * earlier drop in process context), or say we do not know.
 *
 * Hooks: HOOK_RAW_TP kfree_skb(skb, location, reason, rx_sk);
 *        HOOK_TP skb:kfree_skb with the reason field;
 *        HOOK_TP_NOREASON skb:kfree_skb of kernels before 5.17 (reason 0);
 *        HOOK_KPROBE kfree_skb(skb) (location = the caller). */
#include <uapi/linux/ptrace.h>
#include "pyprobe.h"
#define OWNER_TRACKING
#include "pyprobe_bpf.h"
#if (defined(HOOK_TP) || defined(HOOK_TP_NOREASON)) && __has_include(<net/dropreason.h>)
/* bcc declares the tracepoint's reason field as enum skb_drop_reason; only
 * the type is needed (4 bytes) — the values come from the running kernel. */
#include <net/dropreason.h>
#endif

#ifndef BENIGN
#define BENIGN(r) 0
#endif

struct drop_key {
	u64 location;
	u32 reason;
	u32 netns;
	u32 ifindex;
	u16 protocol;
	u16 _pad;
#ifdef FEATURE_CGROUP
	u64 cgroup; /* --label cgroup: the socket's cgroup (0: no socket) */
#endif
};
BPF_TABLE("percpu_hash", struct drop_key, u64, drops, MAX_drops);

#ifdef STREAM
static __always_inline void stream(const void *skb, const void *sk, struct drop_key *k)
{
	if (BENIGN(k->reason))
		return;
	struct drop_event *e = event_reserve(sizeof(struct drop_event));
	if (!e)
		return;
	__builtin_memset(e, 0, sizeof(*e));
	e->ts_ns = bpf_ktime_get_ns();
	e->location = k->location;
	e->skaddr = (u64)sk;
#ifdef FEATURE_CGROUP
	e->cgroup = k->cgroup;
#else
	e->cgroup = sock_cgroup(sk);
#endif
	e->netns = k->netns;
	e->ifindex = k->ifindex;
	e->reason = k->reason;
	e->protocol = k->protocol;
	EVENT_TUPLE(e, skb);
	e->flags |= owner_of(sk, &e->pid, e->comm);
	event_submit(e);
}
#endif /* STREAM */

/* The sk_buff fields drop() reads, as one span (SPAN_READ): one probe read,
 * not three. */
#define DROP_LO MIN_(MIN_(OFF_SKB_DEV, OFF_SKB_SK), OFF_SKB_PROTOCOL)
#define DROP_HI MAX_(MAX_(OFF_SKB_DEV + 8, OFF_SKB_SK + 8), OFF_SKB_PROTOCOL + 2)

static __always_inline int drop(const void *skb, u64 location, u32 reason, const void *rx_sk)
{
	struct drop_key k = {.location = location, .reason = reason};
	const void *dev = 0, *sk = 0;
	u16 proto = 0;
	if (SPAN_FITS(DROP_LO, DROP_HI)) {
		char span[SPAN_FITS(DROP_LO, DROP_HI) ? DROP_HI - DROP_LO : 1];
		SPAN_READ(span, skb, DROP_LO, DROP_HI);
		SPAN_GET(dev, span, DROP_LO, OFF_SKB_DEV);
		SPAN_GET(sk, span, DROP_LO, OFF_SKB_SK);
		SPAN_GET(proto, span, DROP_LO, OFF_SKB_PROTOCOL);
	} else {
		READ_AT(dev, skb, OFF_SKB_DEV);
		READ_AT(sk, skb, OFF_SKB_SK);
		READ_AT(proto, skb, OFF_SKB_PROTOCOL);
	}
	if (!sk)
		sk = rx_sk;
	k.protocol = __builtin_bswap16(proto);
	dev_ids(dev, &k.ifindex, &k.netns);
#if defined(OFF_SKC_NET) && defined(HAVE_NET_ID)
	if (!k.netns)
		k.netns = sk_netns_id(sk);
#endif
#ifdef FEATURE_CGROUP
	k.cgroup = sock_cgroup(sk);
#endif
#ifdef FILTER_CGROUP
	if (!in_cgroup(sk))
		return 0;
#endif
	u64 zero = 0, *c = drops.lookup_or_try_init(&k, &zero);
	if (c)
		(*c)++;
	else
		map_full(MAP_ID_drops);
#ifdef STREAM
	stream(skb, sk, &k);
#endif
	return 0;
}

#ifdef HOOK_RAW_TP
int on_raw_tp(struct bpf_raw_tracepoint_args *ctx)
{
	return drop((const void *)ctx->args[0], ctx->args[1], (u32)ctx->args[2],
#ifdef RAW_TP_HAS_RX_SK
		    (const void *)ctx->args[3]
#else
		    0
#endif
	);
}
#endif

#ifdef HOOK_TP
int on_tp(struct tracepoint__skb__kfree_skb *args)
{
	return drop(args->skbaddr, (u64)args->location, args->reason, 0);
}
#endif

#ifdef HOOK_TP_NOREASON
int on_tp_noreason(struct tracepoint__skb__kfree_skb *args)
{
	return drop(args->skbaddr, (u64)args->location, 0, 0);
}
#endif

#if defined(HOOK_KPROBE) || defined(HOOK_KPROBE_REASON)
/* At function entry the return address is on top of the stack: the caller
 * that dropped the packet, like the tracepoint's location. */
static __always_inline u64 caller(struct pt_regs *ctx)
{
	u64 ret = 0;
	bpf_probe_read_kernel(&ret, sizeof(ret), (void *)PT_REGS_SP(ctx));
	return ret;
}
#endif

#ifdef HOOK_KPROBE_REASON
/* kfree_skb_reason(skb, reason) (5.17+, before the tracepoint grew rx_sk);
 * on some kernels it also frees consumed packets (SKB_CONSUMED): not drops. */
int on_kprobe_reason(struct pt_regs *ctx)
{
	u32 reason = (u32)PT_REGS_PARM2(ctx);
#ifdef SKB_CONSUMED_REASON
	if (reason == SKB_CONSUMED_REASON)
		return 0;
#endif
	return drop((const void *)PT_REGS_PARM1(ctx), caller(ctx), reason, 0);
}
#endif

#ifdef HOOK_KPROBE
int on_kprobe(struct pt_regs *ctx)
{
	return drop((const void *)PT_REGS_PARM1(ctx), caller(ctx), 0, 0);
}
#endif
