/* Helpers shared by the BPF programs (kernel side only; the structs shared
 * with Python are in pyprobe.h). */
#ifndef PYPROBE_BPF_H
#define PYPROBE_BPF_H

#ifdef BTF_DIRECT
/* A tp_btf program (pyprobe/tpbtf.py): the tracepoint's arguments are typed
 * pointers, and so is every struct pointer read from them, so a member is
 * one load instruction the verifier checks against BTF — not a helper call.
 * A bad address reads 0 (the JIT's exception table), like a failed probe
 * read. Only for pointers that came from the arguments: one kept as a
 * number (a map key) needs bpf_probe_read_kernel. */
#define READ_AT(dst, base, off) \
	__builtin_memcpy(&(dst), (const __typeof__(dst) *)((const char *)(base) + (off)), sizeof(dst))
/* (A memcpy, not a dereference, which bcc would rewrite into a probe read;
 * the cast gives clang the member's alignment: one load, not one per byte,
 * which the verifier refuses inside a pointer member.) No spans: field by
 * field, each is one load. */
#define SPAN_FITS(lo, hi) 0
#define SPAN_READ(buf, base, lo, hi) ((void)0)
#else
/* Read a kernel struct member at an offset user space took from BTF. */
#define READ_AT(dst, base, off) \
	bpf_probe_read_kernel(&(dst), sizeof(dst), (const char *)(base) + (off))

/* Fields close together in one struct are read as one span: a
 * bpf_probe_read_kernel costs ~30 ns here whatever its size (8 bytes: 30 ns
 * over an empty program, 480 bytes: 40), so 5 fields of an sk_buff read one
 * by one cost 4 reads more than they need. lo/hi are constants (the OFF_*
 * macros), so every access into the span is at a constant offset; a span
 * wider than SPAN_MAX is read field by field instead (SPAN_FITS). */
#define SPAN_MAX 256
#define SPAN_FITS(lo, hi) ((hi) - (lo) <= SPAN_MAX)
#define SPAN_READ(buf, base, lo, hi) \
	bpf_probe_read_kernel(buf, SPAN_FITS(lo, hi) ? (hi) - (lo) : SPAN_MAX, \
			      (const char *)(base) + (lo))
#endif /* BTF_DIRECT */
/* A member outside the pointer's own struct (inet_sock's, around the struct
 * sock a tracepoint passes): the verifier refuses a direct load there, so it
 * always goes through the helper. */
#define READ_FAR(dst, base, off) \
	bpf_probe_read_kernel(&(dst), sizeof(dst), (const char *)(base) + (off))
#define MIN_(a, b) ((a) < (b) ? (a) : (b))
#define MAX_(a, b) ((a) > (b) ? (a) : (b))
#define SPAN_GET(dst, buf, lo, off) __builtin_memcpy(&(dst), (buf) + ((off) - (lo)), sizeof(dst))

/* exp2 histograms: slot k counts values in (2^(k-1), 2^k], slot 0 holds 0
 * and 1; the last slot (HIST_SUM) accumulates the values themselves, so
 * one map gives Prometheus both the buckets and the _sum. */
#define HIST_SLOTS 64
#define HIST_SUM (HIST_SLOTS - 1)

static __always_inline u32 log2_floor(u64 v)
{
	u32 r = 0, shift;
	shift = (v > 0xFFFFFFFFULL) << 5; v >>= shift; r |= shift;
	shift = (v > 0xFFFF) << 4; v >>= shift; r |= shift;
	shift = (v > 0xFF) << 3; v >>= shift; r |= shift;
	shift = (v > 0xF) << 2; v >>= shift; r |= shift;
	shift = (v > 0x3) << 1; v >>= shift; r |= shift;
	r |= (v >> 1);
	return r;
}

static __always_inline u32 hist_slot(u64 v)
{
	u32 slot = v <= 1 ? 0 : log2_floor(v - 1) + 1;
	return slot < HIST_SUM ? slot : HIST_SUM - 1;
}

/* Maps are sized by the manifest (-DMAX_<map>) and numbered (-DMAP_ID_<map>).
 * An insert into a full hash map fails: counted per map, never silent
 * (pyprobe_map_update_errors_total). */
#define MAP_ERROR_SLOTS 16
BPF_PERCPU_ARRAY(map_errors, u64, MAP_ERROR_SLOTS);

