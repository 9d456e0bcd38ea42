/* tcpstates: TCP state changes.
 *
 * Always: a per-CPU counter matrix old*16+new (no locks, no atomics; user
 * space sums the CPUs at read time).
 * With -DSTREAM: per-event records through a ring buffer, with the time spent
 * in the old state and the socket's owning process, and a lost counter bumped
 * when the ring buffer is full.
 *
 * Hooks (one is compiled in, chosen by user space before load):
 *   HOOK_RAW_TP  raw tracepoint inet_sock_set_state(sk, oldstate, newstate)
 *   HOOK_TP      tracepoint sock:inet_sock_set_state
 *   HOOK_KPROBE  kprobe tcp_set_state(sk, state)
 * Socket fields are read at offsets user space takes from BTF (OFF_* macros),
 * never from struct layouts in possibly mismatched kernel headers. */
#include <uapi/linux/ptrace.h>
#include "pyprobe.h"
#ifdef PYPROBE_OFFSETS_FROM_HEADERS
/* No BTF, but headers built for this very kernel: let the compiler compute
 * the OFF_* macros (they expand to __builtin_offsetof). */
#include <net/sock.h>
#include <net/inet_sock.h>
#include <net/net_namespace.h>
#include <linux/tcp.h>
#endif

#ifndef RINGBUF_PAGES
#define RINGBUF_PAGES 4096 /* 16 MiB: ~170k events of burst before a loss */
#endif
#define AF_INET_ 2
#define AF_INET6_ 10
#define TCP_CLOSE_ 7
#define IPPROTO_TCP_ 6 /* not <uapi/linux/in.h>: it alone adds ~0.6 s to each compile */
/* READ_AT, and with -DSTREAM the ring buffer with its lost/submitted counters
 * and event_reserve()/event_submit(), shared with the other probes. */
#include "pyprobe_bpf.h"

BPF_PERCPU_ARRAY(transitions, u64, PYPROBE_STATE_SLOTS *PYPROBE_STATE_SLOTS);

#ifdef STREAM
struct sk_owner {
	u64 ts;
	u64 born; /* its first change, when that was its birth; else 0 */
	u32 pid;
	u32 flags;
	char comm[PYPROBE_COMM_LEN];
};
/* LRU: entries outlive their sockets (see stream()), and a socket whose
 * CLOSE we never see (probe started late) cannot leak: the least recently
 * used go first when the map is full. */
BPF_TABLE("lru_hash", u64, struct sk_owner, sockets, MAX_sockets);
#endif

/* The namespace, where BTF gave the (optional) offsets; 0 otherwise. */
/* The namespace's inode, from the socket's net pointer (c->net, read with
 * the socket's other fields; 0 when unknown). */
static __always_inline u32 net_inum(const void *net)
{
	u32 inum = 0;
#if defined(OFF_NET_INUM)
	if (net)
		READ_AT(inum, net, OFF_NET_INUM);
#endif
	return inum;
}

/* Transitions only a syscall makes (connect, listen, close/shutdown): here
 * the current task is the socket's owner. Others often run in softirq on
 * behalf of whatever task the CPU interrupted, so we use the owner we
 * remembered instead of trusting the current task. */
static __always_inline int owner_context(int oldstate, int newstate)
{
	return newstate == 2 /* SYN_SENT */ || newstate == 10 /* LISTEN */ ||
	       newstate == 4 /* FIN_WAIT1 */ || newstate == 9 /* LAST_ACK */;
}

/* A socket's first change is its birth when it is connect() or listen()
 * (from CLOSE) or an accepted child's creation (to SYN_RECV); a socket first
 * seen later (the probe started after it) has no known age. */
static __always_inline int born_now(int oldstate, int newstate)
{
	return oldstate == TCP_CLOSE_ || newstate == 3 /* SYN_RECV */;
}

struct change {
	const void *sk;
	const void *net;
	int oldstate;
	int newstate;
	u16 family;
	u16 sport;
	u16 dport;
	u8 saddr[16];
	u8 daddr[16];
};

#ifdef FEATURE_CGROUP
/* --label cgroup: the changes by the socket's cgroup too, in a hash (the
 * matrix above is then not built). */
struct cgroup_change {
	u64 cgroup;
	u32 oldstate;
	u32 newstate;
};
BPF_TABLE("percpu_hash", struct cgroup_change, u64, transitions_by_cgroup,
	  MAX_transitions_by_cgroup);
#endif

#ifdef FEATURE_LATENCY
/* -F latency / --probe tcpstates.latency: time in each state, as exp2
 * histograms by namespace and (old, new) in nanoseconds: connect latency is
 * SYN_SENT->ESTABLISHED, a failed connect's SYN_SENT->CLOSE, CLOSE_WAIT's
 * age (the application late to close), TIME_WAIT's life. A socket's last
 * change is kept by address (LRU: one never closed cannot leak); the slot
 * HIST_SUM of each series accumulates the nanoseconds themselves. */
