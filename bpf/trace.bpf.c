/* trace: the path of each packet a pcap filter matches, hook by hook, on the
 * skb tracepoints (no kprobes), as records in a ring buffer.
 *
 * The filter (libpcap's classic BPF as C: pyprobe/core/pcapfilter.py, in
 * -DTRACE_FILTER_ETH / -DTRACE_FILTER_RAW) runs only where a packet enters
 * a device's path: net_dev_queue (transmit), netif_rx, napi_gro_receive_entry,
 * netif_receive_skb(_list)_entry (receive), and kfree_skb (a packet dropped
 * before any device saw it). A match marks the skb (a hash by its address)
 * with a packet id; every other hook only looks marks up, and not even that
 * until something was marked (`armed`): a filter that matches nothing costs
 * the filter at those entries and one array load elsewhere.
 *
 * Once judged, a packet is not judged again where its path is provably the
 * same skb: a device that hands its own transmit to its peer (veth, loopback:
 * netif_rx inside net_dev_start_xmit..net_dev_xmit of that very skb, on this
 * CPU) inherits the verdict of the queue it came from.
 *
 * A mark is trusted where the skb cannot be a new one: between an entry and
 * the hooks that follow it. Where a freed skb's address may have been
 * reused (an entry, a drop, a consume, a copy to user space: TCP frees many
 * skbs without a tracepoint), the packet's identity (addresses, protocol,
 * IP ID, ports and the next 4 bytes of its transport header) is compared
 * with the mark's. Encapsulation inside a transmit of the marked skb (VXLAN:
 * the outer packet queued on the underlay from within the vxlan device's
 * transmit) updates the identity and keeps the inner one, which a
 * decapsulated packet then matches. A packet forwarded through a NAT
 * (its addresses or ports rewritten: a masquerade, a DNAT) keeps the part
 * of its identity NAT leaves (IP ID, protocol, TCP sequence or ICMP echo
 * id and sequence): the mark takes its new identity. A clone of a marked packet (a raw
 * socket's copy, a tap's) is another skb with its identity: found through
 * `idents` where such skbs end (a drop, a free, a read), once anything was
 * traced, and marked when it is read so its free follows.
 *
 * At rest (nothing matched for a while: pyprobe/probes/trace.py) only
 * net_dev_queue, the NAPI and netif_receive_skb entries and kfree_skb are
 * attached: one filter run per packet on a veth or loopback path, no
 * other program. netif_rx is not among them: on those paths it is the
 * peer's receive of a packet its queue judged, and a second program run
 * per packet cost 1.6% of churn; what enters by it alone (AF_PACKET's
 * qdisc bypass, pktgen) is not seen then.
 *
 * Hooks: HOOK_RAW_TP (tp_btf with -DBTF_DIRECT, or raw tracepoints). */
#include <uapi/linux/ptrace.h>
#include "pyprobe.h"
#include "pyprobe_bpf.h"
#include "trace_filter.h"

#define LINK_RAW 0
#define LINK_ETH 1

/* stats[]: what the program did, for the tests and `--stats` */
#define STAT_FILTER_RUNS 0 /* the filter ran */
#define STAT_MATCHES 1     /* ... and matched: a packet's first hop */
#define STAT_INHERITED 2   /* a peer's receive inside its transmit: not judged again */
#define STAT_HOPS 3        /* hops of marked packets */
#define STAT_STALE 4       /* a mark whose skb is another packet now: dropped */
#define STAT_SLOTS 8

struct mark {
	u64 pkt;   /* the packet's id */
	u32 ident; /* its identity as last seen */
	u32 alt;   /* its identity before its latest encapsulation */
	u32 nat;   /* what NAT leaves of it (IPv4: IP ID, protocol, L4 bytes 4..7) */
	u32 _pad;
};
BPF_TABLE("lru_hash", u64, struct mark, marks, MAX_marks);
BPF_ARRAY(armed, u64, 1);           /* 1 once anything was marked */
/* identity -> packet id of each marked packet: its clones (a raw socket's
 * copy, a tap's) are other skbs, found by the identity they carry */
BPF_TABLE("lru_hash", u32, u64, idents, MAX_idents);
BPF_PERCPU_ARRAY(xmitting, u64, 1); /* the skb this CPU's driver is transmitting */
BPF_PERCPU_ARRAY(ids, u64, 1);      /* packet ids: (cpu + 1) << 40 | n */
BPF_PERCPU_ARRAY(stats, u64, STAT_SLOTS);
struct pktbuf {
	u8 b[PF_BUFFER];
};
BPF_PERCPU_ARRAY(scratch, struct pktbuf, 1); /* the packet's first bytes */

