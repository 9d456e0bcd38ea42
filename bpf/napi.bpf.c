/* napi: NAPI polls per device — how often the kernel polled instead of
 * taking an interrupt per packet, how much work each poll did, and how often
 * a poll used its whole budget (the device had more: polling continues).
 *
 * Hook: raw tracepoint napi_poll(napi, work, budget), device read at BTF
 * offsets; or tracepoint napi:napi_poll (same, through the format). */
#include <uapi/linux/ptrace.h>
#include "pyprobe_bpf.h"

struct dev_key {
	u32 netns;
	u32 ifindex;
};
struct napi_val {
	u64 polls;
	u64 packets;
	u64 exhausted; /* work == budget */
};
struct dev_slot {
	u32 netns;
	u32 ifindex;
	u32 slot;
};

BPF_TABLE("percpu_hash", struct dev_key, struct napi_val, napi, MAX_napi);
BPF_TABLE("percpu_hash", struct dev_slot, u64, work_hist, MAX_work_hist);

static __always_inline int poll(const void *napi_struct, int work, int budget)
{
	struct dev_key k = {};
	const void *dev = 0;
	READ_AT(dev, napi_struct, OFF_NAPI_DEV);
	dev_ids(dev, &k.ifindex, &k.netns);
	struct napi_val zero = {}, *v = napi.lookup_or_try_init(&k, &zero);
	if (v) {
		v->polls++;
		v->packets += work;
		v->exhausted += work >= budget;
	} else {
		map_full(MAP_ID_napi);
	}
	struct dev_slot s = {.netns = k.netns, .ifindex = k.ifindex, .slot = hist_slot(work)};
	u64 one = 0, *h = work_hist.lookup_or_try_init(&s, &one);
	if (h)
		(*h)++;
	else
		map_full(MAP_ID_work_hist);
	s.slot = HIST_SUM;
	h = work_hist.lookup_or_try_init(&s, &one);
	if (h)
		*h += work;
	else
		map_full(MAP_ID_work_hist);
	return 0;
}

#ifdef HOOK_RAW_TP
int on_raw_tp(struct bpf_raw_tracepoint_args *ctx)
{
	return poll((const void *)ctx->args[0], (int)ctx->args[1], (int)ctx->args[2]);
}
#endif

#ifdef HOOK_TP
int on_tp(struct tracepoint__napi__napi_poll *args)
{
	return poll(args->napi, args->work, args->budget);
}
#endif
