/* neigh: the neighbour tables (ARP, NDISC) at work, by namespace, device and
 * family: entries created, resolutions that failed (no answer after the
 * probes: INCOMPLETE -> FAILED) and that succeeded (INCOMPLETE -> a
 * link-layer address); with -DSTREAM each with the address.
 *
 * Hooks: HOOK_RAW_TP neigh_create(tbl, dev, pkey, n, exempt),
 *        neigh_timer_handler(n, err) (traced as the handler ends: the new
 *        state), neigh_update(n, lladdr, new, flags, pid);
 *        HOOK_KPROBE neigh_invalidate(n) (the failure itself) and
 *        __neigh_update(n, lladdr, new, ...); no creations. The classic
 *        tracepoints do not give the entry, so neither its namespace. */
#include <uapi/linux/ptrace.h>
#include "pyprobe.h"
#include "pyprobe_bpf.h"

#define NUD_INCOMPLETE 0x01
#define NUD_FAILED 0x20
#define NUD_VALID 0xde /* PERMANENT NOARP REACHABLE PROBE STALE DELAY */

struct neigh_key {
	u32 netns;
	u32 ifindex;
	u8 family;
	u8 kind;
	u16 _pad;
};
BPF_TABLE("percpu_hash", struct neigh_key, u64, neigh, MAX_neigh);

/* An event of the entry for key (its address) in table tbl on device dev:
 * apart, as neigh_create is traced before the new entry has its device and
 * address. */
static __always_inline int count_event(const void *tbl, const void *dev, const void *key, u8 kind,
				       u8 old, u8 new_state)
{
	int family = 0;
	struct neigh_key k = {.kind = kind};
	if (tbl)
		READ_AT(family, tbl, OFF_TBL_FAMILY);
	k.family = family;
	dev_ids(dev, &k.ifindex, &k.netns);
	u64 zero = 0, *c = neigh.lookup_or_try_init(&k, &zero);
	if (c)
		(*c)++;
	else
		map_full(MAP_ID_neigh);
#ifdef STREAM
	struct neigh_event *e = event_reserve(sizeof(struct neigh_event));
	if (!e)
		return 0;
	__builtin_memset(e, 0, sizeof(*e));
	e->ts_ns = bpf_ktime_get_ns();
	e->netns = k.netns;
	e->ifindex = k.ifindex;
	e->family = k.family;
	e->kind = kind;
	e->old_state = old;
	e->new_state = new_state;
	bpf_probe_read_kernel(e->addr, family == 2 ? 4 : 16, key);
	event_submit(e);
#endif
	return 0;
}

/* An event of an entry made: its table, device and address from it. */
static __always_inline int neigh_event_of(const void *n, u8 kind, u8 old, u8 new_state)
{
	const void *dev = 0, *tbl = 0;
	if (!n)
		return 0;
	READ_AT(dev, n, OFF_NEIGH_DEV);
	READ_AT(tbl, n, OFF_NEIGH_TBL);
	return count_event(tbl, dev, (const char *)n + OFF_NEIGH_PRIMARY_KEY, kind, old, new_state);
}

static __always_inline u8 nud_state(const void *n)
{
	u8 state = 0;
	if (n)
		READ_AT(state, n, OFF_NEIGH_NUD_STATE);
	return state;
}

/* An INCOMPLETE entry given a valid state: resolved. */
static __always_inline int update(const void *n, u8 new_state)
{
	u8 old = nud_state(n);
	if ((old & NUD_INCOMPLETE) && (new_state & NUD_VALID))
		return neigh_event_of(n, PYPROBE_NEIGH_RESOLVED, old, new_state);
	return 0;
}

#ifdef HOOK_RAW_TP
int on_create(struct bpf_raw_tracepoint_args *ctx)
{
	if (!ctx->args[3]) /* not allocated: the table full */
		return 0;
	return count_event((const void *)ctx->args[0], (const void *)ctx->args[1],
			   (const void *)ctx->args[2], PYPROBE_NEIGH_CREATED, 0, PYPROBE_NUD_NONE);
}

/* Traced where the handler ends: FAILED now means it failed in this run
 * (the timer runs only for entries still resolving or to be confirmed). */
int on_timer(struct bpf_raw_tracepoint_args *ctx)
{
	const void *n = (const void *)ctx->args[0];
	u8 state = nud_state(n);
	if (state == NUD_FAILED)
		/* INCOMPLETE or PROBE before: not kept, so not said */
		return neigh_event_of(n, PYPROBE_NEIGH_FAILED, PYPROBE_NUD_NONE, state);
	return 0;
}

int on_update(struct bpf_raw_tracepoint_args *ctx)
{
	return update((const void *)ctx->args[0], (u8)ctx->args[2]);
}
#endif

#ifdef HOOK_KPROBE
int on_kprobe_invalidate(struct pt_regs *ctx)
{
	const void *n = (const void *)PT_REGS_PARM1(ctx);
	/* the state is FAILED already here: the one before is not known */
	return neigh_event_of(n, PYPROBE_NEIGH_FAILED, PYPROBE_NUD_NONE, NUD_FAILED);
}

int on_kprobe_update(struct pt_regs *ctx)
{
	return update((const void *)PT_REGS_PARM1(ctx), (u8)PT_REGS_PARM3(ctx));
}
#endif