static __always_inline u32 filter_eth(const u8 *P_, u32 caplen, u32 wirelen)
#ifdef TRACE_FILTER_ETH
	TRACE_FILTER_ETH
#else
{
	return 0;
}
#endif

static __always_inline u32 filter_raw(const u8 *P_, u32 caplen, u32 wirelen)
#ifdef TRACE_FILTER_RAW
	TRACE_FILTER_RAW
#else
{
	return 0;
}
#endif

static __always_inline void stat(u32 slot)
{
	u64 *n = stats.lookup(&slot);
	if (n)
		(*n)++;
}

/* Where a packet starts for the filter: its Ethernet header when it has a
 * link-layer header, else its IP header (tun devices; a packet not handed
 * to a device yet). caplen: its linear bytes from there, at most the window. */
struct view {
	const unsigned char *at;
	u32 caplen;
	u32 wirelen;
	u32 ipoff; /* IP's offset from `at` */
	u32 link;
};

static __always_inline int view_of(const void *skb, struct view *v)
{
	unsigned char *head = 0, *data = 0;
	u32 len = 0, tail = 0, start;
	u16 mac = 0, nh = 0;
	READ_AT(head, skb, OFF_SKB_HEAD);
	READ_AT(data, skb, OFF_SKB_DATA);
	READ_AT(len, skb, OFF_SKB_LEN);
	READ_AT(tail, skb, OFF_SKB_TAIL);
	READ_AT(mac, skb, OFF_SKB_MAC_HEADER);
	READ_AT(nh, skb, OFF_SKB_NETWORK_HEADER);
	if (!head || !data || data < head)
		return 0;
	if (mac == 0xffff || mac == nh) {
		start = nh;
		v->link = LINK_RAW;
		v->ipoff = 0;
	} else {
		start = mac;
		v->link = LINK_ETH;
		v->ipoff = (nh > mac && nh - mac <= 64) ? nh - mac : 14;
	}
	u64 end = (u64)(data - head) + len;
	if (start == 0xffff || start >= end || start >= tail)
		return 0;
	v->wirelen = end - start;
	v->caplen = tail - start < PF_WINDOW ? tail - start : PF_WINDOW;
	v->at = head + start;
	return 1;
}

/* The view's bytes in this CPU's scratch buffer (P_ for the filter). */
static __always_inline const u8 *copy_in(const struct view *v)
{
	u32 zero = 0;
	struct pktbuf *buf = scratch.lookup(&zero);
	if (!buf)
		return 0;
	u32 n = v->caplen;
	/* clang knows caplen <= PF_WINDOW and drops a mask it sees as idle;
	 * the verifier does not know it: hide n from clang, then mask it */
	asm volatile("" : "+r"(n));
	n &= PF_BUFFER - 1;
	if (bpf_probe_read_kernel(buf->b, n, v->at))
		return 0;
	return buf->b;
}

static __always_inline u32 mix(u32 h, u32 w)
{
	return (h ^ w) * 0x01000193;
}

/* The packet's identity: what stays the same along its path (not TTL,
 * checksum, MAC addresses) and differs from the next packet of its flow.
 * *nat: the part of an IPv4 packet's identity NAT does not rewrite (its IP
 * ID and protocol, the TCP sequence, the UDP length or the ICMP echo's
 * id and sequence), unless both IP ID and that are 0:
 * a marked skb forwarded through a NAT keeps it (0: none). */
