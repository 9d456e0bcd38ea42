/* icmp: the ICMP errors the kernel sends (destination unreachable, time
 * exceeded, fragmentation needed: the MTU black hole), counted in the kernel
 * by namespace, device, type and code; with -DSTREAM each one with the
 * 5-tuple of the packet it answers. The hook fires where the error is
 * handed to the output path, after the rate limits: what the kernel counts
 * as sent (IcmpMsg OutTypeN).
 *
 * Hooks: HOOK_RAW_TP icmp_send(skb_in, type, code); HOOK_TP icmp:icmp_send;
 *        HOOK_KPROBE __icmp_send(skb_in, type, code, info, opt) (before
 *        the rate limits: it counts errors wanted, not sent). */
#include <uapi/linux/ptrace.h>
#include "pyprobe.h"
#include "pyprobe_bpf.h"

struct icmp_key {
	u32 netns;
	u32 ifindex;
	u8 type;
	u8 code;
	u16 _pad;
};
BPF_TABLE("percpu_hash", struct icmp_key, u64, sent, MAX_sent);

static __always_inline int icmp(const void *skb, int type, int code)
{
	struct icmp_key k = {.type = type, .code = code};
	const void *dev = 0;
	READ_AT(dev, skb, OFF_SKB_DEV);
	dev_ids(dev, &k.ifindex, &k.netns);
	u64 zero = 0, *c = sent.lookup_or_try_init(&k, &zero);
	if (c)
		(*c)++;
	else
		map_full(MAP_ID_sent);
#ifdef STREAM
	struct icmp_event *e = event_reserve(sizeof(struct icmp_event));
	if (!e)
		return 0;
	__builtin_memset(e, 0, sizeof(*e));
	e->ts_ns = bpf_ktime_get_ns();
	e->netns = k.netns;
	e->ifindex = k.ifindex;
	e->type = k.type;
	e->code = k.code;
	EVENT_TUPLE(e, skb);
	event_submit(e);
#endif
	return 0;
}

#ifdef HOOK_RAW_TP
int on_raw_tp(struct bpf_raw_tracepoint_args *ctx)
{
	return icmp((const void *)ctx->args[0], (int)ctx->args[1], (int)ctx->args[2]);
}
#endif

#ifdef HOOK_TP
int on_tp(struct tracepoint__icmp__icmp_send *args)
{
	return icmp(args->skbaddr, args->type, args->code);
}
#endif

#ifdef HOOK_KPROBE
int on_kprobe(struct pt_regs *ctx)
{
	return icmp((const void *)PT_REGS_PARM1(ctx), (int)PT_REGS_PARM2(ctx),
		    (int)PT_REGS_PARM3(ctx));
}
#endif