struct state_slot {
	u32 netns;
	u8 oldstate;
	u8 newstate;
	u16 slot;
};
BPF_TABLE("lru_hash", u64, u64, changed_at, MAX_changed_at);
BPF_TABLE("percpu_hash", struct state_slot, u64, state_ns, MAX_state_ns);

static __always_inline void add_ns(struct state_slot *k, u64 v)
{
	u64 zero = 0, *c = state_ns.lookup_or_try_init(k, &zero);
	if (c)
		*c += v;
	else
		map_full(MAP_ID_state_ns);
}

static __always_inline void time_in_state(const void *sk, int oldstate, int newstate)
{
	u64 key = (u64)sk, now = bpf_ktime_get_ns();
	u64 *at = changed_at.lookup(&key);
	if (at) {
		u64 delta = now - *at;
		struct state_slot k = {.oldstate = oldstate & 15, .newstate = newstate & 15};
#if defined(OFF_SKC_NET) && defined(HAVE_NET_ID)
		k.netns = sk_netns_id(sk);
#endif
		k.slot = hist_slot(delta);
		add_ns(&k, 1);
		k.slot = HIST_SUM;
		add_ns(&k, delta);
		if (newstate == TCP_CLOSE_)
			changed_at.delete(&key); /* its address is the next socket's */
		else
			*at = now;
	} else if (newstate != TCP_CLOSE_) {
		changed_at.update(&key, &now);
	}
}
#define TIME_IN_STATE(sk, o, n) time_in_state(sk, o, n)
#else
#define TIME_IN_STATE(sk, o, n)
#endif

static __always_inline void count(const void *sk, int oldstate, int newstate)
{
	TIME_IN_STATE(sk, oldstate, newstate);
#ifdef FEATURE_CGROUP
	struct cgroup_change k = {sock_cgroup(sk), (u32)oldstate & 15, (u32)newstate & 15};
	u64 zero = 0, *c = transitions_by_cgroup.lookup_or_try_init(&k, &zero);
	if (!c)
		map_full(MAP_ID_transitions_by_cgroup);
#else
	u32 idx = ((u32)oldstate & 15) * PYPROBE_STATE_SLOTS + ((u32)newstate & 15);
	u64 *c = transitions.lookup(&idx);
#endif
	if (c)
		(*c)++;
}