static __always_inline void map_full(u32 id)
{
	u64 *n = map_errors.lookup(&id);
	if (n)
		(*n)++;
}

/* Front slots (-DFRONT_<map>=N, a power of two; the manifest's `front`): a
 * direct-mapped per-CPU array in front of a per-CPU hash, for counters that
 * run on every packet or poll. Measured here with bpf_stats, a hash lookup
 * costs ~75 ns (a helper call, jhash, a bucket walk), an array lookup ~5 (the
 * verifier inlines it). A key (8 bytes, not all 0) claims a free slot once,
 * with a compare-and-swap on the shared <map>_fkeys array (whose values are
 * the hash's key type, so user space reads them by member), and from then on
 * counts in that slot of <map>_front, which is per-CPU like the hash; a key
 * whose slot another holds uses the hash. User space adds the slots to the
 * hash's entries (probe.py), so the values must be plain counters, and frees
 * the slots of devices that are gone like their hash entries. The program
 * looks the two maps up itself: bcc refuses map calls inside macros. */
/* A front key's 8 bytes as one number (what the slot's keys array holds). */
static __always_inline u64 front_key(const void *k)
{
	u64 key = 0;
	__builtin_memcpy(&key, k, sizeof(key));
	return key;
}

/* Key 0 (napi's per-CPU backlog has no device, so no namespace or ifindex)
 * cannot claim a slot, as 0 marks a free one: it has its own, one past the
 * others (the arrays hold slots + 1), never claimed. */
static __always_inline u32 front_index(u64 key, u32 slots)
{
	if (!key)
		return slots;
	return (u32)((key * 0x9E3779B97F4A7C15ull) >> 32) & (slots - 1);
}

static __always_inline int front_claim(u64 *held, u64 key)
{
	if (!key)
		return 1; /* its own slot (front_index) */
	u64 now = *held;
	if (now == key)
		return 1;
	if (now)
		return 0;
	now = __sync_val_compare_and_swap(held, 0, key);
	return now == 0 || now == key; /* another CPU may have claimed it for the same key */
}

/* A namespace as map keys hold it: the low 32 bits of its cookie, which is
 * never reused (with -DNET_ID_COOKIE, when user space can read cookies too),
 * else its inode number, which the kernel hands to the next namespace as
 * soon as this one is freed. User space turns either into the inode. */
#if defined(OFF_NET_COOKIE) && defined(NET_ID_COOKIE)
#define HAVE_NET_ID 1
static __always_inline u32 net_id(const void *net)
{
	u64 cookie = 0;
	READ_AT(cookie, net, OFF_NET_COOKIE);
	return (u32)cookie;
}
#elif defined(OFF_NET_INUM)
#define HAVE_NET_ID 1
static __always_inline u32 net_id(const void *net)
{
	u32 inum = 0;
	READ_AT(inum, net, OFF_NET_INUM);
	return inum;
}
#endif

/* The cgroup a socket belongs to: the v2 cgroup of the task that created it
 * (sock_cgroup_data, what cgroup BPF programs filter on), as its id, the
 * inode of its directory. A container's sockets name the container even
 * when their packets are dropped or retransmitted in softirq, on behalf of
 * whatever task the CPU interrupted. 0 where the offsets are missing. */
#if defined(OFF_SK_CGROUP) && defined(OFF_CGROUP_KN) && defined(OFF_KN_ID)
#define HAVE_SOCK_CGROUP 1
/* The socket's struct cgroup; 0 for none, and for what is not a full socket
 * (a TIME_WAIT or request socket, whose struct ends before sk_cgrp_data:
 * skb->sk and tcp_send_reset's sk can be either). */
static __always_inline const void *sock_cgroup_ptr(const void *sk)
{
	const void *cg = 0;
	if (!sk)
		return 0;
#ifdef OFF_SKC_STATE
	u8 state = 0;
	READ_AT(state, sk, OFF_SKC_STATE);
	if (state == 6 /* TIME_WAIT */ || state == 12 /* NEW_SYN_RECV */)
		return 0;
#endif
	READ_AT(cg, sk, OFF_SK_CGROUP);
	return cg;
}

static __always_inline u64 cgroup_id(const void *cg)
{
	const void *kn = 0;
	u64 id = 0;
	if (!cg)
		return 0;
	READ_AT(kn, cg, OFF_CGROUP_KN);
	if (kn)
		READ_AT(id, kn, OFF_KN_ID);
	return id;
}

