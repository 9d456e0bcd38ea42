/* queues: the moments a socket's buffers overflow — sock:sock_rcvqueue_full
 * (a packet refused because the receive queue is over sk_rcvbuf) and
 * sock:sock_exceed_buf_limit (protocol memory pressure) — counted by
 * namespace, event, protocol and local port. Queue depths themselves come
 * from sock_diag and tc stats in user space, at read time.
 *
 * Hooks: HOOK_RAW_TP sock_rcvqueue_full(sk, skb), sock_exceed_buf_limit(sk,
 * prot, allocated, kind); HOOK_TP the sock:* tracepoints (sk from BTF-free
 * fields is not there, so the tracepoint fallback counts without port/netns).
 *
 * -DFEATURE_ACKS: tcp_probe(sk, skb), which tcp_rcv_established() fires
 * for every segment an established socket receives (mostly ACKs): the
 * socket's smoothed RTT then, in an exp2 histogram of nanoseconds by netns. */
#include <uapi/linux/ptrace.h>
#include "pyprobe_bpf.h"

#define EV_RCVQUEUE_FULL 0
#define EV_EXCEED_RMEM 1
#define EV_EXCEED_WMEM 2

struct q_key {
	u32 netns;
	u16 event;
	u16 protocol;
	u16 port;
	u16 _pad;
};
BPF_TABLE("percpu_hash", struct q_key, u64, overflows, MAX_overflows);

static __always_inline int count(const void *sk, u16 event)
{
	struct q_key k = {.event = event};
	if (sk) {
		k.netns = sk_netns_id(sk);
		READ_AT(k.protocol, sk, OFF_SK_PROTOCOL);
		READ_AT(k.port, sk, OFF_SKC_NUM);
	}
	u64 zero = 0, *c = overflows.lookup_or_try_init(&k, &zero);
	if (c)
		(*c)++;
	else
		map_full(MAP_ID_overflows);
	return 0;
}

#ifdef HOOK_RAW_TP
int on_rcvqueue_full(struct bpf_raw_tracepoint_args *ctx)
{
	return count((const void *)ctx->args[0], EV_RCVQUEUE_FULL);
}
/* kind: SK_MEM_SEND 0, SK_MEM_RECV 1 */
int on_exceed(struct bpf_raw_tracepoint_args *ctx)
{
	return count((const void *)ctx->args[0], ctx->args[3] ? EV_EXCEED_RMEM : EV_EXCEED_WMEM);
}
#endif

#ifdef HOOK_TP
int on_tp_rcvqueue_full(struct tracepoint__sock__sock_rcvqueue_full *args)
{
	return count(0, EV_RCVQUEUE_FULL);
}
int on_tp_exceed(struct tracepoint__sock__sock_exceed_buf_limit *args)
{
	return count(0, args->kind ? EV_EXCEED_RMEM : EV_EXCEED_WMEM);
}
#endif

#ifdef FEATURE_ACKS
/* Slot k counts srtt in (2^(k-1), 2^k] ns; slot HIST_SUM the nanoseconds. */
struct srtt_slot {
	u32 netns;
	u16 slot;
	u16 _pad;
};
BPF_TABLE("percpu_hash", struct srtt_slot, u64, ack_srtt, MAX_ack_srtt);
#ifdef FRONT_ack_srtt
/* Two updates per segment received: each in a front slot (pyprobe_bpf.h)
 * where it has one, not the hash. */
_Static_assert(sizeof(struct srtt_slot) == 8, "a front's key is 8 bytes");
BPF_ARRAY(ack_srtt_fkeys, struct srtt_slot, FRONT_ack_srtt + 1);
BPF_PERCPU_ARRAY(ack_srtt_front, u64, FRONT_ack_srtt + 1);
#endif

static __always_inline void add_srtt(struct srtt_slot *k, u64 v)
{
#ifdef FRONT_ack_srtt
	u64 key = front_key(k);
	u32 slot = front_index(key, FRONT_ack_srtt);
	struct srtt_slot *held = ack_srtt_fkeys.lookup(&slot);
	if (held && front_claim((u64 *)held, key)) {
		u64 *f = ack_srtt_front.lookup(&slot);
		if (f) {
			*f += v;
			return;
		}
	}
#endif
	u64 zero = 0, *c = ack_srtt.lookup_or_try_init(k, &zero);
	if (c)
		*c += v;
	else
		map_full(MAP_ID_ack_srtt);
}

/* srtt_us: the kernel's smoothed RTT in microseconds (tcp_sock's srtt_us >> 3). */
static __always_inline int count_srtt(u32 netns, u32 srtt_us)
{
	u64 ns = (u64)srtt_us * 1000;
	struct srtt_slot k = {.netns = netns, .slot = hist_slot(ns)};
	add_srtt(&k, 1);
	k.slot = HIST_SUM;
	add_srtt(&k, ns);
	return 0;
}

#if defined(HOOK_RAW_TP) && defined(OFF_TCP_SRTT_US)
int on_tcp_probe(struct bpf_raw_tracepoint_args *ctx)
{
	const void *sk = (const void *)ctx->args[0];
	u32 srtt = 0;
	/* tcp_sock's, past the struct sock the argument is typed as: the helper */
	READ_FAR(srtt, sk, OFF_TCP_SRTT_US);
	return count_srtt(sk_netns_id(sk), srtt >> 3);
}
#endif

#ifdef HOOK_TP
/* The format's srtt is srtt_us >> 3 already. */
int on_tp_tcp_probe(struct tracepoint__tcp__tcp_probe *args)
{
	return count_srtt(sk_netns_id(args->skaddr), args->srtt);
}
#endif
#endif /* FEATURE_ACKS */