static __always_inline u32 identity(const u8 *P_, const struct view *v, u32 *nat)
{
	u32 caplen = v->caplen, o = v->ipoff & 63, l4, h = 0x811c9dc5, n = 0;
	*nat = 0;
	if (o + 20 > caplen)
		return 0;
	u32 first = PF_LD8(o);
	if ((first >> 4) == 4) {
		n = mix(h, (PF_LD16(o + 4) << 8) | PF_LD8(o + 9));
		h = mix(h, PF_LD32(o + 12));
		h = mix(h, PF_LD32(o + 16));
		h = mix(h, (PF_LD16(o + 4) << 8) | PF_LD8(o + 9)); /* IP ID, protocol */
		l4 = o + (first & 0xf) * 4;
	} else if ((first >> 4) == 6) {
		if (o + 40 > caplen)
			return 0;
#pragma unroll
		for (u32 i = 8; i < 40; i += 4)
			h = mix(h, PF_LD32(o + i));
		h = mix(h, (PF_LD16(o + 4) << 8) | PF_LD8(o + 6)); /* payload length, next header */
		l4 = o + 40;
	} else {
		return 0;
	}
	l4 &= 127;
	if (l4 + 8 <= caplen) {
		h = mix(h, PF_LD32(l4));     /* ports; ICMP type, code, checksum */
		h = mix(h, PF_LD32(l4 + 4)); /* TCP sequence; UDP length, checksum; ICMP id, seq */
		/* (a UDP checksum covers the addresses: its length alone) */
		u32 kept = PF_LD8(o + 9) == 17 ? PF_LD16(l4 + 4) : PF_LD32(l4 + 4);
		/* no IP ID (a SYN-ACK's, a reset's) and nothing there either (a
		 * reset a SYN gets has sequence 0): every reset of a flood would
		 * be the same: no NAT identity */
		if (n && !PF_LD16(o + 4) && !kept)
			n = 0;
		if (n)
			n = mix(n, kept);
	}
	*nat = n;
	return h ? h : 1;
}

static __always_inline u32 identity_of(const void *skb, struct view *v, u32 *nat)
{
	const u8 *buf;
	*nat = 0;
	if (!view_of(skb, v) || !(buf = copy_in(v)))
		return 0;
	return identity(buf, v, nat);
}

/* The device's ifindex and namespace inode (else the socket's namespace). */
static __always_inline void where(const void *skb, const void *dev, struct trace_event *e)
{
	const void *net = 0, *sk = 0;
	u32 ifindex = 0, inum = 0;
	if (!dev)
		READ_AT(dev, skb, OFF_SKB_DEV);
	if (dev) {
		READ_AT(ifindex, dev, OFF_DEV_IFINDEX);
		READ_AT(net, dev, OFF_DEV_NET);
	}
	if (!net) {
		READ_AT(sk, skb, OFF_SKB_SK);
		if (sk)
			READ_AT(net, sk, OFF_SKC_NET);
	}
	if (net)
		READ_AT(inum, net, OFF_NET_INUM);
	e->ifindex = ifindex;
	e->netns = inum;
}

struct hop {
	const void *dev; /* the device the hook names, else the skb's */
	u64 location;
	u32 reason;
	u32 flags;
	u8 hook;
};

static __always_inline void fill(struct trace_event *e, const void *skb, u64 pkt, const struct hop *h)
{
	u32 len = 0;
	READ_AT(len, skb, OFF_SKB_LEN);
	e->ts_ns = bpf_ktime_get_ns();
	e->pkt = pkt;
	e->skaddr = (u64)skb;
	e->location = h->location;
	e->len = len;
	e->reason = h->reason;
	e->flags = h->flags;
	e->hook = h->hook;
	e->_pad0 = 0;
	e->caplen = 0;
	e->wirelen = 0;
	where(skb, h->dev, e);
	if (h->hook == PYPROBE_HOP_COPY) {
		e->pid = bpf_get_current_pid_tgid() >> 32;
		bpf_get_current_comm(e->comm, sizeof(e->comm));
		e->flags |= PYPROBE_F_OWNER_KNOWN;
	} else {
		e->pid = 0;
		__builtin_memset(e->comm, 0, sizeof(e->comm));
	}
}

static __always_inline void emit(const void *skb, u64 pkt, const struct hop *h)
{
	struct trace_event *e = event_reserve(__builtin_offsetof(struct trace_event, data));
	if (!e)
		return;
	fill(e, skb, pkt, h);
	stat(STAT_HOPS);
	event_submit(e);
}

/* A first hop: with the packet's bytes. wake: the reader is woken for it
 * (the first match since nothing was marked: user space attaches the hooks
 * that follow it then, probes/trace.py, and should not wait for its poll). */
static __always_inline void emit_first(const void *skb, u64 pkt, struct hop *h,
				       const struct view *v, const u8 *buf, int wake)
{
	struct trace_event *e = event_reserve(sizeof(struct trace_event));
	if (!e)
		return;
	h->flags |= PYPROBE_F_FIRST | (v->link == LINK_ETH ? PYPROBE_F_ETHERNET : 0);
	fill(e, skb, pkt, h);
	e->caplen = v->caplen;
	e->wirelen = v->wirelen;
	__builtin_memcpy(e->data, buf, PYPROBE_TRACE_SNAP);
	stat(STAT_HOPS);
	if (wake)
		events.ringbuf_submit(e, BPF_RB_FORCE_WAKEUP);
	else
		event_submit(e);
}