static __always_inline u64 sock_cgroup(const void *sk) { return cgroup_id(sock_cgroup_ptr(sk)); }
#else
static __always_inline u64 sock_cgroup(const void *sk) { return 0; }
#endif

/* Whether the cgroup is read at all: for the stream's records and the
 * cgroup feature's keys; otherwise the reads compile away. */
#if defined(STREAM) || defined(FEATURE_CGROUP)
#define CGROUP_WANTED 1
#else
#define CGROUP_WANTED 0
#endif

/* --cgroup/--container: whether a socket is in cgroup FILTER_CGROUP (its id)
 * or below it: its cgroup's ancestors (struct cgroup's ancestors[], by
 * level) are compared from itself upwards, as cgroup_is_descendant() does,
 * up to CGROUP_UP levels. By ids, not depths: the same inside a cgroup
 * namespace, whose root is not the hierarchy's. Without the ancestors'
 * offsets (kernels before 6.1 keep ids there): the socket's own cgroup. */
#ifdef FILTER_CGROUP
#define CGROUP_UP 16
static __always_inline int in_cgroup(const void *sk)
{
#if defined(HAVE_SOCK_CGROUP) && defined(OFF_CGROUP_LEVEL) && defined(OFF_CGROUP_ANCESTORS)
	const void *cg = sock_cgroup_ptr(sk);
	int level = 0;
	if (!cg)
		return 0;
	if (cgroup_id(cg) == FILTER_CGROUP)
		return 1;
	READ_AT(level, cg, OFF_CGROUP_LEVEL);
	/* Helper reads, at a bounded index (the verifier refuses an unbounded
	 * one even there: a tp_btf program's pointers are typed). */
#pragma unroll
	for (int up = 1; up < CGROUP_UP; up++) {
		const void *above = 0, *kn = 0;
		u64 id = 0;
		if (level - up < 0)
			return 0;
		u32 at = (u32)(level - up) & 255;
		READ_FAR(above, cg, OFF_CGROUP_ANCESTORS + 8 * at);
		if (above)
			READ_FAR(kn, above, OFF_CGROUP_KN);
		if (kn)
			READ_FAR(id, kn, OFF_KN_ID);
		if (id == FILTER_CGROUP)
			return 1;
	}
	return 0;
#else
	return sock_cgroup(sk) == FILTER_CGROUP;
#endif
}
#endif

/* A device's ifindex and namespace id (ifindexes repeat across namespaces). */
#if defined(OFF_DEV_IFINDEX)
static __always_inline void dev_ids(const void *dev, u32 *ifindex, u32 *netns)
{
	*ifindex = 0;
	*netns = 0;
	if (!dev)
		return;
#if defined(OFF_DEV_NET) && defined(HAVE_NET_ID)
	const void *net = 0;
#define DEV_LO MIN_(OFF_DEV_IFINDEX, OFF_DEV_NET)
#define DEV_HI MAX_(OFF_DEV_IFINDEX + 4, OFF_DEV_NET + 8)
	if (SPAN_FITS(DEV_LO, DEV_HI)) {
		char span[SPAN_FITS(DEV_LO, DEV_HI) ? DEV_HI - DEV_LO : 1];
		SPAN_READ(span, dev, DEV_LO, DEV_HI);
		SPAN_GET(*ifindex, span, DEV_LO, OFF_DEV_IFINDEX);
		SPAN_GET(net, span, DEV_LO, OFF_DEV_NET);
	} else {
		READ_AT(*ifindex, dev, OFF_DEV_IFINDEX);
		READ_AT(net, dev, OFF_DEV_NET);
	}
	if (net)
		*netns = net_id(net);
#else
	READ_AT(*ifindex, dev, OFF_DEV_IFINDEX);
#endif
}
#endif

/* The socket's namespace id (map keys) and inode (events the user filters). */
#if defined(OFF_SKC_NET) && defined(HAVE_NET_ID)
static __always_inline u32 sk_netns_id(const void *sk)
{
	const void *net = 0;
	if (!sk)
		return 0;
	READ_AT(net, sk, OFF_SKC_NET);
	return net ? net_id(net) : 0;
}
#endif