#ifdef STREAM
static __always_inline int stream(struct change *c)
{
	u64 now = bpf_ktime_get_ns();
	u64 key = (u64)c->sk;
	u32 flags = 0;
	u64 delta = 0;
	int closing = c->newstate == TCP_CLOSE_;
	struct sk_owner fresh = {};

	/* A socket seen before is updated in place (no map update: that is an
	 * element allocation and a bucket lock per event). A CLOSE does not
	 * delete its entry but marks it unused (ts 0): the allocator hands a
	 * freed socket's address to the next socket soon (slab reuse), which
	 * then takes the entry over in place — no delete and no insert per
	 * connection. A new address is inserted once, below. */
	struct sk_owner *o = sockets.lookup(&key);
	if (!o) {
		o = &fresh;
	} else if (o->ts) {
		delta = now - o->ts;
		flags |= PYPROBE_F_DELTA_KNOWN;
	}
	if (!o->ts) /* a socket not seen before (or since its address was last closed) */
		o->born = born_now(c->oldstate, c->newstate) ? now : 0;
	u64 life = o->born ? now - o->born : 0;
	if (o->born)
		flags |= PYPROBE_F_LIFE_KNOWN;
	if (owner_context(c->oldstate, c->newstate) || !(o->flags & PYPROBE_F_OWNER_KNOWN)) {
		/* The owner acting itself; or, owner never seen, the current task
		 * reported as a guess (not flagged known). */
		o->pid = bpf_get_current_pid_tgid() >> 32;
		bpf_get_current_comm(&o->comm, sizeof(o->comm));
		o->flags = owner_context(c->oldstate, c->newstate) ? PYPROBE_F_OWNER_KNOWN : 0;
	}
	o->ts = now;
	flags |= o->flags;
	u32 pid = o->pid;
	int keep = 1;

	/* Filters: constants compiled in, applied before the ring buffer. */
#ifdef FILTER_PID
	/* -p means "sockets this process owns": a guessed pid never matches. */
	if (!(o->flags & PYPROBE_F_OWNER_KNOWN) || pid != FILTER_PID)
		keep = 0;
#endif
#ifdef FILTER_FAMILY
	if (c->family != FILTER_FAMILY)
		keep = 0;
#endif
#ifdef LPORT_MATCH
	if (!(LPORT_MATCH(c->sport)))
		keep = 0;
#endif
#ifdef DPORT_MATCH
	if (!(DPORT_MATCH(c->dport)))
		keep = 0;
#endif
#ifdef FILTER_CLOSE
	if (!closing) /* tcplife: a socket's whole life, reported once at its end */
		keep = 0;
#endif
	u32 netns = keep ? net_inum(c->net) : 0;
#ifdef FILTER_NETNS
	if (netns != FILTER_NETNS)
		keep = 0;
#endif
#ifdef FILTER_CGROUP
	if (keep && !in_cgroup(c->sk))
		keep = 0;
#endif

	u64 rx = 0, tx = 0;
#if defined(OFF_TCP_BYTES_RECEIVED) && defined(OFF_TCP_BYTES_ACKED)
	if (keep && closing) { /* the totals, once: two reads at the end, none before */
		READ_FAR(rx, c->sk, OFF_TCP_BYTES_RECEIVED);
		READ_FAR(tx, c->sk, OFF_TCP_BYTES_ACKED);
		flags |= PYPROBE_F_BYTES_KNOWN;
	}
#endif

	struct tcpstate_event *e = keep ? event_reserve(sizeof(struct tcpstate_event)) : 0;
	if (e) { /* else counted in `lost` */
		e->ts_ns = now;
		e->skaddr = key;
		e->delta_ns = delta;
		e->life_ns = life;
		e->rx_bytes = rx;
		e->tx_bytes = tx;
		e->cgroup = sock_cgroup(c->sk);
		e->pid = pid;
		e->netns = netns;
		__builtin_memcpy(e->saddr, c->saddr, 16);
		__builtin_memcpy(e->daddr, c->daddr, 16);
		e->sport = c->sport;
		e->dport = c->dport;
		e->family = c->family;
		e->oldstate = c->oldstate;
		e->newstate = c->newstate;
		e->flags = flags;
		__builtin_memcpy(e->comm, o->comm, sizeof(e->comm));
		e->_pad = 0;
		event_submit(e);
	}
	if (o != &fresh) {
		if (closing) { /* unused until a socket at this address changes state */
			o->ts = 0;
			o->flags = 0;
		}
	} else if (!closing) {
		sockets.update(&key, &fresh);
	}
	return 0;
}
#endif /* STREAM */

#ifdef STREAM
/* tcp_sendmsg_locked(sk, ...): the owner sending, in its own syscall. The
 * way an accepted socket (created in softirq, no state change in process
 * context before its close) gets a known owner. */
int on_sendmsg(struct bpf_raw_tracepoint_args *ctx)
{
	u64 key = ctx->args[0];
	struct sk_owner *o = sockets.lookup(&key);
	if (!o || !o->ts || (o->flags & PYPROBE_F_OWNER_KNOWN))
		return 0;
	o->pid = bpf_get_current_pid_tgid() >> 32;
	bpf_get_current_comm(&o->comm, sizeof(o->comm));
	o->flags |= PYPROBE_F_OWNER_KNOWN;
	return 0;
}
#endif

#if defined(HOOK_RAW_TP) || defined(HOOK_KPROBE)
#ifdef STREAM
/* The sock_common fields a stream reads, as one span (SPAN_READ). */
#ifdef OFF_SKC_NET
#define SKC_NET_LO OFF_SKC_NET
#define SKC_NET_HI (OFF_SKC_NET + 8)
#else
#define SKC_NET_LO OFF_SKC_FAMILY
#define SKC_NET_HI (OFF_SKC_FAMILY + 2)
#endif
#define SKC_LO MIN_(MIN_(MIN_(OFF_SKC_FAMILY, OFF_SKC_DPORT), MIN_(OFF_SKC_DADDR, OFF_SKC_RCV_SADDR)), \
		    MIN_(MIN_(OFF_SKC_V6_DADDR, OFF_SKC_V6_RCV_SADDR), SKC_NET_LO))
#define SKC_HI MAX_(MAX_(MAX_(OFF_SKC_FAMILY + 2, OFF_SKC_DPORT + 2), \
			 MAX_(OFF_SKC_DADDR + 4, OFF_SKC_RCV_SADDR + 4)), \
		    MAX_(MAX_(OFF_SKC_V6_DADDR + 16, OFF_SKC_V6_RCV_SADDR + 16), SKC_NET_HI))
#endif
/* Counting needs only the two states; the socket's addresses are read only
 * when streaming, which keeps the always-on counter program cheap. */
