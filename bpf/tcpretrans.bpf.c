/* tcpretrans: TCP retransmits and resets, counted in the kernel by namespace
 * and state (resets sent also by reason), and streamed with the 5-tuple.
 * Retransmits count segments the way TcpRetransSegs does: successful
 * retransmits of data (tcp_gso_segs of the skb) plus SYN-ACK retransmits.
 *
 * Hooks: HOOK_RAW_TP tcp_retransmit_skb(sk, skb, err), tcp_retransmit_synack
 * (sk, req), tcp_send_reset(sk, skb, reason), tcp_receive_reset(sk); socket
 * and skb fields at BTF offsets. HOOK_TP: the tcp:* tracepoints. */
#include <uapi/linux/ptrace.h>
#include "pyprobe.h"
#define OWNER_TRACKING
#include "pyprobe_bpf.h"
#if defined(HOOK_TP)
/* bcc declares tcp_send_reset's reason field as enum sk_rst_reason; only its
 * type is needed (the names come from the running kernel). Headers older
 * than the kernel may not have it. */
#if __has_include(<net/rstreason.h>)
#include <net/rstreason.h>
#else
enum sk_rst_reason { PYPROBE_SK_RST_REASON_ANY = 0 };
#endif
#endif

struct ns_state {
	u32 netns;
	u32 state;
#ifdef FEATURE_CGROUP
	u64 cgroup; /* --label cgroup: the socket's (a SYN-ACK's: its listener's) */
#endif
};
struct ns_state_reason {
	u32 netns;
	u16 state;
	u16 reason; /* enum sk_rst_reason: a few dozen values */
#ifdef FEATURE_CGROUP
	u64 cgroup;
#endif
};
#ifdef FEATURE_CGROUP
#define SET_CGROUP(k, id) ((k).cgroup = (id))
#else
#define SET_CGROUP(k, id)
#endif
BPF_TABLE("percpu_hash", struct ns_state, u64, retransmits, MAX_retransmits);
BPF_TABLE("percpu_hash", struct ns_state_reason, u64, resets_sent, MAX_resets_sent);
BPF_TABLE("percpu_hash", struct ns_state, u64, resets_received, MAX_resets_received);

/* Front slots (pyprobe_bpf.h) for each: one slot lookup instead of a hash's. */
#ifndef FEATURE_CGROUP /* then no fronts: user space leaves FRONT_* out */
_Static_assert(sizeof(struct ns_state) == 8 && sizeof(struct ns_state_reason) == 8,
	       "a front's key is 8 bytes");
#endif
#ifdef FRONT_retransmits
BPF_ARRAY(retransmits_fkeys, struct ns_state, FRONT_retransmits + 1);
BPF_PERCPU_ARRAY(retransmits_front, u64, FRONT_retransmits + 1);
#endif
#ifdef FRONT_resets_sent
BPF_ARRAY(resets_sent_fkeys, struct ns_state_reason, FRONT_resets_sent + 1);
BPF_PERCPU_ARRAY(resets_sent_front, u64, FRONT_resets_sent + 1);
#endif
#ifdef FRONT_resets_received
BPF_ARRAY(resets_received_fkeys, struct ns_state, FRONT_resets_received + 1);
BPF_PERCPU_ARRAY(resets_received_front, u64, FRONT_resets_received + 1);
#endif

static __always_inline u64 *retransmits_of(struct ns_state *k)
{
#ifdef FRONT_retransmits
	u64 key = front_key(k);
	u32 slot = front_index(key, FRONT_retransmits);
	struct ns_state *held = retransmits_fkeys.lookup(&slot);
	if (held && front_claim((u64 *)held, key)) {
		u64 *c = retransmits_front.lookup(&slot);
		if (c)
			return c;
	}
#endif
	u64 zero = 0, *c = retransmits.lookup_or_try_init(k, &zero);
	if (!c)
		map_full(MAP_ID_retransmits);
	return c;
}

static __always_inline u64 *resets_sent_of(struct ns_state_reason *k)
{
#ifdef FRONT_resets_sent
	u64 key = front_key(k);
	u32 slot = front_index(key, FRONT_resets_sent);
	struct ns_state_reason *held = resets_sent_fkeys.lookup(&slot);
	if (held && front_claim((u64 *)held, key)) {
		u64 *c = resets_sent_front.lookup(&slot);
		if (c)
			return c;
	}
#endif
	u64 zero = 0, *c = resets_sent.lookup_or_try_init(k, &zero);
	if (!c)
		map_full(MAP_ID_resets_sent);
	return c;
}