#if defined(OFF_SKC_NET) && defined(OFF_NET_INUM)
static __always_inline u32 sk_netns_inum(const void *sk)
{
	u32 inum = 0;
	const void *net = 0;
	if (!sk)
		return 0;
	READ_AT(net, sk, OFF_SKC_NET);
	if (net)
		READ_AT(inum, net, OFF_NET_INUM);
	return inum;
}
#endif

/* ---- Event streams (compiled with -DSTREAM) ------------------------------ */
#ifdef STREAM
#ifndef RINGBUF_PAGES
#define RINGBUF_PAGES 4096
#endif
#ifndef WAKEUP_EVERY
/* events per CPU between wake-ups: well under the ring's capacity */
#define WAKEUP_EVERY (RINGBUF_PAGES >= 64 ? 256 : 16)
#endif
BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
BPF_PERCPU_ARRAY(lost, u64, 1);      /* reserve failed: ring buffer full */
BPF_PERCPU_ARRAY(submitted, u64, 1); /* for batching wake-ups */

static __always_inline void *event_reserve(u32 size)
{
	void *e = events.ringbuf_reserve(size);
	if (!e) {
		u32 zero = 0;
		u64 *l = lost.lookup(&zero);
		if (l)
			(*l)++;
	}
	return e;
}

/* Waking the reader costs ~7 us an event here (irq_work and a self-IPI, a VM
 * exit on this kind of machine): the program wakes it on every WAKEUP_EVERY-th
 * event per CPU only, and the reader looks on its own every 50 ms for the
 * events in between (ringbuf.py). (A wake-up on backlog, bpf_ringbuf_query,
 * is out of reach: bcc 0.26 gives no map argument for that helper.) */