static __always_inline struct mark *marked(const void *skb)
{
	u32 zero = 0;
	u64 *on = armed.lookup(&zero);
	if (!on || !*on)
		return 0;
	u64 key = (u64)skb;
	return marks.lookup(&key);
}

/* Whether a marked skb is still the marked packet: its identity now is the
 * mark's, or the one it had before its encapsulation (then it has been
 * decapsulated: the mark takes that one back). 0: another packet. */
static __always_inline int still(const void *skb, struct mark *m, struct hop *h)
{
	struct view v = {};
	u32 nat = 0;
	u32 id = identity_of(skb, &v, &nat);
	/* A packet without an identity (not IP: ARP...) cannot be told from
	 * the next one: trusted. A packet with one is not an skb without one
	 * (TCP frees ACKs silently; a netlink message may get their address). */
	if (id == m->ident || !m->ident)
		return 1;
	if (id && id == m->alt) {
		m->alt = m->ident;
		m->ident = id;
		h->flags |= PYPROBE_F_DECAP;
		return 1;
	}
	if (id && m->nat && nat == m->nat) {
		/* its addresses or ports rewritten on the way: NAT (an outer
		 * packet of a tunnel has an IP ID of its own: not this) */
		if (m->alt == m->ident)
			m->alt = id;
		m->ident = id;
		h->flags |= PYPROBE_F_NAT;
		idents.update(&id, &m->pkt); /* its clones from here on carry this */
		return 1;
	}
	u64 key = (u64)skb;
	marks.delete(&key);
	stat(STAT_STALE);
	return 0;
}

/* Run the filter; a match is the packet's first hop (and marks it, unless
 * the hop ends it). */
static __always_inline void judge(const void *skb, struct hop *h)
{
	struct view v = {};
	const u8 *buf;
	if (!view_of(skb, &v) || !(buf = copy_in(&v)))
		return;
	stat(STAT_FILTER_RUNS);
	u32 verdict = v.link == LINK_ETH ? filter_eth(buf, v.caplen, v.wirelen)
					 : filter_raw(buf, v.caplen, v.wirelen);
	if (!verdict)
		return;
	stat(STAT_MATCHES);
	u32 zero = 0, nat = 0;
	u64 *n = ids.lookup(&zero);
	if (!n)
		return;
	struct mark m = {
		.pkt = ((u64)(bpf_get_smp_processor_id() + 1) << 40) | ++(*n),
		.ident = identity(buf, &v, &nat),
	};
	m.nat = nat;
	m.alt = m.ident;
	int arming = 0;
	if (h->hook != PYPROBE_HOP_DROP) {
		u64 key = (u64)skb;
		if (marks.update(&key, &m))
			map_full(MAP_ID_marks);
		u64 *on = armed.lookup(&zero);
		if (on && !*on) {
			*on = 1;
			arming = 1;
		}
		if (m.ident)
			idents.update(&m.ident, &m.pkt);
	}
	emit_first(skb, m.pkt, h, &v, buf, arming);
}

static __always_inline int in_own_xmit(const void *skb)
{
	u32 zero = 0;
	u64 *x = xmitting.lookup(&zero);
	return x && *x == (u64)skb;
}

/* Follow-only hooks: a marked skb's hop, nothing else. */
static __always_inline int follow(const void *skb, struct hop *h)
{
	struct mark *m = marked(skb);
	if (m)
		emit(skb, m->pkt, h);
	return 0;
}

/* net_dev_queue: a transmit's entry. */
static __always_inline int entry_tx(const void *skb)
{
	struct hop h = {.hook = PYPROBE_HOP_QUEUE};
	struct mark *m = marked(skb);
	if (m && in_own_xmit(skb)) {
		/* queued again from within its own transmit: encapsulated (the
		 * outer packet of a tunnel), or a lower device's queue */
		struct view v = {};
		u32 nat = 0;
		u32 id = identity_of(skb, &v, &nat);
		if (id && id != m->ident) {
			m->alt = m->ident;
			m->ident = id;
			h.flags |= PYPROBE_F_ENCAP;
		}
		emit(skb, m->pkt, &h);
		return 0;
	}
	if (m && still(skb, m, &h)) {
		emit(skb, m->pkt, &h);
		return 0;
	}
	judge(skb, &h);
	return 0;
}

