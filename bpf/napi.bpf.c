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
/* Packets per poll: exp2 slots (hist_slot) up to 2^(WORK_SLOTS-2), far
 * beyond any budget; the last slot holds the sum (the histogram convention). */
#define WORK_SLOTS 16

/* Everything counted per device in one value: a poll is one map lookup. */
struct napi_val {
	u64 polls;
	u64 packets;
	u64 exhausted; /* work == budget */
	u64 work[WORK_SLOTS];
};

BPF_TABLE("percpu_hash", struct dev_key, struct napi_val, napi, MAX_napi);
#ifdef FRONT_napi
/* The devices polled most, without the hash (pyprobe_bpf.h). */
_Static_assert(sizeof(struct dev_key) == 8, "a front's key is 8 bytes");
BPF_ARRAY(napi_fkeys, struct dev_key, FRONT_napi + 1);
BPF_PERCPU_ARRAY(napi_front, struct napi_val, FRONT_napi + 1);
#endif

static __always_inline struct napi_val *napi_of(struct dev_key *k)
{
#ifdef FRONT_napi
	u64 key = front_key(k);
	u32 slot = front_index(key, FRONT_napi);
	struct dev_key *held = napi_fkeys.lookup(&slot);
	if (held && front_claim((u64 *)held, key)) {
		struct napi_val *fv = napi_front.lookup(&slot);
		if (fv)
			return fv;
	}
#endif
	struct napi_val zero = {}, *v = napi.lookup_or_try_init(k, &zero);
	if (!v)
		map_full(MAP_ID_napi);
	return v;
}

static __always_inline int poll(const void *napi_struct, int work, int budget)
{
	struct dev_key k = {};
	const void *dev = 0;
	READ_AT(dev, napi_struct, OFF_NAPI_DEV);
	dev_ids(dev, &k.ifindex, &k.netns);
	struct napi_val *v = napi_of(&k);
	if (!v)
		return 0;
	v->polls++;
	v->packets += work;
	v->exhausted += work >= budget;
	u32 slot = hist_slot(work);
	if (slot > WORK_SLOTS - 2)
		slot = WORK_SLOTS - 2;
	/* The clamp above compiles to a conditional move whose bound 6.1's
	 * verifier loses ("R2 unbounded memory access"); clang drops a mask it
	 * can prove redundant, so the barrier hides slot's range from it and
	 * the mask, kept, is a bound every verifier sees. */
	asm volatile("" : "+r"(slot));
	v->work[slot & (WORK_SLOTS - 1)]++;
	v->work[WORK_SLOTS - 1] += work;
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