static __always_inline void event_submit(void *e)
{
	u32 zero = 0;
	u64 *n = submitted.lookup(&zero);
	u64 wake = n && ((*n)++ % WAKEUP_EVERY == 0);
	events.ringbuf_submit(e, wake ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
}

#ifdef OWNER_TRACKING
/* Who owns a socket, when the event happens in softirq on behalf of
 * whatever task the CPU interrupted (the bcc tools print that task). A
 * per-CPU flag set between softirq_entry and softirq_exit says whether the
 * current task can be trusted; owners are remembered where they act
 * themselves: connect, listen, close (inet_sock_set_state), or an earlier
 * event in process context. Attach on_softirq_entry/exit and on_state as
 * stream-only raw tracepoints. */
struct owner {
	u32 pid;
	char comm[PYPROBE_COMM_LEN];
};
BPF_TABLE("lru_hash", u64, struct owner, owners, MAX_owners);
BPF_PERCPU_ARRAY(in_softirq, u32, 1);

int on_softirq_entry(struct bpf_raw_tracepoint_args *ctx)
{
	u32 zero = 0, *f = in_softirq.lookup(&zero);
	if (f)
		*f = 1;
	return 0;
}

int on_softirq_exit(struct bpf_raw_tracepoint_args *ctx)
{
	u32 zero = 0, *f = in_softirq.lookup(&zero);
	if (f)
		*f = 0;
	return 0;
}

/* inet_sock_set_state(sk, oldstate, newstate) into SYN_SENT, LISTEN,
 * FIN_WAIT1 or LAST_ACK: made by the owner itself, in a syscall. */
int on_state(struct bpf_raw_tracepoint_args *ctx)
{
	int newstate = (int)ctx->args[2];
	if (newstate != 2 && newstate != 10 && newstate != 4 && newstate != 9)
		return 0;
	u64 key = ctx->args[0];
	struct owner o = {.pid = bpf_get_current_pid_tgid() >> 32};
	bpf_get_current_comm(o.comm, sizeof(o.comm));
	owners.update(&key, &o);
	return 0;
}

/* tcp_sendmsg_locked(sk, ...) and tcp_rcv_space_adjust(sk) run in the
 * owner's sendmsg/recvmsg: this is how accepted sockets (which never change
 * state in process context before their close) get a known owner. */
int on_owner_io(struct bpf_raw_tracepoint_args *ctx)
{
	u32 zero = 0, *soft = in_softirq.lookup(&zero);
	if (soft && *soft)
		return 0;
	u64 key = ctx->args[0];
	struct owner o = {.pid = bpf_get_current_pid_tgid() >> 32};
	bpf_get_current_comm(o.comm, sizeof(o.comm));
	owners.update(&key, &o);
	return 0;
}

/* Fill pid/comm with the socket's owner; returns PYPROBE_F_OWNER_KNOWN or 0. */
static __always_inline u32 owner_of(const void *sk, u32 *pid, char *comm)
{
	u32 zero = 0, *soft = in_softirq.lookup(&zero);
	u64 key = (u64)sk;
	if (!(soft && *soft)) {
		struct owner o = {.pid = bpf_get_current_pid_tgid() >> 32};
		bpf_get_current_comm(o.comm, sizeof(o.comm));
		*pid = o.pid;
		__builtin_memcpy(comm, o.comm, PYPROBE_COMM_LEN);
		if (sk)
			owners.update(&key, &o);
		return PYPROBE_F_OWNER_KNOWN;
	}
	if (sk) {
		struct owner *o = owners.lookup(&key);
		if (o) {
			*pid = o->pid;
			__builtin_memcpy(comm, o->comm, PYPROBE_COMM_LEN);
			return PYPROBE_F_OWNER_KNOWN;
		}
	}
	return 0;
}
#endif /* OWNER_TRACKING */
#endif /* STREAM */

/* ---- Packet headers --------------------------------------------------------- */
#if defined(OFF_SKB_HEAD) && defined(OFF_SKB_NETWORK_HEADER)
struct tuple {
	u8 saddr[16];
	u8 daddr[16];
	u16 sport;
	u16 dport;
	u8 family; /* AF_INET/AF_INET6, 0 when the packet is not IP */
	u8 l4proto;
};

/* Addresses and ports from the packet's IP header (not from a socket). */
static __always_inline void skb_tuple(const void *skb, struct tuple *t)
{
	unsigned char *head = 0;
	u16 nh = 0, th = 0xffff;
	u8 first = 0;
	READ_AT(head, skb, OFF_SKB_HEAD);
	READ_AT(nh, skb, OFF_SKB_NETWORK_HEADER);
#ifdef OFF_SKB_TRANSPORT_HEADER
	READ_AT(th, skb, OFF_SKB_TRANSPORT_HEADER);
#endif
	if (!head || nh == 0xffff)
		return;
	const unsigned char *ip = head + nh;
	bpf_probe_read_kernel(&first, 1, ip);
	u32 l4off = 0;
	if ((first >> 4) == 4) {
		t->family = 2;
		bpf_probe_read_kernel(&t->l4proto, 1, ip + 9);
		bpf_probe_read_kernel(t->saddr, 4, ip + 12);
		bpf_probe_read_kernel(t->daddr, 4, ip + 16);
		l4off = (first & 0xf) * 4;
	} else if ((first >> 4) == 6) {
		t->family = 10;
		bpf_probe_read_kernel(&t->l4proto, 1, ip + 6);
		bpf_probe_read_kernel(t->saddr, 16, ip + 8);
		bpf_probe_read_kernel(t->daddr, 16, ip + 24);
		l4off = 40; /* extension headers: ports left out below */
	} else {
		return;
	}
	if (t->l4proto != 6 && t->l4proto != 17)
		return;
	const unsigned char *l4 = (th != 0xffff && th > nh) ? head + th : ip + l4off;
	u16 ports[2] = {};
	bpf_probe_read_kernel(ports, sizeof(ports), l4);
	t->sport = __builtin_bswap16(ports[0]);
	t->dport = __builtin_bswap16(ports[1]);
}

/* An event's 5-tuple from the skb's headers, and PYPROBE_F_HAS_TUPLE in its
 * flags, where skb_tuple found one (the events' members share these names). */
#define EVENT_TUPLE(e, skb)                                       \
	do {                                                      \
		struct tuple t_ = {};                             \
		skb_tuple(skb, &t_);                              \
		if (t_.family) {                                  \
			__builtin_memcpy((e)->saddr, t_.saddr, 16); \
			__builtin_memcpy((e)->daddr, t_.daddr, 16); \
			(e)->sport = t_.sport;                    \
			(e)->dport = t_.dport;                    \
			(e)->family = t_.family;                  \
			(e)->l4proto = t_.l4proto;                \
			(e)->flags |= PYPROBE_F_HAS_TUPLE;        \
		}                                                 \
	} while (0)
#endif

#endif /* PYPROBE_BPF_H */