static __always_inline u64 *resets_received_of(struct ns_state *k)
{
#ifdef FRONT_resets_received
	u64 key = front_key(k);
	u32 slot = front_index(key, FRONT_resets_received);
	struct ns_state *held = resets_received_fkeys.lookup(&slot);
	if (held && front_claim((u64 *)held, key)) {
		u64 *c = resets_received_front.lookup(&slot);
		if (c)
			return c;
	}
#endif
	u64 zero = 0, *c = resets_received.lookup_or_try_init(k, &zero);
	if (!c)
		map_full(MAP_ID_resets_received);
	return c;
}

static __always_inline u8 sk_state(const void *sk)
{
	u8 state = 0;
	if (sk)
		READ_AT(state, sk, OFF_SKC_STATE);
	return state;
}

#ifdef STREAM
static __always_inline void stream(u8 kind, const void *sk, const void *skb, u32 netns, u8 state,
				   u32 reason, u32 segs, u64 cgroup)
{
	struct tcp_event *e = event_reserve(sizeof(struct tcp_event));
	if (!e)
		return;
	__builtin_memset(e, 0, sizeof(*e));
	e->ts_ns = bpf_ktime_get_ns();
	e->skaddr = (u64)sk;
	e->netns = netns;
	e->kind = kind;
	e->state = state;
	e->reason = reason;
	e->segs = segs;
	e->cgroup = cgroup;
	if (sk && state != 12 /* NEW_SYN_RECV: a request, not a full socket */) {
		u16 sport = 0, dport = 0;
		READ_AT(e->family, sk, OFF_SKC_FAMILY);
		READ_AT(sport, sk, OFF_SKC_NUM);
		READ_AT(dport, sk, OFF_SKC_DPORT);
		e->sport = sport; /* skc_num is host order */
		e->dport = __builtin_bswap16(dport);
		if (e->family == 2) {
			bpf_probe_read_kernel(e->saddr, 4, (const char *)sk + OFF_SKC_RCV_SADDR);
			bpf_probe_read_kernel(e->daddr, 4, (const char *)sk + OFF_SKC_DADDR);
		} else {
			bpf_probe_read_kernel(e->saddr, 16, (const char *)sk + OFF_SKC_V6_RCV_SADDR);
			bpf_probe_read_kernel(e->daddr, 16, (const char *)sk + OFF_SKC_V6_DADDR);
		}
		e->flags |= owner_of(sk, &e->pid, e->comm);
	} else if (skb) {
		/* A reset for a packet with no socket: its reply direction. */
		struct tuple t = {};
		skb_tuple(skb, &t);
		e->family = t.family;
		__builtin_memcpy(e->saddr, t.daddr, 16);
		__builtin_memcpy(e->daddr, t.saddr, 16);
		e->sport = t.dport;
		e->dport = t.sport;
	}
	event_submit(e);
}
#define STREAM_EVENT(...) stream(__VA_ARGS__)
#else
#define STREAM_EVENT(...)
#endif

static __always_inline int retransmit(const void *sk, const void *skb, int err)
{
	if (err)
		return 0; /* not sent: the kernel does not count it either */
	u16 segs = 0;
	READ_AT(segs, skb, OFF_SKB_CB + OFF_TCP_CB_GSO_SEGS);
	if (!segs)
		segs = 1;
#ifdef FILTER_CGROUP
	if (!in_cgroup(sk))
		return 0;
#endif
	struct ns_state k = {.netns = sk_netns_id(sk), .state = sk_state(sk)};
	u64 cgroup = CGROUP_WANTED ? sock_cgroup(sk) : 0;
	SET_CGROUP(k, cgroup);
	u64 *c = retransmits_of(&k);
	if (c)
		*c += segs;
	STREAM_EVENT(PYPROBE_TCP_RETRANSMIT, sk, skb, k.netns, k.state, 0, segs, cgroup);
	return 0;
}

