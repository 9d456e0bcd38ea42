/* softirqs: runs, raises and time per CPU and vector, and a histogram of
 * time per run. All in per-CPU arrays: no locks, no hashing, ~3 map touches
 * per softirq. Softirqs do not nest on one CPU, so one start time per CPU.
 *
 * Hooks: HOOK_RAW_TP (softirq_entry/exit/raise(vec_nr)), HOOK_TP (irq:*). */
#include <uapi/linux/ptrace.h>
#include "pyprobe_bpf.h"

#define NR_VEC 16

BPF_PERCPU_ARRAY(runs, u64, NR_VEC);
BPF_PERCPU_ARRAY(raised, u64, NR_VEC);
BPF_PERCPU_ARRAY(time_ns, u64, NR_VEC);
BPF_PERCPU_ARRAY(run_ns, u64, NR_VEC *HIST_SLOTS);
BPF_PERCPU_ARRAY(started, u64, 1);

static __always_inline int entry(u32 vec)
{
	u32 zero = 0, v = vec & (NR_VEC - 1);
	u64 *c = runs.lookup(&v);
	if (c)
		(*c)++;
	u64 *ts = started.lookup(&zero);
	if (ts)
		*ts = bpf_ktime_get_ns();
	return 0;
}

static __always_inline int exit_(u32 vec)
{
	u32 zero = 0, v = vec & (NR_VEC - 1);
	u64 *ts = started.lookup(&zero);
	if (!ts || !*ts)
		return 0; /* attached mid-run */
	u64 delta = bpf_ktime_get_ns() - *ts;
	*ts = 0;
	u64 *t = time_ns.lookup(&v);
	if (t)
		*t += delta;
	/* The histogram's sum slot stays 0: its sum is time_ns, the same
	 * deltas (pyprobe/probes/softirqs.py), one map touch fewer. */
	u32 slot = v * HIST_SLOTS + hist_slot(delta);
	u64 *h = run_ns.lookup(&slot);
	if (h)
		(*h)++;
	return 0;
}

static __always_inline int raise(u32 vec)
{
	u32 v = vec & (NR_VEC - 1);
	u64 *c = raised.lookup(&v);
	if (c)
		(*c)++;
	return 0;
}

#ifdef HOOK_RAW_TP
int on_entry(struct bpf_raw_tracepoint_args *ctx) { return entry((u32)ctx->args[0]); }
int on_exit(struct bpf_raw_tracepoint_args *ctx) { return exit_((u32)ctx->args[0]); }
int on_raise(struct bpf_raw_tracepoint_args *ctx) { return raise((u32)ctx->args[0]); }
#endif

#ifdef HOOK_TP
int on_tp_entry(struct tracepoint__irq__softirq_entry *args) { return entry(args->vec); }
int on_tp_exit(struct tracepoint__irq__softirq_exit *args) { return exit_(args->vec); }
int on_tp_raise(struct tracepoint__irq__softirq_raise *args) { return raise(args->vec); }
#endif