/* netif_rx, napi_gro_receive_entry, netif_receive_skb(_list)_entry. */
static __always_inline int entry_rx(const void *skb, u8 hook)
{
	struct hop h = {.hook = hook};
	struct mark *m = marked(skb);
	if (in_own_xmit(skb)) {
		/* a device handing its own transmit to its peer: judged at its queue */
		stat(STAT_INHERITED);
		if (m)
			emit(skb, m->pkt, &h);
		return 0;
	}
	if (m && still(skb, m, &h)) {
		emit(skb, m->pkt, &h);
		return 0;
	}
	judge(skb, &h);
	return 0;
}

/* kfree_skb: a marked packet's end, or an unmarked one's only hop. */
/* An unmarked skb that carries a traced packet's identity: a clone of it
 * (raw sockets, taps, multicast get one) or a copy. Looked for only where
 * such skbs end up (a drop, a free, a read), and only once something was
 * traced. 0: none; else the packet's id, and *id its identity. */
static __always_inline u64 clone_of(const void *skb, u32 *id)
{
	u32 zero = 0;
	u64 *on = armed.lookup(&zero);
	if (!on || !*on)
		return 0;
	struct view v = {};
	u32 nat = 0;
	*id = identity_of(skb, &v, &nat);
	if (!*id)
		return 0;
	u64 *pkt = idents.lookup(id);
	return pkt ? *pkt : 0;
}

/* kfree_skb: a marked packet's end, or an unmarked one's only hop. */
static __always_inline int dropped(const void *skb, u64 location, u32 reason)
{
	struct hop h = {.hook = PYPROBE_HOP_DROP, .location = location, .reason = reason};
	struct mark *m = marked(skb);
	if (m && still(skb, m, &h)) {
		emit(skb, m->pkt, &h);
		u64 key = (u64)skb;
		marks.delete(&key);
		return 0;
	}
	u32 id = 0;
	u64 pkt = clone_of(skb, &id);
	if (pkt) {
		h.flags |= PYPROBE_F_CLONE;
		emit(skb, pkt, &h);
		return 0;
	}
	judge(skb, &h);
	return 0;
}

/* consume_skb and skb_copy_datagram_iovec: where skbs freed unseen leave
 * marks behind, so only a mark the packet still matches. */
static __always_inline int checked(const void *skb, struct hop *h, int last)
{
	struct mark *m = marked(skb);
	if (!m) {
		u32 id = 0;
		u64 pkt = clone_of(skb, &id);
		if (!pkt)
			return 0;
		h->flags |= PYPROBE_F_CLONE;
		emit(skb, pkt, h);
		if (!last) { /* read: its free follows */
			struct mark c = {.pkt = pkt, .ident = id, .alt = id};
			u64 key = (u64)skb;
			marks.update(&key, &c);
		}
		return 0;
	}
	if (!still(skb, m, h))
		return 0;
	emit(skb, m->pkt, h);
	if (last) {
		u64 key = (u64)skb;
		marks.delete(&key);
	}
	return 0;
}

int on_queue(struct bpf_raw_tracepoint_args *ctx)
{
	return entry_tx((const void *)ctx->args[0]);
}

/* net_dev_start_xmit(skb, dev) */
int on_start_xmit(struct bpf_raw_tracepoint_args *ctx)
{
	const void *skb = (const void *)ctx->args[0];
	u32 zero = 0;
	u64 *x = xmitting.lookup(&zero);
	if (x)
		*x = (u64)skb;
	struct hop h = {.hook = PYPROBE_HOP_START_XMIT, .dev = (const void *)ctx->args[1]};
	return follow(skb, &h);
}

/* net_dev_xmit(skb, rc, dev, len): the skb may be freed already; only its
 * address is used, and the device's. */