static __always_inline int synack(const void *req)
{
	/* The request socket: its common part carries the namespace; its
	 * listener, the cgroup. */
	const void *listener = 0;
#ifdef OFF_RSK_LISTENER
	if (CGROUP_WANTED)
		READ_AT(listener, req, OFF_RSK_LISTENER);
#endif
#ifdef FILTER_CGROUP
	if (!in_cgroup(listener))
		return 0;
#endif
	struct ns_state k = {.netns = sk_netns_id(req), .state = 3 /* SYN_RECV */};
	u64 cgroup = CGROUP_WANTED ? sock_cgroup(listener) : 0;
	SET_CGROUP(k, cgroup);
	u64 *c = retransmits_of(&k);
	if (c)
		(*c)++;
	STREAM_EVENT(PYPROBE_TCP_SYNACK_RETRANSMIT, req, 0, k.netns, 3, 0, 1, cgroup);
	return 0;
}

static __always_inline int reset_sent(const void *sk, const void *skb, u32 reason)
{
	struct ns_state_reason k = {.state = sk_state(sk), .reason = reason};
	k.netns = sk ? sk_netns_id(sk) : 0;
	if (!k.netns && skb) {
		const void *dev = 0;
		READ_AT(dev, skb, OFF_SKB_DEV);
		u32 ifindex = 0;
		dev_ids(dev, &ifindex, &k.netns);
	}
#ifdef FILTER_CGROUP
	if (!in_cgroup(sk))
		return 0;
#endif
	u64 cgroup = CGROUP_WANTED ? sock_cgroup(sk) : 0;
	SET_CGROUP(k, cgroup);
	u64 *c = resets_sent_of(&k);
	if (c)
		(*c)++;
	STREAM_EVENT(PYPROBE_TCP_RESET_SENT, sk, skb, k.netns, k.state, reason, 0, cgroup);
	return 0;
}

static __always_inline int reset_received(const void *sk)
{
#ifdef FILTER_CGROUP
	if (!in_cgroup(sk))
		return 0;
#endif
	struct ns_state k = {.netns = sk_netns_id(sk), .state = sk_state(sk)};
	u64 cgroup = CGROUP_WANTED ? sock_cgroup(sk) : 0;
	SET_CGROUP(k, cgroup);
	u64 *c = resets_received_of(&k);
	if (c)
		(*c)++;
	STREAM_EVENT(PYPROBE_TCP_RESET_RECEIVED, sk, 0, k.netns, k.state, 0, 0, cgroup);
	return 0;
}

#ifdef HOOK_RAW_TP
int on_retransmit(struct bpf_raw_tracepoint_args *ctx)
{
	return retransmit((const void *)ctx->args[0], (const void *)ctx->args[1],
#ifdef RETRANSMIT_HAS_ERR
			  (int)ctx->args[2]
#else
			  0
#endif
	);
}
int on_synack(struct bpf_raw_tracepoint_args *ctx) { return synack((const void *)ctx->args[1]); }
int on_reset_sent(struct bpf_raw_tracepoint_args *ctx)
{
#ifdef RESET_HAS_REASON
	u32 reason = (u32)ctx->args[2];
#else
	u32 reason = 0;
#endif
	return reset_sent((const void *)ctx->args[0], (const void *)ctx->args[1], reason);
}
int on_reset_received(struct bpf_raw_tracepoint_args *ctx)
{
	return reset_received((const void *)ctx->args[0]);
}
#endif

#ifdef HOOK_TP
int on_tp_retransmit(struct tracepoint__tcp__tcp_retransmit_skb *args)
{
	return retransmit(args->skaddr, args->skbaddr,
#ifdef RETRANSMIT_HAS_ERR
			  args->err
#else
			  0
#endif
	);
}
int on_tp_synack(struct tracepoint__tcp__tcp_retransmit_synack *args) { return synack(args->req); }
int on_tp_reset_sent(struct tracepoint__tcp__tcp_send_reset *args)
{
#ifdef RESET_HAS_REASON
	return reset_sent(args->skaddr, args->skbaddr, args->reason);
#else
	return reset_sent(args->skaddr, args->skbaddr, 0);
#endif
}
int on_tp_reset_received(struct tracepoint__tcp__tcp_receive_reset *args)
{
	return reset_received(args->skaddr);
}
#endif