static __always_inline int from_sock(const void *sk, int oldstate, int newstate)
{
	u16 proto = 0;
	READ_AT(proto, sk, OFF_SK_PROTOCOL);
	if (proto != IPPROTO_TCP_)
		return 0;
	count(sk, oldstate, newstate);
#ifdef STREAM
	struct change c = {};
	u16 sport_be = 0, dport_be = 0;
	c.sk = sk;
	c.oldstate = oldstate;
	c.newstate = newstate;
	/* inet_sport, not skc_num: the tracepoint's choice, and still set after
	 * the port is released on the way to CLOSE. It lives in inet_sock, far
	 * from the sock_common fields, which are read as one span. */
	READ_FAR(sport_be, sk, OFF_INET_SPORT); /* inet_sock, around the sock */
	if (SPAN_FITS(SKC_LO, SKC_HI)) {
		char span[SPAN_FITS(SKC_LO, SKC_HI) ? SKC_HI - SKC_LO : 1];
		SPAN_READ(span, sk, SKC_LO, SKC_HI);
		SPAN_GET(c.family, span, SKC_LO, OFF_SKC_FAMILY);
		SPAN_GET(dport_be, span, SKC_LO, OFF_SKC_DPORT);
		if (c.family == AF_INET_) {
			__builtin_memcpy(c.saddr, span + (OFF_SKC_RCV_SADDR - SKC_LO), 4);
			__builtin_memcpy(c.daddr, span + (OFF_SKC_DADDR - SKC_LO), 4);
		} else if (c.family == AF_INET6_) {
			__builtin_memcpy(c.saddr, span + (OFF_SKC_V6_RCV_SADDR - SKC_LO), 16);
			__builtin_memcpy(c.daddr, span + (OFF_SKC_V6_DADDR - SKC_LO), 16);
		}
#ifdef OFF_SKC_NET
		SPAN_GET(c.net, span, SKC_LO, OFF_SKC_NET);
#endif
	} else {
		READ_AT(c.family, sk, OFF_SKC_FAMILY);
		READ_AT(dport_be, sk, OFF_SKC_DPORT);
		if (c.family == AF_INET_) {
			bpf_probe_read_kernel(c.saddr, 4, (const char *)sk + OFF_SKC_RCV_SADDR);
			bpf_probe_read_kernel(c.daddr, 4, (const char *)sk + OFF_SKC_DADDR);
		} else if (c.family == AF_INET6_) {
			bpf_probe_read_kernel(c.saddr, 16, (const char *)sk + OFF_SKC_V6_RCV_SADDR);
			bpf_probe_read_kernel(c.daddr, 16, (const char *)sk + OFF_SKC_V6_DADDR);
		}
#ifdef OFF_SKC_NET
		READ_AT(c.net, sk, OFF_SKC_NET);
#endif
	}
	c.sport = __builtin_bswap16(sport_be);
	c.dport = __builtin_bswap16(dport_be);
	stream(&c);
#endif
	return 0;
}
#endif

#ifdef HOOK_RAW_TP
int on_raw_tp(struct bpf_raw_tracepoint_args *ctx)
{
	return from_sock((const void *)ctx->args[0], (int)ctx->args[1], (int)ctx->args[2]);
}
#endif

#ifdef HOOK_KPROBE
/* tcp_set_state(sk, state): the old state is still in sk->skc_state. Misses
 * inet_sk_set_state() callers (listen start, accepted-child creation). */
int on_kprobe(struct pt_regs *ctx)
{
	const void *sk = (const void *)PT_REGS_PARM1(ctx);
	int newstate = (int)PT_REGS_PARM2(ctx);
	u8 oldstate = 0;
	READ_AT(oldstate, sk, OFF_SKC_STATE);
	/* Like the tracepoint, also report a change to the same state. */
	return from_sock(sk, oldstate, newstate);
}
#endif

#ifdef HOOK_TP
/* bcc generates this struct from the tracepoint's format file at load time,
 * so its layout is the running kernel's. */
int on_tp(struct tracepoint__sock__inet_sock_set_state *args)
{
	if (args->protocol != IPPROTO_TCP_)
		return 0;
	count(args->skaddr, args->oldstate, args->newstate);
#ifdef STREAM
	struct change c = {};
	c.sk = args->skaddr;
#ifdef OFF_SKC_NET
	READ_AT(c.net, args->skaddr, OFF_SKC_NET);
#endif
	c.oldstate = args->oldstate;
	c.newstate = args->newstate;
	c.family = args->family;
	c.sport = args->sport;
	c.dport = args->dport;
	if (c.family == AF_INET_) {
		__builtin_memcpy(c.saddr, args->saddr, 4);
		__builtin_memcpy(c.daddr, args->daddr, 4);
	} else {
		__builtin_memcpy(c.saddr, args->saddr_v6, 16);
		__builtin_memcpy(c.daddr, args->daddr_v6, 16);
	}
	stream(&c);
#endif
	return 0;
}
#endif