int on_xmit(struct bpf_raw_tracepoint_args *ctx)
{
	const void *skb = (const void *)ctx->args[0];
	u32 zero = 0;
	u64 *x = xmitting.lookup(&zero);
	if (x && *x == (u64)skb)
		*x = 0;
	struct mark *m = marked(skb);
	if (!m)
		return 0;
	struct hop h = {.hook = PYPROBE_HOP_XMIT, .dev = (const void *)ctx->args[2],
			.reason = (u32)ctx->args[1]};
	struct trace_event *e = event_reserve(__builtin_offsetof(struct trace_event, data));
	if (!e)
		return 0;
	/* not fill(): the skb's own members may be gone */
	__builtin_memset(e, 0, __builtin_offsetof(struct trace_event, data));
	e->ts_ns = bpf_ktime_get_ns();
	e->pkt = m->pkt;
	e->skaddr = (u64)skb;
	e->len = (u32)ctx->args[3];
	e->reason = h.reason;
	e->hook = h.hook;
	const void *dev = h.dev, *net = 0;
	if (dev) {
		READ_AT(e->ifindex, dev, OFF_DEV_IFINDEX);
		READ_AT(net, dev, OFF_DEV_NET);
		if (net)
			READ_AT(e->netns, net, OFF_NET_INUM);
	}
	stat(STAT_HOPS);
	event_submit(e);
	return 0;
}

int on_netif_rx(struct bpf_raw_tracepoint_args *ctx)
{
	return entry_rx((const void *)ctx->args[0], PYPROBE_HOP_NETIF_RX);
}

int on_gro(struct bpf_raw_tracepoint_args *ctx)
{
	return entry_rx((const void *)ctx->args[0], PYPROBE_HOP_GRO);
}

int on_receive_entry(struct bpf_raw_tracepoint_args *ctx)
{
	return entry_rx((const void *)ctx->args[0], PYPROBE_HOP_RECEIVE_ENTRY);
}

int on_receive_list(struct bpf_raw_tracepoint_args *ctx)
{
	return entry_rx((const void *)ctx->args[0], PYPROBE_HOP_RECEIVE_LIST);
}

int on_receive(struct bpf_raw_tracepoint_args *ctx)
{
	struct hop h = {.hook = PYPROBE_HOP_RECEIVE};
	return follow((const void *)ctx->args[0], &h);
}

/* qdisc_enqueue(qdisc, txq, skb) */
int on_enqueue(struct bpf_raw_tracepoint_args *ctx)
{
	struct hop h = {.hook = PYPROBE_HOP_ENQUEUE};
#ifdef OFF_QDISC_HANDLE
	const void *q = (const void *)ctx->args[0];
	if (q)
		READ_AT(h.reason, q, OFF_QDISC_HANDLE);
#endif
	return follow((const void *)ctx->args[2], &h);
}

/* qdisc_dequeue(qdisc, txq, packets, skb): skb NULL when nothing was dequeued */
int on_dequeue(struct bpf_raw_tracepoint_args *ctx)
{
	const void *skb = (const void *)ctx->args[3];
	struct hop h = {.hook = PYPROBE_HOP_DEQUEUE};
	if (!skb)
		return 0;
#ifdef OFF_QDISC_HANDLE
	const void *q = (const void *)ctx->args[0];
	if (q)
		READ_AT(h.reason, q, OFF_QDISC_HANDLE);
#endif
	return follow(skb, &h);
}

/* kfree_skb(skb, location, reason, rx_sk) */
int on_drop(struct bpf_raw_tracepoint_args *ctx)
{
	return dropped((const void *)ctx->args[0], ctx->args[1], (u32)ctx->args[2]);
}

/* consume_skb(skb, location); before 6.3, consume_skb(skb): no location
 * (CONSUME_LOCATION: probes/trace.py asks BTF) */
int on_consume(struct bpf_raw_tracepoint_args *ctx)
{
	struct hop h = {.hook = PYPROBE_HOP_CONSUME};
#ifdef CONSUME_LOCATION
	h.location = ctx->args[1];
#endif
	return checked((const void *)ctx->args[0], &h, 1);
}

/* skb_copy_datagram_iovec(skb, len): a process reads it (its recvmsg) */
int on_copy(struct bpf_raw_tracepoint_args *ctx)
{
	struct hop h = {.hook = PYPROBE_HOP_COPY, .reason = (u32)ctx->args[1]};
	return checked((const void *)ctx->args[0], &h, 0);
}

/* icmp_send(skb, type, code): an ICMP error about it */
int on_icmp_send(struct bpf_raw_tracepoint_args *ctx)
{
	struct hop h = {.hook = PYPROBE_HOP_ICMP_SEND,
			.reason = ((u32)ctx->args[1] << 8) | ((u32)ctx->args[2] & 0xff)};
	return follow((const void *)ctx->args[0], &h);
}
